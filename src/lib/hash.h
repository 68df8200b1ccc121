/* SHA-256 and random secrets (OpenSSL's libcrypto, the kernel's getrandom). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SHA256_HEX_BYTES 65 /* 64 hex digits + NUL */

/* Write the SHA-256 of data as lowercase hex into out. Returns 0 or -EIO. */
int sha256_hex(const void *data, size_t len, char out[SHA256_HEX_BYTES]);
/* Write n bytes as 2*n lowercase hex digits + NUL into out (a digest computed piecewise). */
void hex_encode(const uint8_t *in, size_t n, char *out);
/* Fill out with 2*nbytes lowercase hex digits of fresh randomness + NUL (size >= 2*nbytes+1).
 * Returns 0 or a negative errno. */
int random_hex(size_t nbytes, char *out, size_t size);
