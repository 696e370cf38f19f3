#!/usr/bin/env python3
"""make_bench_model.py - a random-weight F16 GGUF in a real model's shape, for speed comparisons only.

    make_bench_model.py qwen2.5-1.5b OUT.gguf      (then llama-quantize OUT.gguf Q4_K_M / Q8_0)
    make_bench_model.py smollm2-135m OUT.gguf      (the real file is over the 64 MiB a GPU run carries)
    make_bench_model.py qwen3-30b-a3b OUT.gguf [LAYERS]   (MoE, written as Q4_0 directly: 16 GiB, F16 would
                                                         be 61; LAYERS < 48: a shorter model, for trials)

Weights are N(0, 0.02) (norms 1), the vocabulary is placeholder tokens with a GPT-2 style tokenizer
entry; tokens carry no meaning, only the shapes (and so the bytes moved and the work) are real.
Needs gguf-py (llama.cpp's) and numpy.
"""
import sys

import numpy as np
import gguf

SHAPES = {   # arch, layers, n_embd, n_ff, heads, kv heads, head_dim, vocab, rope base, qkv bias, tied, pre
    'qwen2.5-1.5b': ('qwen2', 28, 1536, 8960, 12, 2, 128, 151936, 1000000.0, True, True, 'qwen2'),
    'smollm2-135m': ('llama', 30, 576, 1536, 9, 3, 64, 49152, 100000.0, False, True, 'smollm'),
}


# Qwen3-30B-A3B: 48 layers, n_embd 2048, 32 query / 4 KV heads of 128, 128 experts (8 used) of ff 768,
# vocabulary 151936, separate output matrix.  Every matrix is Q4_0 with random quants and one block scale
# (the values of N(0, ~0.02)); one random expert stack per kind serves every layer (the bytes moved and
# the work are a real layer's; the router is random per layer, so each layer picks other experts).
def moe_q4_0(out, L):
    E, H, HKV, HD, NE, NU, FE, V = 2048, 32, 4, 128, 128, 8, 768, 151936
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(out, 'qwen3moe')
    w.add_name('qwen3-30b-a3b-random')
    w.add_block_count(L)
    w.add_context_length(32768)
    w.add_embedding_length(E)
    w.add_feed_forward_length(6144)
    w.add_expert_feed_forward_length(FE)
    w.add_expert_count(NE)
    w.add_expert_used_count(NU)
    w.add_head_count(H)
    w.add_head_count_kv(HKV)
    w.add_key_length(HD)
    w.add_value_length(HD)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1000000.0)
    w.add_file_type(2)   # MOSTLY_Q4_0
    w.add_tokenizer_model('gpt2')
    w.add_tokenizer_pre('qwen2')
    w.add_token_list(['t%d' % i for i in range(V)])
    w.add_token_types([1] * V)
    w.add_token_merges(['t 0'])
    w.add_bos_token_id(V - 2)
    w.add_eos_token_id(V - 1)
    scale = np.frombuffer(np.float16(0.005).tobytes(), np.uint8)

    def q4_0(*shape):   # rows of K elements as Q4_0 bytes: K / 32 blocks of (f16 scale, 16 quant bytes)
        *lead, k = shape
        a = rng.integers(0, 256, size=(*lead, k // 32, 18), dtype=np.uint8)
        a[..., 0:2] = scale
        return a.reshape(*lead, k // 32 * 18)

    def add(nm, a):
        w.add_tensor(nm, a, raw_dtype=gguf.GGMLQuantizationType.Q4_0)

    ones = np.ones(E, dtype=np.float32)
    head_ones = np.ones(HD, dtype=np.float32)
    gate, up, down = q4_0(NE, FE, E), q4_0(NE, FE, E), q4_0(NE, E, FE)
    q, k, v, o = q4_0(H * HD, E), q4_0(HKV * HD, E), q4_0(HKV * HD, E), q4_0(E, H * HD)
    add('token_embd.weight', q4_0(V, E))
    for i in range(L):
        p = 'blk.%d.' % i
        w.add_tensor(p + 'attn_norm.weight', ones)
        add(p + 'attn_q.weight', q)
        add(p + 'attn_k.weight', k)
        add(p + 'attn_v.weight', v)
        w.add_tensor(p + 'attn_q_norm.weight', head_ones)
        w.add_tensor(p + 'attn_k_norm.weight', head_ones)
        add(p + 'attn_output.weight', o)
        w.add_tensor(p + 'ffn_norm.weight', ones)
        w.add_tensor(p + 'ffn_gate_inp.weight', rng.standard_normal((NE, E), dtype=np.float32) * 0.02)
        add(p + 'ffn_gate_exps.weight', gate)
        add(p + 'ffn_up_exps.weight', up)
        add(p + 'ffn_down_exps.weight', down)
    w.add_tensor('output_norm.weight', ones)
    add('output.weight', q4_0(V, E))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    name, out = sys.argv[1], sys.argv[2]
    if name == 'qwen3-30b-a3b':
        return moe_q4_0(out, int(sys.argv[3]) if len(sys.argv) > 3 else 48)
    arch, L, E, F, H, HKV, HD, V, base, bias, tied, pre = SHAPES[name]
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(out, arch)
    w.add_name(name + '-random')
    w.add_block_count(L)
    w.add_context_length(32768)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(HKV)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(base)
    w.add_file_type(1)   # MOSTLY_F16
    w.add_tokenizer_model('gpt2')
    w.add_tokenizer_pre(pre)
    w.add_token_list(['t%d' % i for i in range(V)])
    w.add_token_types([1] * V)
    w.add_token_merges(['t 0'])
    w.add_bos_token_id(V - 2)
    w.add_eos_token_id(V - 1)

    def t(nm, *shape):
        if len(shape) == 1:
            a = np.ones(shape, dtype=np.float32)   # norms (kept F32 like converted models)
        else:
            a = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
        w.add_tensor(nm, a)

    def b(nm, n):
        w.add_tensor(nm, (rng.standard_normal(n, dtype=np.float32) * 0.02).astype(np.float32))
    t('token_embd.weight', V, E)
    for i in range(L):
        p = 'blk.%d.' % i
        t(p + 'attn_norm.weight', E)
        t(p + 'attn_q.weight', H * HD, E)
        t(p + 'attn_k.weight', HKV * HD, E)
        t(p + 'attn_v.weight', HKV * HD, E)
        if bias:
            b(p + 'attn_q.bias', H * HD)
            b(p + 'attn_k.bias', HKV * HD)
            b(p + 'attn_v.bias', HKV * HD)
        t(p + 'attn_output.weight', E, H * HD)
        t(p + 'ffn_norm.weight', E)
        t(p + 'ffn_gate.weight', F, E)
        t(p + 'ffn_up.weight', F, E)
        t(p + 'ffn_down.weight', E, F)
    t('output_norm.weight', E)
    if not tied:
        t('output.weight', V, E)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == '__main__':
    main()
