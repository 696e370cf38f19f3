#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, made from the test data at build time (nothing large committed).
usage: seeds.py TESTDATA OUTDIR  -> OUTDIR/<target>/seed_*"""
import os, struct, sys

testdata, out = sys.argv[1], sys.argv[2]


def write(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def gguf_split(data):
    """(offset where the tensor infos start, offset where the metadata ends) of a GGUF image."""
    p = 8
    n_t, n_kv = struct.unpack_from('<QQ', data, p)
    p += 16
    fixed = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(t, p):
        if t == 8:
            return p + 8 + struct.unpack_from('<Q', data, p)[0]
        if t == 9:
            at, n = struct.unpack_from('<IQ', data, p)
            p += 12
            if at in fixed:
                return p + n * fixed[at]
            for _ in range(n):
                p = skip(at, p)
            return p
        return p + fixed[t]

    for _ in range(n_kv):
        p += 8 + struct.unpack_from('<Q', data, p)[0]
        t = struct.unpack_from('<I', data, p)[0]
        p = skip(t, p + 4)
    kv_end = p
    for _ in range(n_t):
        p += 8 + struct.unpack_from('<Q', data, p)[0]
        nd = struct.unpack_from('<I', data, p)[0]
        p += 4 + 8 * nd + 4 + 8
    return kv_end, p


# GGUF model load: selector byte + metadata (the harness appends that model's tensor data);
# vocabulary load: the same metadata as a vocabulary-only file (no tensors)
for i, name in enumerate(['tiny-llama-Q8_0', 'tiny-qwen3moe-Q8_0']):
    data = open(os.path.join(testdata, 'tiny/models/%s.gguf' % name), 'rb').read()
    kv_end, meta_end = gguf_split(data)
    write('gguf_model', 'seed_%s' % name, bytes([i]) + data[:meta_end])
    write('vocab', 'seed_%s' % name, data[:8] + struct.pack('<Q', 0) + data[16:kv_end])

# tokenize: the tokenizer test texts, per vocabulary (selector byte), with and without parse-special
texts = []
for v, name in enumerate(['llama-spm', 'gpt-2', 'qwen2']):
    raw = open(os.path.join(testdata, 'tokenizer/ggml-vocab-%s.gguf.inp' % name), 'rb').read()
    for k, t in enumerate(raw.split(b'\n__ggml_vocab_test__\n')):
        if t and len(t) < 4000:
            write('tokenize', 'seed_%d_%03d' % (v, k), bytes([v]) + t)
            if k % 4 == 0:
                write('tokenize', 'seed_%d_%03d_special' % (v, k), bytes([v | 4]) + t)
            texts.append(t)

# streaming detokenizer: the expected token ids of those texts, 2 bytes each
for v, name in enumerate(['llama-spm', 'qwen2']):
    lines = open(os.path.join(testdata, 'tokenizer/ggml-vocab-%s.gguf.out' % name)).read().split('\n')
    for k, line in enumerate(lines[:60]):
        ids = [int(x) for x in line.split()][:500]
        if ids:
            sel = v | (0x80 if k % 3 == 1 else 0) | (0x40 if k % 5 == 2 else 0)
            write('detok_stream', 'seed_%d_%03d' % (v, k), bytes([sel]) + b''.join(struct.pack('<H', i & 0xffff) for i in ids))

# chat formatting: template, then role/content pairs, NUL-separated
templates = [b'', b"{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}",
             b'{{ bos_token }}<|start_header_id|>{{ role }}<|end_header_id|>\n\n{{ content }}<|eot_id|>',
             b'{{ bos_token }}[INST] {{ content }} [/INST]', b'{{ unknown template }}']
msgs = [b'system', b'You are helpful.', b'user', b'Hi \xc3\xa9 <|im_end|>', b'assistant', b'Hello!', b'user', b'']
for k, t in enumerate(templates):
    write('chat', 'seed_%d' % k, b'\0'.join([t] + msgs))
