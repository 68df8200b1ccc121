/* The seccomp profile's rules, compiled with libseccomp. The build runs this once (tools/
 * gen_seccomp.c) and embeds the BPF, so a start never pays for compiling it. */
#include "seccomp.h"

#include <errno.h>
#include <linux/filter.h>
#include <sys/socket.h>
#include <stddef.h>
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
	/* vsock ignores network namespaces: it would reach the hypervisor or other guests. */
	/* The kernel takes the family as an int: compare the low 32 bits only, or 0x1_00000028
	 * would pass as something else and reach the kernel as AF_VSOCK. */
	r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
	                     SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, AF_VSOCK));
	if (r < 0)
		return r;
	return 0;
}

/* The values personality() may take, as in Docker's profile: PER_LINUX, PER_LINUX32, each
 * with UNAME26, and the query 0xffffffff. */
static const uint32_t PERSONALITY_ALLOWED[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffff};

/* The first system call number nobody has reviewed for this profile: 457 (statmount, Linux
 * 6.8) and later, numbered alike on every architecture. Raise it only after judging each call
 * it lets through. */
#define FIRST_UNREVIEWED_SYSCALL 457

/* The first number that gets ENOSYS: past the last call the build's libseccomp knows (the
 * denylist can't name what it doesn't know), and never past FIRST_UNREVIEWED_SYSCALL (a newer
 * libseccomp must not silently allow newer calls). */
static int first_unknown_syscall(void)
{
	uint32_t arch = seccomp_arch_native();
	int last = 0;
	for (int nr = 0; nr < 1024; nr++) {
		char *name = seccomp_syscall_resolve_num_arch(arch, nr);
		if (name) {
			last = nr;
			free(name);
		}
	}
	return last + 1 < FIRST_UNREVIEWED_SYSCALL ? last + 1 : FIRST_UNREVIEWED_SYSCALL;
}

#define BPF_STMT_(code, k)         ((struct sock_filter){(unsigned short)(code), 0, 0, (k)})
#define BPF_JUMP_(code, k, jt, jf) ((struct sock_filter){(unsigned short)(code), (jt), (jf), (k)})

/* Instructions that run before libseccomp's program. On the native architecture: calls
 * numbered past the last one libseccomp knows fail with ENOSYS (a denylist must not allow
 * calls newer than itself; ENOSYS makes libc fall back), and personality() takes only
 * PERSONALITY_ALLOWED. Everything else falls through to libseccomp's program, which checks the
 * architecture again. Returns the number of instructions written to out (room for 16). */
static size_t prefix_build(struct sock_filter *out)
{
	const uint32_t arg0 = offsetof(struct seccomp_data, args[0]) +
	                      (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__ ? 4 : 0);
	const size_t n_allowed = sizeof(PERSONALITY_ALLOWED) / sizeof(PERSONALITY_ALLOWED[0]);
	/* Layout: 0 ld arch | 1 jeq native | 2 ld nr | 3 jge x32 | 4 jge first_unknown | 5 ret
	 * ENOSYS | 6 jeq personality | 7 ld arg0 | 8.. jeq allowed | ret EPERM | end */
	const size_t end = 8 + n_allowed + 1;
	size_t i = 0;
	out[i++] = BPF_STMT_(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	out[i++] = BPF_JUMP_(BPF_JMP | BPF_JEQ | BPF_K, seccomp_arch_native(), 0, end - 2);
	out[i++] = BPF_STMT_(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	out[i++] = BPF_JUMP_(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, end - 4, 0); /* x32 */
	out[i++] = BPF_JUMP_(BPF_JMP | BPF_JGE | BPF_K, first_unknown_syscall(), 0, 1);
	out[i++] = BPF_STMT_(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
	out[i++] = BPF_JUMP_(BPF_JMP | BPF_JEQ | BPF_K, SCMP_SYS(personality), 0, end - 7);
	out[i++] = BPF_STMT_(BPF_LD | BPF_W | BPF_ABS, arg0);
	for (size_t k = 0; k < n_allowed; k++)
		out[i] =
		    BPF_JUMP_(BPF_JMP | BPF_JEQ | BPF_K, PERSONALITY_ALLOWED[k], end - i - 1, 0),
		i++;
	out[i++] = BPF_STMT_(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
	return i;
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
	struct sock_filter prefix[16];
	size_t nprefix = prefix_build(prefix);
	struct sock_filter *insns = malloc(size + nprefix * sizeof(struct sock_filter));
	if (!insns) {
		close(fd);
		return sk_error_set(err, -ENOMEM, "out of memory");
	}
	memcpy(insns, prefix, nprefix * sizeof(struct sock_filter));
	ssize_t n = pread(fd, insns + nprefix, size, 0);
	close(fd);
	if (n != size) {
		free(insns);
		return sk_error_set(err, -EIO, "read back seccomp profile");
	}
	ret->insns = insns;
	ret->len = nprefix + size / sizeof(struct sock_filter);
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
