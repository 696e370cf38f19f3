/* kernels/common.h - what the Metal kernels share with the host.

   Compiled twice: by the Metal compiler (as part of every .metal file in kernels/) and by C/C++ host code
   (metalllm.h's Metal backend, the emulator tests).  The parameter structs below are therefore plain C
   with fixed-width fields and no padding surprises: one definition, read by both sides.  Everything
   MSL-only (the per-type block loaders) is under __METAL_VERSION__.

   Shapes, for every matrix kernel: the weight W has N rows of K elements (GGUF ne[0] = K, rows are
   row_bytes apart); activations X have M rows of K floats; outputs Y have M rows of N floats. */
#ifndef MLLM_KERNELS_COMMON_H
#define MLLM_KERNELS_COMMON_H

#ifdef __METAL_VERSION__
#include <metal_stdlib>
using namespace metal;
#else
#include <stdint.h>
#endif

/* ---------------------------------------------------------------- launch geometry (host must match) */
#define MLLM__GEMV_NSG 4         /* simdgroups per threadgroup: threads per threadgroup = 32 * NSG */
#define MLLM__GEMV_ROWS 1        /* weight rows per threadgroup = NSG * ROWS: threadgroups.x = ceil(N / (NSG * ROWS)) */
#define MLLM__GEMV_MULTI_R 8     /* gemv_multi: activation rows (tokens) per threadgroup (and token groups of ceil(M / R)) */
#define MLLM__GEMM_BM 32         /* activation rows (tokens) per threadgroup tile: threadgroups.y */
#define MLLM__GEMM_BN 64         /* weight rows (outputs) per threadgroup tile: threadgroups.x */
#define MLLM__GEMM_BK 32         /* depth of one tile step */
#define MLLM__GEMM_THREADS 128   /* 4 simdgroups in a 2 x 2 arrangement */
#define MLLM__GEMM_SPLIT_K 4096  /* GEMMs this deep (an FFN's down projection) split K over threadgroups: */
#define MLLM__GEMM_SPLITS 4      /* at most this many parts of >= 2048 (multiples of 256), summed by gemm_reduce */
#define MLLM__REDUCE_MAX_THREADS 1024  /* row reductions (norm, softmax, argmax) use <= this many */

/* ---------------------------------------------------------------- the weight types the kernels read
   The one list of GPU weight types: X(suffix, TYPE) with suffix the kernel-name suffix (gemv_q4_k...)
   and the block loader's name (blk_q4_k, below), TYPE the GGUF type (MLLM__TYPE in metalllm.h).  The
   kernel files instantiate their templates over it, the host maps weight types to kernel names with it
   and the emulator tests build their tables from it: a new type is a line here plus its blk_ loader. */
#define MLLM__GPU_TYPES(X) \
    X(f32, F32)            \
    X(f16, F16)            \
    X(bf16, BF16)          \
    X(q8_0, Q8_0)          \
    X(q4_0, Q4_0)          \
    X(q4_1, Q4_1)          \
    X(q5_0, Q5_0)          \
    X(q5_1, Q5_1)          \
    X(iq4_nl, IQ4_NL)      \
    X(q2_k, Q2_K)          \
    X(q3_k, Q3_K)          \
    X(q4_k, Q4_K)          \
    X(q5_k, Q5_K)          \
    X(q6_k, Q6_K)          \
    X(iq4_xs, IQ4_XS)

/* ---------------------------------------------------------------- kernel parameters */
typedef struct mllm__mat_args {  /* gemv_*, gemm_*, get_rows_* */
    uint32_t K;                  /* elements per weight row (a multiple of the type's block) */
    uint32_t N;                  /* weight rows */
    uint32_t M;                  /* activation rows (gemv/gemm) or ids (get_rows) */
    uint32_t row_bytes;          /* bytes between weight rows */
} mllm__mat_args;

typedef struct mllm__split_args {  /* gemm_split_*: the mat_args and each part's K (a multiple of 256) */
    uint32_t K, N, M, row_bytes;
    uint32_t k_split;
} mllm__split_args;

typedef struct mllm__reduce_args { /* gemm_reduce: y[i] = sum of the splits' part[s * n + i] (+ y[i]) */
    uint32_t n, splits, add;
} mllm__reduce_args;

typedef struct mllm__gemv_multi_args {  /* gemv_multi_*: as mllm__mat_args, one kernel with and without R */
    uint32_t K, N, M, row_bytes;
    uint32_t add;                /* 1: Y = W X + R (buffer 4; Y may alias R); 0: Y = W X, buffer 4 unread */
} mllm__gemv_multi_args;

typedef struct mllm__norm_args { /* rms_norm, rms_norm_mul: one threadgroup per row of n floats */
    uint32_t n;
    float eps;
} mllm__norm_args;

typedef struct mllm__rope_args { /* rope, rope_neox: in place on [tokens][n_heads][head_dim] */
    uint32_t n_heads;
    uint32_t head_dim;
    uint32_t n_rot;              /* leading dims of each head that rotate (even, <= head_dim) */
    uint32_t stride;             /* floats between consecutive tokens (>= n_heads * head_dim) */
    float freq_base;
    float freq_scale;
    uint32_t factors;            /* 1: buffer 3 holds n_rot / 2 divisors of the pair frequencies (Llama 3.x
                                    rope_freqs); 0: none (the host binds some buffer there anyway) */
    uint32_t n_heads_k;          /* heads of a second tensor in buffer 4 (K beside Q: one dispatch for both);
                                    0: none (buffer 4 still bound) */
    uint32_t stride_k;           /* its floats between tokens */
} mllm__rope_args;

typedef struct mllm__vec_args {  /* swiglu, add, softmax, argmax */
    uint32_t n;                  /* elements (per row for softmax/argmax, in total otherwise) */
} mllm__vec_args;

typedef struct mllm__scale_args { /* mul_scalar: x *= s over n floats */
    uint32_t n;
    float s;
} mllm__scale_args;

typedef struct mllm__bias_args { /* add_bias: rows of cols floats, each plus the same bias row */
    uint32_t n;                  /* elements in total (a multiple of cols) */
    uint32_t cols;
} mllm__bias_args;

/* ---------------------------------------------------------------- fused decode products (kernels/gemv_fused.metal)
   What a transformer block does with one normalized x, in one dispatch each at decode sizes. */
#define MLLM__GEMV_QKV_MAX 3
typedef struct mllm__gemv_norm { /* a fused product's own RMSNorm of X (rms_scale) */
    uint32_t on;                 /* 1: X is the residual stream; the product reads rmsnorm(X) * weight (buffer 11) */
    uint32_t threads;            /* the threads rms_norm_mul would run a row with: the sum is taken in its order */
    float eps;
} mllm__gemv_norm;
typedef struct mllm__qkv_args { /* gemv_qkv_<t>: Y_i = W_i X (+ bias_i) for n_mats matrices of one type */
    uint32_t K;                  /* elements per row, the same for every W_i */
    uint32_t M;                  /* activation rows */
    uint32_t n_mats;             /* 1..MLLM__GEMV_QKV_MAX */
    uint32_t N[MLLM__GEMV_QKV_MAX];          /* rows of each W_i */
    uint32_t row_bytes[MLLM__GEMV_QKV_MAX];
    uint32_t bias[MLLM__GEMV_QKV_MAX];       /* 1: Y_i gets the bias row in buffer 8 + i added */
    mllm__gemv_norm norm;
} mllm__qkv_args;

typedef struct mllm__glu_args {  /* gemv_swiglu_<t>, gemv_geglu_<t>: gate and up of one type */
    uint32_t K, N, M, row_bytes; /* as mllm__mat_args */
    mllm__gemv_norm norm;
} mllm__glu_args;

/* ---------------------------------------------------------------- attention (kernels/attention.metal)
   Paged KV exactly as the CPU engine's mllm__kv: F16 pools [n_layer][n_blocks][n_head_kv][block_tokens]
   [head_dim]; the host binds each pool at its layer's offset, so kernels index [block][head][t][d].
   Every attention kernel takes the same bindings (the host sets them once per layer):
     0 q [n_tokens][n_head*hd]   1 k, 2 v [n_tokens][n_head_kv*hd] (new rows, f32)
     3 K pool, 4 V pool (f16, layer base)   5 out [n_tokens][n_head*hd]   6 decode partials (f32)
     7 mllm__attn_seq[n_seqs]   8 int tok_seq[n_tokens]   9 int block tables   10 mllm__attn_args */
#define MLLM__ATTN_NSG 4          /* simdgroups per threadgroup (128 threads) in attn_decode and attn_prefill */
/* decode: context positions per threadgroup (split-K) for a sequence of n_ctx positions: a multiple of
   32 * NSG (four 8-position slabs per simdgroup at least), at most MLLM__ATTN_MAX_CHUNKS chunks.  It depends
   on the sequence alone, so its result does not change with the batch around it. */
#define MLLM__ATTN_MAX_CHUNKS 32
#define MLLM__ATTN_CHUNK_OF(n_ctx) \
    (((n_ctx) + 32 * MLLM__ATTN_NSG * MLLM__ATTN_MAX_CHUNKS - 1) / (32 * MLLM__ATTN_NSG * MLLM__ATTN_MAX_CHUNKS) * 32 * MLLM__ATTN_NSG)
#define MLLM__ATTN_KVW_THREADS 64 /* attn_kv_write: threads per threadgroup (one head of one token) */
/* The head dimensions the kernels are instantiated for (attn_decode_hd<D>, attn_prefill_hd<D>); the host
   refuses others.  Each must be a multiple of 8 (8x8 simdgroup matrices) and at most 256 (scratch). */
#define MLLM__ATTN_HEAD_DIMS(X) X(64) X(80) X(96) X(128) X(256)
#define MLLM__ATTN_BQ 32          /* prefill: query tokens per threadgroup (8 per simdgroup) */

typedef struct mllm__attn_seq {  /* one sequence of the batch: tokens [first, first + n) at pos0.. */
    int32_t first, n, pos0;
    int32_t blocks;              /* index of its block table (ceil((pos0 + n) / block_tokens) ids) in buffer 9 */
} mllm__attn_seq;

typedef struct mllm__attn_args {
    uint32_t n_seqs, n_tokens;
    uint32_t n_head, n_head_kv, head_dim, block_tokens;
    uint32_t n_chunks;           /* decode: most chunks of any sequence (grid x, partials per head) */
    float scale;                 /* 1 / sqrt(head_dim) */
    uint32_t n_swa;              /* sliding window: the query at position p sees positions (p - n_swa, p];
                                    0: all of [0, p] */
    /* attn_kv_write's RoPE of the new Q and K rows, in place, before K is written (rope.metal's rotation;
       buffer 11: int positions per token, 12: rope_factors, both always bound) */
    uint32_t rope;               /* 0: Q and K arrive rotated; 1: pairs (2i, 2i + 1); 2: NeoX (i, i + n_rot / 2) */
    uint32_t n_rot;
    float freq_base, freq_scale;
    uint32_t factors;            /* 1: buffer 12 holds n_rot / 2 frequency divisors */
} mllm__attn_args;

/* ---------------------------------------------------------------- mllm__moe_*: mixture of experts
   (kernels/moe.metal).  One MoE layer is a fixed chain of dispatches, whatever n_expert and however
   many experts are active: route (top-k per token) -> [map (counting sort by expert), gemm path only]
   -> grouped gate and up products -> swiglu -> grouped down product -> combine.  An "assigned row" is
   r = token * n_used + slot; the gemm path works on them in sorted order p (grouped by expert). */
#define MLLM__MOE_MAX_EXPERT 1024  /* moe_route keeps a 32-bit "taken" mask per lane (32 x 32 experts) */
#define MLLM__MOE_MAX_USED 8       /* experts per token */
#define MLLM__MOE_MAP_THREADS 256  /* moe_map: one threadgroup of this many threads */
#define MLLM__MOE_COMBINE_THREADS 64

typedef struct mllm__moe_args {  /* moe_route, moe_map, moe_combine */
    uint32_t n_expert;
    uint32_t n_used;             /* experts per token (<= n_expert, <= MLLM__MOE_MAX_USED) */
    uint32_t n_tokens;
    uint32_t n;                  /* moe_combine: floats per row */
} mllm__moe_args;

typedef struct mllm__moe_mat_args {  /* moe_gemv_*, moe_gemm_*: W holds n_expert matrices of N rows */
    uint32_t K, N, row_bytes;    /* as mllm__mat_args, for one expert's matrix (N * row_bytes apart) */
    uint32_t n_rows;             /* assigned rows: n_tokens * n_used */
    uint32_t n_used;
    uint32_t n_expert;
    uint32_t gather;             /* 1 (gate, up): X has a row per token, Y a row per sorted row p;
                                    0 (down): X has a row per sorted row p, Y a row per assigned row r
                                    (gemv: p = r, there is no sort) */
} mllm__moe_mat_args;

/* moe_map's output, one uint buffer: offsets[n_expert + 1] (first sorted row of each expert), then
   rows[n_rows] (assigned row r at sorted position p), then the gemm tile count, then per tile
   {expert, first sorted row}.  At most ceil(n_rows / BM) + min(n_expert, n_rows) tiles. */
#define MLLM__MOE_MAP_ROWS(n_expert) ((n_expert) + 1)
#define MLLM__MOE_MAP_NTILES(n_expert, n_rows) ((n_expert) + 1 + (n_rows))
#define MLLM__MOE_MAP_TILES(n_expert, n_rows) ((n_expert) + 2 + (n_rows))
#define MLLM__MOE_MAX_TILES(n_expert, n_rows) \
    (((n_rows) + MLLM__GEMM_BM - 1) / MLLM__GEMM_BM + ((n_expert) < (n_rows) ? (n_expert) : (n_rows)))
/* ---------------------------------------------------------------- end of mllm__moe_* */

/* ---------------------------------------------------------------- mllm__sample_*: GPU sampling
   kernels/sample.metal picks one token per sampled row under the rule written out above metalllm.h's
   mllm__sample (both samplers follow it).  Per-sequence penalty state lives on the GPU: counts[seq][n_vocab]
   (ushort: occurrences in the window) and ring[seq][ring_cap] (the last `window` tokens, token number
   t at t % window), updated by the kernel after each pick and seeded by the host. */
typedef struct mllm__sample_args {  /* sample: the whole dispatch */
    uint32_t n_vocab;
    uint32_t ring_cap;              /* ints per ring row (>= every row's window, <= 65535) */
} mllm__sample_args;

typedef struct mllm__sample_row {   /* sample: one per logits row */
    uint32_t seq;                   /* its row in counts / ring (distinct among rows with penalties) */
    uint32_t n_hist;                /* tokens in its history before this pick (the ring position) */
    uint32_t window;                /* penalty window, 1..ring_cap */
    uint32_t top_k;                 /* 0 (or >= n_vocab): off */
    uint32_t greedy;                /* temperature <= 0: argmax of the penalised logits */
    uint32_t penalties;             /* any penalty on (else counts and ring are not used) */
    float inv_temp;                 /* 1 / temperature, rounded on the host as the CPU sampler does */
    float top_p;                    /* 0: off */
    float min_p;                    /* min(min_p, 1); 0: off */
    float repeat, inv_repeat;       /* repetition penalty and 1 / it (1, 1: off) */
    float frequency, presence;
    uint32_t seed_lo, seed_hi;      /* the sequence's RNG stream ... */
    uint32_t counter_lo, counter_hi;/* ... and this draw's number in it */
} mllm__sample_row;

/* ---------------------------------------------------------------- MSL: per-type block loaders */
#ifdef __METAL_VERSION__
#define MLLM_CONST static constant constexpr const

/* Every weight type is read through one small loader struct, so each kernel family is written once:
     QK          elements per block (1 for the float types)
     BYTES       bytes per block
     chunk(r,c)  dequantizes elements [16c, 16c + 16) of the row at r into four float4 registers
     at(r,k)     one element; only the float types have rows that end inside a chunk (K % 16 != 0)
     raw, load(r,c), decode(w,c,v)   chunk in two steps: load reads the chunk's bytes into registers
                 (a raw), decode dequantizes them (chunk = decode(load)).  Kernels issue the loads of
                 the next chunks early and decode each just before its use, so loads stay in flight
                 while the product runs and the registers hold bytes, not floats.  Types without their
                 own pair (MLLM_RAW_POINTER) keep the row pointer as their raw and read in decode.
   Block layouts are GGUF's.  Rows of odd length are not 4-byte aligned, hence the packed_* loads. */

/* Element k of a row through its chunk: used by the quantized types, whose rows never end in a chunk. */
template <typename B> METAL_FUNC float chunk_elem(device const uchar *row, uint k) {
    float4 v[4];
    B::chunk(row, k / 16, v);
    return v[(k % 16) / 4][k % 4];
}

/* Wide loads: GPUs issue one instruction per load whatever its width, so the loaders read whole 32-bit
   words (or 16-bit ones where a block is only 2-byte aligned) and unpack four 8-bit lanes at once.  The
   16-byte loads of Q4_K/Q5_K need tensor data 16-byte aligned: GGUF's default general.alignment is 32
   (a file written with less would fault here; the host does not check that yet). */
METAL_FUNC float4 u8x4(uint u) { return float4(as_type<uchar4>(u)); }                   // 4 unsigned bytes
METAL_FUNC float4 nib4(uint u, uint sh) { return u8x4((u >> sh) & 0x0F0F0F0Fu); }      // their nibbles at sh
METAL_FUNC uint u16x2(device const uchar *p) {                                        // 2-byte aligned word
    device const ushort *h = (device const ushort *)p;
    return uint(h[0]) | uint(h[1]) << 16;
}

#define MLLM_RAW_POINTER                                                                                  \
    struct raw {                                                                                          \
        device const uchar *row;                                                                          \
    };                                                                                                    \
    static METAL_FUNC raw load(device const uchar *row, uint) { return raw{row}; }                        \
    static METAL_FUNC void decode(raw r, uint c, thread float4 *v) { chunk(r.row, c, v); }
#define MLLM_CHUNK_FROM_RAW                                                                               \
    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) { decode(load(row, c), c, v); }

struct blk_f32 {
    MLLM_CONST int QK = 1, BYTES = 4;
    struct raw {
        float4 f[4];
    };
    static METAL_FUNC raw load(device const uchar *row, uint c) {
        device const packed_float4 *p = (device const packed_float4 *)row + 4 * c;
        return raw{{float4(p[0]), float4(p[1]), float4(p[2]), float4(p[3])}};
    }
    static METAL_FUNC void decode(raw r, uint, thread float4 *v) {
        for (int i = 0; i < 4; i++) v[i] = r.f[i];
    }
    MLLM_CHUNK_FROM_RAW
    static METAL_FUNC float at(device const uchar *row, uint k) { return ((device const float *)row)[k]; }
};

struct blk_f16 {
    MLLM_CONST int QK = 1, BYTES = 2;
    struct raw {
        half4 h[4];
    };
    static METAL_FUNC raw load(device const uchar *row, uint c) {
        device const packed_half4 *p = (device const packed_half4 *)row + 4 * c;
        return raw{{half4(p[0]), half4(p[1]), half4(p[2]), half4(p[3])}};
    }
    static METAL_FUNC void decode(raw r, uint, thread float4 *v) {
        for (int i = 0; i < 4; i++) v[i] = float4(r.h[i]);
    }
    MLLM_CHUNK_FROM_RAW
    static METAL_FUNC float at(device const uchar *row, uint k) { return float(((device const half *)row)[k]); }
};

/* bfloat16 is the top half of a float32: widen by shifting (works on every Metal version). */
struct blk_bf16 {
    MLLM_CONST int QK = 1, BYTES = 2;
    struct raw {
        ushort4 u[4];
    };
    static METAL_FUNC raw load(device const uchar *row, uint c) {
        device const packed_ushort4 *p = (device const packed_ushort4 *)row + 4 * c;
        return raw{{ushort4(p[0]), ushort4(p[1]), ushort4(p[2]), ushort4(p[3])}};
    }
    static METAL_FUNC void decode(raw r, uint, thread float4 *v) {
        for (int i = 0; i < 4; i++) v[i] = as_type<float4>(uint4(r.u[i]) << 16u);
    }
    MLLM_CHUNK_FROM_RAW
    static METAL_FUNC float at(device const uchar *row, uint k) {
        return as_type<float>(uint(((device const ushort *)row)[k]) << 16u);
    }
};

/* Q8_0: {half d; int8 q[32]}, x = d * q.  Chunk c is half c & 1 of block c / 2. */
struct blk_q8_0 {
    MLLM_CONST int QK = 32, BYTES = 34;
    struct raw {
        half d;
        uint q[4];
    };
    static METAL_FUNC raw load(device const uchar *row, uint c) {
        device const uchar *b = row + (c / 2) * BYTES;
        device const uchar *q = b + 2 + 16 * (c & 1);   // 2-byte aligned
        return raw{*(device const half *)b, {u16x2(q), u16x2(q + 4), u16x2(q + 8), u16x2(q + 12)}};
    }
    static METAL_FUNC void decode(raw r, uint, thread float4 *v) {
        const float d = float(r.d);
        for (int i = 0; i < 4; i++) v[i] = float4(as_type<char4>(r.q[i])) * d;
    }
    MLLM_CHUNK_FROM_RAW
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q8_0>(row, k); }
};

/* Q4_0: {half d; uint8 q[16]}, element j < 16 is the low nibble of q[j], j >= 16 the high nibble of
   q[j - 16]; x = d * (nibble - 8).  Chunk c & 1 selects the nibble. */
struct blk_q4_0 {
    MLLM_CONST int QK = 32, BYTES = 18;
    struct raw {
        half d;
        uint q[4];
    };
    static METAL_FUNC raw load(device const uchar *row, uint c) {
        device const uchar *b = row + (c / 2) * BYTES;   // 2-byte aligned
        return raw{*(device const half *)b, {u16x2(b + 2), u16x2(b + 6), u16x2(b + 10), u16x2(b + 14)}};
    }
    static METAL_FUNC void decode(raw r, uint c, thread float4 *v) {
        const float d = float(r.d);
        const uint sh = 4 * (c & 1);
        for (int i = 0; i < 4; i++) v[i] = (nib4(r.q[i], sh) - 8.0f) * d;
    }
    MLLM_CHUNK_FROM_RAW
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q4_0>(row, k); }
};

/* Q4_1: {half d, m; uint8 q[16]}, nibbles as Q4_0; x = d * nibble + m. */
struct blk_q4_1 {
    MLLM_CONST int QK = 32, BYTES = 20;
    struct raw {
        half2 dm;
        uint q[4];
    };
    static METAL_FUNC raw load(device const uchar *row, uint c) {
        device const uchar *b = row + (c / 2) * BYTES;   // 20-byte blocks: 4-byte aligned
        device const uint *q = (device const uint *)(b + 4);
        return raw{*(device const half2 *)b, {q[0], q[1], q[2], q[3]}};
    }
    static METAL_FUNC void decode(raw r, uint c, thread float4 *v) {
        const float2 dm = float2(r.dm);
        const uint sh = 4 * (c & 1);
        for (int i = 0; i < 4; i++) v[i] = nib4(r.q[i], sh) * dm.x + dm.y;
    }
    MLLM_CHUNK_FROM_RAW
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q4_1>(row, k); }
};

/* Q5_0: {half d; uint8 qh[4]; uint8 q[16]}: nibbles as Q4_0, and bit j of the 32-bit qh is bit 4 of
   element j (chunk c & 1 takes the high half of qh); x = d * (q - 16).  22-byte blocks leave qh unaligned,
   so it is read byte by byte. */
METAL_FUNC uint qh32(device const uchar *p) { return uint(p[0]) | uint(p[1]) << 8 | uint(p[2]) << 16 | uint(p[3]) << 24; }

struct blk_q5_0 {
    MLLM_CONST int QK = 32, BYTES = 22;
    MLLM_RAW_POINTER
    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {
        device const uchar *b = row + (c / 2) * BYTES;
        const float d = float(*(device const half *)b);
        const uint sh = 4 * (c & 1), qh = qh32(b + 2) >> (16 * (c & 1));
        device const packed_uchar4 *q = (device const packed_uchar4 *)(b + 6);
        for (uint i = 0; i < 4; i++) {
            const uint4 hi = (uint4(qh) >> (uint4(0, 1, 2, 3) + 4 * i)) & 1u;
            v[i] = (float4(((uint4(uchar4(q[i])) >> sh) & 15u) | hi << 4u) - 16.0f) * d;
        }
    }
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q5_0>(row, k); }
};

/* Q5_1: {half d, m; uint8 qh[4]; uint8 q[16]}, quants as Q5_0 without the offset; x = d * q + m. */
struct blk_q5_1 {
    MLLM_CONST int QK = 32, BYTES = 24;
    MLLM_RAW_POINTER
    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {
        device const uchar *b = row + (c / 2) * BYTES;
        const float d = float(((device const half *)b)[0]), m = float(((device const half *)b)[1]);
        const uint sh = 4 * (c & 1), qh = qh32(b + 4) >> (16 * (c & 1));
        device const packed_uchar4 *q = (device const packed_uchar4 *)(b + 8);
        for (uint i = 0; i < 4; i++) {
            const uint4 hi = (uint4(qh) >> (uint4(0, 1, 2, 3) + 4 * i)) & 1u;
            v[i] = float4(((uint4(uchar4(q[i])) >> sh) & 15u) | hi << 4u) * d + m;
        }
    }
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q5_1>(row, k); }
};

/* IQ4_NL and IQ4_XS: a nibble picks one of 16 non-linear levels (GGUF's kvalues_iq4nl).  short, not
   char: the emulator compiles this as C++, where plain char is unsigned on arm64. */
METAL_FUNC float4 iq4nl_levels(uint4 n) {
    MLLM_CONST short L[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    return float4(L[n.x], L[n.y], L[n.z], L[n.w]);
}

/* IQ4_NL: {half d; uint8 q[16]}, nibbles as Q4_0; x = d * level[nibble]. */
struct blk_iq4_nl {
    MLLM_CONST int QK = 32, BYTES = 18;
    MLLM_RAW_POINTER
    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {
        device const uchar *b = row + (c / 2) * BYTES;
        const float d = float(*(device const half *)b);
        const uint sh = 4 * (c & 1);
        device const packed_uchar4 *q = (device const packed_uchar4 *)(b + 2);
        for (int i = 0; i < 4; i++) v[i] = iq4nl_levels((uint4(uchar4(q[i])) >> sh) & 15u) * d;
    }
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_iq4_nl>(row, k); }
};

/* Q2_K super-block of 256: {uint8 scales[16]; uint8 q[64]; half d, dmin}.  Chunk c is sub-block c: 4-bit
   scale sc and min m in the low and high nibble of scales[c]; x = d * sc * q - dmin * m.  The 2-bit quants:
   element 128h + 32j + l is bits 2j..2j+1 of q[32h + l], so chunk c reads h = c / 8, j = (c % 8) / 2. */
struct blk_q2_k {
    MLLM_CONST int QK = 256, BYTES = 84;
    MLLM_RAW_POINTER
    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {
        device const uchar *b = row + (c / 16) * BYTES;
        c %= 16;
        const float d = float(((device const half *)(b + 80))[0]) * float(b[c] & 15);
        const float m = float(((device const half *)(b + 80))[1]) * float(b[c] >> 4);
        const uint sh = 2 * ((c % 8) / 2);
        device const packed_uchar4 *q = (device const packed_uchar4 *)(b + 16 + 32 * (c / 8) + 16 * (c & 1));
        for (int i = 0; i < 4; i++) v[i] = float4((uint4(uchar4(q[i])) >> sh) & 3u) * d - m;
    }
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q2_k>(row, k); }
};

/* Q3_K super-block of 256: {uint8 hmask[32]; uint8 q[64]; uint8 scales[12]; half d}.  Low 2 bits of each
   quant as Q2_K; element 128h + 32j + l has bit 4h + j of hmask[l] as its third bit, and q = those 3 bits
   - 4.  Sixteen 6-bit scales (offset 32): scale c has the nibble c / 8 of scales[c % 8] as its low 4 bits,
   bits 2(c / 4)..+1 of scales[8 + c % 4] above them; x = d * (sc - 32) * q. */
struct blk_q3_k {
    MLLM_CONST int QK = 256, BYTES = 110;
    MLLM_RAW_POINTER
    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {
        device const uchar *b = row + (c / 16) * BYTES;
        c %= 16;
        device const uchar *sc = b + 96;
        const uint s = ((sc[c % 8] >> (4 * (c / 8))) & 15) | ((sc[8 + c % 4] >> (2 * (c / 4))) & 3) << 4;
        const float d = float(*(device const half *)(b + 108)) * float(int(s) - 32);
        const uint h = c / 8, j = (c % 8) / 2, l0 = 16 * (c & 1);
        device const packed_uchar4 *q = (device const packed_uchar4 *)(b + 32 + 32 * h + l0);
        device const packed_uchar4 *hm = (device const packed_uchar4 *)(b + l0);
        for (int i = 0; i < 4; i++) {
            const uint4 lo = (uint4(uchar4(q[i])) >> (2 * j)) & 3u, hi = (uint4(uchar4(hm[i])) >> (4 * h + j)) & 1u;
            v[i] = (float4(lo | hi << 2u) - 4.0f) * d;
        }
    }
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q3_k>(row, k); }
};

/* The 12-byte scale field of Q4_K and Q5_K: 6-bit scale and min of each of the 8 sub-blocks of 32.
   Sub-blocks 0-3 have them in the low 6 bits of bytes s and s + 4; 4-7 in the nibbles of byte s + 4,
   with the top 2 bits of bytes s - 4 and s above them.  k4_head takes the first 16 bytes of a block as
   one uint4 h (half d, dmin in h.x; the scale field in h.y..h.w) and gives d * scale and dmin * min. */
METAL_FUNC void k4_head(uint4 h, uint s, thread float &d, thread float &m) {
    const uint sh = 8 * (s & 3);
    const uint a = (h.y >> sh) & 255, b = (h.z >> sh) & 255, e = (h.w >> sh) & 255;
    // select, not ?:, so the code stays branch-free and the GEMV's loads can all go ahead of it
    const uint scale = select((e & 15) | (a >> 6) << 4, a & 63, s < 4);
    const uint min = select((e >> 4) | (b >> 6) << 4, b & 63, s < 4);
    const float2 dm = float2(as_type<half2>(h.x));
    d = dm.x * float(scale);
    m = dm.y * float(min);
}

/* Q4_K super-block of 256: {half d, dmin; uint8 scales[12]; uint8 q[128]}.  Eight sub-blocks of 32
   with 6-bit scale sc and min m packed in scales[]; x = d * sc * nibble - dmin * m.  Sub-block s uses
   the low (s even) or high (s odd) nibbles of q[32 * (s / 2) .. + 32). */
struct blk_q4_k {
    MLLM_CONST int QK = 256, BYTES = 144;
    struct raw {
        uint4 h, q;
    };
    static METAL_FUNC raw load(device const uchar *row, uint c) {
        device const uchar *b = row + (c / 16) * BYTES;   // 144-byte blocks: 16-byte aligned
        c %= 16;
        return raw{*(device const uint4 *)b, *(device const uint4 *)(b + 16 + 32 * (c / 4) + 16 * (c & 1))};
    }
    static METAL_FUNC void decode(raw r, uint c, thread float4 *v) {
        c %= 16;
        float d, m;
        k4_head(r.h, c / 2, d, m);
        const uint sh = 4 * ((c / 2) & 1);
        v[0] = nib4(r.q.x, sh) * d - m, v[1] = nib4(r.q.y, sh) * d - m;
        v[2] = nib4(r.q.z, sh) * d - m, v[3] = nib4(r.q.w, sh) * d - m;
    }
    MLLM_CHUNK_FROM_RAW
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q4_k>(row, k); }
};

/* Q5_K super-block of 256: {half d, dmin; uint8 scales[12]; uint8 qh[32]; uint8 q[128]}: Q4_K plus a
   fifth bit, bit s of qh[l] for element l of sub-block s. */
struct blk_q5_k {
    MLLM_CONST int QK = 256, BYTES = 176;
    struct raw {
        uint4 h, q, qh;
    };
    static METAL_FUNC raw load(device const uchar *row, uint c) {
        device const uchar *b = row + (c / 16) * BYTES;   // 176-byte blocks: 16-byte aligned
        c %= 16;
        return raw{*(device const uint4 *)b, *(device const uint4 *)(b + 48 + 32 * (c / 4) + 16 * (c & 1)),
                   *(device const uint4 *)(b + 16 + 16 * (c & 1))};
    }
    MLLM_CHUNK_FROM_RAW
    static METAL_FUNC void decode(raw r, uint c, thread float4 *v) {
        c %= 16;
        const uint s = c / 2;
        float d, m;
        k4_head(r.h, s, d, m);
        const uint sh = 4 * (s & 1);
        const uint4 q = r.q, qh = r.qh;
        v[0] = u8x4(((q.x >> sh) & 0x0F0F0F0Fu) | ((qh.x >> s) & 0x01010101u) << 4) * d - m;
        v[1] = u8x4(((q.y >> sh) & 0x0F0F0F0Fu) | ((qh.y >> s) & 0x01010101u) << 4) * d - m;
        v[2] = u8x4(((q.z >> sh) & 0x0F0F0F0Fu) | ((qh.z >> s) & 0x01010101u) << 4) * d - m;
        v[3] = u8x4(((q.w >> sh) & 0x0F0F0F0Fu) | ((qh.w >> s) & 0x01010101u) << 4) * d - m;
    }
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q5_k>(row, k); }
};

/* Q6_K super-block of 256: {uint8 ql[128], qh[64]; int8 scales[16]; half d}.  Each 128-element half h
   uses ql[64h..], qh[32h..]; its quarter t (32 elements) takes nibble t / 2 of ql[64h + 32(t & 1) + l]
   and bits 2t..2t+1 of qh[32h + l] as the 6-bit q; x = d * scales[chunk] * (q - 32). */
struct blk_q6_k {
    MLLM_CONST int QK = 256, BYTES = 210;
    struct raw {
        half d;
        char sc;
        uint ql[4], qh[4];
    };
    static METAL_FUNC raw load(device const uchar *row, uint c) {
        device const uchar *b = row + (c / 16) * BYTES;
        c %= 16;
        const uint h = c / 8, t = (c % 8) / 2, l0 = 16 * (c & 1);
        device const uchar *ql = b + 64 * h + 32 * (t & 1) + l0, *qh = b + 128 + 32 * h + l0;   // 2-byte aligned
        return raw{*(device const half *)(b + 208), ((device const char *)(b + 192))[c],
                   {u16x2(ql), u16x2(ql + 4), u16x2(ql + 8), u16x2(ql + 12)},
                   {u16x2(qh), u16x2(qh + 4), u16x2(qh + 8), u16x2(qh + 12)}};
    }
    static METAL_FUNC void decode(raw r, uint c, thread float4 *v) {
        c %= 16;
        const uint t = (c % 8) / 2;
        const float d = float(r.d) * float(r.sc);
        const uint shl = 4 * (t / 2), shh = 2 * t;
        for (int i = 0; i < 4; i++) {
            const uint q = ((r.ql[i] >> shl) & 0x0F0F0F0Fu) | ((r.qh[i] >> shh) & 0x03030303u) << 4;
            v[i] = (u8x4(q) - 32.0f) * d;
        }
    }
    MLLM_CHUNK_FROM_RAW
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_q6_k>(row, k); }
};

/* IQ4_XS super-block of 256: {half d; ushort scales_h; uint8 scales_l[4]; uint8 q[128]}.  Eight blocks
   of 32 in IQ4_NL's nibble layout (16 bytes each); block k's 6-bit scale is nibble k % 2 of scales_l[k / 2]
   with bits 2k..2k+1 of scales_h above it; x = d * (scale - 32) * level[nibble]. */
struct blk_iq4_xs {
    MLLM_CONST int QK = 256, BYTES = 136;
    MLLM_RAW_POINTER
    static METAL_FUNC void chunk(device const uchar *row, uint c, thread float4 *v) {
        device const uchar *b = row + (c / 16) * BYTES;
        c %= 16;
        const uint k = c / 2, hs = ((device const ushort *)b)[1];
        const uint s = ((b[4 + k / 2] >> (4 * (k % 2))) & 15) | ((hs >> (2 * k)) & 3) << 4;
        const float d = float(*(device const half *)b) * float(int(s) - 32);
        const uint sh = 4 * (c & 1);
        device const packed_uchar4 *q = (device const packed_uchar4 *)(b + 8 + 16 * k);
        for (int i = 0; i < 4; i++) v[i] = iq4nl_levels((uint4(uchar4(q[i])) >> sh) & 15u) * d;
    }
    static METAL_FUNC float at(device const uchar *row, uint k) { return chunk_elem<blk_iq4_xs>(row, k); }
};

/* ---- matmul inner loops, shared by the plain (gemv.metal, gemm.metal) and grouped (moe.metal) kernels */

/* RMSNorm's 1 / sqrt(mean(x^2) + eps) of a row of n floats, computed by a GEMV threadgroup (32 * NSG
   threads) in the order rms_norm_mul sums it with nt threads (a multiple of 32, <= 1024), so a product
   that normalizes its own x (gemv_rows' nw) gets the bits of rms_norm_mul then gemv: thread t plays the
   threads t, t + 32 NSG, ... of that launch, which sit on its own lane, so every simd_sum adds the same 32
   values in the same order, and the per-simdgroup sums meet as tg_sum meets them.  scratch: 32 floats. */
METAL_FUNC float rms_scale(device const float *x, uint n, float eps, uint nt, threadgroup float *scratch, ushort sg,
                           ushort lane) {
    const uint n4 = n / 4, nsg = nt / 32;
    device const packed_float4 *x4 = (device const packed_float4 *)x;
    for (uint vs = sg; vs < nsg; vs += MLLM__GEMV_NSG) {   // the launch's simdgroup vs, lane for lane
        const uint vt = 32 * vs + lane;
        float ss = 0.0f;
        for (uint i = vt; i < n4; i += nt) {
            const float4 v = x4[i];
            ss += dot(v, v);
        }
        for (uint i = 4 * n4 + vt; i < n; i += nt) ss += x[i] * x[i];
        ss = simd_sum(ss);
        if (lane == 0) scratch[vs] = ss;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    const float ss = simd_sum(lane < nsg ? scratch[lane] : 0.0f);
    return rsqrt(ss / float(n) + eps);
}

/* GEMV core: the threadgroup's 32 * NSG threads dot RT = MLLM__GEMV_NSG * MLLM__GEMV_ROWS weight rows
   (row i at wr.p[i]) with xm, and leave row i's per-simdgroup sums in red[j * RT + i] (gemv_sum adds
   them).  All threads split K: thread t walks the 16-element chunks t, t + 32 NSG, ... of every row, loads
   its x chunk once into registers and reuses it for all RT rows, and keeps per-thread partial sums; then
   one simd_sum per row.  Decode is bound by memory latency: each thread loads chunk c of all RT rows
   (raw bytes, B::load) before it uses any (and the first ones before the norm's pass over x), and row
   i's next chunk right after decoding its current one, so RT loads are in flight per thread instead of
   one row waiting on the last, in few registers.
   With nw, x is a row of the residual stream, used as RMSNorm makes it: (x * scale) * nw, scale computed
   here (rms_scale, with eps and rms_norm_mul's thread count nt; scratch: 32 floats). */
struct gemv_rowptrs {
    device const uchar *p[MLLM__GEMV_NSG * MLLM__GEMV_ROWS];
};

template <typename B>
METAL_FUNC void gemv_dots(thread const gemv_rowptrs &wr, device const float *xm, uint K, threadgroup float *red,
                          ushort sg, ushort lane, device const float *nw = nullptr, float eps = 0.0f, uint nt = 0,
                          threadgroup float *scratch = nullptr) {
    const uint RT = MLLM__GEMV_NSG * MLLM__GEMV_ROWS, T = 32 * MLLM__GEMV_NSG;
    const uint t = sg * 32u + lane, nch = K / 16;
    float acc[RT];
    _Pragma("unroll") for (uint i = 0; i < RT; i++) acc[i] = 0.0f;
    typename B::raw r[RT];
    if (t < nch) _Pragma("unroll") for (uint i = 0; i < RT; i++) r[i] = B::load(wr.p[i], t);
    const float scale = nw ? rms_scale(xm, K, eps, nt, scratch, sg, lane) : 1.0f;
    for (uint c = t; c < nch; c += T) {
        float4 x0, x1, x2, x3;
        if (B::QK > 1) {   // K is a multiple of 32: x rows are 128-byte aligned, so whole float4 loads
            device const float4 *x4 = (device const float4 *)xm + 4 * c;
            x0 = x4[0], x1 = x4[1], x2 = x4[2], x3 = x4[3];
        } else {
            device const packed_float4 *x4 = (device const packed_float4 *)xm + 4 * c;
            x0 = x4[0], x1 = x4[1], x2 = x4[2], x3 = x4[3];
        }
        if (nw) {   // as rms_norm_mul: v = x * scale; v *= w
            device const packed_float4 *w4 = (device const packed_float4 *)nw + 4 * c;
            x0 *= scale, x1 *= scale, x2 *= scale, x3 *= scale;
            x0 *= float4(w4[0]), x1 *= float4(w4[1]), x2 *= float4(w4[2]), x3 *= float4(w4[3]);
        }
        // row i's chunk c is decoded just before its dots, then the register takes row i's next chunk
        const bool more = c + T < nch;
        _Pragma("unroll") for (uint i = 0; i < RT; i++) {
            float4 v[4];
            B::decode(r[i], c, v);
            if (more) r[i] = B::load(wr.p[i], c + T);
            acc[i] += dot(v[0], x0) + dot(v[1], x1) + dot(v[2], x2) + dot(v[3], x3);
        }
    }
    // Float types only: the elements after the last whole chunk.
    if (B::QK == 1)
        for (uint k = 16 * nch + t; k < K; k += T) {
            float xk = xm[k];
            if (nw) xk = xk * scale, xk *= nw[k];
            _Pragma("unroll") for (uint i = 0; i < RT; i++) acc[i] += B::at(wr.p[i], k) * xk;
        }

    _Pragma("unroll") for (uint i = 0; i < RT; i++) {
        const float s = simd_sum(acc[i]);
        if (lane == 0) red[sg * RT + i] = s;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
}

/* Row i's dot product from gemv_dots' per-simdgroup sums (after its barrier, on any thread). */
METAL_FUNC float gemv_sum(threadgroup const float *red, uint i) {
    float s = 0.0f;
    for (uint j = 0; j < MLLM__GEMV_NSG; j++) s += red[j * MLLM__GEMV_NSG * MLLM__GEMV_ROWS + i];
    return s;
}

/* GEMV: threadgroup tgx computes ym[n] = dot(W[n], xm) (+ rm[n]) for its RT rows n of W (gemv_dots; red:
   NSG * RT floats); thread t stores row n0 + t.  Rows past N are read as row N - 1 (never stored).  The
   whole threadgroup leaves together (n0 is per threadgroup) before the barrier. */
template <typename B>
METAL_FUNC void gemv_rows(device const uchar *w, device const float *xm, device float *ym, device const float *rm,
                          uint K, uint N, uint row_bytes, threadgroup float *red, uint tgx, ushort sg, ushort lane,
                          device const float *nw = nullptr, float eps = 0.0f, uint nt = 0,
                          threadgroup float *scratch = nullptr) {
    const uint RT = MLLM__GEMV_NSG * MLLM__GEMV_ROWS;
    const uint n0 = tgx * RT;
    if (n0 >= N) return;
    const uint nr = min(RT, N - n0);           // rows of this threadgroup inside W
    gemv_rowptrs wr;
    _Pragma("unroll") for (uint i = 0; i < RT; i++) wr.p[i] = w + (ulong)(n0 + min(i, nr - 1)) * row_bytes;
    gemv_dots<B>(wr, xm, K, red, sg, lane, nw, eps, nt, scratch);
    const uint t = sg * 32u + lane;
    if (t < nr) {
        const float s = gemv_sum(red, t);
        ym[n0 + t] = rm ? s + rm[n0 + t] : s;
    }
}

/* GEMV of up to R = MLLM__GEMV_MULTI_R activation rows at once (decode batches: one token of each of
   several sequences): threadgroup tgx computes ym[m][n] = dot(W[n], xm[m]) (+ rm[m][n]) for m < r <= R and
   its RT rows n, rows m K (x) or N (y, r) floats apart.  Each thread dequantizes its weight chunks once
   into registers (RT x 16 floats) and dots them with the r activation rows, so W is read once per R
   tokens instead of once per token; RT x R partial sums per thread.  Per token everything else is
   gemv_rows's: the same K split over the 32 * NSG threads, the same chunk order and expression per
   thread, the same simd_sum and sum over simdgroups, so each row's result is bit for bit the one
   gemv_rows gives it alone (a sequence decoded in a batch equals its solo run).  red: NSG * RT * R
   floats.  r is uniform over the threadgroup (the simd_sums stay convergent). */
template <typename B>
METAL_FUNC void gemv_rows_multi(device const uchar *w, device const float *xm, device float *ym, device const float *rm,
                                uint K, uint N, uint row_bytes, uint r, threadgroup float *red, uint tgx, ushort sg,
                                ushort lane) {
    const uint RT = MLLM__GEMV_NSG * MLLM__GEMV_ROWS, R = MLLM__GEMV_MULTI_R, T = 32 * MLLM__GEMV_NSG;
    const uint n0 = tgx * RT;
    if (n0 >= N) return;
    const uint nr = min(RT, N - n0);
    const uint t = sg * 32u + lane;
    device const uchar *wr[RT];
    _Pragma("unroll") for (uint i = 0; i < RT; i++) wr[i] = w + (ulong)(n0 + min(i, nr - 1)) * row_bytes;

    float acc[RT][R];
    _Pragma("unroll") for (uint i = 0; i < RT; i++) _Pragma("unroll") for (uint m = 0; m < R; m++) acc[i][m] = 0.0f;
    const uint nch = K / 16;
    for (uint c = t; c < nch; c += T) {
        float4 v[RT][4];
        _Pragma("unroll") for (uint i = 0; i < RT; i++) B::chunk(wr[i], c, v[i]);
        _Pragma("unroll") for (uint m = 0; m < R; m++) {
            if (m >= r) break;
            float4 x0, x1, x2, x3;
            if (B::QK > 1) {   // K is a multiple of 32: x rows are 128-byte aligned
                device const float4 *x4 = (device const float4 *)(xm + (ulong)m * K) + 4 * c;
                x0 = x4[0], x1 = x4[1], x2 = x4[2], x3 = x4[3];
            } else {
                device const packed_float4 *x4 = (device const packed_float4 *)(xm + (ulong)m * K) + 4 * c;
                x0 = x4[0], x1 = x4[1], x2 = x4[2], x3 = x4[3];
            }
            _Pragma("unroll") for (uint i = 0; i < RT; i++)
                acc[i][m] += dot(v[i][0], x0) + dot(v[i][1], x1) + dot(v[i][2], x2) + dot(v[i][3], x3);
        }
    }
    if (B::QK == 1)   // float types: the elements after the last whole chunk
        for (uint k = 16 * nch + t; k < K; k += T) {
            float wk[RT];
            _Pragma("unroll") for (uint i = 0; i < RT; i++) wk[i] = B::at(wr[i], k);
            _Pragma("unroll") for (uint m = 0; m < R; m++) {
                if (m >= r) break;
                const float xk = xm[(ulong)m * K + k];
                _Pragma("unroll") for (uint i = 0; i < RT; i++) acc[i][m] += wk[i] * xk;
            }
        }

    _Pragma("unroll") for (uint i = 0; i < RT; i++) _Pragma("unroll") for (uint m = 0; m < R; m++) {
        if (m >= r) break;
        const float s = simd_sum(acc[i][m]);
        if (lane == 0) red[(sg * RT + i) * R + m] = s;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint q = t; q < RT * R; q += T) {
        const uint i = q / R, m = q % R;
        if (i < nr && m < r) {
            float s = 0.0f;
            for (uint j = 0; j < MLLM__GEMV_NSG; j++) s += red[(j * RT + i) * R + m];
            const ulong o = (ulong)m * N + n0 + i;
            ym[o] = rm ? s + rm[o] : s;
        }
    }
}

/* GEMM: one threadgroup (MLLM__GEMM_THREADS = 4 simdgroups, 2 x 2) accumulates a BM x BN tile
   acc = X W^T for weight rows [n0, n0 + BN); each simdgroup owns 16 x 32 of it as 2 x 4 simdgroup_matrix
   8x8 accumulators (acc[4 * i + j]).  The K loop stages BM x BK of X and BN x BK of W per step.
   Which activation rows form the tile is the caller's business: thread tid stages row tid / 4 of the
   tile from xrow (NULL: a row outside the tile, zero-filled).  Edges are zero-filled, so any N and any
   float-type K work.  The caller stores acc (the barrier at the end of each step lets it reuse Xs/Ws). */
enum { MLLM__GEMM_BKP = MLLM__GEMM_BK + 4 };   // padded tile rows: spreads the loads over more banks

/* gemm_tile's loads for the step at k0: this thread's weight chunk as raw bytes (when whole inside the
   row; the edges are read element by element when decoded) and its 8 floats of X (zero past K). */
template <typename B>
METAL_FUNC void gemm_stage_load(device const uchar *wrow, bool wok, device const float *xrow, bool xok, uint K, uint k0,
                                uint wh, uint xq, thread typename B::raw &wraw, thread float4 *xu) {
    const uint kw = k0 + 16 * wh;
    if (wok && kw + 16 <= K) wraw = B::load(wrow, kw / 16);
    for (uint j = 0; j < 2; j++) {
        const uint kx = k0 + 8 * xq + 4 * j;
        if (xok && kx + 4 <= K) xu[j] = *(device const packed_float4 *)(xrow + kx);
        else _Pragma("unroll") for (uint i = 0; i < 4; i++) xu[j][i] = xok && kx + i < K ? xrow[kx + i] : 0.0f;
    }
}

template <typename B>
METAL_FUNC void gemm_tile(device const uchar *w, uint N, uint K, uint row_bytes, uint n0, device const float *xrow,
                          threadgroup float (*Xs)[MLLM__GEMM_BKP], threadgroup float (*Ws)[MLLM__GEMM_BKP],
                          thread simdgroup_matrix<float, 8, 8> *acc, ushort tid, ushort sg) {
    const uint BK = MLLM__GEMM_BK, BKP = MLLM__GEMM_BKP;
    const uint sm = sg / 2, sn = sg % 2;      // this simdgroup's 16 x 32 part of the tile
    // What this thread stages: half (16 elements, one loader chunk) of one W row, 8 floats of one X row.
    const uint wn = tid / 2, wh = tid % 2;
    const uint xm = tid / 4, xq = tid % 4;
    const bool wok = n0 + wn < N, xok = xrow != nullptr;
    device const uchar *wrow = w + (ulong)(wok ? n0 + wn : 0) * row_bytes;

    for (int i = 0; i < 8; i++) acc[i] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);

    // Software pipelined: the loads of step k0 + BK (raw weight bytes, 8 floats of X) are issued before
    // step k0's products and decoded into the tiles after them, so their latency hides behind the math.
    typename B::raw wraw = {};
    float4 xu[2];
    gemm_stage_load<B>(wrow, wok, xrow, xok, K, 0, wh, xq, wraw, xu);
    for (uint k0 = 0; k0 < K; k0 += BK) {
        const uint kw = k0 + 16 * wh;
        float4 v[4];
        if (wok && kw + 16 <= K) {
            B::decode(wraw, kw / 16, v);
        } else {
            _Pragma("unroll") for (uint i = 0; i < 16; i++)   // unrolled: v stays in registers (CUDA)
                v[i / 4][i % 4] = wok && kw + i < K ? B::at(wrow, kw + i) : 0.0f;
        }
        for (int i = 0; i < 4; i++) *(threadgroup float4 *)&Ws[wn][16 * wh + 4 * i] = v[i];
        for (uint j = 0; j < 2; j++) *(threadgroup float4 *)&Xs[xm][8 * xq + 4 * j] = xu[j];
        threadgroup_barrier(mem_flags::mem_threadgroup);   // tiles complete before anyone multiplies
        if (k0 + BK < K) gemm_stage_load<B>(wrow, wok, xrow, xok, K, k0 + BK, wh, xq, wraw, xu);

        _Pragma("unroll") for (uint kk = 0; kk < BK; kk += 8) {   // unrolled: one step's loads overlap another's products
            // Unrolled so that acc, xa and wb stay in registers (CUDA's compiler left them in local memory).
            simdgroup_matrix<float, 8, 8> xa[2], wb[4];
            _Pragma("unroll") for (int i = 0; i < 2; i++) simdgroup_load(xa[i], &Xs[16 * sm + 8 * i][kk], BKP);
            // W is stored row = output, so load it transposed: wb[j](k, n) = Ws[n][k].
            _Pragma("unroll") for (int j = 0; j < 4; j++)
                simdgroup_load(wb[j], &Ws[32 * sn + 8 * j][kk], BKP, ulong2(0, 0), true);
            _Pragma("unroll") for (int i = 0; i < 2; i++) _Pragma("unroll") for (int j = 0; j < 4; j++)
                simdgroup_multiply_accumulate(acc[4 * i + j], xa[i], wb[j], acc[4 * i + j]);
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);   // everyone done reading before the next stage
    }
}

/* RoPE: turns pair i of the head at h by p * freq_base^(-2i / n_rot) (p: the position times freq_scale),
   divided by factor[i] when factors is given; pairs (2i, 2i + 1), or (i, i + n_rot / 2) for NeoX.
   precise:: because the angle reaches thousands of radians at long positions. */
METAL_FUNC void rope_pair(device float *h, uint i, float p, uint n_rot, float freq_base, device const float *factors,
                          bool neox) {
    float theta = p * precise::pow(freq_base, -float(2 * i) / float(n_rot));
    if (factors) theta /= factors[i];
    const float c = precise::cos(theta), s = precise::sin(theta);
    const uint i0 = neox ? i : 2 * i, i1 = neox ? i + n_rot / 2 : 2 * i + 1;
    const float x0 = h[i0], x1 = h[i1];
    h[i0] = x0 * c - x1 * s;
    h[i1] = x0 * s + x1 * c;
}

/* The FFN gates, as the elementwise swiglu/geglu kernels and the CPU backend compute them:
   silu(g) = g / (1 + e^-g); GELU in its tanh form 0.5 g (1 + tanh(sqrt(2 / pi) (g + 0.044715 g^3)))
   (mllm__geglu); precise::tanh because a fast tanh built from exp overflows to NaN for large arguments. */
METAL_FUNC float4 silu(float4 g) { return g / (1.0f + exp(-g)); }
METAL_FUNC float4 gelu_tanh(float4 g) {
    return 0.5f * g * (1.0f + precise::tanh(0.7978845608f * (g + 0.044715f * g * g * g)));
}

/* Row reductions over a whole threadgroup (<= 1024 threads = 32 simdgroups): simd_* inside each
   simdgroup, then one slot per simdgroup in threadgroup memory.  All threads get the result.  The
   scratch array must hold 32 floats; the leading barrier lets callers reuse it back to back. */
METAL_FUNC float tg_sum(float v, threadgroup float *scratch, ushort sg, ushort lane, ushort nsg) {
    v = simd_sum(v);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (lane == 0) scratch[sg] = v;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    return simd_sum(lane < nsg ? scratch[lane] : 0.0f);
}

METAL_FUNC float tg_max(float v, threadgroup float *scratch, ushort sg, ushort lane, ushort nsg) {
    v = simd_max(v);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (lane == 0) scratch[sg] = v;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    return simd_max(lane < nsg ? scratch[lane] : -INFINITY);
}
#endif /* __METAL_VERSION__ */
#endif /* MLLM_KERNELS_COMMON_H */
