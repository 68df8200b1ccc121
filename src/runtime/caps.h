/* Capabilities inside the sandbox: Docker's default set, and nothing for our init. */
#pragma once

#include <stdint.h>

#include "../lib/error.h"

/* Docker's default capability set, as a bit mask of CAP_* numbers. */
uint64_t caps_default_mask(void);
/* The highest capability number this kernel knows (read once, then cached: call it before
 * forking sandboxes so that they inherit the cache instead of reading /proc). */
int caps_last_cap(void);
/* Drop every capability from the effective, permitted and inheritable sets (not the bounding
 * set: a process that never execs needs no bounding set). */
int caps_clear(struct sk_error *err);
/* Cut the bounding set to mask, set effective/permitted/inheritable to mask, clear ambient.
 * Must run before no_new_privs+seccomp (it needs CAP_SETPCAP). */
int caps_restrict(uint64_t mask, struct sk_error *err);
/* Its two halves: the bounding set cut to mask and ambient cleared (needs CAP_SETPCAP; the
 * effective set is left as it is); then effective and permitted set to mask, inheritable
 * emptied. */
int caps_bounding_restrict(uint64_t mask, struct sk_error *err);
int caps_set(uint64_t mask, struct sk_error *err);
