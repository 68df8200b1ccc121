/* Step timings on a hot path (sandbox start): cheap monotonic marks, kept in a fixed array. */
#pragma once

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define TIMING_MAX_MARKS 32

struct timing {
	int n;
	const char *name[TIMING_MAX_MARKS]; /* string literals */
	uint64_t ns[TIMING_MAX_MARKS];      /* CLOCK_MONOTONIC, the same in every pid namespace */
};

static inline uint64_t timing_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void timing_mark_at(struct timing *t, const char *name, uint64_t ns)
{
	if (t->n < TIMING_MAX_MARKS) {
		t->name[t->n] = name;
		t->ns[t->n++] = ns;
	}
}

static inline void timing_mark(struct timing *t, const char *name)
{
	timing_mark_at(t, name, timing_now_ns());
}

/* Append t's marks as "name:ns " words to buf (NUL-terminated, truncated to size). */
static inline void timing_format(const struct timing *t, char *buf, size_t size)
{
	size_t off = 0;
	buf[0] = '\0';
	for (int i = 0; i < t->n && off < size; i++) {
		int w = snprintf(buf + off, size - off, "%s:%llu ", t->name[i],
		                 (unsigned long long)t->ns[i]);
		if (w < 0)
			break;
		off += (size_t)w;
	}
}
