/* GGUF reader tests.
   - Real files: every tiny model against its fixture meta.txt (written by gguf-py, independent of this
     reader), the tokenizer vocabularies against their README and .out files, SmolLM2 against its
     published config.  The data layout is checked against the file itself: consecutive tensors must be
     packed with less than one alignment of padding, which pins each type's byte size.
   - A GGUF writer in this file builds small files of every value type; a round trip checks each value.
   - Malformed files, one named test each; every truncation of a small file; a fixed-seed fuzz loop. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "test.h"
#include <dirent.h>

/* ------------------------------------------------------------------ helpers */

static char t_path[1024];
static const char *path_of(const char *a, const char *b, const char *c) {
    snprintf(t_path, sizeof t_path, "%s/%s%s", a, b, c);
    return t_path;
}

/* Parses a private exact-size copy of p (so ASan sees any read past its end); the copy lives in *copy. */
static mllm_status parse_copy(mllm__gguf *g, const uint8_t *p, size_t n, uint8_t **copy) {
    *copy = (uint8_t *)malloc(n ? n : 1);
    if (n) memcpy(*copy, p, n);
    mllm__err_msg[0] = 0;
    return mllm__gguf_parse(g, *copy, n);
}

/* Parses p and checks the status and that the message is non-empty and mentions `needle`. */
static void expect_fail(const uint8_t *p, size_t n, mllm_status want, const char *needle) {
    mllm__gguf g;
    uint8_t *copy;
    mllm_status st = parse_copy(&g, p, n, &copy);
    CHECK(st == want, "status %d (%s), want %d; message: %s", st, mllm_status_string(st), want,
          mllm_last_error());
    CHECK(mllm_last_error()[0] != 0, "empty error message");
    if (needle) CHECK(strstr(mllm_last_error(), needle) != NULL, "message lacks '%s': %s", needle,
                      mllm_last_error());
    CHECK(g.kv == NULL && g.tensors == NULL && g.n_kv == 0, "failed parse left state behind");
    mllm__gguf_close(&g);   /* closing a failed struct is safe */
    free(copy);
}

static int str_is(mllm__str s, const char *b) { return mllm__str_eq(s, b); }

static int64_t get_int_or(const mllm__gguf *g, const char *key, int64_t def) {
    int64_t v;
    return mllm__gguf_get_int(g, key, &v) ? v : def;
}

/* ------------------------------------------------------------------ a small GGUF writer */

typedef struct wbuf { uint8_t *p; size_t n, cap; } wbuf;

static void w_bytes(wbuf *w, const void *src, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->p = (uint8_t *)realloc(w->p, w->cap);
    }
    if (n) memcpy(w->p + w->n, src, n);
    w->n += n;
}
static void put_le(uint8_t *p, uint64_t v, int n) {
    int i;
    for (i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void w_le(wbuf *w, uint64_t v, int n) {
    uint8_t b[8];
    put_le(b, v, n);
    w_bytes(w, b, (size_t)n);
}
static void w_u32(wbuf *w, uint32_t v) { w_le(w, v, 4); }
static void w_u64(wbuf *w, uint64_t v) { w_le(w, v, 8); }
static void w_f32(wbuf *w, float f) { uint32_t u; memcpy(&u, &f, 4); w_u32(w, u); }
static void w_f64(wbuf *w, double d) { uint64_t u; memcpy(&u, &d, 8); w_u64(w, u); }
static void w_str(wbuf *w, const char *s) { w_u64(w, strlen(s)); w_bytes(w, s, strlen(s)); }
static void w_key(wbuf *w, const char *k, uint32_t type) { w_str(w, k); w_u32(w, type); }

/* Block sizes of the types the writer uses, from the GGUF/ggml spec (not from metalllm.h). */
static uint64_t spec_nbytes(uint32_t type, uint64_t nel) {
    switch (type) {
    case 0: return nel * 4;                /* F32 */
    case 1: return nel * 2;                /* F16 */
    case 2: return nel / 32 * 18;          /* Q4_0: f16 scale + 16 bytes of nibbles */
    case 8: return nel / 32 * 34;          /* Q8_0: f16 scale + 32 int8 */
    default: return 0;
    }
}

/* Elements and bytes per block of each type in the fixtures, by name, from the GGUF/ggml spec. */
static uint64_t spec_nbytes_by_name(const char *type, uint64_t nel) {
    static const struct { const char *name; int block, bytes; } t[] = {
        {"F32", 1, 4}, {"F16", 1, 2}, {"BF16", 1, 2}, {"Q4_0", 32, 18}, {"Q4_1", 32, 20}, {"Q5_0", 32, 22},
        {"Q5_1", 32, 24}, {"Q8_0", 32, 34}, {"Q4_K", 256, 144}, {"Q5_K", 256, 176}, {"Q6_K", 256, 210},
    };
    size_t i;
    for (i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcmp(t[i].name, type) == 0) return nel / (uint64_t)t[i].block * (uint64_t)t[i].bytes;
    return 0;
}

typedef struct tdesc { const char *name; uint32_t n_dims; uint64_t ne[4]; uint32_t type; } tdesc;

enum { F_DUP_KEY = 1, F_NESTED_ARRAY = 2, F_ALIGN_STRING = 4, F_ONLY_ONE_KV = 8 };

/* Where the builder put things, for targeted corruption. */
typedef struct layout {
    size_t version, n_tensors, n_kv, first_key_len, first_vtype, bool_val, arr_i32_type, arr_i32_count,
        arr_str_count, align_val;
    size_t t_ndims[8], t_type[8], t_offset[8];
    size_t data_pos;
    uint64_t off[8], nbytes[8];
    size_t u64s[128], u32s[128];           /* every u64 and u32 field, for the fuzzer */
    int n_u64s, n_u32s;
} layout;

/* Values of the round-trip file. */
static const int32_t RT_I32[] = {-1, 0, 7, 2147483647, -2147483647 - 1};
static const float RT_F32[] = {0.5f, -1.25f, 1e-5f, 3.0e38f};
static const char *const RT_STR[] = {"a", "", "\xe2\x96\x81hello world", "<|im_end|>", "last"};
static const uint8_t RT_U8[] = {0, 1, 255};
static const uint8_t RT_BOOL[] = {1, 0, 1};
static const double RT_F64[] = {1.5, -2.0e-300};
static const uint64_t RT_U64[] = {5, 18446744073709551615ull};
static const int16_t RT_I16[] = {-5, 32767};
#define N_OF(a) (sizeof(a) / sizeof(a[0]))

static const tdesc RT_TENSORS[] = {
    {"tok.weight", 2, {8, 3, 1, 1}, 0},
    {"blk.0.q.weight", 2, {64, 2, 1, 1}, 8},
    {"norm", 1, {5, 1, 1, 1}, 1},
    {"x3d", 3, {32, 2, 3, 1}, 2},
    {"x4d", 4, {1, 2, 1, 2}, 0},
};

static uint8_t pattern(int k, uint64_t i) { return (uint8_t)(k * 31 + i * 7 + 1); }

#define MARK64(L, w) ((L)->n_u64s < 128 ? (L)->u64s[(L)->n_u64s++] = (w)->n : 0)
#define MARK32(L, w) ((L)->n_u32s < 128 ? (L)->u32s[(L)->n_u32s++] = (w)->n : 0)

static void w_str_m(wbuf *w, layout *L, const char *s) { MARK64(L, w); w_str(w, s); }
static void w_key_m(wbuf *w, layout *L, const char *k, uint32_t type) {
    w_str_m(w, L, k);
    MARK32(L, w);
    w_u32(w, type);
}
static void w_arr_m(wbuf *w, layout *L, const char *k, uint32_t type, uint64_t n, size_t *type_pos,
                    size_t *count_pos) {
    w_key_m(w, L, k, MLLM__GGUF_ARRAY);
    if (type_pos) *type_pos = w->n;
    MARK32(L, w);
    w_u32(w, type);
    if (count_pos) *count_pos = w->n;
    MARK64(L, w);
    w_u64(w, n);
}

/* Writes the metadata; returns the number of entries. */
static int write_kvs(wbuf *w, layout *L, int64_t alignment, int flags) {
    int n = 0;
    size_t i;
    L->first_key_len = w->n;
    L->first_vtype = w->n + 8 + strlen("general.architecture");
    w_key_m(w, L, "general.architecture", MLLM__GGUF_STRING); w_str_m(w, L, "testarch"); n++;
    if (alignment) {
        if (flags & F_ALIGN_STRING) { w_key_m(w, L, "general.alignment", MLLM__GGUF_STRING); w_str(w, "32"); }
        else { w_key_m(w, L, "general.alignment", MLLM__GGUF_U32); L->align_val = w->n; w_u32(w, (uint32_t)alignment); }
        n++;
    }
    if (flags & F_ONLY_ONE_KV) return n;
    w_key_m(w, L, "t.u8", MLLM__GGUF_U8); w_le(w, 200, 1); n++;
    w_key_m(w, L, "t.i8", MLLM__GGUF_I8); w_le(w, (uint8_t)-100, 1); n++;
    w_key_m(w, L, "t.u16", MLLM__GGUF_U16); w_le(w, 60000, 2); n++;
    w_key_m(w, L, "t.i16", MLLM__GGUF_I16); w_le(w, (uint16_t)-30000, 2); n++;
    w_key_m(w, L, "t.u32", MLLM__GGUF_U32); w_u32(w, 4000000000u); n++;
    w_key_m(w, L, "t.i32", MLLM__GGUF_I32); w_u32(w, (uint32_t)-2000000000); n++;
    w_key_m(w, L, "t.f32", MLLM__GGUF_F32); w_f32(w, 3.25f); n++;
    w_key_m(w, L, "t.bool", MLLM__GGUF_BOOL); L->bool_val = w->n; w_le(w, 1, 1); n++;
    w_key_m(w, L, "t.str", MLLM__GGUF_STRING); w_str_m(w, L, "hello, gguf"); n++;
    w_key_m(w, L, "t.empty", MLLM__GGUF_STRING); w_str_m(w, L, ""); n++;
    w_key_m(w, L, "t.u64", MLLM__GGUF_U64); w_u64(w, (1ull << 40) + 7); n++;
    w_key_m(w, L, "t.u64max", MLLM__GGUF_U64); w_u64(w, 18446744073709551615ull); n++;
    w_key_m(w, L, "t.i64", MLLM__GGUF_I64); w_u64(w, (uint64_t)-(int64_t)(1ll << 50)); n++;
    w_key_m(w, L, "t.f64", MLLM__GGUF_F64); w_f64(w, 2.5e-3); n++;
    w_key_m(w, L, "t.f64huge", MLLM__GGUF_F64); w_f64(w, 1e300); n++;
    w_arr_m(w, L, "t.arr_i32", MLLM__GGUF_I32, N_OF(RT_I32), &L->arr_i32_type, &L->arr_i32_count);
    for (i = 0; i < N_OF(RT_I32); i++) w_u32(w, (uint32_t)RT_I32[i]);
    n++;
    w_arr_m(w, L, "t.arr_f32", MLLM__GGUF_F32, N_OF(RT_F32), NULL, NULL);
    for (i = 0; i < N_OF(RT_F32); i++) w_f32(w, RT_F32[i]);
    n++;
    w_arr_m(w, L, "t.arr_str", MLLM__GGUF_STRING, N_OF(RT_STR), NULL, &L->arr_str_count);
    for (i = 0; i < N_OF(RT_STR); i++) w_str_m(w, L, RT_STR[i]);
    n++;
    w_arr_m(w, L, "t.arr_u8", MLLM__GGUF_U8, N_OF(RT_U8), NULL, NULL);
    w_bytes(w, RT_U8, sizeof RT_U8);
    n++;
    w_arr_m(w, L, "t.arr_bool", MLLM__GGUF_BOOL, N_OF(RT_BOOL), NULL, NULL);
    w_bytes(w, RT_BOOL, sizeof RT_BOOL);
    n++;
    w_arr_m(w, L, "t.arr_f64", MLLM__GGUF_F64, N_OF(RT_F64), NULL, NULL);
    for (i = 0; i < N_OF(RT_F64); i++) w_f64(w, RT_F64[i]);
    n++;
    w_arr_m(w, L, "t.arr_u64", MLLM__GGUF_U64, N_OF(RT_U64), NULL, NULL);
    for (i = 0; i < N_OF(RT_U64); i++) w_u64(w, RT_U64[i]);
    n++;
    w_arr_m(w, L, "t.arr_i16", MLLM__GGUF_I16, N_OF(RT_I16), NULL, NULL);
    for (i = 0; i < N_OF(RT_I16); i++) w_le(w, (uint16_t)RT_I16[i], 2);
    n++;
    w_arr_m(w, L, "t.arr_empty", MLLM__GGUF_U32, 0, NULL, NULL);
    n++;
    if (flags & F_NESTED_ARRAY) {
        w_arr_m(w, L, "t.nested", MLLM__GGUF_ARRAY, 1, NULL, NULL);
        w_u32(w, MLLM__GGUF_U8); w_u64(w, 1); w_le(w, 9, 1);
        n++;
    }
    if (flags & F_DUP_KEY) { w_key_m(w, L, "t.u8", MLLM__GGUF_U8); w_le(w, 1, 1); n++; }
    return n;
}

/* Builds a whole file: header, metadata, tensor infos, padding, tensor data (packed in order, each at
   the next aligned offset; nothing after the last one). */
static void build(wbuf *w, layout *L, uint32_t version, int64_t alignment, const tdesc *t, int nt, int flags) {
    int k, n_kv;
    uint64_t off = 0, al = alignment > 0 ? (uint64_t)alignment : 32;
    uint32_t d;
    memset(L, 0, sizeof *L);
    w->n = 0;
    w_bytes(w, "GGUF", 4);
    L->version = w->n; MARK32(L, w); w_u32(w, version);
    L->n_tensors = w->n; MARK64(L, w); w_u64(w, (uint64_t)nt);
    L->n_kv = w->n; MARK64(L, w); w_u64(w, 0);
    n_kv = write_kvs(w, L, alignment, flags);
    put_le(w->p + L->n_kv, (uint64_t)n_kv, 8);
    for (k = 0; k < nt; k++) {
        uint64_t nel = 1;
        w_str_m(w, L, t[k].name);
        L->t_ndims[k] = w->n; MARK32(L, w); w_u32(w, t[k].n_dims);
        for (d = 0; d < t[k].n_dims; d++) { MARK64(L, w); w_u64(w, t[k].ne[d]); nel *= t[k].ne[d]; }
        L->t_type[k] = w->n; MARK32(L, w); w_u32(w, t[k].type);
        off = (off + al - 1) / al * al;
        L->off[k] = off;
        L->nbytes[k] = spec_nbytes(t[k].type, nel);
        L->t_offset[k] = w->n; MARK64(L, w); w_u64(w, off);
        off += L->nbytes[k];
    }
    while (w->n % al) w_le(w, 0, 1);
    L->data_pos = w->n;
    for (k = 0; k < nt && L->nbytes[k] < (1u << 20); k++) {   /* (absurd test shapes get no data) */
        uint64_t i;
        while (w->n < L->data_pos + L->off[k]) w_le(w, 0, 1);
        for (i = 0; i < L->nbytes[k]; i++) { uint8_t b = pattern(k, i); w_bytes(w, &b, 1); }
    }
}

/* The standard small valid file used by the malformed-input tests. */
static void build_std(wbuf *w, layout *L) {
    build(w, L, 3, 64, RT_TENSORS, (int)N_OF(RT_TENSORS), 0);
}

/* ------------------------------------------------------------------ round trip */

static void check_roundtrip(const mllm__gguf *g, const layout *L, const tdesc *t, int nt, int64_t alignment) {
    int64_t v;
    float f;
    int b, k;
    mllm__str s;
    size_t i;
    const mllm__gguf_kv *kv;
    mllm__str strs[N_OF(RT_STR)];

    CHECK(g->version == 3, "version %u", g->version);
    CHECK(g->n_tensors == (uint64_t)nt, "n_tensors %llu", (unsigned long long)g->n_tensors);
    CHECK(g->alignment == (size_t)(alignment ? alignment : 32), "alignment %zu", g->alignment);
    CHECK(g->data_offset == L->data_pos, "data_offset %zu, writer put data at %zu", g->data_offset, L->data_pos);
    CHECK(mllm__gguf_get_str(g, "general.architecture", &s) && str_is(s, "testarch"), "arch");

#define CHECK_INT(key, want) CHECK(mllm__gguf_get_int(g, key, &v) && v == (int64_t)(want), "%s = %lld", key, (long long)v)
    CHECK_INT("t.u8", 200);
    CHECK_INT("t.i8", -100);
    CHECK_INT("t.u16", 60000);
    CHECK_INT("t.i16", -30000);
    CHECK_INT("t.u32", 4000000000u);
    CHECK_INT("t.i32", -2000000000);
    CHECK_INT("t.u64", (1ll << 40) + 7);
    CHECK_INT("t.i64", -(1ll << 50));
    CHECK(!mllm__gguf_get_int(g, "t.u64max", &v), "u64 beyond int64 must not convert");
    CHECK(!mllm__gguf_get_int(g, "t.f32", &v), "float is not an int");
    CHECK(!mllm__gguf_get_int(g, "t.str", &v), "string is not an int");
    CHECK(!mllm__gguf_get_int(g, "t.nope", &v), "missing key");
    CHECK(mllm__gguf_get_f32(g, "t.f32", &f) && f == 3.25f, "f32 %g", f);
    CHECK(mllm__gguf_get_f32(g, "t.f64", &f) && f == (float)2.5e-3, "f64 %g", f);
    CHECK(mllm__gguf_get_f32(g, "t.f64huge", &f) && f > FLT_MAX, "f64 1e300 as float: %g", f);
    CHECK(!mllm__gguf_get_f32(g, "t.u8", &f), "int is not a float");
    CHECK(mllm__gguf_get_bool(g, "t.bool", &b) && b == 1, "bool");
    CHECK(!mllm__gguf_get_bool(g, "t.u8", &b), "u8 is not a bool");
    CHECK(mllm__gguf_get_str(g, "t.str", &s) && str_is(s, "hello, gguf"), "str");
    CHECK(mllm__gguf_get_str(g, "t.empty", &s) && s.n == 0, "empty str");
    CHECK(!mllm__gguf_get_str(g, "t.u8", &s), "u8 is not a string");
    CHECK(!mllm__gguf_get_str(g, "t.arr_str", &s), "array is not a string");

    kv = mllm__gguf_find(g, "t.arr_i32");
    CHECK(kv && kv->type == MLLM__GGUF_ARRAY && kv->arr_type == MLLM__GGUF_I32 && kv->arr_n == N_OF(RT_I32), "arr_i32");
    if (kv) {
        for (i = 0; i < N_OF(RT_I32); i++) {
            CHECK(mllm__gguf_arr_int(kv, i) == RT_I32[i], "arr_i32[%zu]", i);
            CHECK(mllm__gguf_arr_f32(kv, i) == (float)RT_I32[i], "arr_i32[%zu] as float", i);
        }
        CHECK(mllm__gguf_arr_int(kv, N_OF(RT_I32)) == 0, "out of range");
    }
    kv = mllm__gguf_find(g, "t.arr_f32");
    CHECK(kv && kv->arr_n == N_OF(RT_F32), "arr_f32");
    if (kv) {
        for (i = 0; i < N_OF(RT_F32); i++) CHECK(mllm__gguf_arr_f32(kv, i) == RT_F32[i], "arr_f32[%zu]", i);
        CHECK(mllm__gguf_arr_int(kv, 0) == 0, "floats are not read as ints");
        CHECK(mllm__gguf_arr_strings(kv, strs) == MLLM_ERR_INVALID_ARG, "arr_strings on floats");
    }
    kv = mllm__gguf_find(g, "t.arr_str");
    CHECK(kv && kv->arr_type == MLLM__GGUF_STRING && kv->arr_n == N_OF(RT_STR), "arr_str");
    if (kv && kv->arr_n == N_OF(RT_STR)) {
        CHECK(mllm__gguf_arr_strings(kv, strs) == MLLM_OK, "arr_strings");
        for (i = 0; i < N_OF(RT_STR); i++) CHECK(str_is(strs[i], RT_STR[i]), "arr_str[%zu]", i);
        CHECK(mllm__gguf_arr_int(kv, 0) == 0 && mllm__gguf_arr_f32(kv, 0) == 0, "strings are not numbers");
    }
    kv = mllm__gguf_find(g, "t.arr_u8");
    CHECK(kv && kv->arr_n == 3, "arr_u8");
    if (kv) for (i = 0; i < N_OF(RT_U8); i++) CHECK(mllm__gguf_arr_int(kv, i) == RT_U8[i], "arr_u8[%zu]", i);
    kv = mllm__gguf_find(g, "t.arr_bool");
    CHECK(kv && kv->arr_type == MLLM__GGUF_BOOL && kv->arr_n == 3, "arr_bool");
    if (kv) for (i = 0; i < N_OF(RT_BOOL); i++) CHECK(mllm__gguf_arr_int(kv, i) == RT_BOOL[i], "arr_bool[%zu]", i);
    kv = mllm__gguf_find(g, "t.arr_f64");
    CHECK(kv && kv->arr_n == 2, "arr_f64");
    if (kv) for (i = 0; i < N_OF(RT_F64); i++) CHECK(mllm__gguf_arr_f32(kv, i) == (float)RT_F64[i], "arr_f64[%zu]", i);
    kv = mllm__gguf_find(g, "t.arr_u64");
    CHECK(kv && kv->arr_n == 2, "arr_u64");
    if (kv) {
        CHECK(mllm__gguf_arr_int(kv, 0) == 5, "arr_u64[0]");
        CHECK(mllm__gguf_arr_int(kv, 1) == 0, "arr_u64[1] beyond int64 reads as 0");
    }
    kv = mllm__gguf_find(g, "t.arr_i16");
    CHECK(kv && kv->arr_n == 2, "arr_i16");
    if (kv) for (i = 0; i < N_OF(RT_I16); i++) CHECK(mllm__gguf_arr_int(kv, i) == RT_I16[i], "arr_i16[%zu]", i);
    kv = mllm__gguf_find(g, "t.arr_empty");
    CHECK(kv && kv->arr_n == 0 && mllm__gguf_arr_int(kv, 0) == 0, "arr_empty");

    for (k = 0; k < nt; k++) {
        const mllm__gguf_tensor *tt = mllm__gguf_tensor_find(g, t[k].name);
        uint32_t d;
        CHECK(tt != NULL, "tensor %s missing", t[k].name);
        if (!tt) continue;
        CHECK(tt == &g->tensors[k], "tensor %s found at the wrong index", t[k].name);
        CHECK(tt->n_dims == (int)t[k].n_dims && tt->type == t[k].type, "tensor %s dims/type", t[k].name);
        for (d = 0; d < 4; d++)
            CHECK(tt->ne[d] == (int64_t)(d < t[k].n_dims ? t[k].ne[d] : 1), "tensor %s ne[%u] = %lld", t[k].name,
                  d, (long long)tt->ne[d]);
        CHECK(tt->offset == L->off[k] && tt->nbytes == L->nbytes[k], "tensor %s offset %llu nbytes %zu", t[k].name,
              (unsigned long long)tt->offset, tt->nbytes);
        CHECK((const uint8_t *)tt->data == g->base + L->data_pos + L->off[k], "tensor %s data pointer", t[k].name);
        for (i = 0; i < tt->nbytes; i++)
            if (((const uint8_t *)tt->data)[i] != pattern(k, i)) { CHECK(0, "tensor %s byte %zu", t[k].name, i); break; }
    }
    CHECK(mllm__gguf_tensor_find(g, "tok") == NULL && mllm__gguf_tensor_find(g, "tok.weightx") == NULL,
          "prefix/suffix names must not match");
}

static void test_roundtrip_every_value_type(void) {
    wbuf w = {0, 0, 0};
    layout L;
    static const int64_t aligns[] = {0, 1, 64, 4096};
    size_t a;
    for (a = 0; a < N_OF(aligns); a++) {
        mllm__gguf g;
        uint8_t *copy;
        mllm_status st;
        build(&w, &L, 3, aligns[a], RT_TENSORS, (int)N_OF(RT_TENSORS), 0);
        st = parse_copy(&g, w.p, w.n, &copy);
        CHECK(st == MLLM_OK, "alignment %lld: %s", (long long)aligns[a], mllm_last_error());
        if (st == MLLM_OK) check_roundtrip(&g, &L, RT_TENSORS, (int)N_OF(RT_TENSORS), aligns[a]);
        mllm__gguf_close(&g);
        free(copy);
    }
    /* version 2 has the same layout */
    {
        mllm__gguf g;
        uint8_t *copy;
        build(&w, &L, 2, 0, RT_TENSORS, 2, 0);
        CHECK(parse_copy(&g, w.p, w.n, &copy) == MLLM_OK && g.version == 2 && g.n_tensors == 2, "v2: %s",
              mllm_last_error());
        mllm__gguf_close(&g);
        mllm__gguf_close(&g);   /* double close is safe */
        free(copy);
    }
    /* no tensors at all, as in vocabulary-only files */
    {
        mllm__gguf g;
        uint8_t *copy;
        build(&w, &L, 3, 0, RT_TENSORS, 0, 0);
        CHECK(parse_copy(&g, w.p, w.n, &copy) == MLLM_OK && g.n_tensors == 0 && g.n_kv > 20, "no tensors: %s",
              mllm_last_error());
        mllm__gguf_close(&g);
        free(copy);
    }
    free(w.p);
}

/* ------------------------------------------------------------------ malformed files */

/* Builds the standard file, lets `patch` change it, expects the failure. */
#define MALFORMED(fn, want, needle, ...)                          \
    static void fn(void) {                                        \
        wbuf w = {0, 0, 0};                                       \
        layout L;                                                 \
        build_std(&w, &L);                                        \
        { __VA_ARGS__; }                                          \
        expect_fail(w.p, w.n, want, needle);                      \
        free(w.p);                                                \
    }

MALFORMED(test_bad_magic, MLLM_ERR_FORMAT, "magic", w.p[0] = 'X')
MALFORMED(test_version_1_unsupported, MLLM_ERR_UNSUPPORTED, "version 1", put_le(w.p + L.version, 1, 4))
MALFORMED(test_version_unknown, MLLM_ERR_UNSUPPORTED, "version", put_le(w.p + L.version, 77, 4))
MALFORMED(test_version_big_endian, MLLM_ERR_UNSUPPORTED, "big-endian", put_le(w.p + L.version, 0x03000000, 4))
MALFORMED(test_absurd_n_kv, MLLM_ERR_FORMAT, "metadata entries", put_le(w.p + L.n_kv, 1ull << 60, 8))
MALFORMED(test_absurd_n_tensors, MLLM_ERR_FORMAT, "tensors", put_le(w.p + L.n_tensors, 1ull << 40, 8))
MALFORMED(test_n_kv_one_too_many, MLLM_ERR_FORMAT, NULL, put_le(w.p + L.n_kv, mllm__gguf_u64(w.p + L.n_kv) + 1, 8))
MALFORMED(test_huge_string_length, MLLM_ERR_FORMAT, "key", put_le(w.p + L.first_key_len, 1ull << 62, 8))
MALFORMED(test_max_string_length, MLLM_ERR_FORMAT, "key", put_le(w.p + L.first_key_len, ~0ull, 8))
MALFORMED(test_huge_array_count, MLLM_ERR_FORMAT, "t.arr_i32", put_le(w.p + L.arr_i32_count, 1ull << 61, 8))
/* 2^62 + 1 four-byte values: the byte count wraps to 4 in 64 bits */
MALFORMED(test_array_count_wrapping_size, MLLM_ERR_FORMAT, "t.arr_i32", put_le(w.p + L.arr_i32_count, (1ull << 62) + 1, 8))
MALFORMED(test_huge_string_array_count, MLLM_ERR_FORMAT, "t.arr_str", put_le(w.p + L.arr_str_count, ~0ull, 8))
MALFORMED(test_unknown_value_type, MLLM_ERR_FORMAT, "value type 13", put_le(w.p + L.first_vtype, 13, 4))
MALFORMED(test_unknown_array_element_type, MLLM_ERR_FORMAT, "element type", put_le(w.p + L.arr_i32_type, 0x7fffffff, 4))
MALFORMED(test_bad_bool_value, MLLM_ERR_FORMAT, "bool", w.p[L.bool_val] = 2)
MALFORMED(test_unknown_tensor_type, MLLM_ERR_UNSUPPORTED, "blk.0.q.weight", put_le(w.p + L.t_type[1], 99, 4))
MALFORMED(test_tensor_type_huge_id, MLLM_ERR_UNSUPPORTED, "4294967295", put_le(w.p + L.t_type[0], 0xffffffffu, 4))
MALFORMED(test_n_dims_0, MLLM_ERR_FORMAT, "n_dims 0", put_le(w.p + L.t_ndims[2], 0, 4))
MALFORMED(test_n_dims_5, MLLM_ERR_FORMAT, "n_dims 5", put_le(w.p + L.t_ndims[0], 5, 4))
MALFORMED(test_dim_zero, MLLM_ERR_FORMAT, "dimension 1", put_le(w.p + L.t_ndims[0] + 4 + 8, 0, 8))
MALFORMED(test_tensor_data_outside_file, MLLM_ERR_FORMAT, "outside the file",
          put_le(w.p + L.t_offset[4], L.off[4] + 64, 8))
MALFORMED(test_tensor_offset_huge, MLLM_ERR_FORMAT, "outside the file", put_le(w.p + L.t_offset[2], ~0ull << 12, 8))
MALFORMED(test_misaligned_offset, MLLM_ERR_FORMAT, "not a multiple of the alignment",
          put_le(w.p + L.t_offset[1], L.off[1] + 4, 8))
MALFORMED(test_overlapping_tensors, MLLM_ERR_FORMAT, "overlap", put_le(w.p + L.t_offset[3], L.off[2], 8))
MALFORMED(test_bad_alignment_zero, MLLM_ERR_FORMAT, "alignment", put_le(w.p + L.align_val, 0, 4))
MALFORMED(test_bad_alignment_not_pow2, MLLM_ERR_FORMAT, "alignment", put_le(w.p + L.align_val, 48, 4))
MALFORMED(test_bad_alignment_huge, MLLM_ERR_FORMAT, "alignment", put_le(w.p + L.align_val, 1u << 31, 4))
MALFORMED(test_truncated_last_tensor_byte, MLLM_ERR_FORMAT, "x4d", w.n--)
MALFORMED(test_empty_input, MLLM_ERR_FORMAT, "magic", w.n = 0)

/* Files the standard builder cannot make by patching. */
static void expect_build_fail(const tdesc *t, int nt, int64_t align, int flags, mllm_status want, const char *needle) {
    wbuf w = {0, 0, 0};
    layout L;
    build(&w, &L, 3, align, t, nt, flags);
    expect_fail(w.p, w.n, want, needle);
    free(w.p);
}

static void test_duplicate_tensor_names(void) {
    static const tdesc t[] = {{"a", 1, {8}, 0}, {"dup", 1, {8}, 0}, {"b", 1, {4}, 1}, {"dup", 1, {8}, 0}};
    expect_build_fail(t, 4, 0, 0, MLLM_ERR_FORMAT, "duplicate tensor name 'dup'");
}
static void test_duplicate_keys(void) {
    expect_build_fail(RT_TENSORS, 1, 0, F_DUP_KEY, MLLM_ERR_FORMAT, "duplicate metadata key 't.u8'");
}
static void test_nested_array(void) {
    expect_build_fail(RT_TENSORS, 1, 0, F_NESTED_ARRAY, MLLM_ERR_UNSUPPORTED, "t.nested");
}
static void test_alignment_not_integer(void) {
    expect_build_fail(RT_TENSORS, 1, 32, F_ALIGN_STRING, MLLM_ERR_FORMAT, "general.alignment");
}
static void test_dims_product_overflow(void) {
    static const tdesc t1[] = {{"big", 2, {1ull << 32, 1ull << 32}, 0}};          /* 2^64 elements */
    static const tdesc t2[] = {{"big", 3, {1ull << 31, 1ull << 31, 2}, 0}};       /* 2^63: > INT64_MAX */
    static const tdesc t3[] = {{"big", 1, {1ull << 62}, 0}};                      /* 2^64 bytes of F32 */
    static const tdesc t4[] = {{"big", 1, {~0ull}, 0}};                           /* dim > INT64_MAX */
    static const tdesc t5[] = {{"big", 2, {1ull << 20, 1ull << 20}, 0}};          /* 4 TiB: > file */
    expect_build_fail(t1, 1, 0, F_ONLY_ONE_KV, MLLM_ERR_FORMAT, "int64");
    expect_build_fail(t2, 1, 0, F_ONLY_ONE_KV, MLLM_ERR_FORMAT, "int64");
    expect_build_fail(t3, 1, 0, F_ONLY_ONE_KV, MLLM_ERR_FORMAT, "overflow");
    expect_build_fail(t4, 1, 0, F_ONLY_ONE_KV, MLLM_ERR_FORMAT, "int64");
    expect_build_fail(t5, 1, 0, F_ONLY_ONE_KV, MLLM_ERR_FORMAT, "big");
}
static void test_row_not_whole_blocks(void) {
    static const tdesc t[] = {{"q8", 2, {48, 2}, 8}};   /* Q8_0 blocks hold 32 */
    expect_build_fail(t, 1, 0, F_ONLY_ONE_KV, MLLM_ERR_FORMAT, "block size 32");
}

static void test_open_errors(void) {
    mllm__gguf g;
    mllm_status st = mllm__gguf_open(&g, "/nonexistent/dir/model.gguf");
    CHECK(st == MLLM_ERR_IO && strstr(mllm_last_error(), "/nonexistent/dir/model.gguf"), "missing file: %d %s", st,
          mllm_last_error());
    mllm__gguf_close(&g);
    st = mllm__gguf_open(&g, t_testdata());   /* a directory */
    CHECK(st == MLLM_ERR_IO && mllm_last_error()[0], "directory: %d %s", st, mllm_last_error());
    mllm__gguf_close(&g);
    st = mllm__gguf_open(&g, path_of(t_testdata(), "tokenizer/ggml-vocab-gpt-2.gguf", ".inp"));   /* text */
    CHECK(st == MLLM_ERR_FORMAT && strstr(mllm_last_error(), "ggml-vocab-gpt-2.gguf.inp") &&
              strstr(mllm_last_error(), "magic"), "text file: %d %s", st, mllm_last_error());
    mllm__gguf_close(&g);
    memset(&g, 0, sizeof g);
    mllm__gguf_close(&g);   /* zeroed struct */
    mllm__gguf_close(NULL);
}

/* Every proper prefix of a valid file must fail cleanly (the last tensor ends exactly at the end). */
static void test_truncated_at_every_offset(void) {
    wbuf w = {0, 0, 0};
    layout L;
    size_t n;
    int bad = 0;
    build_std(&w, &L);
    for (n = 0; n < w.n; n++) {
        mllm__gguf g;
        uint8_t *copy;
        mllm_status st = parse_copy(&g, w.p, n, &copy);
        if ((st != MLLM_ERR_FORMAT || !mllm_last_error()[0]) && bad++ < 5)
            CHECK(0, "prefix of %zu/%zu bytes: status %d, message '%s'", n, w.n, st, mllm_last_error());
        mllm__gguf_close(&g);
        free(copy);
    }
    {
        mllm__gguf g;
        uint8_t *copy;
        CHECK(parse_copy(&g, w.p, w.n, &copy) == MLLM_OK, "the whole file parses: %s", mllm_last_error());
        mllm__gguf_close(&g);
        free(copy);
    }
    printf("  %zu truncations of a %zu-byte file\n", w.n, w.n);
    free(w.p);
}

/* ------------------------------------------------------------------ fuzz */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) {   /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* Reads everything a parsed file exposes, so ASan sees any pointer that escaped the buffer. */
static unsigned touch_all(const mllm__gguf *g) {
    unsigned sum = 0;
    uint64_t i, j;
    for (i = 0; i < g->n_kv; i++) {
        const mllm__gguf_kv *kv = &g->kv[i];
        char key[80];
        int64_t v;
        float f;
        int b;
        mllm__str s;
        size_t k;
        for (k = 0; k < kv->key.n; k++) sum += (unsigned char)kv->key.p[k];
        if (kv->key.n < sizeof key && !memchr(kv->key.p, 0, kv->key.n)) {
            memcpy(key, kv->key.p, kv->key.n);
            key[kv->key.n] = 0;
            sum += (unsigned)mllm__gguf_get_int(g, key, &v) + (unsigned)mllm__gguf_get_f32(g, key, &f) +
                   (unsigned)mllm__gguf_get_bool(g, key, &b);
            if (mllm__gguf_get_str(g, key, &s))
                for (k = 0; k < s.n; k++) sum += (unsigned char)s.p[k];
        }
        if (kv->type != MLLM__GGUF_ARRAY) continue;
        if (kv->arr_type == MLLM__GGUF_STRING) {
            mllm__str *strs = (mllm__str *)malloc((size_t)kv->arr_n * sizeof *strs + 1);
            if (mllm__gguf_arr_strings(kv, strs) == MLLM_OK)
                for (j = 0; j < kv->arr_n; j++)
                    for (k = 0; k < strs[j].n; k++) sum += (unsigned char)strs[j].p[k];
            free(strs);
        } else {
            for (j = 0; j <= kv->arr_n && j < 4096; j++)
                sum += (unsigned)mllm__gguf_arr_int(kv, j) + (unsigned)(mllm__gguf_arr_f32(kv, j) != 0);
        }
    }
    for (i = 0; i < g->n_tensors; i++) {
        const mllm__gguf_tensor *t = &g->tensors[i];
        for (j = 0; j < t->nbytes; j++) sum += ((const uint8_t *)t->data)[j];
    }
    return sum;
}

static void test_fuzz_mutations(void) {
    wbuf w = {0, 0, 0};
    layout L;
    uint8_t *buf;
    int it, n_ok = 0, n_fail = 0, bad = 0;
    unsigned sink = 0;
    static const uint64_t interesting[] = {0, 1, 2, 31, 32, 255, 0x7fffffffull, 0xffffffffull, 1ull << 32,
                                           1ull << 62, 0x7fffffffffffffffull, ~0ull, ~0ull - 7};
    build_std(&w, &L);
    buf = (uint8_t *)malloc(w.n);
    for (it = 0; it < 4000; it++) {
        size_t n = w.n;
        int m, n_mut = 1 + (int)(rng() % 3);
        mllm__gguf g;
        uint8_t *copy;
        mllm_status st;
        memcpy(buf, w.p, w.n);
        for (m = 0; m < n_mut; m++) {
            uint64_t r = rng() % 8;
            if (r < 3) {                                   /* random bytes */
                buf[rng() % n] = (uint8_t)rng();
            } else if (r < 5) {                            /* a length/count/dim/offset field */
                size_t pos = L.u64s[rng() % (uint64_t)L.n_u64s];
                uint64_t v = rng() & 1 ? interesting[rng() % N_OF(interesting)] : mllm__gguf_u64(w.p + pos) + rng() % 9 - 4;
                if (pos + 8 <= n) put_le(buf + pos, v, 8);
            } else if (r < 7) {                            /* a type/n_dims/version field */
                size_t pos = L.u32s[rng() % (uint64_t)L.n_u32s];
                if (pos + 4 <= n) put_le(buf + pos, rng() & 1 ? rng() % 16 : interesting[rng() % N_OF(interesting)], 4);
            } else {                                       /* truncation */
                n = (size_t)(rng() % n) + 1;
            }
        }
        st = parse_copy(&g, buf, n, &copy);
        if (st == MLLM_OK) {
            n_ok++;
            sink += touch_all(&g);
        } else {
            n_fail++;
            if ((!mllm_last_error()[0] || (st != MLLM_ERR_FORMAT && st != MLLM_ERR_UNSUPPORTED)) && bad++ < 5)
                CHECK(0, "iteration %d: status %d, message '%s'", it, st, mllm_last_error());
        }
        mllm__gguf_close(&g);
        free(copy);
    }
    printf("  4000 mutations: %d parsed, %d rejected (checksum %u)\n", n_ok, n_fail, sink);
    /* both outcomes must occur, or the mutations are not exercising the parser */
    CHECK(n_ok > 100 && n_fail > 1000, "ok %d fail %d", n_ok, n_fail);
    free(buf);
    free(w.p);
}

/* ------------------------------------------------------------------ real files */

/* Minimal readers for the flat JSON line of meta.txt.  Return 0 when the key is absent or null. */
static const char *json_val(const char *json, const char *key) {
    char pat[96];
    const char *p;
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    p = strstr(json, pat);
    if (!p) return NULL;
    p += strlen(pat);
    return strncmp(p, "null", 4) == 0 ? NULL : p;
}
static int json_num(const char *json, const char *key, double *out) {
    const char *p = json_val(json, key);
    if (!p) return 0;
    *out = strtod(p, NULL);
    return 1;
}
static int json_str(const char *json, const char *key, char *out, size_t cap) {
    const char *p = json_val(json, key), *e;
    if (!p || *p != '"') return 0;
    e = strchr(p + 1, '"');
    if (!e || (size_t)(e - p - 1) >= cap) return 0;
    memcpy(out, p + 1, (size_t)(e - p - 1));
    out[e - p - 1] = 0;
    return 1;
}

/* Tensors are packed in offset order with less than one alignment of padding between them, and the
   file ends within one alignment of the last: pins every nbytes to what the writer (gguf-py /
   llama-quantize) used. */
static void check_packed_layout(const mllm__gguf *g, const char *file) {
    uint64_t i, prev_end = 0, n_seen = 0;
    int bad = 0;
    /* tensors written by gguf-py / llama.cpp appear in offset order */
    for (i = 0; i < g->n_tensors; i++) {
        const mllm__gguf_tensor *t = &g->tensors[i];
        if ((t->offset < prev_end || t->offset - prev_end >= g->alignment) && bad++ < 3)
            CHECK(0, "%s: tensor %.*s at %llu, previous ends at %llu", file, (int)t->name.n, t->name.p,
                  (unsigned long long)t->offset, (unsigned long long)prev_end);
        prev_end = t->offset + t->nbytes;
        n_seen++;
    }
    if (n_seen)
        CHECK(g->data_offset + prev_end <= g->size && g->size - (g->data_offset + prev_end) < g->alignment,
              "%s: data ends at %llu, file size %zu", file, (unsigned long long)(g->data_offset + prev_end), g->size);
}

/* The F32 norm weights are 1 + N(0, 0.02) (testdata README): reading them checks the data pointers. */
static void check_norm_values(const mllm__gguf *g, const char *file, const char *name) {
    const mllm__gguf_tensor *t = mllm__gguf_tensor_find(g, name);
    const float *x;
    double sum = 0, sq = 0, mean, sd;
    int64_t i, n;
    CHECK(t && t->type == MLLM__F32, "%s: %s missing or not F32", file, name);
    if (!t || t->type != MLLM__F32) return;
    x = (const float *)t->data;
    n = t->ne[0];
    for (i = 0; i < n; i++) { sum += x[i]; sq += (double)x[i] * x[i]; }
    mean = sum / (double)n;
    sd = sqrt(sq / (double)n - mean * mean);
    CHECK(fabs(mean - 1) < 0.01 && sd > 0.01 && sd < 0.03, "%s: %s mean %g sd %g", file, name, mean, sd);
}

static void check_tiny_model(const char *models_dir, const char *fname) {
    char stem[256], json[2048], line[512], s1[128];
    char *meta, *p;
    mllm__gguf g;
    mllm__str s;
    double d;
    int64_t v;
    float f;
    int b, n_lines = 0;
    const char *arch;
    mllm_status st;
    size_t len = strlen(fname) - 5;

    snprintf(stem, sizeof stem, "%.*s", (int)len, fname);
    st = mllm__gguf_open(&g, path_of(models_dir, fname, ""));
    CHECK(st == MLLM_OK, "%s: %s", fname, mllm_last_error());
    if (st != MLLM_OK) return;
    check_packed_layout(&g, fname);

    snprintf(line, sizeof line, "tiny/fixtures/%s/meta.txt", stem);
    meta = t_read_file(path_of(t_testdata(), line, ""), NULL);
    CHECK(meta != NULL, "%s: no meta.txt", fname);
    if (!meta) { mllm__gguf_close(&g); return; }
    p = strchr(meta, '\n');
    snprintf(json, sizeof json, "%.*s", (int)(p ? p - meta : (long)strlen(meta)), meta);

    CHECK(json_str(json, "architecture", s1, sizeof s1) && mllm__gguf_get_str(&g, "general.architecture", &s) &&
              str_is(s, s1), "%s: architecture", fname);
    arch = s1;
/* Checks the integer key gkey (a format taking the architecture; "%.0s" drops it for keys without one)
   against meta's jkey; a null in meta means the key must be absent. */
#define META_INT(jkey, gkey)                                                                            \
    do {                                                                                                \
        char k_[128];                                                                                   \
        snprintf(k_, sizeof k_, gkey, arch);                                                            \
        if (json_num(json, jkey, &d))                                                                   \
            CHECK(mllm__gguf_get_int(&g, k_, &v) && v == (int64_t)d, "%s: %s = %lld, meta %s = %g", fname, \
                  k_, (long long)v, jkey, d);                                                           \
        else                                                                                            \
            CHECK(mllm__gguf_find(&g, k_) == NULL, "%s: %s present but meta %s is null", fname, k_, jkey); \
    } while (0)
    META_INT("file_type", "general.file_type%.0s");
    META_INT("n_ctx_train", "%s.context_length");
    META_INT("n_embd", "%s.embedding_length");
    META_INT("n_layer", "%s.block_count");
    META_INT("n_ff", "%s.feed_forward_length");
    META_INT("n_head", "%s.attention.head_count");
    META_INT("n_head_kv", "%s.attention.head_count_kv");
    META_INT("head_dim_k", "%s.attention.key_length");
    META_INT("head_dim_v", "%s.attention.value_length");
    META_INT("n_rot", "%s.rope.dimension_count");
    META_INT("n_expert", "%s.expert_count");
    META_INT("n_expert_used", "%s.expert_used_count");
    META_INT("n_ff_exp", "%s.expert_feed_forward_length");
    META_INT("bos", "tokenizer.ggml.bos_token_id%.0s");
    META_INT("eos", "tokenizer.ggml.eos_token_id%.0s");
    META_INT("unk", "tokenizer.ggml.unknown_token_id%.0s");
    {
        char k_[128];
        snprintf(k_, sizeof k_, "%s.rope.freq_base", arch);
        CHECK(json_num(json, "rope_theta", &d) && mllm__gguf_get_f32(&g, k_, &f) && f == (float)d, "%s: rope", fname);
        snprintf(k_, sizeof k_, "%s.attention.layer_norm_rms_epsilon", arch);
        CHECK(json_num(json, "rms_eps", &d) && mllm__gguf_get_f32(&g, k_, &f) && f == (float)d, "%s: eps %g", fname, f);
    }
    CHECK(json_str(json, "name", s1, sizeof s1) && mllm__gguf_get_str(&g, "general.name", &s) && str_is(s, s1),
          "%s: name", fname);
    CHECK(json_str(json, "tokenizer_model", s1, sizeof s1) && mllm__gguf_get_str(&g, "tokenizer.ggml.model", &s) &&
              str_is(s, s1), "%s: tokenizer model", fname);
    CHECK(json_str(json, "tokenizer_pre", s1, sizeof s1) && mllm__gguf_get_str(&g, "tokenizer.ggml.pre", &s) &&
              str_is(s, s1), "%s: tokenizer pre", fname);
    CHECK(mllm__gguf_get_bool(&g, "tokenizer.ggml.add_bos_token", &b) && b == (strstr(json, "\"add_bos\": true") != NULL),
          "%s: add_bos", fname);
    CHECK(mllm__gguf_get_bool(&g, "tokenizer.ggml.add_eos_token", &b) && b == (strstr(json, "\"add_eos\": true") != NULL),
          "%s: add_eos", fname);
    {
        const mllm__gguf_kv *kv = mllm__gguf_find(&g, "tokenizer.ggml.tokens");
        CHECK(json_num(json, "vocab_size", &d) && kv && kv->arr_type == MLLM__GGUF_STRING && kv->arr_n == (uint64_t)d,
              "%s: vocab size", fname);
        if (kv && kv->arr_type == MLLM__GGUF_STRING) {
            mllm__str *toks = (mllm__str *)malloc((size_t)kv->arr_n * sizeof *toks);
            CHECK(mllm__gguf_arr_strings(kv, toks) == MLLM_OK, "tokens");
            /* README: byte tokens <0x00>..<0xFF> are ids 3..258 */
            CHECK(kv->arr_n > 258 && str_is(toks[3], "<0x00>") && str_is(toks[13], "<0x0A>") && str_is(toks[258], "<0xFF>"),
                  "%s: byte tokens", fname);
            free(toks);
        }
    }
    /* gguf-py counts three header fields (GGUF.version, tensor_count, kv_count) as keys */
    CHECK(json_num(json, "n_kv_keys", &d) && g.n_kv == (uint64_t)d - 3, "%s: n_kv %llu", fname, (unsigned long long)g.n_kv);
    CHECK(json_num(json, "n_tensors", &d) && g.n_tensors == (uint64_t)d, "%s: n_tensors", fname);
    CHECK((mllm__gguf_tensor_find(&g, "output.weight") == NULL) == (strstr(json, "\"tied_embeddings\": true") != NULL),
          "%s: tied embeddings", fname);

    /* tensor lines: "  name   TYPE   [ne0, ne1, ...]" */
    for (p = strchr(meta, '\n'); p && p[1]; p = strchr(p + 1, '\n')) {
        char name[128], type[16], shape[64];
        const mllm__gguf_tensor *t;
        const mllm__type_traits *tr;
        int nd = 0;
        char *q;
        if (sscanf(p + 1, "%127s %15s %63[^\n]", name, type, shape) != 3) continue;
        n_lines++;
        t = mllm__gguf_tensor_find(&g, name);
        CHECK(t != NULL, "%s: tensor %s missing", fname, name);
        if (!t) continue;
        tr = mllm__traits(t->type);
        CHECK(tr && strcmp(tr->name, type) == 0, "%s: %s type %u, meta %s", fname, name, t->type, type);
        for (q = shape; (q = strpbrk(q, "0123456789")) != NULL; nd++) {
            long long ne = strtoll(q, &q, 10);
            CHECK(nd < 4 && t->ne[nd] == ne, "%s: %s ne[%d] = %lld, meta %lld", fname, name, nd,
                  (long long)t->ne[nd < 4 ? nd : 0], ne);
        }
        CHECK(nd == t->n_dims, "%s: %s n_dims %d, meta %d", fname, name, t->n_dims, nd);
        {
            uint64_t nel = (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
            CHECK(t->nbytes == spec_nbytes_by_name(type, nel) && t->nbytes > 0, "%s: %s nbytes %zu, spec %llu",
                  fname, name, t->nbytes, (unsigned long long)spec_nbytes_by_name(type, nel));
        }
    }
    CHECK((uint64_t)n_lines == g.n_tensors, "%s: %d tensor lines", fname, n_lines);
    check_norm_values(&g, fname, "output_norm.weight");
    check_norm_values(&g, fname, "blk.1.ffn_norm.weight");
    free(meta);
    mllm__gguf_close(&g);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static void test_tiny_models_match_fixtures(void) {
    char dir[512], names[32][128];
    DIR *dp;
    struct dirent *e;
    int n = 0, i;
    snprintf(dir, sizeof dir, "%s/tiny/models", t_testdata());
    dp = opendir(dir);
    CHECK(dp != NULL, "cannot list %s", dir);
    if (!dp) return;
    while ((e = readdir(dp)) != NULL)
        if (ends_with(e->d_name, ".gguf") && n < 32) snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    closedir(dp);
    CHECK(n == 16, "%d tiny models (README lists 16)", n);
    for (i = 0; i < n; i++) check_tiny_model(dir, names[i]);
}

/* Parsing from memory and through mmap give the same index. */
static void test_parse_memory_equals_mmap(void) {
    mllm__gguf a, b;
    size_t len;
    uint64_t i;
    const char *path = path_of(t_testdata(), "tiny/models/tiny-qwen3moe-Q8_0.gguf", "");
    char *buf = t_read_file(path, &len);
    CHECK(buf != NULL, "read %s", path);
    if (!buf) return;
    CHECK(mllm__gguf_parse(&a, buf, len) == MLLM_OK, "%s", mllm_last_error());
    CHECK(mllm__gguf_open(&b, path) == MLLM_OK, "%s", mllm_last_error());
    CHECK(a.n_kv == b.n_kv && a.n_tensors == b.n_tensors && a.data_offset == b.data_offset, "counts differ");
    for (i = 0; i < a.n_tensors && i < b.n_tensors; i++)
        CHECK(a.tensors[i].offset == b.tensors[i].offset && a.tensors[i].nbytes == b.tensors[i].nbytes &&
                  memcmp(a.tensors[i].data, b.tensors[i].data, a.tensors[i].nbytes) == 0, "tensor %llu",
              (unsigned long long)i);
    CHECK(b.map_handle != NULL && a.map_handle == NULL, "mapping ownership");
    mllm__gguf_close(&a);
    mllm__gguf_close(&b);
    free(buf);
}

static void test_tokenizer_vocabularies(void) {
    /* tokenizer.ggml.model per file, from the tokenizer README */
    static const char *const files[][2] = {
        {"llama-spm", "llama"}, {"llama-bpe", "gpt2"}, {"qwen2", "gpt2"}, {"gpt-2", "gpt2"},
        {"phi-3", "llama"}, {"starcoder", "gpt2"}, {"deepseek-coder", "gpt2"},
    };
    size_t f;
    for (f = 0; f < N_OF(files); f++) {
        char name[128];
        mllm__gguf g;
        mllm__str s;
        const mllm__gguf_kv *toks, *types, *scores, *merges;
        char *out, *p;
        uint64_t n_tok, i, max_id = 0;
        int bad = 0;
        snprintf(name, sizeof name, "tokenizer/ggml-vocab-%s.gguf", files[f][0]);
        CHECK(mllm__gguf_open(&g, path_of(t_testdata(), name, "")) == MLLM_OK, "%s: %s", name, mllm_last_error());
        CHECK(g.n_tensors == 0, "%s: vocabulary files hold no tensors", name);
        CHECK(mllm__gguf_get_str(&g, "tokenizer.ggml.model", &s) && str_is(s, files[f][1]), "%s: model", name);
        toks = mllm__gguf_find(&g, "tokenizer.ggml.tokens");
        types = mllm__gguf_find(&g, "tokenizer.ggml.token_type");
        scores = mllm__gguf_find(&g, "tokenizer.ggml.scores");
        merges = mllm__gguf_find(&g, "tokenizer.ggml.merges");
        CHECK(toks && toks->arr_type == MLLM__GGUF_STRING && toks->arr_n > 1000, "%s: tokens", name);
        n_tok = toks ? toks->arr_n : 0;
        CHECK(types && types->arr_n == n_tok, "%s: token_type length", name);
        CHECK(!scores || (scores->arr_type == MLLM__GGUF_F32 && scores->arr_n == n_tok), "%s: scores", name);
        CHECK((merges != NULL) == (strcmp(files[f][1], "gpt2") == 0), "%s: BPE files and only they have merges", name);
        if (merges && merges->arr_type == MLLM__GGUF_STRING) {
            /* every BPE merge is "left right" */
            mllm__str *m = (mllm__str *)malloc((size_t)merges->arr_n * sizeof *m);
            CHECK(mllm__gguf_arr_strings(merges, m) == MLLM_OK, "merges");
            for (i = 0; i < merges->arr_n; i++)
                if ((m[i].n < 3 || !memchr(m[i].p + 1, ' ', m[i].n - 2)) && bad++ < 3)
                    CHECK(0, "%s: merge %llu is '%.*s'", name, (unsigned long long)i, (int)m[i].n, m[i].p);
            free(m);
        }
        /* every expected token id of the reference tokenizations exists */
        snprintf(name, sizeof name, "tokenizer/ggml-vocab-%s.gguf.out", files[f][0]);
        out = t_read_file(path_of(t_testdata(), name, ""), NULL);
        CHECK(out != NULL, "%s missing", name);
        for (p = out; p && *p;) {
            char *e;
            unsigned long long id = strtoull(p, &e, 10);
            if (e == p) { p++; continue; }
            if (id > max_id) max_id = id;
            p = e;
        }
        CHECK(max_id > 0 && max_id < n_tok, "%s: max id %llu, %llu tokens", name, (unsigned long long)max_id,
              (unsigned long long)n_tok);
        free(out);
        mllm__gguf_close(&g);
    }
}

/* SmolLM2-135M-Instruct: facts from its published config.json (hidden 576, 30 layers, 9 heads, 3 KV
   heads, FFN 1536, vocab 49152, context 8192, rope theta 1e5, tied embeddings). */
static void test_smollm2(void) {
    const char *path = getenv("MLLM_MODEL");
    mllm__gguf g;
    const mllm__gguf_tensor *t;
    const mllm__gguf_kv *kv;
    mllm__str s;
    float f;
    FILE *fp;
    if (!path) path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    fp = fopen(path, "rb");
    if (!fp) { printf("  note: %s absent, SmolLM2 checks skipped (make model)\n", path); return; }
    fclose(fp);
    CHECK(mllm__gguf_open(&g, path) == MLLM_OK, "%s", mllm_last_error());
    CHECK(mllm__gguf_get_str(&g, "general.architecture", &s) && str_is(s, "llama"), "arch");
    CHECK(get_int_or(&g, "llama.embedding_length", -1) == 576, "n_embd");
    CHECK(get_int_or(&g, "llama.block_count", -1) == 30, "n_layer");
    CHECK(get_int_or(&g, "llama.attention.head_count", -1) == 9, "n_head");
    CHECK(get_int_or(&g, "llama.attention.head_count_kv", -1) == 3, "n_head_kv");
    CHECK(get_int_or(&g, "llama.feed_forward_length", -1) == 1536, "n_ff");
    CHECK(get_int_or(&g, "llama.context_length", -1) == 8192, "n_ctx");
    CHECK(mllm__gguf_get_f32(&g, "llama.rope.freq_base", &f) && f == 100000.0f, "rope theta");
    kv = mllm__gguf_find(&g, "tokenizer.ggml.tokens");
    CHECK(kv && kv->arr_n == 49152, "vocab");
    CHECK(g.n_tensors == 2 + 30 * 9, "n_tensors %llu", (unsigned long long)g.n_tensors);   /* embd, norm, 9/layer */
    CHECK(mllm__gguf_tensor_find(&g, "output.weight") == NULL, "tied embeddings");
    t = mllm__gguf_tensor_find(&g, "token_embd.weight");
    CHECK(t && t->n_dims == 2 && t->ne[0] == 576 && t->ne[1] == 49152, "token_embd shape");
    t = mllm__gguf_tensor_find(&g, "blk.29.attn_k.weight");
    CHECK(t && t->ne[0] == 576 && t->ne[1] == 3 * 64 && t->type == MLLM__Q4_1, "attn_k shape (head_dim 64) and type");
    t = mllm__gguf_tensor_find(&g, "blk.0.ffn_down.weight");
    CHECK(t && t->ne[0] == 1536 && t->ne[1] == 576, "ffn_down shape");
    check_packed_layout(&g, path);
    mllm__gguf_close(&g);
}

int main(void) {
    RUN(test_roundtrip_every_value_type);
    RUN(test_bad_magic);
    RUN(test_version_1_unsupported);
    RUN(test_version_unknown);
    RUN(test_version_big_endian);
    RUN(test_absurd_n_kv);
    RUN(test_absurd_n_tensors);
    RUN(test_n_kv_one_too_many);
    RUN(test_huge_string_length);
    RUN(test_max_string_length);
    RUN(test_huge_array_count);
    RUN(test_array_count_wrapping_size);
    RUN(test_huge_string_array_count);
    RUN(test_unknown_value_type);
    RUN(test_unknown_array_element_type);
    RUN(test_bad_bool_value);
    RUN(test_nested_array);
    RUN(test_unknown_tensor_type);
    RUN(test_tensor_type_huge_id);
    RUN(test_n_dims_0);
    RUN(test_n_dims_5);
    RUN(test_dim_zero);
    RUN(test_dims_product_overflow);
    RUN(test_row_not_whole_blocks);
    RUN(test_tensor_data_outside_file);
    RUN(test_tensor_offset_huge);
    RUN(test_misaligned_offset);
    RUN(test_overlapping_tensors);
    RUN(test_bad_alignment_zero);
    RUN(test_bad_alignment_not_pow2);
    RUN(test_bad_alignment_huge);
    RUN(test_alignment_not_integer);
    RUN(test_duplicate_tensor_names);
    RUN(test_duplicate_keys);
    RUN(test_truncated_last_tensor_byte);
    RUN(test_empty_input);
    RUN(test_open_errors);
    RUN(test_truncated_at_every_offset);
    RUN(test_fuzz_mutations);
    RUN(test_tiny_models_match_fixtures);
    RUN(test_parse_memory_equals_mmap);
    RUN(test_tokenizer_vocabularies);
    RUN(test_smollm2);
    return t_finish();
}
