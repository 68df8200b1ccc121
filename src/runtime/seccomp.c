/* The seccomp profile as loaded: the BPF that the build compiled from seccomp_profile.c. */
#include "seccomp.h"

#include <errno.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "seccomp_bpf.h" /* generated: RT_SECCOMP_BPF[] */

int rt_seccomp_build(struct rt_seccomp *ret, struct sk_error *err)
{
	size_t bytes = sizeof(RT_SECCOMP_BPF);
	struct sock_filter *insns = malloc(bytes);
	if (!insns)
		return sk_error_set(err, -ENOMEM, "out of memory");
	memcpy(insns, RT_SECCOMP_BPF, bytes);
	ret->insns = insns;
	ret->len = bytes / sizeof(struct sock_filter);
	return 0;
}

void rt_seccomp_release(struct rt_seccomp *p)
{
	free(p->insns);
	p->insns = NULL;
	p->len = 0;
}

int rt_seccomp_load(const struct rt_seccomp *p)
{
	struct sock_fprog prog = {.len = (unsigned short)p->len, .filter = p->insns};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		return -errno;
	return 0;
}
