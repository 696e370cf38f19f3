#!/usr/bin/env python3
"""Write a copy of a GGUF with every tensor dequantized to F32 (metadata copied, file_type set to 0).

Diagnostic for the fixtures: llama.cpp's CPU backend rounds matmul inputs to 8 bits for quantized
weights, but keeps them F32 for F32 weights.  Running the peer on the F32 copy therefore isolates
that rounding from everything else (architecture, RoPE, tokenizer), which must then match the
float64 reference closely.
  python3 tests/ref/dequant_gguf.py IN.gguf OUT.gguf
"""
import sys

import numpy as np
from gguf import GGUFReader, GGUFWriter, GGUFValueType
from gguf.quants import dequantize

src, dst = sys.argv[1], sys.argv[2]
r = GGUFReader(src)
arch = r.fields["general.architecture"].contents()
w = GGUFWriter(dst, arch)
for name, f in r.fields.items():
    if name.startswith("GGUF.") or name == "general.architecture":
        continue                                   # written by GGUFWriter itself
    if name == "general.file_type":
        w.add_key_value(name, 0, GGUFValueType.UINT32)   # LLAMA_FTYPE_ALL_F32
        continue
    vtype = f.types[0]
    sub = f.types[1] if vtype == GGUFValueType.ARRAY else None
    w.add_key_value(name, f.contents(), vtype, sub)
for t in r.tensors:
    a = dequantize(t.data, t.tensor_type).astype(np.float32)
    w.add_tensor(t.name, a.reshape([int(d) for d in reversed(t.shape)]))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
