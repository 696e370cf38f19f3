/* gen_tiny: writes tiny random-weight GGUF models of the architectures and weight types that
   ../shared/testdata/tiny lacks, byte for byte the same on every machine (integer PRNG, no libm in the
   weights), so that llama.cpp's outputs on them (tests/fixtures/tiny-extra, made once with
   tests/peer/gen_extra_fixtures.sh) stay valid for the files a test run regenerates.

       gen_tiny VOCAB_GGUF OUT.gguf NAME
       gen_tiny --list

   VOCAB_GGUF donates its tokenizer.* metadata (the 4096-token SentencePiece vocabulary of the tiny
   models).  Quantized tensors are random blocks (random bits, then a fixed small scale written into each
   block's scale field), so no quantizer is involved: any implementation must decode the same bytes.
   Written from the GGUF specification; deliberately independent of metalllm.h.  Build it with
   -ffp-contract=off (tests/tiny.mk does): a fused multiply-add would change the F32 weights' bits. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { T_F32 = 0, T_F16 = 1, T_Q8_0 = 8, T_Q2_K = 10, T_Q3_K = 11, T_IQ4_NL = 20, T_IQ4_XS = 23 };

static uint64_t rng_state;
static uint64_t rng_next(void) {   /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
/* uniform in [-1, 1) with 24 bits, exact in float */
static float rng_sym(void) { return (float)((int32_t)(rng_next() >> 40) - (1 << 23)) / (float)(1 << 23); }

static uint16_t f16_bits(float f) {   /* only used for the exact small constants below */
    uint32_t x;
    int e;
    memcpy(&x, &f, 4);
    e = (int)((x >> 23) & 0xff) - 127 + 15;
    if (f == 0) return 0;
    if (e <= 0 || e >= 31) { fprintf(stderr, "f16 out of range\n"); exit(1); }
    return (uint16_t)(((x >> 16) & 0x8000) | ((uint32_t)e << 10) | ((x >> 13) & 0x3ff));
}

typedef struct { int type, blk, bytes; uint16_t d, dmin; int d_off, dmin_off; } tinfo;
static tinfo type_info(int t) {
    tinfo i;
    memset(&i, 0, sizeof i);
    i.type = t;
    i.dmin_off = -1;
    switch (t) {
    case T_F32: i.blk = 1; i.bytes = 4; break;
    case T_Q8_0: i.blk = 32; i.bytes = 34; i.d_off = 0; i.d = f16_bits(1.0f / 4096); break;
    case T_Q2_K: i.blk = 256; i.bytes = 84; i.d_off = 80; i.dmin_off = 82;
        i.d = f16_bits(1.0f / 1024); i.dmin = f16_bits(3.0f / 2048); break;   /* dmin * E[m] = d * E[sc] * E[q]: zero mean */
    case T_Q3_K: i.blk = 256; i.bytes = 110; i.d_off = 108; i.d = f16_bits(1.0f / 2048); break;
    case T_IQ4_NL: i.blk = 32; i.bytes = 18; i.d_off = 0; i.d = f16_bits(1.0f / 4096); break;
    case T_IQ4_XS: i.blk = 256; i.bytes = 136; i.d_off = 0; i.d = 0x0100; break;   /* 2^-16, an f16 subnormal */
    default: fprintf(stderr, "type %d\n", t); exit(1);
    }
    return i;
}

/* ---- tensors ---- */
typedef struct { char name[64]; int n_dims; uint64_t ne[3]; int type; uint8_t *data; size_t size; } tensor;
static tensor tensors[256];
static int n_tensors;

/* kind 0: matrix/bias-like (small, zero mean); kind 1: norm weight (1 + small); kind 2: given values */
static void add_tensor(const char *name, int type, uint64_t ne0, uint64_t ne1, int kind, const float *vals) {
    tensor *t = &tensors[n_tensors++];
    tinfo ti = type_info(type);
    uint64_t n = ne0 * ne1, i;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = ne1 > 1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->type = type;
    if (ne0 % (uint64_t)ti.blk) { fprintf(stderr, "%s: %llu columns not a multiple of %d\n", name, (unsigned long long)ne0, ti.blk); exit(1); }
    t->size = (size_t)(n / (uint64_t)ti.blk) * (size_t)ti.bytes;
    t->data = (uint8_t *)malloc(t->size);
    if (type == T_F32) {
        for (i = 0; i < n; i++) {
            float v = kind == 2 ? vals[i] : kind == 1 ? 1.0f + 0.03f * rng_sym() : 0.03f * rng_sym();
            memcpy(t->data + 4 * i, &v, 4);
        }
        return;
    }
    for (i = 0; i < t->size; i += 8) {
        uint64_t r = rng_next();
        memcpy(t->data + i, &r, t->size - i < 8 ? t->size - i : 8);
    }
    for (i = 0; i < t->size; i += (uint64_t)ti.bytes) {   /* fixed scales, random sign for the symmetric types */
        uint16_t d = ti.d;
        if (ti.dmin_off < 0 && (rng_next() & 1)) d |= 0x8000;
        memcpy(t->data + i + ti.d_off, &d, 2);
        if (ti.dmin_off >= 0) memcpy(t->data + i + ti.dmin_off, &ti.dmin, 2);
    }
}

/* ---- metadata ---- */
static uint8_t *kv;
static size_t kv_n, kv_cap;
static int n_kv;
static void put(const void *p, size_t n) {
    if (kv_n + n > kv_cap) { kv_cap = (kv_n + n) * 2; kv = (uint8_t *)realloc(kv, kv_cap); }
    memcpy(kv + kv_n, p, n);
    kv_n += n;
}
static void put_u32(uint32_t v) { put(&v, 4); }
static void put_u64(uint64_t v) { put(&v, 8); }
static void put_str(const char *s) { put_u64(strlen(s)); put(s, strlen(s)); }
static void kv_u32(const char *k, uint32_t v) { put_str(k); put_u32(4); put_u32(v); n_kv++; }
static void kv_f32(const char *k, float v) { put_str(k); put_u32(6); put(&v, 4); n_kv++; }
static void kv_str(const char *k, const char *v) { put_str(k); put_u32(8); put_str(v); n_kv++; }

/* Copies every tokenizer.* key of the vocabulary file (raw bytes: key, type, value). */
static size_t vsize(uint32_t t) {
    static const size_t s[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? s[t] : 0;
}
static const uint8_t *src, *src_end;
static uint64_t rd64(const uint8_t **p) { uint64_t v; memcpy(&v, *p, 8); *p += 8; return v; }
static uint32_t rd32(const uint8_t **p) { uint32_t v; memcpy(&v, *p, 4); *p += 4; return v; }
static void skip_value(const uint8_t **p, uint32_t t) {
    if (*p > src_end) { fprintf(stderr, "vocab file truncated\n"); exit(1); }
    if (t == 8) { uint64_t n = rd64(p); *p += n; }
    else if (t == 9) {
        uint32_t et = rd32(p);
        uint64_t n = rd64(p), i;
        for (i = 0; i < n; i++) skip_value(p, et);
    } else if (vsize(t)) *p += vsize(t);
    else { fprintf(stderr, "bad value type %u\n", t); exit(1); }
}
static void copy_tokenizer(const char *path) {
    FILE *f = fopen(path, "rb");
    long size;
    uint8_t *buf;
    const uint8_t *p;
    uint64_t i, nkv;
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (uint8_t *)malloc((size_t)size);
    if (fread(buf, 1, (size_t)size, f) != (size_t)size || memcmp(buf, "GGUF", 4)) { fprintf(stderr, "%s: not a GGUF\n", path); exit(1); }
    fclose(f);
    src = buf;
    src_end = buf + size;
    p = buf + 16;
    nkv = rd64(&p);
    for (i = 0; i < nkv; i++) {
        const uint8_t *start = p;
        uint64_t kn = rd64(&p);
        int keep = kn > 10 && !memcmp(p, "tokenizer.", 10);
        uint32_t t;
        p += kn;
        t = rd32(&p);
        skip_value(&p, t);
        if (keep) { put(start, (size_t)(p - start)); n_kv++; }
    }
}

/* ---- models ---- */
#define NM(fmt, l) (snprintf(nm, sizeof nm, fmt, l), nm)

/* llama-shaped (the shared tiny models' shape): n_embd 256, n_ff 768, 4 heads / 2 KV heads of 64. */
static void gen_llama(int wt, int rope_freqs) {
    char nm[64];
    int l;
    kv_str("general.architecture", "llama");
    kv_u32("llama.context_length", 512);
    kv_u32("llama.embedding_length", 256);
    kv_u32("llama.block_count", 2);
    kv_u32("llama.feed_forward_length", 768);
    kv_u32("llama.attention.head_count", 4);
    kv_u32("llama.attention.head_count_kv", 2);
    kv_u32("llama.rope.dimension_count", 64);
    kv_f32("llama.rope.freq_base", 10000.0f);
    kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    add_tensor("token_embd.weight", wt, 256, 4096, 0, NULL);
    add_tensor("output_norm.weight", T_F32, 256, 1, 1, NULL);
    add_tensor("output.weight", wt, 256, 4096, 0, NULL);
    if (rope_freqs) {   /* Llama 3.1-style factors, 1 for the fastest pairs up to 8 for slower ones, but */
        float ff[32];   /* starting at pair 2, so that they change angles by radians within the prompts */
        for (l = 0; l < 32; l++) ff[l] = l < 2 ? 1.0f : l >= 10 ? 8.0f : 1.0f + 7.0f * (float)(l - 2) / 8.0f;
        add_tensor("rope_freqs.weight", T_F32, 32, 1, 2, ff);
    }
    for (l = 0; l < 2; l++) {
        if (rope_freqs) {   /* attention norm gain 4: sharper attention (scores x16), so positions matter */
            float g[256];
            int j;
            for (j = 0; j < 256; j++) g[j] = 4.0f * (1.0f + 0.03f * rng_sym());
            add_tensor(NM("blk.%d.attn_norm.weight", l), T_F32, 256, 1, 2, g);
        } else
            add_tensor(NM("blk.%d.attn_norm.weight", l), T_F32, 256, 1, 1, NULL);
        add_tensor(NM("blk.%d.attn_q.weight", l), wt, 256, 256, 0, NULL);
        add_tensor(NM("blk.%d.attn_k.weight", l), wt, 256, 128, 0, NULL);
        add_tensor(NM("blk.%d.attn_v.weight", l), wt, 256, 128, 0, NULL);
        add_tensor(NM("blk.%d.attn_output.weight", l), wt, 256, 256, 0, NULL);
        add_tensor(NM("blk.%d.ffn_norm.weight", l), T_F32, 256, 1, 1, NULL);
        add_tensor(NM("blk.%d.ffn_gate.weight", l), wt, 256, 768, 0, NULL);
        add_tensor(NM("blk.%d.ffn_up.weight", l), wt, 256, 768, 0, NULL);
        add_tensor(NM("blk.%d.ffn_down.weight", l), wt, 768, 256, 0, NULL);
    }
}

/* Gemma 3: 6 layers so that both layer kinds occur (llama.cpp: every 6th layer global, the others
   sliding-window with their own RoPE base), 2 query heads and 1 KV head of 256 (as Gemma 3 270M),
   Q/K norms, post-attention and post-FFN norms, tied embeddings, window 16 (< the 62-token prompt). */
static void gen_gemma3(int wt) {
    char nm[64];
    int l;
    kv_str("general.architecture", "gemma3");
    kv_u32("gemma3.context_length", 512);
    kv_u32("gemma3.embedding_length", 256);
    kv_u32("gemma3.block_count", 6);
    kv_u32("gemma3.feed_forward_length", 512);
    kv_u32("gemma3.attention.head_count", 2);
    kv_u32("gemma3.attention.head_count_kv", 1);
    kv_u32("gemma3.attention.key_length", 256);
    kv_u32("gemma3.attention.value_length", 256);
    kv_u32("gemma3.attention.sliding_window", 16);
    kv_f32("gemma3.rope.freq_base", 1000000.0f);
    kv_f32("gemma3.attention.layer_norm_rms_epsilon", 1e-6f);
    add_tensor("token_embd.weight", wt, 256, 4096, 0, NULL);
    add_tensor("output_norm.weight", T_F32, 256, 1, 1, NULL);
    for (l = 0; l < 6; l++) {
        add_tensor(NM("blk.%d.attn_norm.weight", l), T_F32, 256, 1, 1, NULL);
        add_tensor(NM("blk.%d.attn_q.weight", l), wt, 256, 512, 0, NULL);
        add_tensor(NM("blk.%d.attn_k.weight", l), wt, 256, 256, 0, NULL);
        add_tensor(NM("blk.%d.attn_v.weight", l), wt, 256, 256, 0, NULL);
        add_tensor(NM("blk.%d.attn_q_norm.weight", l), T_F32, 256, 1, 1, NULL);
        add_tensor(NM("blk.%d.attn_k_norm.weight", l), T_F32, 256, 1, 1, NULL);
        add_tensor(NM("blk.%d.attn_output.weight", l), wt, 512, 256, 0, NULL);
        add_tensor(NM("blk.%d.post_attention_norm.weight", l), T_F32, 256, 1, 1, NULL);
        add_tensor(NM("blk.%d.ffn_norm.weight", l), T_F32, 256, 1, 1, NULL);
        add_tensor(NM("blk.%d.ffn_gate.weight", l), wt, 256, 512, 0, NULL);
        add_tensor(NM("blk.%d.ffn_up.weight", l), wt, 256, 512, 0, NULL);
        add_tensor(NM("blk.%d.ffn_down.weight", l), wt, 512, 256, 0, NULL);
        add_tensor(NM("blk.%d.post_ffw_norm.weight", l), T_F32, 256, 1, 1, NULL);
    }
}

/* Phi-3: fused QKV and gate-up tensors, 2 heads of 96 (as Phi-3/3.5-mini's head size). */
static void gen_phi3(int wt) {
    char nm[64];
    int l;
    kv_str("general.architecture", "phi3");
    kv_u32("phi3.context_length", 512);
    kv_u32("phi3.embedding_length", 192);
    kv_u32("phi3.block_count", 2);
    kv_u32("phi3.feed_forward_length", 512);
    kv_u32("phi3.attention.head_count", 2);
    kv_u32("phi3.attention.head_count_kv", 2);
    kv_u32("phi3.rope.dimension_count", 96);
    kv_f32("phi3.rope.freq_base", 10000.0f);
    kv_f32("phi3.attention.layer_norm_rms_epsilon", 1e-5f);
    add_tensor("token_embd.weight", wt, 192, 4096, 0, NULL);
    add_tensor("output_norm.weight", T_F32, 192, 1, 1, NULL);
    add_tensor("output.weight", wt, 192, 4096, 0, NULL);
    for (l = 0; l < 2; l++) {
        add_tensor(NM("blk.%d.attn_norm.weight", l), T_F32, 192, 1, 1, NULL);
        add_tensor(NM("blk.%d.attn_qkv.weight", l), wt, 192, 576, 0, NULL);
        add_tensor(NM("blk.%d.attn_output.weight", l), wt, 192, 192, 0, NULL);
        add_tensor(NM("blk.%d.ffn_norm.weight", l), T_F32, 192, 1, 1, NULL);
        add_tensor(NM("blk.%d.ffn_up.weight", l), wt, 192, 1024, 0, NULL);
        add_tensor(NM("blk.%d.ffn_down.weight", l), wt, 512, 192, 0, NULL);
    }
}

static const struct { const char *name; int arch, type; uint64_t seed; } models[] = {
    {"tiny-gemma3-Q8_0", 1, T_Q8_0, 2001},
    {"tiny-phi3-Q8_0", 2, T_Q8_0, 2002},
    {"tiny-llama3-Q8_0", 3, T_Q8_0, 2003},   /* llama with rope_freqs.weight */
    {"tiny-llama-Q2_K", 0, T_Q2_K, 2010},
    {"tiny-llama-Q3_K", 0, T_Q3_K, 2011},
    {"tiny-llama-IQ4_NL", 0, T_IQ4_NL, 2012},
    {"tiny-llama-IQ4_XS", 0, T_IQ4_XS, 2013},
};

int main(int argc, char **argv) {
    FILE *f;
    int i, m = -1;
    uint64_t off = 0;
    static const uint8_t zero[32];
    if (argc == 2 && !strcmp(argv[1], "--list")) {
        for (i = 0; i < (int)(sizeof models / sizeof models[0]); i++) printf("%s\n", models[i].name);
        return 0;
    }
    if (argc != 4) { fprintf(stderr, "usage: gen_tiny VOCAB_GGUF OUT.gguf NAME | --list\n"); return 2; }
    for (i = 0; i < (int)(sizeof models / sizeof models[0]); i++)
        if (!strcmp(argv[3], models[i].name)) m = i;
    if (m < 0) { fprintf(stderr, "unknown model %s (see --list)\n", argv[3]); return 2; }
    rng_state = models[m].seed;
    kv_str("general.name", "tiny random model");   /* llama.cpp keys token fixes off names like "phi3" */
    kv_u32("general.alignment", 32);
    switch (models[m].arch) {
    case 0: gen_llama(models[m].type, 0); break;
    case 1: gen_gemma3(models[m].type); break;
    case 2: gen_phi3(models[m].type); break;
    default: gen_llama(models[m].type, 1); break;
    }
    copy_tokenizer(argv[1]);
    if (!(f = fopen(argv[2], "wb"))) { fprintf(stderr, "cannot write %s\n", argv[2]); return 1; }
    fwrite("GGUF", 1, 4, f);
    {
        uint32_t ver = 3;
        uint64_t nt = (uint64_t)n_tensors, nk = (uint64_t)n_kv;
        fwrite(&ver, 4, 1, f);
        fwrite(&nt, 8, 1, f);
        fwrite(&nk, 8, 1, f);
    }
    fwrite(kv, 1, kv_n, f);
    for (i = 0; i < n_tensors; i++) {
        tensor *t = &tensors[i];
        uint64_t n = strlen(t->name);
        uint32_t nd = (uint32_t)t->n_dims, ty = (uint32_t)t->type;
        fwrite(&n, 8, 1, f);
        fwrite(t->name, 1, n, f);
        fwrite(&nd, 4, 1, f);
        fwrite(t->ne, 8, nd, f);
        fwrite(&ty, 4, 1, f);
        fwrite(&off, 8, 1, f);
        off += (t->size + 31) / 32 * 32;
    }
    {
        long pos = ftell(f);
        fwrite(zero, 1, (size_t)((32 - pos % 32) % 32), f);
    }
    for (i = 0; i < n_tensors; i++) {
        fwrite(tensors[i].data, 1, tensors[i].size, f);
        fwrite(zero, 1, (tensors[i].size + 31) / 32 * 32 - tensors[i].size, f);
    }
    if (fclose(f)) { fprintf(stderr, "write failed\n"); return 1; }
    return 0;
}
