/* core/sha256.c against the FIPS 180-2 example digests (its appendix B:
 * "abc", the 448-bit two-block message, a million 'a'), the empty string's
 * digest, and the SHA extensions' path against the plain loop on the same
 * random bytes (where this CPU has the instructions; elsewhere both are the
 * loop and the comparison is trivially true, which the test says). */
#include "testutil.h"

#include <cpuid.h>

#include "core/sha256.h"

static void digest_hex(const void *data, size_t n, size_t piece, char hex[65])
{
    core_sha256 s;
    uint8_t d[32];
    core_sha256_init(&s);
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i += piece) core_sha256_update(&s, p + i, n - i < piece ? n - i : piece);
    core_sha256_final(&s, d);
    core_hex(d, 32, hex);
}

static void test_fips_examples(void **state)
{
    (void)state;
    char hex[65];
    core_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    core_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    static const char two[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    core_sha256_hex(two, strlen(two), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    size_t n = 1000000;
    char *a = malloc(n);
    assert_non_null(a);
    memset(a, 'a', n);
    for (size_t piece = 1; piece <= n; piece *= 97) { /* every split lands on the same digest */
        digest_hex(a, n, piece, hex);
        assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    }
    free(a);
}

static void test_instructions_match_loop(void **state)
{
    (void)state;
    unsigned a, b, c, d;
    int shani = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
    if (!shani) fprintf(stderr, "  no SHA extensions on this CPU: both paths are the plain loop\n");
    enum { BLOCKS = 4096 };
    uint8_t *p = malloc(64 * BLOCKS);
    assert_non_null(p);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < 64 * (size_t)BLOCKS; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (uint8_t)(x >> 56);
    }
    for (size_t blocks = 1; blocks <= BLOCKS; blocks = blocks * 3 + 1) {
        uint32_t h1[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
        uint32_t h2[8];
        memcpy(h2, h1, sizeof h1);
        core_sha256_blocks(h1, p, blocks);
        core_sha256_blocks_ref(h2, p, blocks);
        assert_memory_equal(h1, h2, sizeof h1);
    }
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fips_examples),
        cmocka_unit_test(test_instructions_match_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
