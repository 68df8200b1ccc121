/* Wall-clock time for the control plane, in milliseconds since the epoch, and RFC 3339. Time is
 * injectable: SKIFF_CLOCK_OFFSET_MS (read once) shifts what clock_now_ms returns, so tests can
 * move time without sleeping through windows. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define RFC3339_BYTES 32

int64_t clock_now_ms(void);
/* "2026-11-26T23:22:29.123Z" into buf (size >= RFC3339_BYTES). */
void clock_format_rfc3339(int64_t ms, char *buf, size_t size);
/* Parse "YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)". Returns 0 or -EINVAL. */
int clock_parse_rfc3339(const char *s, int64_t *ret_ms);
