/* Signal names and numbers as users write them: "TERM", "SIGTERM", "sigterm", "15". */
#pragma once

#include <stddef.h>

#define SIGNAME_MAX 64 /* the highest signal number (SIGRTMAX on Linux) */

/* The signal named by the len bytes of s: a name with or without "SIG" (any case: the names
 * `kill -l` shows for signals 1-31), or a number from 1 to SIGNAME_MAX. -EINVAL for anything
 * else. */
int signal_parse(const char *s, size_t len);
