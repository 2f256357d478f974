#include "core/sha256.h"

#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void compress(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

void core_sha256_blocks_ref(uint32_t h[8], const uint8_t *p, size_t blocks)
{
    for (; blocks; blocks--, p += 64) compress(h, p);
}

#if defined(__x86_64__)
/* The x86 SHA extensions (Intel since Goldmont and Ice Lake, AMD since
 * Zen): two rounds per sha256rnds2 on the state held as ABEF / CDGH, the
 * schedule four words at a time (sha256msg1 adds sigma0, sha256msg2
 * sigma1). On Zen 5 a 2.6 GB checkpoint's hash takes 2.25 s of CPU instead
 * of the loop's 8.84 s (reads from the page cache included): the hash is
 * the one long serial step before a new file's first image (the CLI's
 * infotext; cached per file after). */
__attribute__((target("sha,sse4.1"))) static void blocks_shani(uint32_t h[8], const uint8_t *p, size_t blocks)
{
    const __m128i be = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL); /* big-endian words */
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1);  /* CDAB */
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B); /* HGFE */
    __m128i s0 = _mm_alignr_epi8(t, s1, 8);                                         /* ABEF */
    s1 = _mm_blend_epi16(s1, t, 0xF0);                                              /* CDGH */
    for (; blocks; blocks--, p += 64) {
        __m128i abef = s0, cdgh = s1, w[4];
        for (int j = 0; j < 16; j++) { /* rounds 4j .. 4j+3; w[j % 4] holds words 4j .. 4j+3 */
            if (j < 4) {
                w[j] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * j)), be);
            } else {
                __m128i x = _mm_sha256msg1_epu32(w[j % 4], w[(j + 1) % 4]);
                x = _mm_add_epi32(x, _mm_alignr_epi8(w[(j + 3) % 4], w[(j + 2) % 4], 4));
                w[j % 4] = _mm_sha256msg2_epu32(x, w[(j + 3) % 4]);
            }
            __m128i m = _mm_add_epi32(w[j % 4], _mm_loadu_si128((const __m128i *)&K[4 * j]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
    }
    t = _mm_shuffle_epi32(s0, 0x1B);                                     /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);                                    /* DCHG */
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(t, s1, 0xF0));   /* DCBA */
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(s1, t, 8));      /* HGFE */
}

/* SHA, SSSE3 and SSE4.1 (cpuid leaf 7 EBX bit 29; leaf 1 ECX bits 9, 19),
 * asked once (a function-local cache as core_cpu_has_f16c_avx2's). */
static int has_shani(void)
{
    static _Atomic int cached = -1;
    int v = cached;
    if (v < 0) {
        unsigned a, b, c, d, c1 = 0;
        v = __get_cpuid(1, &a, &b, &c1, &d) && (c1 & bit_SSSE3) && (c1 & bit_SSE4_1) &&
            __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
        cached = v;
    }
    return v;
}
#endif

void core_sha256_blocks(uint32_t h[8], const uint8_t *p, size_t blocks)
{
#if defined(__x86_64__)
    if (has_shani()) {
        blocks_shani(h, p, blocks);
        return;
    }
#endif
    core_sha256_blocks_ref(h, p, blocks);
}

void core_sha256_init(core_sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->len = 0;
    s->nbuf = 0;
}

void core_sha256_update(core_sha256 *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->len += n;
    if (s->nbuf) {
        size_t take = 64 - s->nbuf < n ? 64 - s->nbuf : n;
        memcpy(s->buf + s->nbuf, p, take);
        s->nbuf += take; p += take; n -= take;
        if (s->nbuf < 64) return;
        core_sha256_blocks(s->h, s->buf, 1);
        s->nbuf = 0;
    }
    core_sha256_blocks(s->h, p, n / 64);
    p += n / 64 * 64;
    n %= 64;
    memcpy(s->buf, p, n);
    s->nbuf = n;
}

void core_sha256_final(core_sha256 *s, uint8_t digest[32])
{
    uint64_t bits = s->len * 8;
    uint8_t pad = 0x80, zero = 0;
    core_sha256_update(s, &pad, 1);
    while (s->nbuf != 56)
        core_sha256_update(s, &zero, 1);
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    core_sha256_update(s, lenb, 8);
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(s->h[i] >> 24); digest[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(s->h[i] >> 8); digest[4 * i + 3] = (uint8_t)s->h[i];
    }
}

void core_hex(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = 0;
}

void core_sha256_hex(const void *data, size_t n, char hex[65])
{
    core_sha256 s;
    uint8_t d[32];
    core_sha256_init(&s);
    core_sha256_update(&s, data, n);
    core_sha256_final(&s, d);
    core_hex(d, 32, hex);
}

int core_sha256_stream(FILE *fp, char hex[65])
{
    core_sha256 s;
    core_sha256_init(&s);
    uint8_t buf[1 << 16], d[32];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, fp)) > 0) core_sha256_update(&s, buf, got);
    if (ferror(fp)) return -1;
    core_sha256_final(&s, d);
    core_hex(d, 32, hex);
    return 0;
}
