/* sha256: FIPS 180-4 SHA-256, for the A1111 model hash and the manifest. */
#ifndef FM_SHA256_H
#define FM_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct core_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t nbuf;
} core_sha256;

void core_sha256_init(core_sha256 *s);
/* The compression of `blocks` 64-byte blocks into h: the SHA extensions'
 * instructions where the CPU has them, else the plain loop (_ref, also
 * for the tests). */
void core_sha256_blocks(uint32_t h[8], const uint8_t *p, size_t blocks);
void core_sha256_blocks_ref(uint32_t h[8], const uint8_t *p, size_t blocks);
void core_sha256_update(core_sha256 *s, const void *data, size_t n);
void core_sha256_final(core_sha256 *s, uint8_t digest[32]);
/* Lower-case hex of data's digest into hex[65]. */
void core_sha256_hex(const void *data, size_t n, char hex[65]);
void core_hex(const uint8_t *bytes, size_t n, char *out);
/* Lower-case hex of the digest of fp's bytes from where it stands to its
 * end (a file's hash: A1111's hashes.sha256, or of the data after a
 * header) into hex[65]. 0, or -1 on a read error. */
int core_sha256_stream(FILE *fp, char hex[65]);

#endif
