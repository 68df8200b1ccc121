/* Object ids: a type prefix ("sb-") and 26 Crockford base32 characters, 48 bits of milliseconds
 * then 80 random bits, so ids sort by creation time. */
#pragma once

#include <stddef.h>

#define ID_CHARS     26
#define ID_MAX_BYTES 40 /* prefix of up to 12 bytes + 26 + NUL */

/* Write prefix + new id into buf (size >= ID_MAX_BYTES); returns 0 or -errno. */
int id_new(const char *prefix, char *buf, size_t size);
/* True when s is prefix followed by exactly 26 Crockford base32 characters. */
int id_is_valid(const char *prefix, const char *s);
