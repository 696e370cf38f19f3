/* Weight types: f16/bf16 conversions, dequantization, activation quantization and dot products, each
   against an independent reference written here from the GGUF format description (double precision).
   Built twice: as is (SIMD kernels where the CPU has them) and with -DMLLM_NO_SIMD (tests/quant.mk).
   The dot-product tests run once per SIMD level the CPU has (x86: AVX-512, AVX2, scalar; chosen at
   run time, forced here), and the SIMD levels must agree bit for bit with each other. */
#define METALLLM_IMPLEMENTATION
#include "metalllm.h"
#include "test.h"

/* ---------------------------------------------------------------- helpers */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {   /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rnd_unit(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }   /* [0,1) */
static float rnd_normalish(void) { return (float)((rnd_unit() + rnd_unit() + rnd_unit() - 1.5) * 2.0); }

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* IEEE half by its fields: sign, 5-bit exponent (bias 15), 10-bit fraction. */
static double ref_half(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}
/* bfloat16: the top half of a float32 (8-bit exponent, bias 127, 7-bit fraction). */
static double ref_bf16(uint16_t h) {
    int e = (h >> 7) & 255, m = h & 127;
    double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
    return (h & 0x8000) ? -v : v;
}

/* Nearest half to v by search over the ordered positive halves (ties to the even fraction).  The bit
   pattern 0x7c00 stands for 65536 here, the value the next binade would start with, so everything that
   rounds past 65504 becomes infinity as IEEE says. */
static uint16_t ref_to_half(double v) {
    uint16_t sign = (uint16_t)(signbit(v) ? 0x8000 : 0);
    double a = fabs(v);
    int lo = 0, hi = 0x7c00;
    if (isnan(v)) return 0x7e00;
    if (a >= 65536.0) return (uint16_t)(sign | 0x7c00);
    while (hi - lo > 1) {   /* invariant: val(lo) <= a < val(hi) */
        int mid = (lo + hi) / 2;
        if ((mid == 0x7c00 ? 65536.0 : ref_half((uint16_t)mid)) <= a) lo = mid; else hi = mid;
    }
    {
        double dl = a - ref_half((uint16_t)lo), dh = (hi == 0x7c00 ? 65536.0 : ref_half((uint16_t)hi)) - a;
        int r = dl < dh ? lo : dh < dl ? hi : ((lo & 1) ? hi : lo);
        return (uint16_t)(sign | r);
    }
}

/* Nearest bfloat16: the two candidates are the truncation and the next pattern up. */
static uint16_t ref_to_bf16(float f) {
    uint32_t u = f2u(f), t = u & 0xffff0000u;
    double a = fabs((double)f), dl, dh;
    if (isnan(f)) return 0x7fc0;
    dl = a - fabs(ref_bf16((uint16_t)(t >> 16)));
    dh = ((t & 0x7fffffff) == 0x7f7f0000u ? ldexp(1.0, 128) : fabs(ref_bf16((uint16_t)((t >> 16) + 1)))) - a;
    if (dl < dh || (dl == dh && !((t >> 16) & 1))) return (uint16_t)(t >> 16);
    return (uint16_t)((t >> 16) + 1);
}

/* Round half to even, spelled out. */
static int ref_round(float v) {
    double fl = floor((double)v), diff = (double)v - fl;
    if (diff > 0.5 || (diff == 0.5 && fmod(fl, 2.0) != 0.0)) fl += 1.0;
    return (int)fl;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

/* ---------------------------------------------------------------- reference block decoders */
static const uint32_t WEIGHT_TYPES[] = {MLLM__F32, MLLM__F16, MLLM__BF16, MLLM__Q4_0, MLLM__Q4_1, MLLM__Q5_0,
                                        MLLM__Q5_1, MLLM__Q8_0, MLLM__Q4_K, MLLM__Q5_K, MLLM__Q6_K,
                                        MLLM__Q2_K, MLLM__Q3_K, MLLM__IQ4_NL, MLLM__IQ4_XS};
#define N_WEIGHT_TYPES ((int)(sizeof WEIGHT_TYPES / sizeof WEIGHT_TYPES[0]))

static int block_of(uint32_t t) { return mllm__traits(t)->block; }
static int bytes_of(uint32_t t) { return mllm__traits(t)->bytes; }

/* Q4_K/Q5_K: 8 six-bit scales and mins in 12 bytes.  Scales 0-3 and mins 0-3 are the low 6 bits of
   bytes 0-3 and 4-7.  Scale 4+k: low nibble of byte 8+k, high bits = top 2 bits of byte k.
   Min 4+k: high nibble of byte 8+k, high bits = top 2 bits of byte 4+k. */
static void ref_k4_scales(const uint8_t *s, int sc[8], int mn[8]) {
    int k;
    for (k = 0; k < 4; k++) {
        sc[k] = s[k] % 64;
        mn[k] = s[4 + k] % 64;
        sc[4 + k] = s[8 + k] % 16 + (s[k] / 64) * 16;
        mn[4 + k] = s[8 + k] / 16 + (s[4 + k] / 64) * 16;
    }
}

/* Decodes one block to doubles.  min_out (legacy blocks): the additive min m of the block, or 0. */
static void ref_block(uint32_t t, const uint8_t *b, double *v, double *min_out) {
    int i;
    if (min_out) *min_out = 0.0;
    switch (t) {
    case MLLM__F32: v[0] = u2f((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24); break;
    case MLLM__F16: v[0] = ref_half(rd16(b)); break;
    case MLLM__BF16: v[0] = ref_bf16(rd16(b)); break;
    case MLLM__Q4_0: case MLLM__Q4_1: case MLLM__Q5_0: case MLLM__Q5_1: {
        /* d [, m] [, qh(4)] , qs(16): element i<16 = low nibble of qs[i], i>=16 high nibble of qs[i-16];
           5-bit formats: bit i of qh (little-endian) is bit 4 of element i. */
        int has_m = t == MLLM__Q4_1 || t == MLLM__Q5_1, five = t == MLLM__Q5_0 || t == MLLM__Q5_1;
        const uint8_t *qh = b + 2 + 2 * has_m, *qs = qh + 4 * five;
        double d = ref_half(rd16(b)), m = has_m ? ref_half(rd16(b + 2)) : 0.0;
        uint32_t hbits = five ? (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24 : 0;
        for (i = 0; i < 32; i++) {
            int q = i < 16 ? qs[i] & 15 : qs[i - 16] >> 4;
            q += (int)((hbits >> i) & 1) * 16;
            if (!has_m) q -= five ? 16 : 8;
            v[i] = has_m ? d * q + m : d * q;
        }
        if (min_out) *min_out = m;
        break;
    }
    case MLLM__Q8_0: case MLLM__Q8_1: {   /* d [, s], int8 qs[32] */
        double d = ref_half(rd16(b));
        for (i = 0; i < 32; i++) v[i] = d * (int8_t)b[(t == MLLM__Q8_1 ? 4 : 2) + i];
        break;
    }
    case MLLM__Q4_K: case MLLM__Q5_K: {
        /* d, dmin, scales(12), [qh(32)], qs(128).  Element i is in sub-block i/32; its 4 low bits are the
           low (i%64 < 32) or high nibble of qs[32*(i/64) + i%32]; Q5_K's bit 4 is bit i/32 of qh[i%32]. */
        int sc[8], mn[8];
        double d = ref_half(rd16(b)), dmin = ref_half(rd16(b + 2));
        const uint8_t *qh = b + 16, *qs = b + (t == MLLM__Q5_K ? 48 : 16);
        ref_k4_scales(b + 4, sc, mn);
        for (i = 0; i < 256; i++) {
            int byte = qs[32 * (i / 64) + i % 32];
            int q = (i % 64 < 32) ? byte & 15 : byte >> 4;
            if (t == MLLM__Q5_K) q += ((qh[i % 32] >> (i / 32)) & 1) * 16;
            v[i] = d * sc[i / 32] * q - dmin * mn[i / 32];
        }
        break;
    }
    case MLLM__Q6_K: {
        /* ql(128), qh(64), int8 scales(16), d.  In each half h of 128 elements, quarter r (32 each), lane
           l: low 4 bits from ql[64h + 32*(r%2) + l] (low nibble for r<2, high for r>=2), 2 high bits
           from qh[32h + l] at bit 2r; value d * scale[i/16] * (q - 32). */
        double d = ref_half(rd16(b + 208));
        for (i = 0; i < 256; i++) {
            int h = i / 128, r = (i % 128) / 32, l = i % 32;
            int lowbyte = b[64 * h + 32 * (r % 2) + l];
            int q = (r < 2 ? lowbyte & 15 : lowbyte >> 4) | ((b[128 + 32 * h + l] >> (2 * r)) & 3) << 4;
            v[i] = d * (int8_t)b[192 + i / 16] * (q - 32);
        }
        break;
    }
    case MLLM__Q2_K: case MLLM__Q3_K: {
        /* Q2_K: scales(16), qs(64), d, dmin.  Q3_K: hmask(32), qs(64), scales(12), d.  Element i: in its
           half h = i/128, quarter r = (i%128)/32 and lane l = i%32, the 2 low bits are bits 2r, 2r+1 of
           qs[32h + l]; Q3_K subtracts 4 unless bit 4h + r of hmask[l] is set.  Q2_K: byte i/16 of scales
           holds the scale (low nibble) and min (high nibble) of its 16 elements.  Q3_K: 16 six-bit
           scales minus 32, scale k's low 4 bits in byte k%8 (low nibble for k<8, high for k>=8) and its
           top 2 bits at bit 2*(k/4) of byte 8 + k%4. */
        int q3 = t == MLLM__Q3_K;
        const uint8_t *qs = b + (q3 ? 32 : 16), *scl = b + (q3 ? 96 : 0);
        double d = ref_half(rd16(b + (q3 ? 108 : 80))), dmin = q3 ? 0.0 : ref_half(rd16(b + 82));
        for (i = 0; i < 256; i++) {
            int h = i / 128, r = (i % 128) / 32, l = i % 32, k = i / 16;
            int q = (qs[32 * h + l] >> (2 * r)) % 4;
            if (q3) {
                int sc = (k < 8 ? scl[k] % 16 : scl[k - 8] / 16) + ((scl[8 + k % 4] >> (2 * (k / 4))) % 4) * 16 - 32;
                if (!((b[l] >> (4 * h + r)) & 1)) q -= 4;
                v[i] = d * sc * q;
            } else {
                v[i] = d * (b[k] % 16) * q - dmin * (b[k] / 16);
            }
        }
        break;
    }
    case MLLM__IQ4_NL: case MLLM__IQ4_XS: {
        /* A nibble n stands for the level table[n] (GGUF's kvalues_iq4nl); each 32 elements take 16 bytes,
           element j < 16 the low nibble of byte j, 16 + j its high nibble.  IQ4_NL: d, qs(16).  IQ4_XS: d,
           scales_h (u16), scales_l(4), qs(128); the 32-block k has scale d * (ls - 32) with ls = nibble k%2
           of scales_l[k/2] plus 16 * bits 2k, 2k+1 of scales_h. */
        static const int level[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
        int xs = t == MLLM__IQ4_XS, n = xs ? 256 : 32;
        const uint8_t *qs = b + (xs ? 8 : 2);
        double d = ref_half(rd16(b));
        for (i = 0; i < n; i++) {
            int k = i / 32, j = i % 32, byte = qs[16 * k + j % 16];
            int nib = j < 16 ? byte % 16 : byte / 16;
            double dl = d;
            if (xs) dl = d * ((k % 2 ? b[4 + k / 2] / 16 : b[4 + k / 2] % 16) + ((rd16(b + 2) >> (2 * k)) % 4) * 16 - 32);
            v[i] = dl * level[nib];
        }
        break;
    }
    case MLLM__Q8_K: {   /* float d, int8 qs[256], int16 bsums[16] */
        float d;
        memcpy(&d, b, 4);
        for (i = 0; i < 256; i++) v[i] = (double)d * (int8_t)b[4 + i];
        break;
    }
    default: CHECK(0, "no reference for type %u", t);
    }
}

/* Random f16: any finite value when wide, else a positive-or-negative scale of moderate size. */
static uint16_t rnd_half(int wide) {
    if (wide) {
        uint16_t h;
        do h = (uint16_t)rnd(); while (((h >> 10) & 31) == 31);
        return h;
    }
    return mllm__f32_to_f16((float)((rnd() & 1 ? -1 : 1) * ldexp(1.0 + rnd_unit(), -8 - (int)(rnd() % 5))));
}

/* Sets the scale fields of nb blocks (and the value of float-like types) to random valid values
   (wide: any finite half), leaving the quant bytes as they are. */
static void set_scales(uint32_t t, uint8_t *p, int nb, int wide) {
    int i, bytes = bytes_of(t);
    for (i = 0; i < nb; i++, p += bytes) {
        switch (t) {
        case MLLM__F32: { float f = wide ? u2f((uint32_t)rnd() & 0xbfffffffu) : rnd_normalish(); memcpy(p, &f, 4); break; }
        case MLLM__F16: wr16(p, wide ? rnd_half(1) : mllm__f32_to_f16(rnd_normalish())); break;
        case MLLM__BF16: wr16(p, wide ? (uint16_t)(rnd() & 0xbfff) : mllm__f32_to_bf16(rnd_normalish())); break;
        case MLLM__Q4_1: case MLLM__Q5_1: case MLLM__Q4_K: case MLLM__Q5_K:
            wr16(p, rnd_half(wide)); wr16(p + 2, rnd_half(wide)); break;
        case MLLM__Q6_K: wr16(p + 208, rnd_half(wide)); break;
        case MLLM__Q2_K: wr16(p + 80, rnd_half(wide)); wr16(p + 82, rnd_half(wide)); break;
        case MLLM__Q3_K: wr16(p + 108, rnd_half(wide)); break;
        case MLLM__Q8_K: { float d = (float)((rnd_unit() - 0.5) * ldexp(1.0, wide ? (int)(rnd() % 60) - 30 : -7)); memcpy(p, &d, 4); break; }
        default: wr16(p, rnd_half(wide)); break;
        }
    }
}

/* nb random blocks: random quant bytes, valid scales. */
static void rnd_blocks(uint32_t t, uint8_t *p, int nb, int wide) {
    int i;
    for (i = 0; i < nb * bytes_of(t); i++) p[i] = (uint8_t)rnd();
    set_scales(t, p, nb, wide);
}

static void ref_row(uint32_t t, const uint8_t *p, int64_t n, double *v) {
    int64_t i;
    for (i = 0; i < n / block_of(t); i++) ref_block(t, p + i * bytes_of(t), v + i * block_of(t), NULL);
}

/* ---------------------------------------------------------------- f16 / bf16 */
/* Every one of the 65536 patterns of a 16-bit float type: the conversion to f32 and dequant_row against
   the reference decoder, and back again (finite values to themselves, NaN stays NaN of the same sign). */
static void check_16bit_exhaustive(uint32_t t, double (*ref)(uint16_t), float (*to32)(uint16_t), uint16_t (*to16)(float)) {
    static uint16_t all[65536];
    static float deq[65536];
    int i, bad = 0;
    for (i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    mllm__dequant_row(t, all, deq, 65536);
    for (i = 0; i < 65536; i++) {
        double r = ref((uint16_t)i);
        float f = to32((uint16_t)i);
        int ok = isnan(r) ? isnan(f) && !signbit(f) == !signbit(r) : f2u(f) == f2u((float)r);
        ok = ok && f2u(f) == f2u(deq[i]);
        if (ok && !isnan(r)) ok = to16(f) == (uint16_t)i;
        if (ok && isnan(r)) ok = (to16(f) & 0x7fff) > (t == MLLM__F16 ? 0x7c00 : 0x7f80) && (to16(f) & 0x8000) == (i & 0x8000);
        if (!ok && bad++ < 5) CHECK(0, "%s 0x%04x: got %a (bits %08x), want %a", mllm__traits(t)->name, i, f, f2u(f), r);
    }
    CHECK(bad == 0, "%d %s values wrong", bad, mllm__traits(t)->name);
}

static void test_f16_exhaustive(void) { check_16bit_exhaustive(MLLM__F16, ref_half, mllm__f16_to_f32, mllm__f32_to_f16); }
static void test_bf16_exhaustive(void) { check_16bit_exhaustive(MLLM__BF16, ref_bf16, mllm__bf16_to_f32, mllm__f32_to_bf16); }

static int check_to_half(float f) {
    uint16_t got = mllm__f32_to_f16(f), want = ref_to_half((double)f);
    if (isnan(f)) return (got & 0x7fff) > 0x7c00 && (got & 0x8000) == (f2u(f) >> 16 & 0x8000);
    return got == want;
}

/* f32 -> f16 round to nearest even: every midpoint between neighbouring halves and its float
   neighbours (ties, just-below, just-above), plus a sweep over all float exponents. */
static void test_f32_to_f16_rounding(void) {
    int h, bad = 0;
    long i;
    for (h = 0; h < 0x7c00; h++) {
        double lo = ref_half((uint16_t)h), hi = h + 1 == 0x7c00 ? 65536.0 : ref_half((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2);   /* exact: halves have 11 significant bits */
        float probes[5];
        int k;
        probes[0] = (float)lo; probes[1] = mid; probes[2] = nextafterf(mid, 0.0f);
        probes[3] = nextafterf(mid, INFINITY); probes[4] = -mid;
        for (k = 0; k < 5; k++)
            if (!check_to_half(probes[k]) && bad++ < 5)
                CHECK(0, "f32->f16 %a: got 0x%04x want 0x%04x", probes[k], mllm__f32_to_f16(probes[k]), ref_to_half(probes[k]));
    }
    for (i = 0; i < 2000000; i++) {
        float f = u2f((uint32_t)(i * 2147.0 + (double)(rnd() & 2047)));   /* strides over every exponent */
        if (!check_to_half(f) && bad++ < 5)
            CHECK(0, "f32->f16 %a (bits %08x): got 0x%04x want 0x%04x", f, f2u(f), mllm__f32_to_f16(f), ref_to_half(f));
    }
    CHECK(bad == 0, "%d f32->f16 conversions wrong", bad);
    CHECK(mllm__f32_to_f16(65519.99f) == 0x7bff && mllm__f32_to_f16(65520.0f) == 0x7c00, "overflow threshold");
    CHECK(mllm__f32_to_f16(-INFINITY) == 0xfc00, "-inf");
}

static void test_f32_to_bf16_rounding(void) {
    long i;
    int bad = 0;
    for (i = 0; i < 3000000; i++) {
        uint32_t u = (uint32_t)(i * 1431.0) ^ (uint32_t)(rnd() & 0xffff);
        float f = u2f(u);
        uint16_t got = mllm__f32_to_bf16(f);
        int ok = isnan(f) ? (got & 0x7fff) > 0x7f80 : got == ref_to_bf16(f);
        if (!ok && bad++ < 5) CHECK(0, "f32->bf16 %a: got 0x%04x want 0x%04x", f, got, ref_to_bf16(f));
    }
    /* exact ties: low half 0x8000, both parities */
    CHECK(mllm__f32_to_bf16(u2f(0x3f808000u)) == 0x3f80 && mllm__f32_to_bf16(u2f(0x3f818000u)) == 0x3f82, "bf16 ties to even");
    CHECK(bad == 0, "%d f32->bf16 conversions wrong", bad);
}

/* ---------------------------------------------------------------- dequantization */
static void test_dequant_all_types(void) {
    static const uint32_t types[] = {MLLM__F32, MLLM__F16, MLLM__BF16, MLLM__Q4_0, MLLM__Q4_1, MLLM__Q5_0,
                                     MLLM__Q5_1, MLLM__Q8_0, MLLM__Q8_1, MLLM__Q4_K, MLLM__Q5_K, MLLM__Q6_K, MLLM__Q8_K,
                                     MLLM__Q2_K, MLLM__Q3_K, MLLM__IQ4_NL, MLLM__IQ4_XS};
    int ti;
    for (ti = 0; ti < (int)(sizeof types / sizeof types[0]); ti++) {
        uint32_t t = types[ti];
        int64_t n = 256 * 16, i;
        int pass, bad = 0;
        uint8_t *row = (uint8_t *)malloc(mllm__row_bytes(t, n));
        float *got = (float *)malloc((size_t)n * sizeof(float));
        double *want = (double *)malloc((size_t)n * sizeof(double));
        for (pass = 0; pass < 8; pass++) {
            rnd_blocks(t, row, (int)(n / block_of(t)), pass % 2);
            mllm__dequant_row(t, row, got, n);
            ref_row(t, row, n, want);
            for (i = 0; i < n; i++)
                if (f2u(got[i]) != f2u((float)want[i]) && !(isnan(got[i]) && isnan(want[i])) && bad++ < 3)
                    CHECK(0, "%s element %ld: got %a want %a", mllm__traits(t)->name, (long)i, got[i], (float)want[i]);
        }
        CHECK(bad == 0, "%s: %d elements differ", mllm__traits(t)->name, bad);
        free(row); free(got); free(want);
    }
}

/* ---------------------------------------------------------------- activation quantizers */
/* Straightforward references: Q8_0/Q8_1 scale by 127/amax, round half to even, store d = amax/127 as
   f16 (Q8_1 also s = d * sum(q)); Q8_K maps the largest-magnitude element to -127, keeps d = 1/scale
   as float and stores per-16 sums. */
static void ref_quant(uint32_t t, const float *x, uint8_t *y) {
    int i;
    if (t == MLLM__Q8_K) {
        float amax = 0, max = 0, is, d;
        for (i = 0; i < 256; i++) if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); max = x[i]; }
        is = amax ? -127.0f / max : 0.0f;
        d = amax ? 1.0f / is : 0.0f;
        memcpy(y, &d, 4);
        for (i = 0; i < 16; i++) wr16(y + 260 + 2 * i, 0);
        for (i = 0; i < 256; i++) {
            int q = ref_round(is * x[i]);
            if (q > 127) q = 127;
            y[4 + i] = (uint8_t)q;
            wr16(y + 260 + 2 * (i / 16), (uint16_t)((int16_t)rd16(y + 260 + 2 * (i / 16)) + q));
        }
    } else {
        float amax = 0, d, id;
        int sum = 0, off = t == MLLM__Q8_1 ? 4 : 2;
        for (i = 0; i < 32; i++) if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
        d = amax / 127.0f;
        id = amax ? 127.0f / amax : 0.0f;
        for (i = 0; i < 32; i++) { int q = ref_round(x[i] * id); y[off + i] = (uint8_t)q; sum += q; }
        wr16(y, ref_to_half(d));
        if (t == MLLM__Q8_1) wr16(y + 2, ref_to_half(d * (float)sum));
    }
}

static void test_quant_activations(void) {
    static const uint32_t types[] = {MLLM__Q8_0, MLLM__Q8_1, MLLM__Q8_K, MLLM__F16, MLLM__BF16, MLLM__F32};
    int ti;
    for (ti = 0; ti < 6; ti++) {
        uint32_t t = types[ti];
        const int n = 1024, bs = block_of(t), by = bytes_of(t);
        float x[1024];
        double back[1024];
        uint8_t got[4096], want[4096];   /* 1024 floats at most */
        int pass, i, b;
        for (pass = 0; pass < 40; pass++) {
            double scale = ldexp(1.0, (int)(rnd() % 40) - 20);
            for (i = 0; i < n; i++) x[i] = (float)(rnd_normalish() * scale);
            if (pass == 1) memset(x, 0, sizeof x);                 /* all-zero blocks */
            if (pass == 2)                                          /* exact .5 ties: scale is 1 */
                for (i = 0; i < n; i++) x[i] = i % 32 == 0 ? ((i / 32) % 2 ? -127.0f : 127.0f) : (float)((int)(rnd() % 253) - 126) + 0.5f;
            mllm__quant_row(t, x, got, n);
            if (t == MLLM__F32) { CHECK(memcmp(got, x, sizeof x) == 0, "F32 is a copy"); continue; }
            if (t == MLLM__F16 || t == MLLM__BF16) {
                for (i = 0; i < n; i++) {
                    uint16_t h = rd16(got + 2 * i);
                    CHECK(h == (t == MLLM__F16 ? ref_to_half(x[i]) : ref_to_bf16(x[i])), "%s %a -> %04x", mllm__traits(t)->name, x[i], h);
                }
                continue;
            }
            for (b = 0; b < n / bs; b++) ref_quant(t, x + b * bs, want + b * by);
            CHECK(memcmp(got, want, (size_t)(n / bs * by)) == 0, "%s pass %d differs from the reference", mllm__traits(t)->name, pass);
            /* and it is a good quantization: each element within half a step, plus 127 times the f16
               rounding of d (relative 2^-11, or absolute 2^-25 once d is an f16 subnormal) */
            ref_row(t, got, n, back);
            for (b = 0; b < n / bs; b++) {
                float amax = 0;
                for (i = b * bs; i < (b + 1) * bs; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
                for (i = b * bs; i < (b + 1) * bs; i++)
                    CHECK(fabs(back[i] - x[i]) <= amax / 127.0 * (0.5 + 127.0 / 2048) + 127 * ldexp(1, -25), "%s round trip %g vs %g", mllm__traits(t)->name, back[i], x[i]);
            }
            if (pass == 2 && t != MLLM__Q8_K) CHECK((int8_t)got[(t == MLLM__Q8_1 ? 4 : 2) + 1] % 2 == 0, "ties go to even");
        }
    }
}

/* A hostile file's NaN or infinite weights make NaN and infinite activations: quantizing them must stay
   defined behaviour (the fuzzer found a NaN converted to int; this fails under make test-san without the
   fix), and the finite blocks of the same row must quantize exactly as alone. */
static void test_quant_nonfinite(void) {
    static const uint32_t types[] = {MLLM__Q8_0, MLLM__Q8_1, MLLM__Q8_K};
    const float bad[] = {NAN, INFINITY, -INFINITY, 3.0e38f, -3.0e38f};
    int ti, k, i;
    for (ti = 0; ti < 3; ti++)
        for (k = 0; k < 5; k++) {
            uint32_t t = types[ti];
            const int n = 512, bs = block_of(t), by = bytes_of(t);
            float x[512];
            uint8_t got[1024], want[1024];
            for (i = 0; i < n; i++) x[i] = (float)rnd_normalish();
            x[3] = bad[k];                      /* only the first block holds the bad value */
            mllm__quant_row(t, x, got, n);
            ref_quant(t, x + bs, want);
            CHECK(memcmp(got + by, want, (size_t)by) == 0, "%s: a finite block next to %g changed", mllm__traits(t)->name, bad[k]);
            if (k >= 3) {                       /* finite but huge: still a valid quantization */
                ref_quant(t, x, want);
                CHECK(memcmp(got, want, (size_t)by) == 0, "%s: block with %g differs from the reference", mllm__traits(t)->name, bad[k]);
            }
        }
}

/* ---------------------------------------------------------------- dot products */
/* Reference dot in double from the reference decoders.  Q8_1 partners are the exception to
   "dequantized weights . dequantized activations": the min term uses the block's stored s (f16 of
   d*sum(q)), as the format intends, so the reference does too. */
static double ref_dot(uint32_t t, int64_t n, const uint8_t *w, const uint8_t *x, double *mag) {
    uint32_t tx = (uint32_t)mllm__traits(t)->vec_dot_type;
    int bs = block_of(t), j;
    int64_t b;
    double dot = 0, wv[256], xv[256];
    *mag = 0;
    for (b = 0; b < n / bs; b++) {
        double m;
        ref_block(t, w + b * bytes_of(t), wv, &m);
        if (bs == 1) ref_block(tx, x + b * bytes_of(tx), xv, NULL);
        else ref_row(tx, x + b * (bs / block_of(tx)) * bytes_of(tx), bs, xv);
        for (j = 0; j < bs; j++) {
            double wq = wv[j] - m;   /* exact: d*q + m with moderate scales */
            dot += wq * xv[j];
            *mag += fabs(wq * xv[j]);
        }
        if (tx == MLLM__Q8_1) {
            double s = ref_half(rd16(x + b * 36 + 2));
            dot += m * s;
            *mag += fabs(m * s);
        }
    }
    return dot;
}

static void test_vec_dot(void) {
    static const int64_t lens[] = {1, 32, 256, 576, 1536, 4096, 37};
    int ti, li, j;
    float *xf = (float *)malloc(4 * 4096 * sizeof(float));
    uint8_t *w = (uint8_t *)malloc(4096 * 4 + 64), *x = (uint8_t *)malloc(4 * (4096 * 4 + 64));
    double worst = 0, worst_simd = 0;
    for (ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        uint32_t t = WEIGHT_TYPES[ti], tx = (uint32_t)mllm__traits(t)->vec_dot_type;
        for (li = 0; li < 7; li++) {
            int64_t n = lens[li] == 1 ? block_of(t) : lens[li] == 32 ? 8 * block_of(t) : lens[li];
            size_t xs = mllm__row_bytes(tx, n) + 4 * (size_t)li;   /* odd strides: unaligned rows */
            int rep;
            if (n % block_of(t)) continue;
            for (rep = 0; rep < 3; rep++) {
                float got[4], nx_out[4], scalar;
                double mag, want, tol;
                int nx;
                rnd_blocks(t, w, (int)(n / block_of(t)), 0);
                for (j = 0; j < 4 * n; j++) xf[j] = rnd_normalish() * (rep == 2 ? 1e3f : 1.0f);
                for (j = 0; j < 4; j++) mllm__quant_row(tx, xf + j * n, x + j * xs, n);
                for (j = 0; j < 4; j++) {
                    want = ref_dot(t, n, w, x + j * xs, &mag);
                    tol = 1e-6 * mag + 1e-30;   /* integer block sums are exact: only float rounding */
                    got[j] = mllm__vec_dot(t, n, w, x + j * xs);
                    scalar = mllm__vec_dot_scalar(t, n, w, x + j * xs);
                    CHECK(fabs(got[j] - want) <= tol, "%s n=%ld: vec_dot %.9g want %.9g (|err|/mag %.2g)",
                          mllm__traits(t)->name, (long)n, got[j], want, fabs(got[j] - want) / mag);
                    CHECK(fabs(scalar - want) <= tol, "%s n=%ld: scalar %.9g want %.9g", mllm__traits(t)->name, (long)n, scalar, want);
                    CHECK(fabs(got[j] - scalar) <= tol, "%s n=%ld: simd %.9g scalar %.9g", mllm__traits(t)->name, (long)n, got[j], scalar);
                    if (mag > 0 && fabs(got[j] - want) / mag > worst) worst = fabs(got[j] - want) / mag;
                    if (mag > 0 && fabs(got[j] - scalar) / mag > worst_simd) worst_simd = fabs(got[j] - scalar) / mag;
                }
                /* the multi-row kernel does per row exactly what the single-row one does */
                for (nx = 1; nx <= MLLM__DOT_MAX_NX; nx++) {
                    mllm__vec_dot_nx(t, n, w, x, xs, nx, nx_out);
                    CHECK(memcmp(nx_out, got, (size_t)nx * sizeof(float)) == 0, "%s n=%ld nx=%d: %.9g vs %.9g",
                          mllm__traits(t)->name, (long)n, nx, nx_out[nx - 1], got[nx - 1]);
                }
            }
        }
    }
    printf("  worst |dot - ref| / sum|w*x|: %.2g; simd vs scalar: %.2g\n", worst, worst_simd);
    free(xf); free(w); free(x);
}

/* Saturated quants (every byte 0x00 or 0xff: all-max or all-min values, extreme Q6_K scales) must not
   overflow the integer paths, and neither must activations at +-127. */
static void test_vec_dot_extremes(void) {
    const int64_t n = 1024;
    uint8_t *w = (uint8_t *)malloc(4096), *x = (uint8_t *)malloc(4096);
    float xf[1024];
    int ti, rep, i;
    for (ti = 3; ti < N_WEIGHT_TYPES; ti++) {
        uint32_t t = WEIGHT_TYPES[ti], tx = (uint32_t)mllm__traits(t)->vec_dot_type;
        int nb = (int)(n / block_of(t));
        for (rep = 0; rep < 8; rep++) {
            double mag, want;
            float got;
            for (i = 0; i < nb * bytes_of(t); i++) w[i] = rep < 2 ? (uint8_t)(rep ? 0xff : 0x00) : (rnd() & 1 ? 0xff : 0x00);
            set_scales(t, w, nb, 0);
            for (i = 0; i < n; i++) xf[i] = rep % 2 ? (i % 3 ? 1.0f : -1.0f) : rnd_normalish();
            mllm__quant_row(tx, xf, x, n);
            want = ref_dot(t, n, w, x, &mag);
            got = mllm__vec_dot(t, n, w, x);
            CHECK(fabs(got - want) <= 1e-6 * mag + 1e-30, "%s extreme rep %d: %.9g want %.9g", mllm__traits(t)->name, rep, got, want);
        }
    }
    free(w); free(x);
}

/* The x86 levels above AVX2 do the same integer sums and the same float operations in the same order,
   so every weight type's dot must give identical bits on each of them, for 1 to 4 activation rows. */
static void test_simd_levels_identical(void) {
    const int64_t n = 4096;
    const int top = mllm__simd_force(99);
    float *xf = (float *)malloc(4 * 4096 * sizeof(float));
    uint8_t *w = (uint8_t *)malloc(4096 * 4 + 64), *x = (uint8_t *)malloc(4 * (4096 * 4 + 64));
    int ti, j, nx, lvl, rep, compared = 0;
    for (ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        uint32_t t = WEIGHT_TYPES[ti], tx = (uint32_t)mllm__traits(t)->vec_dot_type;
        size_t xs = mllm__row_bytes(tx, n) + 3;
        for (rep = 0; rep < 4; rep++) {
            int64_t len = rep == 3 ? n - 3 * block_of(t) : n;   /* an odd block count too */
            float base[4], got[4];
            rnd_blocks(t, w, (int)(len / block_of(t)), 0);
            for (j = 0; j < 4 * len; j++) xf[j] = rnd_normalish() * (rep == 2 ? 1e3f : 1.0f);
            for (j = 0; j < 4; j++) mllm__quant_row(tx, xf + j * len, x + j * xs, len);
            for (nx = 1; nx <= MLLM__DOT_MAX_NX; nx++) {
                mllm__simd_force(1);
                mllm__vec_dot_nx(t, len, w, x, xs, nx, base);
                for (lvl = 2; lvl <= top; lvl++) {
                    CHECK(mllm__simd_force(lvl) == lvl, "level %d not available", lvl);
                    mllm__vec_dot_nx(t, len, w, x, xs, nx, got);
                    CHECK(memcmp(got, base, (size_t)nx * sizeof(float)) == 0, "%s n=%ld nx=%d: %s %.9g, %s %.9g",
                          mllm__traits(t)->name, (long)len, nx, mllm__simd_name(lvl), got[nx - 1],
                          mllm__simd_name(1), base[nx - 1]);
                    compared++;
                }
            }
        }
    }
    mllm__simd_force(top);
    printf("  %d comparisons between SIMD levels (top level: %s)\n", compared, mllm__simd_name(top));
    free(xf); free(w); free(x);
}

/* The prefill GEMM (mllm__simd_gemm, packed 16-row tiles) gives for every row and token exactly the bits
   of vec_dot, at each SIMD level that has it: row counts that leave partial tiles, token counts that
   leave a single token, K not a multiple of the pack's chunks, wide scales, and saturated quants. */
static void test_gemm_equals_vec_dot(void) {
    static const int64_t Ks[] = {32, 96, 256, 576, 1536, 1568, 40, 1544};   /* the last two: float rows' K % 16 tail */
    static const int rows_of[] = {1, 16, 37};
    enum { T = 53 };   /* past the float GEMM's 48-token groups; also 13, a batched-decode size */
    static const int n_toks[] = {T, 13};
    const int top = mllm__simd_force(99);
    float *xf = (float *)malloc(sizeof(float) * T * 1568), *f = (float *)malloc(sizeof(float) * T * 1568);
    float *out = (float *)malloc(sizeof(float) * T * 37), *pk_raw = (float *)malloc(mllm__gemm_pack_bytes(1568) + 64);
    uint8_t *w = (uint8_t *)malloc(37 * 1568 * 4), *q = (uint8_t *)malloc(T * 1568 * 2), *xq = (uint8_t *)malloc(T * 1568 * 4);
    float *d = (float *)malloc(sizeof(float) * T * 1568 / 32);
    int32_t *corr = (int32_t *)malloc(sizeof(int32_t) * T * 1568 / 4);
    uint8_t *pk = (uint8_t *)pk_raw + (64 - (uintptr_t)pk_raw % 64) % 64;
    int ti, ki, ri, lvl, t, r, rep, ni, ran = 0;
    for (ni = 0; ni < 2; ni++)
    for (lvl = 1; lvl <= top; lvl++) {
        mllm__simd_force(lvl);
        for (ti = 0; ti < N_WEIGHT_TYPES; ti++) {
            const uint32_t wt = WEIGHT_TYPES[ti], xt = (uint32_t)mllm__traits(wt)->vec_dot_type;
            if (!mllm__gemm_type(wt)) continue;
            for (ki = 0; ki < (int)(sizeof Ks / sizeof Ks[0]); ki++)
                for (ri = 0; ri < 3; ri++)
                    for (rep = 0; rep < 2; rep++) {
                        const int64_t K = Ks[ki];
                        const int R = rows_of[ri];
                        const size_t rb = mllm__row_bytes(wt, K), xs = mllm__row_bytes(xt, K);
                        mllm__gemm_x gx;
                        int bad = 0;
                        if (K % block_of(wt)) continue;
                        rnd_blocks(wt, w, (int)(R * K / block_of(wt)), rep);
                        if (rep && block_of(wt) == 32)   /* saturated legacy quants */
                            for (r = 0; r < R * (int)K / 32; r++) memset(w + (size_t)r * bytes_of(wt) + 2, r % 2 ? 0xff : 0x00, (size_t)bytes_of(wt) - 2);
                        for (t = 0; t < T * K; t++) xf[t] = rnd_normalish() * (rep ? 1e3f : 1.0f);
                        memset(&gx, 0, sizeof gx);
                        gx.q = q;
                        gx.qs = mllm__row_bytes(xt == MLLM__Q8_K ? MLLM__Q8_K : MLLM__Q8_0, K);
                        gx.d = d;
                        gx.corr = corr;
                        gx.ss = (size_t)(K / 32) * 8;
                        gx.f = f;
                        gx.fs = (size_t)K;
                        gx.n_out = R;
                        for (t = 0; t < T; t++) {
                            mllm__gemm_xrow(wt, xf + t * K, K, q + t * gx.qs, d + t * (K / 32), corr + t * gx.ss, f + t * K);
                            mllm__quant_row(xt, xf + t * K, xq + t * xs, K);
                        }
                        CHECK(mllm__simd_gemm(wt, w, rb, K, 0, R, &gx, n_toks[ni], out, pk), "%s: no gemm", mllm__traits(wt)->name);
                        for (t = 0; t < n_toks[ni]; t++)
                            for (r = 0; r < R; r++) {
                                const float want = mllm__vec_dot(wt, K, w + r * rb, xq + t * xs);
                                if (memcmp(&want, &out[t * R + r], sizeof want) && !bad++)
                                    CHECK(0, "%s %s K=%ld rows=%d tokens=%d row %d token %d: gemm %.9g, vec_dot %.9g", mllm__simd_name(lvl),
                                          mllm__traits(wt)->name, (long)K, R, n_toks[ni], r, t, out[t * R + r], want);
                            }
                        ran++;
                    }
        }
    }
    mllm__simd_force(top);
    printf("  %d GEMM cases compared with vec_dot\n", ran);
#if MLLM__X86
    CHECK(top < 1 || ran > 0, "no GEMM case ran");
#endif
    free(xf); free(f); free(out); free(pk_raw); free(w); free(q); free(xq); free(d); free(corr);
}

/* Decode's several-weight-rows kernels must give, at every level, the bits of one AVX2 row-dot per row
   (the same integer sums and float operations per row), for 1 to 4 rows and odd block counts. */
static void test_dot_rows_identical(void) {
    const int64_t n = 2048;
    const int top = mllm__simd_force(99);
    float *xf = (float *)malloc(2048 * sizeof(float));
    uint8_t *w = (uint8_t *)malloc(4 * (2048 * 4 + 64)), *x = (uint8_t *)malloc(2048 * 4 + 64);
    int ti, j, nr, lvl, rep, compared = 0;
    for (ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        uint32_t t = WEIGHT_TYPES[ti], tx = (uint32_t)mllm__traits(t)->vec_dot_type;
        for (rep = 0; rep < 4; rep++) {   /* odd block counts: Q4_0's last group of 8 blocks partial */
            int64_t len = rep == 2 ? n - 3 * block_of(t) : rep == 3 ? n - 9 * block_of(t) : n;
            size_t ws;
            float base[MLLM__DOT_MAX_ROWS], got[MLLM__DOT_MAX_ROWS];
            if (len <= 0) continue;   /* (9 super-blocks are more than a 2048-wide row holds) */
            ws = mllm__row_bytes(t, len) + (rep == 1 ? 5 : 0);   /* rows at any byte offset */
            for (j = 0; j < MLLM__DOT_MAX_ROWS; j++) rnd_blocks(t, w + j * ws, (int)(len / block_of(t)), 0);
            for (j = 0; j < len; j++) xf[j] = rnd_normalish() * (rep == 1 ? 1e3f : 1.0f);
            mllm__quant_row(tx, xf, x, len);
            mllm__simd_force(top > 0 ? 1 : 0);
            for (j = 0; j < MLLM__DOT_MAX_ROWS; j++) base[j] = mllm__vec_dot(t, len, w + j * ws, x);
            for (lvl = 0; lvl <= top; lvl++) {
                if (lvl == 0 && top > 0) continue;   /* the scalar kernels round differently from AVX2 */
                CHECK(mllm__simd_force(lvl) == lvl, "level %d not available", lvl);
                for (nr = 1; nr <= MLLM__DOT_MAX_ROWS; nr++) {
                    /* the nr rows alone in a block that ends with the last one: a kernel reading rows
                       past nr (or past a row's end) is a heap overflow under make test-san */
                    const size_t bytes = (size_t)(nr - 1) * ws + mllm__row_bytes(t, len);
                    uint8_t *wn = (uint8_t *)malloc(bytes);
                    memcpy(wn, w, bytes);
                    mllm__vec_dot_rows(t, len, wn, ws, nr, x, got);
                    free(wn);
                    CHECK(memcmp(got, base, (size_t)nr * sizeof(float)) == 0, "%s n=%ld nr=%d: %s %.9g, want %.9g",
                          mllm__traits(t)->name, (long)len, nr, mllm__simd_name(lvl), got[nr - 1], base[nr - 1]);
                    compared++;
                }
            }
        }
    }
    mllm__simd_force(top);
    printf("  %d several-row comparisons (top level: %s)\n", compared, mllm__simd_name(top));
    free(xf); free(w); free(x);
}

/* mllm__traits is a table indexed by type id: every id must give the GGUF spec's name and block layout
   for that id or NULL (a type we do not run), and NULL past the table.  The table is positional, so a
   missing or extra row would shift every later type.  The types we run must all be there. */
static void test_type_traits_by_id(void) {
    static const struct { uint32_t id; const char *name; int block, bytes, required; } spec[] = {
        {0, "F32", 1, 4, 1}, {1, "F16", 1, 2, 1}, {2, "Q4_0", 32, 18, 1}, {3, "Q4_1", 32, 20, 1},
        {6, "Q5_0", 32, 22, 1}, {7, "Q5_1", 32, 24, 1}, {8, "Q8_0", 32, 34, 1}, {9, "Q8_1", 32, 36, 1},
        {10, "Q2_K", 256, 84, 1}, {11, "Q3_K", 256, 110, 1}, {12, "Q4_K", 256, 144, 1},
        {13, "Q5_K", 256, 176, 1}, {14, "Q6_K", 256, 210, 1}, {15, "Q8_K", 256, 292, 1},
        {16, "IQ2_XXS", 256, 66, 0}, {17, "IQ2_XS", 256, 74, 0}, {18, "IQ3_XXS", 256, 98, 0},
        {19, "IQ1_S", 256, 50, 0}, {20, "IQ4_NL", 32, 18, 1}, {21, "IQ3_S", 256, 110, 0},
        {22, "IQ2_S", 256, 82, 0}, {23, "IQ4_XS", 256, 136, 1}, {24, "I8", 1, 1, 0}, {25, "I16", 1, 2, 0},
        {26, "I32", 1, 4, 0}, {27, "I64", 1, 8, 0}, {28, "F64", 1, 8, 0}, {29, "IQ1_M", 256, 56, 0},
        {30, "BF16", 1, 2, 1}, {34, "TQ1_0", 256, 54, 0}, {35, "TQ2_0", 256, 66, 0}, {39, "MXFP4", 32, 17, 0},
    };
    const uint32_t beyond[] = {MLLM__NTYPES, 1000, 0xffffffffu};
    uint32_t id;
    size_t i;
    for (id = 0; id < MLLM__NTYPES; id++) {
        const mllm__type_traits *t = mllm__traits(id);
        for (i = 0; i < sizeof spec / sizeof spec[0] && spec[i].id != id; i++) {}
        if (i == sizeof spec / sizeof spec[0]) {
            CHECK(t == NULL, "type %u is not a GGUF type, yet has traits (%s)", id, t ? t->name : "");
            continue;
        }
        CHECK(t || !spec[i].required, "type %u (%s) has no traits", id, spec[i].name);
        if (!t) continue;
        CHECK(!strcmp(t->name, spec[i].name) && t->block == spec[i].block && t->bytes == spec[i].bytes,
              "type %u: want %s %d/%d, got %s %d/%d", id, spec[i].name, spec[i].block, spec[i].bytes, t->name,
              t->block, t->bytes);
        CHECK(mllm__traits((uint32_t)t->vec_dot_type) != NULL, "type %u: vec_dot_type has no traits", id);
    }
    for (i = 0; i < sizeof beyond / sizeof beyond[0]; i++)
        CHECK(mllm__traits(beyond[i]) == NULL, "type %u past the table has traits", beyond[i]);
}

/* Batched decode's kernels (mllm__simd_dot_tok: each weight block unpacked once for up to 8 activation
   rows, over groups of weight rows) give for every row and token exactly the bits of vec_dot: token
   counts 1 to 19 (every chunk split 8/4/2/1), row ranges that start past 0 and leave partial groups,
   odd block counts, wide scales and saturated quants.  The reference vec_dot runs at the AVX2 level. */
static void test_dot_tok_equals_vec_dot(void) {
    enum { T = 19, R = 37, KMAX = 2048 + 256 };
    const int top = mllm__simd_force(99);
    float *xf = (float *)malloc(sizeof(float) * KMAX), *out = (float *)malloc(sizeof(float) * T * R);
    uint8_t *w = (uint8_t *)malloc((size_t)R * KMAX * 4), *x = (uint8_t *)malloc((size_t)T * (KMAX * 4 + 64));
    int ti, rep, n_tok, t, r, lvl, ran = 0;
    for (lvl = 2; lvl <= top; lvl++)
        for (ti = 0; ti < N_WEIGHT_TYPES; ti++)
            for (rep = 0; rep < 3; rep++) {
                const uint32_t wt = WEIGHT_TYPES[ti], xt = (uint32_t)mllm__traits(wt)->vec_dot_type;
                const int64_t K = rep == 1 ? 2048 + block_of(wt) : 2048 - (rep == 2 ? 3 * block_of(wt) : 0);
                const size_t rb = mllm__row_bytes(wt, K), xs = mllm__row_bytes(xt, K) + 3;
                const int r0 = rep == 2 ? 5 : 0;
                rnd_blocks(wt, w, (int)(R * K / block_of(wt)), rep == 1);
                if (rep == 2 && block_of(wt) > 1) {   /* saturated quants (and Q6_K scales), the f16 scales kept */
                    const int off = block_of(wt) == 32 ? 2 : wt == MLLM__Q6_K ? 0 : 4;
                    const int len = wt == MLLM__Q6_K ? 208 : bytes_of(wt) - off;
                    for (r = 0; r < R * (int)(K / block_of(wt)); r += 3)
                        memset(w + (size_t)r * bytes_of(wt) + off, r % 2 ? 0xff : 0x00, (size_t)len);
                }
                for (t = 0; t < T; t++) {
                    int k;
                    for (k = 0; k < K; k++) xf[k] = rnd_normalish() * (rep == 1 ? 1e3f : 1.0f);
                    mllm__quant_row(xt, xf, x + (size_t)t * xs, K);
                }
                for (n_tok = 1; n_tok <= T; n_tok++) {
                    int bad = 0;
                    mllm__simd_force(lvl);
                    memset(out, 0, sizeof(float) * T * R);
                    if (!mllm__simd_dot_tok(wt, K, w, rb, r0, R, x, xs, n_tok, out, R)) break;
                    mllm__simd_force(1);
                    for (t = 0; t < n_tok; t++)
                        for (r = r0; r < R; r++) {
                            const float want = mllm__vec_dot(wt, K, w + (size_t)r * rb, x + (size_t)t * xs);
                            if (memcmp(&want, &out[t * R + r], sizeof want) && !bad++)
                                CHECK(0, "%s %s K=%ld n_tok=%d row %d token %d: %.9g, vec_dot %.9g", mllm__simd_name(lvl),
                                      mllm__traits(wt)->name, (long)K, n_tok, r, t, out[t * R + r], want);
                        }
                    for (r = 0; r < r0; r++) CHECK(out[r] == 0.0f, "%s: row %d before r0 written", mllm__traits(wt)->name, r);
                    ran++;
                }
            }
    mllm__simd_force(top);
    printf("  %d batched-kernel cases compared with vec_dot\n", ran);
#if MLLM__X86
    CHECK(top < 2 || ran > 0, "no batched-kernel case ran at AVX-512");
#endif
    free(xf); free(out); free(w); free(x);
}

int main(void) {
    const int top = mllm__simd_force(99);
    int lvl;
    RUN(test_f16_exhaustive);
    RUN(test_bf16_exhaustive);
    RUN(test_f32_to_f16_rounding);
    RUN(test_f32_to_bf16_rounding);
    RUN(test_dequant_all_types);
    RUN(test_quant_activations);
    RUN(test_quant_nonfinite);
    /* each SIMD path against the references and the scalar kernels, the scalar path (0) too */
    for (lvl = top; lvl >= 0; lvl--) {
        int got = mllm__simd_force(lvl);
#if MLLM__X86
        CHECK(got == lvl, "cannot force SIMD level %d", lvl);
#else
        if (got != lvl) continue;   /* arm64: NEON is chosen at build time; the scalar build is its own binary */
#endif
        printf("SIMD: %s\n", mllm__simd_name(lvl));
        RUN(test_vec_dot);
        RUN(test_vec_dot_extremes);
    }
    mllm__simd_force(top);
    RUN(test_simd_levels_identical);
    RUN(test_gemm_equals_vec_dot);
    RUN(test_dot_rows_identical);
    RUN(test_dot_tok_equals_vec_dot);
    RUN(test_type_traits_by_id);
    return t_finish();
}
