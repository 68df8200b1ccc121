/* The seccomp profile's rules, compiled with libseccomp. The build runs this once (tools/
 * gen_seccomp.c) and embeds the BPF, so a start never pays for compiling it. */
#include "seccomp.h"

#include <errno.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

/* Calls that Docker's default profile does not allow (without extra capabilities), plus the new
 * mount API, io_uring, and namespace creation and entry. */
const char *const rt_seccomp_denied[] = {
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "clock_settime64",
    "create_module",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "migrate_pages",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pidfd_getfd",
    "pivot_root",
    "process_madvise",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "_sysctl",
    "sysfs",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
    "vm86",
    "vm86old",
    "fsmerge",
    "lsm_set_self_attr",
    "set_mempolicy_home_node",
    NULL,
};

static const unsigned long NS_FLAGS[] = {
    CLONE_NEWUSER, CLONE_NEWNS,  CLONE_NEWPID,    CLONE_NEWNET,
    CLONE_NEWUTS,  CLONE_NEWIPC, CLONE_NEWCGROUP, 0x00000080 /* CLONE_NEWTIME */,
};

static int add_rules(scmp_filter_ctx ctx)
{
	int r;
	for (const char *const *n = rt_seccomp_denied; *n; n++) {
		int nr = seccomp_syscall_resolve_name(*n);
		if (nr == __NR_SCMP_ERROR)
			continue; /* not on this architecture */
		if ((r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0)) < 0)
			return r;
	}
	/* clone3 passes flags in memory seccomp can't read: ENOSYS makes libc fall back to clone.
	 */
	if ((r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)) < 0)
		return r;
	for (size_t i = 0; i < sizeof(NS_FLAGS) / sizeof(NS_FLAGS[0]); i++) {
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
		                     SCMP_A0(SCMP_CMP_MASKED_EQ, NS_FLAGS[i], NS_FLAGS[i]));
		if (r < 0)
			return r;
	}
	/* Faking input on a terminal shared with the host (TIOCSTI), and console ioctls. */
	static const unsigned long TTY_IOCTLS[] = {TIOCSTI, TIOCLINUX};
	for (size_t i = 0; i < 2; i++) {
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
		                     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TTY_IOCTLS[i]));
		if (r < 0)
			return r;
	}
	return 0;
}

static scmp_filter_ctx build_ctx(int *ret_err)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx) {
		*ret_err = -ENOMEM;
		return NULL;
	}
	int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	/* A binary tree of syscall numbers: fewer instructions per call, and a cheaper load (the
	 * kernel evaluates the filter for every syscall number to build its allow cache). */
	if (r == 0)
		r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	if (r == 0)
		r = add_rules(ctx);
	if (r < 0) {
		seccomp_release(ctx);
		*ret_err = r;
		return NULL;
	}
	return ctx;
}

int rt_seccomp_compile(struct rt_seccomp *ret, struct sk_error *err)
{
	int r = 0;
	scmp_filter_ctx ctx = build_ctx(&r);
	if (!ctx)
		return sk_error_errno(err, r, "build seccomp profile");
	int fd = memfd_create("seccomp-bpf", MFD_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		seccomp_release(ctx);
		return sk_error_errno(err, r, "memfd_create");
	}
	r = seccomp_export_bpf(ctx, fd);
	seccomp_release(ctx);
	if (r < 0) {
		close(fd);
		return sk_error_errno(err, r, "export seccomp profile");
	}
	off_t size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % sizeof(struct sock_filter)) {
		close(fd);
		return sk_error_set(err, -EIO, "export seccomp profile: bad size %lld",
		                    (long long)size);
	}
	struct sock_filter *insns = malloc(size);
	if (!insns) {
		close(fd);
		return sk_error_set(err, -ENOMEM, "out of memory");
	}
	ssize_t n = pread(fd, insns, size, 0);
	close(fd);
	if (n != size) {
		free(insns);
		return sk_error_set(err, -EIO, "read back seccomp profile");
	}
	ret->insns = insns;
	ret->len = size / sizeof(struct sock_filter);
	return 0;
}

int rt_seccomp_export_pfc(int fd, struct sk_error *err)
{
	int r = 0;
	scmp_filter_ctx ctx = build_ctx(&r);
	if (!ctx)
		return sk_error_errno(err, r, "build seccomp profile");
	r = seccomp_export_pfc(ctx, fd);
	seccomp_release(ctx);
	if (r < 0)
		return sk_error_errno(err, r, "export seccomp profile");
	return 0;
}
