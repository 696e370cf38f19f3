#!/usr/bin/env python3
"""Independent float64 reference forward pass for GGUF models: llama, qwen2 and gemma3.

Straightforward numpy, written from the model definitions (the Hugging Face modelling code as llama.cpp's
GGUF converter maps it: that converter is where the stored 1 + w of Gemma's norms and the defaults the
file leaves out come from), sharing no code with metalllm.h.  Weights are dequantized by the PyPI `gguf`
package (gguf.quants.dequantize) one tensor at a time, when a layer needs it, and widened to float64;
all prompts go through each layer together, so every tensor is dequantized once per run and memory stays
at one layer's weights (a 1.5B model fits in a few GB).  No KV-cache tricks: each token sequence goes
through in one causal pass, so the logits at position i are exactly what a teacher-forced decode sees.

Per architecture (the rest is shared: RMSNorm, causal GQA attention, gated FFN, final norm, output):
  llama   RoPE "NORM" style (adjacent pairs rotated), SwiGLU.
  qwen2   as llama, plus biases on Q, K and V, and RoPE "NEOX" style (the two halves rotated).
  gemma3  embeddings scaled by sqrt(n_embd); RMSNorm on each Q and K head; post-attention and post-FFN
          RMSNorms before the residual adds; GELU(tanh) gated FFN; NEOX RoPE; softmax scale
          1/sqrt(key_length); 5 of every 6 layers (not layer 5, 11, 17, ...) attend only to the last
          `sliding_window` positions (query included) and rotate with base `rope.freq_base_swa`
          (10000 when absent: Gemma 3's rope_local_base_freq), the others with `rope.freq_base`.
          Gemma's RMSNorm multiplies by (1 + w); the GGUF converter stores 1 + w, so the stored weight is
          applied as is (every norm weight in the file is used like llama's).

It reads fixture JSON files (the layout of ../shared/testdata/tiny/fixtures/*/*.json), feeds
prompt_tokens + greedy_tokens[:-1], and reports for each fixture:
  - relative L2 error and max |diff| of the last-prompt-token logits vs <slug>.logits.bin (llama.cpp)
  - teacher-forced greedy agreement: argmax of the float64 logits at each step vs greedy_tokens,
    with the fixture's margin at any disagreeing step.

  pip install gguf numpy
  python3 tests/ref/model_ref.py models/SmolLM2-135M-Instruct.Q4_1.gguf tests/fixtures/smollm2
  python3 tests/ref/model_ref.py ../shared/testdata/tiny/models/tiny-llama-F32.gguf \
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

ARCHS = ("llama", "qwen2", "gemma3")


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


class Model:
    def __init__(self, path):
        r = GGUFReader(path)
        arch = field(r, "general.architecture")
        if arch not in ARCHS:
            raise SystemExit(f"{path}: architecture {arch!r}, this reference handles {', '.join(ARCHS)}")
        self.arch = arch
        p = arch + "."
        self.n_embd = int(field(r, p + "embedding_length"))
        self.n_layer = int(field(r, p + "block_count"))
        self.n_head = int(field(r, p + "attention.head_count"))
        self.n_head_kv = int(field(r, p + "attention.head_count_kv", self.n_head))
        self.eps = float(field(r, p + "attention.layer_norm_rms_epsilon"))
        self.rope_base = float(field(r, p + "rope.freq_base", 10000.0))
        self.head_dim = int(field(r, p + "attention.key_length", self.n_embd // self.n_head))
        self.n_rot = int(field(r, p + "rope.dimension_count", self.head_dim))
        if field(r, p + "rope.scaling.type") not in (None, "none") or field(r, p + "rope.scaling.factor") not in (None, 1.0):
            raise SystemExit(f"{path}: RoPE scaling is not implemented in this reference")
        self.neox = arch in ("qwen2", "gemma3")
        self.window, self.swa_every, self.rope_base_swa = 0, 0, self.rope_base
        if arch == "gemma3":
            self.window = int(field(r, p + "attention.sliding_window", 0))
            self.swa_every = 6 if self.window else 0
            self.rope_base_swa = float(field(r, p + "rope.freq_base_swa", 10000.0))
            if field(r, p + "final_logit_softcapping") is not None:
                raise SystemExit(f"{path}: final logit soft-capping is not implemented in this reference")
        self.t = {t.name: t for t in r.tensors}
        self.Wl = None                                  # the current layer's weights during forward()
        self.tied = "output.weight" not in self.t
        self.n_vocab = int(self.t["token_embd.weight"].shape[1])

    def has(self, name):
        return name in self.t

    def W(self, name, rows=None):
        """Dequantized tensor as float64; numpy shape is reversed ggml order: (out, in) for matrices.
        rows: only these rows (ggml rows are whole blocks, so they dequantize alone)."""
        t = self.t[name]
        data = t.data if rows is None else t.data[rows]
        a = dequantize(data, t.tensor_type).astype(np.float64)
        if rows is None:
            a = a.reshape([int(d) for d in reversed(t.shape)])
        return a

    def rmsnorm(self, x, w):
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(ms + self.eps) * w

    def rope(self, x, pos, base):
        # x: (T, H, head_dim).  Pair i (i < n_rot/2) is rotated by pos * base^(-2i/n_rot); NORM pairs
        # (x[2i], x[2i+1]), NEOX pairs (x[i], x[i + n_rot/2]).
        half = self.n_rot // 2
        inv = base ** (-np.arange(half, dtype=np.float64) * 2.0 / self.n_rot)
        ang = pos[:, None].astype(np.float64) * inv[None, :]          # (T, half)
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        out = x.copy()
        if self.neox:
            ia, ib = slice(0, half), slice(half, self.n_rot)
        else:
            ia, ib = slice(0, self.n_rot, 2), slice(1, self.n_rot, 2)
        a, b = x[..., ia], x[..., ib]
        out[..., ia] = a * c - b * s
        out[..., ib] = a * s + b * c
        return out

    def is_swa(self, l):
        return self.swa_every > 0 and (l + 1) % self.swa_every != 0

    def attention(self, l, h, b):
        T, H, HKV, D = h.shape[0], self.n_head, self.n_head_kv, self.head_dim
        pos = np.arange(T)
        q = h @ self.Wl[b + "attn_q.weight"].T
        k = h @ self.Wl[b + "attn_k.weight"].T
        v = h @ self.Wl[b + "attn_v.weight"].T
        if self.arch == "qwen2":
            q, k, v = q + self.Wl[b + "attn_q.bias"], k + self.Wl[b + "attn_k.bias"], v + self.Wl[b + "attn_v.bias"]
        q, k, v = q.reshape(T, H, D), k.reshape(T, HKV, D), v.reshape(T, HKV, D)
        if self.arch == "gemma3":
            q = self.rmsnorm(q, self.Wl[b + "attn_q_norm.weight"])
            k = self.rmsnorm(k, self.Wl[b + "attn_k_norm.weight"])
        base = self.rope_base_swa if self.is_swa(l) else self.rope_base
        q, k = self.rope(q, pos, base), self.rope(k, pos, base)
        dist = pos[:, None] - pos[None, :]                           # query minus key position
        masked = dist < 0
        if self.is_swa(l):
            masked |= dist >= self.window
        mask = np.where(masked, -np.inf, 0.0)
        att = np.empty((T, H, D))
        for hh in range(H):
            kv = hh // (H // HKV)                       # GQA: consecutive q heads share a kv head
            s = q[:, hh, :] @ k[:, kv, :].T / np.sqrt(D) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            att[:, hh, :] = s @ v[:, kv, :]
        return att.reshape(T, H * D) @ self.Wl[b + "attn_output.weight"].T

    def ffn(self, h, b):
        g = h @ self.Wl[b + "ffn_gate.weight"].T
        u = h @ self.Wl[b + "ffn_up.weight"].T
        if self.arch == "gemma3":   # GELU, tanh approximation
            act = 0.5 * g * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (g + 0.044715 * g ** 3)))
        else:                       # SiLU
            act = g / (1.0 + np.exp(-g))
        return (act * u) @ self.Wl[b + "ffn_down.weight"].T

    def forward(self, seqs, starts):
        """For each token list in seqs, the float64 logits (T - start, n_vocab) of positions start.. ."""
        xs = [self.W("token_embd.weight", rows=np.asarray(s)) for s in seqs]
        if self.arch == "gemma3":
            xs = [x * np.sqrt(self.n_embd) for x in xs]
        for l in range(self.n_layer):
            b = f"blk.{l}."
            # this layer's weights, dequantized once for all sequences
            self.Wl = {n: self.W(n) for n in self.t if n.startswith(b)}
            for i, x in enumerate(xs):
                a = self.attention(l, self.rmsnorm(x, self.Wl[b + "attn_norm.weight"]), b)
                if self.arch == "gemma3":
                    a = self.rmsnorm(a, self.Wl[b + "post_attention_norm.weight"])
                x = x + a
                f = self.ffn(self.rmsnorm(x, self.Wl[b + "ffn_norm.weight"]), b)
                if self.arch == "gemma3":
                    f = self.rmsnorm(f, self.Wl[b + "post_ffw_norm.weight"])
                xs[i] = x + f
            self.Wl = None
        outn = self.W("output_norm.weight")
        hs = [self.rmsnorm(x[s:], outn) for x, s in zip(xs, starts)]
        logits = [np.empty((h.shape[0], self.n_vocab)) for h in hs]
        name = "token_embd.weight" if self.tied else "output.weight"
        chunk = 16384                                   # output rows dequantized at a time
        for r0 in range(0, self.n_vocab, chunk):
            w = self.W(name, rows=np.arange(r0, min(r0 + chunk, self.n_vocab)))
            for h, lg in zip(hs, logits):
                lg[:, r0:r0 + w.shape[0]] = h @ w.T
        return logits


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("fixtures", help="directory with <slug>.json and <slug>.logits.bin")
    ap.add_argument("--save", action="store_true", help="write <slug>.ref64.bin")
    ap.add_argument("--json", help="write a summary JSON here")
    a = ap.parse_args()

    m = Model(a.model)
    print(f"{os.path.basename(a.model)}: {m.arch}, n_layer {m.n_layer} n_embd {m.n_embd} heads {m.n_head}/{m.n_head_kv} "
          f"head_dim {m.head_dim} n_rot {m.n_rot} rope_base {m.rope_base:g} eps {m.eps:g} "
          f"tied {m.tied} vocab {m.n_vocab}"
          + (f" window {m.window} every {m.swa_every}th layer global, rope_base_swa {m.rope_base_swa:g}" if m.window else ""))
    fixtures = []
    for jf in sorted(glob.glob(os.path.join(a.fixtures, "*.json"))):
        fx = json.load(open(jf))
        if "prompt_tokens" in fx:
            fixtures.append((os.path.basename(jf)[:-5], fx))
    if not fixtures:
        sys.exit("no fixtures found")
    seqs = [fx["prompt_tokens"] + fx["greedy_tokens"][:-1] for _, fx in fixtures]   # teacher-forced steps
    all_steps = m.forward(seqs, [len(fx["prompt_tokens"]) - 1 for _, fx in fixtures])
    summary = []
    for (slug, fx), steps in zip(fixtures, all_steps):
        pt, gt = fx["prompt_tokens"], fx["greedy_tokens"]
        margins = fx["greedy_top1_top2_margin"]
        ref = np.fromfile(os.path.join(a.fixtures, slug + ".logits.bin"), dtype="<f4").astype(np.float64)
        mine = steps[0]
        rel = np.linalg.norm(mine - ref) / np.linalg.norm(ref)
        mad = np.max(np.abs(mine - ref))
        am = steps.argmax(axis=1)
        srt = np.sort(steps, axis=1)
        m64 = srt[:, -1] - srt[:, -2]                   # float64 top-1 minus top-2 at each step
        dis = [(i, int(am[i]), gt[i], margins[i], m64[i]) for i in range(len(gt)) if am[i] != gt[i]]
        top5 = [int(t) for t in np.argsort(-mine)[:5]]
        top5_ref = [t for t, _ in fx["top5_prompt_logits"]]
        print(f"{slug}: {len(pt)} prompt tokens; prompt logits rel L2 {rel:.3e}, max|d| {mad:.3e} "
              f"(|ref| max {np.max(np.abs(ref)):.2f}); top5 {'same' if top5 == top5_ref else f'{top5} vs {top5_ref}'}; "
              f"teacher-forced argmax agrees {len(gt) - len(dis)}/{len(gt)}, min margin {min(margins):.3g}")
        for i, got, want, mg, mg64 in dis:
            print(f"    step {i}: float64 argmax {got} (margin {mg64:.3g}), llama.cpp {want} (llama.cpp margin {mg:.3g})")
        if a.save:
            mine.astype("<f4").tofile(os.path.join(a.fixtures, slug + ".ref64.bin"))
        summary.append(dict(slug=slug, n_prompt=len(pt), rel_l2=rel, max_abs=mad, top5_same=top5 == top5_ref,
                            tf_agree=len(gt) - len(dis), n_steps=len(gt),
                            disagreements=[dict(step=i, ref64=g, llamacpp=w, margin=mg, margin64=mg64)
                                           for i, g, w, mg, mg64 in dis]))
    if a.json:
        json.dump(summary, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
