#!/usr/bin/env python3
"""Independent float64 reference forward pass for llama-architecture GGUF models.

Straightforward numpy: weights are dequantized by the PyPI `gguf` package (gguf.quants.dequantize),
then everything (RMSNorm, RoPE NORM style, GQA causal attention, SwiGLU, tied or untied output) runs
in float64.  No KV-cache tricks: the whole token sequence goes through in one pass, so the logits at
position i are exactly what a teacher-forced decode would see.

It reads fixture JSON files (the layout of ../shared/testdata/tiny/fixtures/*/*.json), feeds
prompt_tokens + greedy_tokens, and reports for each fixture:
  - relative L2 error and max |diff| of the last-prompt-token logits vs <slug>.logits.bin
  - teacher-forced greedy agreement: argmax of the float64 logits at each step vs greedy_tokens,
    with the fixture's margin at any disagreeing step.

  pip install gguf numpy
  python3 tests/ref/smollm2_ref.py models/SmolLM2-135M-Instruct.Q4_1.gguf tests/fixtures/smollm2
  python3 tests/ref/smollm2_ref.py ../shared/testdata/tiny/models/tiny-llama-F32.gguf \
      ../shared/testdata/tiny/fixtures/tiny-llama-F32
Options: --save  write <slug>.ref64.bin (float64 prompt logits rounded to float32)
         --json  write a machine-readable summary to this path
"""
import argparse
import glob
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


class Model:
    def __init__(self, path):
        r = GGUFReader(path)
        arch = field(r, "general.architecture")
        if arch != "llama":
            raise SystemExit(f"{path}: architecture {arch!r}, this reference handles only llama")
        p = arch + "."
        self.n_embd = int(field(r, p + "embedding_length"))
        self.n_layer = int(field(r, p + "block_count"))
        self.n_head = int(field(r, p + "attention.head_count"))
        self.n_head_kv = int(field(r, p + "attention.head_count_kv", self.n_head))
        self.eps = float(field(r, p + "attention.layer_norm_rms_epsilon"))
        self.rope_base = float(field(r, p + "rope.freq_base", 10000.0))
        self.head_dim = self.n_embd // self.n_head
        self.n_rot = int(field(r, p + "rope.dimension_count", self.head_dim))
        # Store dequantized weights as float32 (exact: every GGUF type dequantizes to values
        # representable in float32) and widen to float64 at use, to halve memory.
        self.w = {}
        for t in r.tensors:
            a = dequantize(t.data, t.tensor_type)
            # numpy shape is reversed ggml order: (ne1, ne0) = (out, in) for matrices
            self.w[t.name] = np.ascontiguousarray(a.reshape([int(d) for d in reversed(t.shape)]),
                                                  dtype=np.float32)
        self.tied = "output.weight" not in self.w
        self.n_vocab = self.w["token_embd.weight"].shape[0]

    def W(self, name):
        return self.w[name].astype(np.float64)

    def rmsnorm(self, x, name):
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(ms + self.eps) * self.W(name)

    def rope(self, x, pos):
        # llama.cpp "NORM" rope: rotate adjacent pairs (x[2i], x[2i+1]) by pos * base^(-2i/n_rot).
        # x: (T, H, head_dim)
        half = self.n_rot // 2
        inv = self.rope_base ** (-np.arange(half, dtype=np.float64) * 2.0 / self.n_rot)
        ang = pos[:, None].astype(np.float64) * inv[None, :]          # (T, half)
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        out = x.copy()
        a, b = x[..., 0:self.n_rot:2], x[..., 1:self.n_rot:2]
        out[..., 0:self.n_rot:2] = a * c - b * s
        out[..., 1:self.n_rot:2] = a * s + b * c
        return out

    def forward(self, tokens):
        """Logits (T, n_vocab) float64 for every position of `tokens`, causal."""
        T, H, HKV, D = len(tokens), self.n_head, self.n_head_kv, self.head_dim
        pos = np.arange(T)
        x = self.W("token_embd.weight")[np.asarray(tokens)]
        mask = np.triu(np.full((T, T), -np.inf), k=1)
        for l in range(self.n_layer):
            b = f"blk.{l}."
            h = self.rmsnorm(x, b + "attn_norm.weight")
            q = (h @ self.W(b + "attn_q.weight").T).reshape(T, H, D)
            k = (h @ self.W(b + "attn_k.weight").T).reshape(T, HKV, D)
            v = (h @ self.W(b + "attn_v.weight").T).reshape(T, HKV, D)
            q, k = self.rope(q, pos), self.rope(k, pos)
            att = np.empty((T, H, D))
            for hh in range(H):
                kv = hh // (H // HKV)                       # GQA: consecutive q heads share a kv head
                s = q[:, hh, :] @ k[:, kv, :].T / np.sqrt(D) + mask
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s /= s.sum(axis=1, keepdims=True)
                att[:, hh, :] = s @ v[:, kv, :]
            x = x + att.reshape(T, H * D) @ self.W(b + "attn_output.weight").T
            h = self.rmsnorm(x, b + "ffn_norm.weight")
            g = h @ self.W(b + "ffn_gate.weight").T
            u = h @ self.W(b + "ffn_up.weight").T
            x = x + (g / (1.0 + np.exp(-g)) * u) @ self.W(b + "ffn_down.weight").T
        x = self.rmsnorm(x, "output_norm.weight")
        out = self.W("token_embd.weight" if self.tied else "output.weight")
        return x @ out.T


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("fixtures", help="directory with <slug>.json and <slug>.logits.bin")
    ap.add_argument("--save", action="store_true", help="write <slug>.ref64.bin")
    ap.add_argument("--json", help="write a summary JSON here")
    a = ap.parse_args()

    m = Model(a.model)
    print(f"{os.path.basename(a.model)}: n_layer {m.n_layer} n_embd {m.n_embd} heads {m.n_head}/{m.n_head_kv} "
          f"head_dim {m.head_dim} n_rot {m.n_rot} rope_base {m.rope_base:g} eps {m.eps:g} "
          f"tied {m.tied} vocab {m.n_vocab}")
    summary = []
    for jf in sorted(glob.glob(os.path.join(a.fixtures, "*.json"))):
        fx = json.load(open(jf))
        if "prompt_tokens" not in fx:
            continue
        slug = os.path.basename(jf)[:-5]
        pt, gt = fx["prompt_tokens"], fx["greedy_tokens"]
        margins = fx["greedy_top1_top2_margin"]
        logits = m.forward(pt + gt[:-1])                 # rows len(pt)-1 .. : teacher-forced steps
        steps = logits[len(pt) - 1:]
        ref = np.fromfile(os.path.join(a.fixtures, slug + ".logits.bin"), dtype="<f4").astype(np.float64)
        mine = steps[0]
        rel = np.linalg.norm(mine - ref) / np.linalg.norm(ref)
        mad = np.max(np.abs(mine - ref))
        am = steps.argmax(axis=1)
        dis = [(i, int(am[i]), gt[i], margins[i]) for i in range(len(gt)) if am[i] != gt[i]]
        top5 = [int(t) for t in np.argsort(-mine)[:5]]
        top5_ref = [t for t, _ in fx["top5_prompt_logits"]]
        print(f"{slug}: {len(pt)} prompt tokens; prompt logits rel L2 {rel:.3e}, max|d| {mad:.3e} "
              f"(|ref| max {np.max(np.abs(ref)):.2f}); top5 {'same' if top5 == top5_ref else f'{top5} vs {top5_ref}'}; "
              f"teacher-forced argmax agrees {len(gt) - len(dis)}/{len(gt)}, min margin {min(margins):.3g}")
        for i, got, want, mg in dis:
            print(f"    step {i}: float64 argmax {got}, llama.cpp {want} (llama.cpp margin {mg:.3g})")
        if a.save:
            mine.astype("<f4").tofile(os.path.join(a.fixtures, slug + ".ref64.bin"))
        summary.append(dict(slug=slug, n_prompt=len(pt), rel_l2=rel, max_abs=mad, top5_same=top5 == top5_ref,
                            tf_agree=len(gt) - len(dis), n_steps=len(gt),
                            disagreements=[dict(step=i, ref64=g, llamacpp=w, margin=mg) for i, g, w, mg in dis]))
    if not summary:
        sys.exit("no fixtures found")
    if a.json:
        json.dump(summary, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
