/* Unit tests for src/runtime/seccomp*.c: the profile's BPF, its text form, and its effect in a
 * forked child (the test process itself never loads a filter). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "../../src/runtime/seccomp.h"

#ifndef __NR_clone3
#define __NR_clone3 435
#endif
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_fsopen
#define __NR_fsopen 430
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

/* ---- the program ---- */

static void test_build(void **state)
{
	(void)state;
	struct rt_seccomp p = {0};
	struct sk_error err = {0};
	assert_int_equal(rt_seccomp_build(&p, &err), 0);
	assert_non_null(p.insns);
	assert_true(p.len > 50);
	assert_true(p.len <= BPF_MAXINSNS);
	/* It starts by checking the architecture: load seccomp_data.arch. */
	assert_int_equal(p.insns[0].code, BPF_LD | BPF_W | BPF_ABS);
	assert_int_equal(p.insns[0].k, offsetof(struct seccomp_data, arch));
	/* Every path ends in a return. */
	assert_int_equal(BPF_CLASS(p.insns[p.len - 1].code), BPF_RET);

	/* The build-time copy is what libseccomp compiles now. */
	struct rt_seccomp c = {0};
	assert_int_equal(rt_seccomp_compile(&c, &err), 0);
	assert_int_equal(c.len, p.len);
	assert_memory_equal(c.insns, p.insns, p.len * sizeof(struct sock_filter));

	/* Two builds are independent copies. */
	struct rt_seccomp q = {0};
	assert_int_equal(rt_seccomp_build(&q, &err), 0);
	assert_ptr_not_equal(q.insns, p.insns);
	rt_seccomp_release(&q);

	rt_seccomp_release(&p);
	assert_null(p.insns);
	assert_int_equal(p.len, 0);
	rt_seccomp_release(&p); /* twice is fine */
	rt_seccomp_release(&c);
}

static void test_denied_list(void **state)
{
	(void)state;
	static const char *const must[] = {
	    "mount",          "umount2",           "unshare", "setns",           "pivot_root",
	    "keyctl",         "add_key",           "bpf",     "ptrace",          "io_uring_setup",
	    "io_uring_enter", "io_uring_register", "fsopen",  "move_mount",      "open_tree",
	    "kexec_load",     "init_module",       "reboot",  "perf_event_open", "userfaultfd",
	};
	size_t n = 0;
	while (rt_seccomp_denied[n])
		n++;
	assert_true(n >= ARRAY_SIZE(must));
	for (size_t i = 0; i < ARRAY_SIZE(must); i++) {
		int found = 0;
		for (size_t k = 0; k < n; k++)
			found |= !strcmp(rt_seccomp_denied[k], must[i]);
		if (!found)
			print_error("%s is not denied\n", must[i]);
		assert_true(found);
	}
	/* Never the calls every program needs. */
	for (size_t k = 0; k < n; k++) {
		assert_string_not_equal(rt_seccomp_denied[k], "clone");
		assert_string_not_equal(rt_seccomp_denied[k], "execve");
		assert_string_not_equal(rt_seccomp_denied[k], "ioctl");
	}
}

static char *pfc_text(void)
{
	int fd = memfd_create("pfc", MFD_CLOEXEC);
	assert_true(fd >= 0);
	struct sk_error err = {0};
	assert_int_equal(rt_seccomp_export_pfc(fd, &err), 0);
	off_t size = lseek(fd, 0, SEEK_END);
	assert_true(size > 0);
	char *text = malloc(size + 1);
	assert_non_null(text);
	assert_int_equal(pread(fd, text, size, 0), size);
	text[size] = '\0';
	close(fd);
	return text;
}

/* The action that follows the rule for syscall name in the text. */
static const char *pfc_action_after(const char *text, const char *name)
{
	char needle[96];
	snprintf(needle, sizeof(needle), "# filter for syscall \"%s\" ", name);
	const char *p = strstr(text, needle);
	if (!p)
		return NULL;
	return strstr(p, "action ");
}

static void test_export_pfc(void **state)
{
	(void)state;
	char *text = pfc_text();
	/* Every denied call that exists on this architecture has its rule, ending in EPERM. */
	int resolved = 0;
	for (const char *const *n = rt_seccomp_denied; *n; n++) {
		if (seccomp_syscall_resolve_name(*n) == __NR_SCMP_ERROR)
			continue;
		resolved++;
		const char *a = pfc_action_after(text, *n);
		if (!a)
			print_error("no rule for %s\n", *n);
		assert_non_null(a);
		assert_memory_equal(a, "action ERRNO(1);", 16);
	}
	assert_true(resolved > 40);
	const char *a = pfc_action_after(text, "clone3");
	assert_non_null(a);
	assert_memory_equal(a, "action ERRNO(38);", 17); /* ENOSYS */
	/* clone and ioctl are filtered on their arguments, not denied. */
	assert_non_null(pfc_action_after(text, "clone"));
	assert_non_null(strstr(text, "$a0.lo32 & 0x10000000 == 268435456")); /* CLONE_NEWUSER */
	assert_non_null(strstr(text, "$a0.lo32 & 0x00020000 == 131072"));    /* CLONE_NEWNS */
	assert_non_null(pfc_action_after(text, "ioctl"));
	char tiocsti[64];
	snprintf(tiocsti, sizeof(tiocsti), "$a1.lo32 & 0xffffffff == %u", (unsigned)TIOCSTI);
	assert_non_null(strstr(text, tiocsti));
	assert_null(pfc_action_after(text, "read"));
	assert_null(pfc_action_after(text, "execve"));
	/* Allowed by default; other architectures are killed. */
	assert_non_null(strstr(text, "# default action\n  action ALLOW;"));
	assert_non_null(strstr(text, "# invalid architecture action\naction KILL_PROCESS;"));
	free(text);
}

/* ---- the profile in a child ---- */

enum check {
	C_LOAD,
	C_MOUNT,
	C_UMOUNT2,
	C_UNSHARE_USER,
	C_UNSHARE_NS,
	C_SETNS,
	C_CLONE3,
	C_IO_URING,
	C_KEYCTL,
	C_ADD_KEY,
	C_BPF,
	C_PTRACE,
	C_FSOPEN,
	C_PERF,
	C_CLONE_NEWNS,
	C_CLONE_NEWUSER,
	C_CLONE_NEWPID,
	C_CLONE_NEWNET,
	C_CLONE_NEWTIME,
	C_CLONE_THREAD_NEWNS,
	C_TIOCSTI,
	C_TIOCSTI_HIGH,
	C_TIOCLINUX,
	C_FIONREAD,
	C_GETPID,
	C_WRITE,
	C_THREAD,
	C_FORK,
	C_CLONE_PLAIN,
	C_STATUS,
	C_NCHECKS,
};

static const char *const CHECK_NAMES[C_NCHECKS] = {
    [C_LOAD] = "load",
    [C_MOUNT] = "mount",
    [C_UMOUNT2] = "umount2",
    [C_UNSHARE_USER] = "unshare(NEWUSER)",
    [C_UNSHARE_NS] = "unshare(NEWNS)",
    [C_SETNS] = "setns",
    [C_CLONE3] = "clone3",
    [C_IO_URING] = "io_uring_setup",
    [C_KEYCTL] = "keyctl",
    [C_ADD_KEY] = "add_key",
    [C_BPF] = "bpf",
    [C_PTRACE] = "ptrace",
    [C_FSOPEN] = "fsopen",
    [C_PERF] = "perf_event_open",
    [C_CLONE_NEWNS] = "clone(NEWNS)",
    [C_CLONE_NEWUSER] = "clone(NEWUSER)",
    [C_CLONE_NEWPID] = "clone(NEWPID)",
    [C_CLONE_NEWNET] = "clone(NEWNET)",
    [C_CLONE_NEWTIME] = "clone(NEWTIME)",
    [C_CLONE_THREAD_NEWNS] = "clone(FS|FILES|NEWNS)",
    [C_TIOCSTI] = "TIOCSTI",
    [C_TIOCSTI_HIGH] = "TIOCSTI with high bits",
    [C_TIOCLINUX] = "TIOCLINUX",
    [C_FIONREAD] = "FIONREAD",
    [C_GETPID] = "getpid",
    [C_WRITE] = "write",
    [C_THREAD] = "pthread_create",
    [C_FORK] = "fork",
    [C_CLONE_PLAIN] = "clone(plain)",
    [C_STATUS] = "/proc/self/status",
};

struct result {
	long ret;
	int err;
};

struct shared {
	struct result r[C_NCHECKS];
	int done;
};

static void record(struct shared *sh, enum check c, long ret)
{
	sh->r[c].ret = ret;
	sh->r[c].err = ret < 0 ? errno : 0;
}

/* Raw clone with flags: the (unexpected) child exits at once; the caller reaps it. */
static long raw_clone(unsigned long flags)
{
	long r = syscall(SYS_clone, flags | SIGCHLD, 0, NULL, NULL, 0);
	if (r == 0)
		_exit(0);
	if (r > 0) {
		int saved = errno;
		waitpid((pid_t)r, NULL, 0);
		errno = saved;
	}
	return r;
}

static void *thread_main(void *arg)
{
	*(int *)arg = 42;
	return arg;
}

/* In the child: load the profile, try each call, record what happened, exit. */
static void child_checks(const struct rt_seccomp *p, struct shared *sh, pid_t real_pid, int pfd,
                         int wfd)
{
	errno = 0;
	int r = rt_seccomp_load(p);
	sh->r[C_LOAD].ret = r;
	if (r < 0)
		_exit(3);
	/* Each call below fails differently without the filter (ENOENT, EINVAL, EBADF…). */
	record(sh, C_MOUNT, mount("none", "/nonexistent-skiff-test", "tmpfs", 0, NULL));
	record(sh, C_UMOUNT2, umount2("/nonexistent-skiff-test", 0));
	record(sh, C_UNSHARE_USER, unshare(CLONE_NEWUSER));
	record(sh, C_UNSHARE_NS, unshare(CLONE_NEWNS));
	record(sh, C_SETNS, setns(-1, 0));
	record(sh, C_CLONE3, syscall(__NR_clone3, NULL, 0));
	record(sh, C_IO_URING, syscall(__NR_io_uring_setup, 0, NULL));
	record(sh, C_KEYCTL, syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0));
	record(sh, C_ADD_KEY, syscall(SYS_add_key, "user", "skiff", "x", 1, -3));
	record(sh, C_BPF, syscall(SYS_bpf, -1, NULL, 0));
	record(sh, C_PTRACE, syscall(SYS_ptrace, 3 /* PEEKUSER */, 999999999, 0, 0));
	record(sh, C_FSOPEN, syscall(__NR_fsopen, "nonexistent-fs", 0));
	record(sh, C_PERF, syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
	record(sh, C_CLONE_NEWNS, raw_clone(CLONE_NEWNS));
	record(sh, C_CLONE_NEWUSER, raw_clone(CLONE_NEWUSER));
	record(sh, C_CLONE_NEWPID, raw_clone(CLONE_NEWPID));
	record(sh, C_CLONE_NEWNET, raw_clone(CLONE_NEWNET));
	record(sh, C_CLONE_NEWTIME, raw_clone(CLONE_NEWTIME));
	record(sh, C_CLONE_THREAD_NEWNS, raw_clone(CLONE_FS | CLONE_FILES | CLONE_NEWNS));
	char c = 'x';
	record(sh, C_TIOCSTI, ioctl(pfd, TIOCSTI, &c));
	record(sh, C_TIOCSTI_HIGH, syscall(SYS_ioctl, pfd, (1UL << 32) | TIOCSTI, &c));
	record(sh, C_TIOCLINUX, ioctl(pfd, TIOCLINUX, &c));
	int avail = -1;
	record(sh, C_FIONREAD, ioctl(pfd, FIONREAD, &avail));
	/* What every program needs still works. */
	record(sh, C_GETPID, getpid() == real_pid ? 0 : -1);
	record(sh, C_WRITE, write(wfd, "ok", 2));
	pthread_t t;
	int value = 0;
	void *res = NULL;
	long tr = pthread_create(&t, NULL, thread_main, &value);
	if (tr == 0)
		tr = pthread_join(t, &res);
	sh->r[C_THREAD].ret = tr == 0 && value == 42 && res == &value ? 0 : -1;
	sh->r[C_THREAD].err = (int)tr;
	pid_t k = fork();
	if (k == 0)
		_exit(7);
	int st = 0;
	long fr = k < 0 ? -1 : (waitpid(k, &st, 0) == k && WIFEXITED(st) ? WEXITSTATUS(st) : -2);
	record(sh, C_FORK, fr);
	long cr = syscall(SYS_clone, SIGCHLD, 0, NULL, NULL, 0);
	if (cr == 0)
		_exit(9);
	st = 0;
	record(sh, C_CLONE_PLAIN,
	       cr < 0 ? -1 : (waitpid(cr, &st, 0) == cr && WIFEXITED(st) ? WEXITSTATUS(st) : -2));
	/* The kernel reports the filter and no_new_privs. */
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	sh->r[C_STATUS].ret =
	    strstr(buf, "\nSeccomp:\t2\n") && strstr(buf, "\nNoNewPrivs:\t1\n") ? 0 : -1;
	sh->done = 1;
	_exit(0);
}

static void run_profile_checks(const struct rt_seccomp *p)
{
	struct shared *sh =
	    mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(sh != MAP_FAILED);
	memset(sh, 0x7f, sizeof(*sh));
	sh->done = 0;
	int pfd[2];
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0)
		child_checks(p, sh, getpid(), pfd[0], pfd[1]);
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		print_error("child status 0x%x\n", status);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(sh->done, 1);

	static const struct {
		enum check c;
		int err; /* 0: must succeed (ret >= 0) */
	} want[] = {
	    {C_LOAD, 0},
	    {C_MOUNT, EPERM},
	    {C_UMOUNT2, EPERM},
	    {C_UNSHARE_USER, EPERM},
	    {C_UNSHARE_NS, EPERM},
	    {C_SETNS, EPERM},
	    {C_CLONE3, ENOSYS},
	    {C_IO_URING, EPERM},
	    {C_KEYCTL, EPERM},
	    {C_ADD_KEY, EPERM},
	    {C_BPF, EPERM},
	    {C_PTRACE, EPERM},
	    {C_FSOPEN, EPERM},
	    {C_PERF, EPERM},
	    {C_CLONE_NEWNS, EPERM},
	    {C_CLONE_NEWUSER, EPERM},
	    {C_CLONE_NEWPID, EPERM},
	    {C_CLONE_NEWNET, EPERM},
	    {C_CLONE_NEWTIME, EPERM},
	    {C_CLONE_THREAD_NEWNS, EPERM},
	    {C_TIOCSTI, EPERM},
	    {C_TIOCSTI_HIGH, EPERM},
	    {C_TIOCLINUX, EPERM},
	    {C_FIONREAD, 0},
	    {C_GETPID, 0},
	    {C_WRITE, 0},
	    {C_THREAD, 0},
	    {C_FORK, 0},
	    {C_CLONE_PLAIN, 0},
	    {C_STATUS, 0},
	};
	assert_int_equal(ARRAY_SIZE(want), C_NCHECKS);
	int bad = 0;
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		const struct result *r = &sh->r[want[i].c];
		int ok = want[i].err ? r->ret == -1 && r->err == want[i].err : r->ret >= 0;
		if (!ok) {
			print_error("%s: ret %ld errno %d (%s), want %s\n", CHECK_NAMES[want[i].c],
			            r->ret, r->err, strerror(r->err),
			            want[i].err ? strerror(want[i].err) : "success");
			bad++;
		}
	}
	assert_int_equal(bad, 0);
	/* Exact values where the call succeeded. */
	assert_int_equal(sh->r[C_WRITE].ret, 2);
	assert_int_equal(sh->r[C_FORK].ret, 7);
	assert_int_equal(sh->r[C_CLONE_PLAIN].ret, 9);
	char buf[8] = "";
	assert_int_equal(read(pfd[0], buf, sizeof(buf)), 2);
	assert_memory_equal(buf, "ok", 2);
	close(pfd[0]);
	close(pfd[1]);
	munmap(sh, sizeof(*sh));
}

static void test_profile_in_child(void **state)
{
	(void)state;
	struct rt_seccomp p = {0};
	struct sk_error err = {0};
	assert_int_equal(rt_seccomp_build(&p, &err), 0);
	run_profile_checks(&p);
	rt_seccomp_release(&p);
}

static void test_compiled_profile_in_child(void **state)
{
	(void)state;
	struct rt_seccomp p = {0};
	struct sk_error err = {0};
	assert_int_equal(rt_seccomp_compile(&p, &err), 0);
	run_profile_checks(&p);
	rt_seccomp_release(&p);
}

/* Another ABI's call number (x32 on x86_64) kills the process instead of slipping past the
 * rules, which are written for native numbers. */
static void test_other_abi_killed(void **state)
{
	(void)state;
#if defined(__x86_64__)
	struct rt_seccomp p = {0};
	struct sk_error err = {0};
	assert_int_equal(rt_seccomp_build(&p, &err), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		struct rlimit no_core = {0, 0};
		setrlimit(RLIMIT_CORE, &no_core);
		if (rt_seccomp_load(&p) < 0)
			_exit(3);
		syscall(0x40000000 | SYS_mount, "none", "/nonexistent-skiff-test", "tmpfs", 0,
		        NULL);
		_exit(4);
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSYS);
	rt_seccomp_release(&p);
#else
	skip();
#endif
}

/* Without the filter the same calls fail differently: the checks above can tell. */
static void test_unfiltered_baseline(void **state)
{
	(void)state;
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		int ok = syscall(__NR_clone3, NULL, 0) == -1 && errno == EINVAL;
		ok &= syscall(SYS_bpf, -1, NULL, 0) == -1 && errno != EPERM;
		ok &= mount("none", "/nonexistent-skiff-test", "tmpfs", 0, NULL) == -1 &&
		      errno == ENOENT;
		ok &= setns(-1, 0) == -1 && errno == EBADF;
		int pfd[2];
		char c = 'x';
		ok &= pipe(pfd) == 0 && ioctl(pfd[0], TIOCSTI, &c) == -1 && errno == ENOTTY;
		_exit(ok ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_build),
	    cmocka_unit_test(test_denied_list),
	    cmocka_unit_test(test_export_pfc),
	    cmocka_unit_test(test_unfiltered_baseline),
	    cmocka_unit_test(test_profile_in_child),
	    cmocka_unit_test(test_compiled_profile_in_child),
	    cmocka_unit_test(test_other_abi_killed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
