#!/usr/bin/env python3
"""Print a GGUF's meta.txt in the layout of ../shared/testdata/tiny/fixtures/*/meta.txt:
a one-line JSON summary, then one line per tensor (name, type, shape in ggml order, ne0 first).
  python3 tests/ref/gguf_meta.py models/SmolLM2-135M-Instruct.Q4_1.gguf > tests/fixtures/smollm2/meta.txt
"""
import json
import os
import sys

from gguf import GGUFReader

r = GGUFReader(sys.argv[1])


def get(key):
    f = r.fields.get(key)
    return None if f is None else f.contents()


arch = get("general.architecture")
a = arch + "."
names = [t.name for t in r.tensors]
summary = {
    "file": os.path.basename(sys.argv[1]), "architecture": arch, "name": get("general.name"),
    "file_type": get("general.file_type"), "vocab_size": len(get("tokenizer.ggml.tokens")),
    "tokenizer_model": get("tokenizer.ggml.model"), "tokenizer_pre": get("tokenizer.ggml.pre"),
    "bos": get("tokenizer.ggml.bos_token_id"), "eos": get("tokenizer.ggml.eos_token_id"),
    "unk": get("tokenizer.ggml.unknown_token_id"), "add_bos": get("tokenizer.ggml.add_bos_token"),
    "add_eos": get("tokenizer.ggml.add_eos_token"), "n_ctx_train": get(a + "context_length"),
    "n_embd": get(a + "embedding_length"), "n_layer": get(a + "block_count"),
    "n_ff": get(a + "feed_forward_length"), "n_head": get(a + "attention.head_count"),
    "n_head_kv": get(a + "attention.head_count_kv"), "head_dim_k": get(a + "attention.key_length"),
    "head_dim_v": get(a + "attention.value_length"), "n_rot": get(a + "rope.dimension_count"),
    "rope_theta": get(a + "rope.freq_base"), "rms_eps": get(a + "attention.layer_norm_rms_epsilon"),
    "n_expert": get(a + "expert_count"), "n_expert_used": get(a + "expert_used_count"),
    "n_ff_exp": get(a + "expert_feed_forward_length"),
    "tied_embeddings": "output.weight" not in names,
    "n_kv_keys": len(r.fields), "n_tensors": len(names),  # as in the tiny meta.txt: GGUF.* header fields included
}
print(json.dumps(summary))
for t in r.tensors:
    print(f"  {t.name:<32} {t.tensor_type.name:<6} [{', '.join(str(int(d)) for d in t.shape)}]")
