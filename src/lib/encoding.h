/* Base64 (RFC 4648, with padding) and UTF-8 validation, for byte streams carried in JSON. */
#pragma once

#include <stddef.h>

/* Encoded size of n bytes, with the NUL. */
static inline size_t base64_encoded_size(size_t n)
{
	return (n + 2) / 3 * 4 + 1;
}
/* Encode n bytes of in into out (base64_encoded_size(n) bytes); returns the length written. */
size_t base64_encode(const void *in, size_t n, char *out);
/* Decode len characters into out (at least len / 4 * 3 bytes). Returns the byte count, or -EINVAL
 * for anything that is not canonical padded base64. */
long base64_decode(const char *in, size_t len, unsigned char *out);
/* True when the n bytes are valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF) and
 * hold no NUL. */
int utf8_valid(const unsigned char *s, size_t n);
/* Make the string valid UTF-8 in place (its length unchanged): each byte that starts no valid
 * sequence becomes '?'. Text from outside (file names, a truncated message cut inside a
 * character) goes into JSON only so: jansson refuses invalid UTF-8. Returns how many bytes were
 * replaced. */
size_t utf8_sanitize(char *s);
