/* The sandbox's seccomp profile: at least what Docker's default profile denies. Denied calls fail
 * with EPERM, clone3 with ENOSYS (so libc falls back to clone and threads work), io_uring, new
 * namespaces and every mount API are denied, other architectures' calls kill the process.
 * Built once per process into BPF, loaded cheaply in each sandbox. */
#pragma once

#include <linux/filter.h>
#include <stddef.h>
#include <stdint.h>

#include "../lib/error.h"

struct rt_seccomp {
	struct sock_filter *insns;
	size_t len;
};

/* The profile as BPF, compiled at build time. Release with rt_seccomp_release. */
int rt_seccomp_build(struct rt_seccomp *ret, struct sk_error *err);
/* Compile the profile now with libseccomp (the build's generator; tests compare the two). */
int rt_seccomp_compile(struct rt_seccomp *ret, struct sk_error *err);
void rt_seccomp_release(struct rt_seccomp *p);
/* Load into the calling thread (sets no_new_privs first). Async-signal-safe: usable after fork. */
int rt_seccomp_load(const struct rt_seccomp *p);
/* Write the profile as libseccomp's pseudo-filter-code text to fd (tests, docs). */
int rt_seccomp_export_pfc(int fd, struct sk_error *err);
/* The names of the denied calls, NULL-terminated (docs and tests). */
extern const char *const rt_seccomp_denied[];
