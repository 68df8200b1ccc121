/* Limits on JSON a client sends, checked before parsing. */
#pragma once

#include <stddef.h>

#define JSON_MAX_DEPTH 32

/* True when the nesting of arrays and objects in data never exceeds max_depth (strings are
 * skipped, so brackets inside them don't count). Malformed input is left to the parser. */
int json_depth_within(const char *data, size_t len, int max_depth);
