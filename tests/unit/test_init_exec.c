/* Execs that init starts itself (RT_START_INIT_EXECS, src/runtime/init_loop.c), against the real
 * kernel: needs root. An exec runs as init's child in a group of its own, with its stdio, env and
 * working directory, and with the capabilities init holds, which are its commands' and no more;
 * a terminal works; failures come back as errors; malformed requests on init's socket get an
 * error or nothing, start nothing, and leave init serving. Run with skiff-init (the static
 * program init execs into) and with init left in place. */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/image/busybox.h"
#include "../../src/lib/fsutil.h"
#include "../../src/lib/sock.h"
#include "../../src/runtime/internal.h"
#include <sys/mman.h>

struct fixture {
	struct rt rt;
	char rootfs[4096];
	char data[64];
	struct rt_sandbox *sb;
};

static int teardown(void **state);

static int setup_with(void **state, int in_place, unsigned more_flags)
{
	if (geteuid() != 0) {
		print_message("skipped: making sandboxes needs root\n");
		return -1;
	}
	struct fixture *f = calloc(1, sizeof(*f));
	struct sk_error err = {0};
	snprintf(f->data, sizeof(f->data), "/tmp/skiff-test-initexec-%d", (int)getpid());
	char inst[8];
	snprintf(inst, sizeof(inst), "i%03d", (int)(getpid() % 1000));
	assert_int_equal(image_busybox_ensure(f->data, getenv(BUSYBOX_PATH_ENV), f->rootfs,
	                                      sizeof(f->rootfs), &err),
	                 0);
	if (rt_init(&f->rt, inst, NULL, &err) < 0)
		fail_msg("rt_init: %s", err.msg);
	/* A path that is not skiff-init: init stays a copy of us. The runtime looks for skiff-init
	 * at its first detached start. */
	if (in_place)
		setenv("SKIFF_INIT", "/nonexistent/skiff-init", 1);
	else
		unsetenv("SKIFF_INIT");
	struct spec s;
	spec_init(&s);
	s.timeout_s = 0;
	if (rt_sandbox_start(&f->rt, &s, f->rootfs,
	                     RT_START_DETACHED | RT_START_INIT_EXECS | more_flags, &f->sb,
	                     &err) < 0)
		fail_msg("start: %s", err.msg);
	unsetenv("SKIFF_INIT");
	spec_release(&s);
	*state = f;
	/* Each group runs the init it is named after: without skiff-init (build/bin, beside these
	 * tests' build/tests) the first would test init in place twice. */
	if (in_place ? f->rt.init_exe_fd >= 0 : f->rt.init_exe_fd < 0) {
		teardown(state);
		fail_msg("%s",
		         in_place ? "init is not in place" : "no skiff-init beside the tests");
	}
	return 0;
}

static int setup(void **state)
{
	return setup_with(state, 0, 0);
}

static int setup_in_place(void **state)
{
	return setup_with(state, 1, 0);
}

static int setup_pooled(void **state)
{
	return setup_with(state, 0, RT_START_POOLED);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	rt_sandbox_kill(f->sb, RT_END_KILLED);
	if (rt_sandbox_destroy(f->sb, &err) < 0)
		fail_msg("destroy: %s", err.msg);
	rt_gc(&f->rt, &err);
	char inst_dir[sizeof(f->rt.inst_dir)];
	memcpy(inst_dir, f->rt.inst_dir, sizeof(inst_dir));
	assert_int_equal(rt_instance_remove_if_idle(&f->rt), 1);
	rt_release(&f->rt);
	struct stat st;
	assert_int_not_equal(stat(inst_dir, &st), 0); /* nothing left of the instance */
	fs_rm_rf_at(AT_FDCWD, f->data);
	free(f);
	return 0;
}

/* Run a shell script through rt_sandbox_exec; its stdout (up to size) in out. Returns the exit
 * code, or the exec's error (negative) with its message in err. */
static int sh(struct fixture *f, const char *script, const char *workdir, char *out, size_t size,
              struct sk_error *err)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	char *argv[] = {"sh", "-c", (char *)script, NULL};
	char *env[] = {"GREETING=hello"};
	struct rt_exec_spec es = {
	    .argv = argv, .env = env, .envc = 1, .workdir = workdir, .stdio = {-1, p[1], -1}};
	struct rt_exec ex;
	int r = rt_sandbox_exec(f->sb, &es, &ex, err);
	close(p[1]);
	if (r < 0) {
		close(p[0]);
		return r;
	}
	size_t got = 0;
	for (;;) {
		ssize_t n = read(p[0], out + got, size - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	out[got] = '\0';
	close(p[0]);
	int status = -1;
	assert_int_equal(rt_exec_wait(f->sb, &ex, 5000, &status), 0);
	rt_exec_release(&ex);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_exec_runs_as_inits_child_in_a_group_of_its_own(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char out[512];
	int code = sh(f,
	              "echo $GREETING $(pwd) $PPID; test \"$(cut -d' ' -f5 /proc/$$/stat)\" = $$ "
	              "&& echo own-group; exit 3",
	              "/tmp", out, sizeof(out), &err);
	assert_int_equal(code, 3);
	/* The setns way in makes the command a grandchild of a helper outside the sandbox's
	 * view: its group is then 0 as seen inside. */
	assert_string_equal(out, "hello /tmp 1\nown-group\n");
}

static void test_init_holds_the_commands_capabilities_and_no_more(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char out[1024];
	int code = sh(f,
	              "for k in CapInh CapPrm CapEff CapBnd CapAmb; do "
	              "a=$(grep \"^$k\" /proc/1/status | cut -f2); "
	              "b=$(grep \"^$k\" /proc/self/status | cut -f2); "
	              "test \"$a\" = \"$b\" || echo \"$k differs: init $a, command $b\"; done; "
	              "grep ^CapEff /proc/1/status | cut -f2",
	              NULL, out, sizeof(out), &err);
	assert_int_equal(code, 0);
	char want[64];
	snprintf(want, sizeof(want), "%016llx\n", (unsigned long long)f->rt.caps);
	assert_string_equal(out, want);
	/* Init stays closed to its commands: not dumpable, so none of /proc/1's private files. */
	code =
	    sh(f, "ls /proc/1/fd || cat /proc/1/environ || exit 9", NULL, out, sizeof(out), &err);
	assert_int_equal(code, 9);
}

static void test_command_holds_only_its_stdio(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char out[512];
	/* No pipeline (its pipe is the shell's for a moment, which ls may see), and not the
	 * script's last command (the shell would exec it: ls's own directory fd). */
	int code = sh(f, "ls /proc/$$/fd; exit 0", NULL, out, sizeof(out), &err);
	assert_int_equal(code, 0);
	/* The shell's 0, 1 and 2: nothing of init's (its socket, events log, signalfd), nothing
	 * of the request's (the reply socket, the command's memfd). */
	assert_string_equal(out, "0\n1\n2\n");
}

static void test_failures_come_back_as_errors(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char out[64];
	char *argv[] = {"/no/such/program", NULL};
	struct rt_exec_spec es = {.argv = argv, .stdio = {-1, -1, -1}};
	struct rt_exec ex;
	assert_int_equal(rt_sandbox_exec(f->sb, &es, &ex, &err), -SK_ECMD_NOTFOUND);
	assert_non_null(strstr(err.msg, "/no/such/program"));
	err = (struct sk_error){0};
	assert_true(sh(f, "true", "/no/such/dir", out, sizeof(out), &err) < 0);
	assert_non_null(strstr(err.msg, "/no/such/dir"));
	/* And init serves on. */
	err = (struct sk_error){0};
	assert_int_equal(sh(f, "echo still", NULL, out, sizeof(out), &err), 0);
	assert_string_equal(out, "still\n");
}

static void test_terminal(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char *argv[] = {"sh", "-c", "test -t 0 && stty size", NULL};
	struct rt_exec_spec es = {
	    .argv = argv, .stdio = {-1, -1, -1}, .pty = 1, .pty_rows = 33, .pty_cols = 77};
	struct rt_exec ex;
	if (rt_sandbox_exec(f->sb, &es, &ex, &err) < 0)
		fail_msg("exec: %s", err.msg);
	assert_true(ex.pty_fd >= 0);
	char out[256];
	size_t got = 0;
	for (int tries = 0; tries < 200 && !strchr(out, '\n'); tries++) {
		struct pollfd p = {.fd = ex.pty_fd, .events = POLLIN};
		if (poll(&p, 1, 50) <= 0)
			continue;
		ssize_t n = read(ex.pty_fd, out + got, sizeof(out) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		out[got] = '\0';
	}
	out[got] = '\0';
	assert_non_null(strstr(out, "33 77"));
	int status = -1;
	assert_int_equal(rt_exec_wait(f->sb, &ex, 5000, &status), 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	rt_exec_release(&ex);
}

/* Send a raw request on init's socket; returns our end of its reply socket. */
static int raw_request(struct fixture *f, int type, const char *text, const int *extra,
                       size_t nextra, int close_reply_first)
{
	int rp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, rp), 0);
	int fds[SOCK_MAX_FDS];
	size_t n = 0;
	fds[n++] = rp[1];
	for (size_t i = 0; i < nextra && n < SOCK_MAX_FDS; i++)
		fds[n++] = extra[i];
	if (close_reply_first) {
		close(rp[0]);
		rp[0] = -1;
	}
	struct rt_msg m = {.type = type};
	snprintf(m.text, sizeof(m.text), "%s", text);
	assert_int_equal(sock_send_fds(f->sb->sync_fd, &m,
	                               offsetof(struct rt_msg, text) + strlen(m.text) + 1, fds, n),
	                 0);
	close(rp[1]);
	return rp[0];
}

/* What came back on a raw request's reply socket: 1 for an error hello, 0 for nothing (EOF). */
static int raw_reply(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 5000), 1);
	struct rt_exec_hello h;
	int pass = -1;
	ssize_t n = sock_recv_fd(fd, &h, sizeof(h), &pass);
	assert_int_equal(pass, -1); /* no pidfd: nothing was started */
	close(fd);
	if (n == 0)
		return 0;
	assert_int_equal(n, (ssize_t)sizeof(h));
	assert_int_equal(h.kind, EXEC_HELLO);
	assert_int_equal(h.type, RT_MSG_ERROR);
	return 1;
}

static int memfd_of(const char *bytes, size_t len)
{
	int fd = memfd_create("t", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, bytes, len), (ssize_t)len);
	return fd;
}

/* The pids of init's children other than the shell that asks (whose $$ it is), one a line. */
#define INITS_OTHER_CHILDREN                                                                       \
	"for f in /proc/[0-9]*/stat; do read -r a b c p r < $f 2>/dev/null && [ \"$p\" = 1 ] && "  \
	"[ \"$a\" != $$ ] && echo $a; done; exit 0"

/* Wait for init's word on a raw request's reply socket, past any report of the command's own
 * (its "about to exec" may come first); *ret_pidfd gets the fd it carries. */
static void raw_hello(int fd, struct rt_exec_hello *h, int *ret_pidfd)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		assert_int_equal(poll(&p, 1, 5000), 1);
		int pass = -1;
		assert_int_equal(sock_recv_fd(fd, h, sizeof(*h), &pass), (ssize_t)sizeof(*h));
		if (h->kind == EXEC_HELLO) {
			*ret_pidfd = pass;
			return;
		}
		if (pass >= 0)
			close(pass);
	}
}

static void test_malformed_requests_start_nothing(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	/* Requests that must start nothing carry a command that would still run when we look. */
	static const char sleeper[] = "\0\0sleep\0"
	                              "1000\0";
	int slow = memfd_of(sleeper, sizeof(sleeper) - 1);
	int io[4] = {slow, null, null, null};
	/* Not an exec; a header that doesn't parse; argc 0; fds missing; a terminal with stdio
	 * too; strings that don't match their counts. */
	assert_int_equal(raw_reply(raw_request(f, RT_MSG_GO, "2 0 0 0 0 0", io, 4, 0)), 1);
	assert_int_equal(raw_reply(raw_request(f, RT_MSG_EXEC, "2 zero", io, 4, 0)), 1);
	assert_int_equal(raw_reply(raw_request(f, RT_MSG_EXEC, "0 0 0 0 0 0", io, 4, 0)), 1);
	assert_int_equal(raw_reply(raw_request(f, RT_MSG_EXEC, "2 0 0 0 0 0", io, 2, 0)), 1);
	assert_int_equal(raw_reply(raw_request(f, RT_MSG_EXEC, "2 0 0 1 24 80", io, 4, 0)), 1);
	assert_int_equal(raw_reply(raw_request(f, RT_MSG_EXEC, "3 0 0 0 0 0", io, 4, 0)), 1);
	assert_int_equal(raw_reply(raw_request(f, RT_MSG_EXEC, "2 5000 0 0 0 0", io, 4, 0)), 1);
	static const char cut[] = "\0\0sleep\0"
	                          "1000\0";
	int bad = memfd_of(cut, 3); /* cut short */
	int io_bad[4] = {bad, null, null, null};
	assert_int_equal(raw_reply(raw_request(f, RT_MSG_EXEC, "2 0 0 0 0 0", io_bad, 4, 0)), 1);
	close(bad);
	/* A well-formed one whose asker is gone: not started. */
	raw_request(f, RT_MSG_EXEC, "2 0 0 0 0 0", io, 4, 1);
	/* init serves in order: by the time this shell runs, each of those was turned down or
	 * started, and a started one would still sleep. */
	char out[256];
	assert_int_equal(sh(f, INITS_OTHER_CHILDREN, NULL, out, sizeof(out), &err), 0);
	assert_string_equal(out, "");
	/* The control: the same request with its asker there does start. */
	int ok = raw_request(f, RT_MSG_EXEC, "2 0 0 0 0 0", io, 4, 0);
	struct rt_exec_hello h;
	int pidfd = -1;
	raw_hello(ok, &h, &pidfd);
	assert_int_equal(h.type, RT_MSG_STARTED);
	assert_true(pidfd >= 0);
	assert_int_equal(sh(f, INITS_OTHER_CHILDREN, NULL, out, sizeof(out), &err), 0);
	char want[32];
	snprintf(want, sizeof(want), "%d\n", (int)h.nspid);
	assert_string_equal(out, want);
	assert_int_equal(syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0), 0);
	close(pidfd);
	close(ok);
	close(slow);
	close(null);
}

/* How many fds this process holds. */
static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	int n = 0;
	for (struct dirent *de; (de = readdir(d));)
		n += de->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own */
}

/* init's state letter in /proc (T: stopped). */
static char init_state(const struct fixture *f)
{
	char path[64], text[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)f->sb->pid);
	if (fs_read_at(AT_FDCWD, path, text, sizeof(text)) <= 0)
		return '?';
	const char *p = strrchr(text, ')');
	return p && p[1] == ' ' ? p[2] : '?';
}

/* rt_sandbox_exec_begin never waits for init: with init stopped, more execs than its socket holds
 * are on their way at once, the last of them waiting for room there. One given up is never started,
 * whenever init reads its request. */
static void test_starts_wait_for_room_and_can_be_given_up(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	assert_int_equal(kill(f->sb->pid, SIGSTOP), 0);
	for (int i = 0; i < 500 && init_state(f) != 'T'; i++)
		usleep(2000);
	assert_int_equal(init_state(f), 'T');
	char *argv[] = {"sleep", "1000", NULL};
	struct rt_exec_spec es = {.argv = argv, .stdio = {-1, -1, -1}};
	int fds_before = open_fds();
	/* Until init's socket is full (its send buffer: a few hundred requests) and 8 more. */
	enum { MAX_STARTS = 4096 };
	struct rt_exec_start **st = calloc(MAX_STARTS, sizeof(*st));
	int n = 0, waiting = 0;
	while (n < MAX_STARTS && waiting < 8) {
		struct rt_exec ex;
		assert_int_equal(rt_sandbox_exec_begin(f->sb, &es, &ex, &st[n], &err), 1);
		short ev;
		assert_true(rt_exec_start_fd(st[n], &ev) >= 0);
		waiting += ev == POLLOUT;
		assert_int_equal(rt_exec_start_step(f->sb, st[n], &ex, &err), 1);
		n++;
	}
	assert_int_equal(waiting, 8);
	for (int i = 0; i < n; i++) {
		assert_int_equal(rt_exec_start_cancel(f->sb, st[i], &err), -ETIMEDOUT);
		assert_non_null(strstr(err.msg, "not started within"));
	}
	free(st);
	/* Given up, sent or not, a start holds nothing more. */
	assert_int_equal(open_fds(), fds_before);
	assert_int_equal(kill(f->sb->pid, SIGCONT), 0);
	/* init serves in order: by the time this shell runs, it has read every request. */
	char out[256];
	assert_int_equal(sh(f, INITS_OTHER_CHILDREN, NULL, out, sizeof(out), &err), 0);
	assert_string_equal(out, "");
	/* One on its way and stepped to its end, as the worker does. */
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	char *echo[] = {"echo", "stepped", NULL};
	struct rt_exec_spec es2 = {.argv = echo, .stdio = {-1, p[1], -1}};
	struct rt_exec_start *one;
	struct rt_exec ex;
	assert_int_equal(rt_sandbox_exec_begin(f->sb, &es2, &ex, &one, &err), 1);
	close(p[1]);
	int r = 1;
	while (r == 1) {
		struct pollfd pfd;
		pfd.fd = rt_exec_start_fd(one, &pfd.events);
		assert_int_equal(poll(&pfd, 1, 5000), 1);
		r = rt_exec_start_step(f->sb, one, &ex, &err);
	}
	assert_int_equal(r, 0);
	char got[32] = "";
	assert_int_equal(read(p[0], got, sizeof(got) - 1), 8);
	assert_string_equal(got, "stepped\n");
	close(p[0]);
	int status = -1;
	assert_int_equal(rt_exec_wait(f->sb, &ex, 5000, &status), 0);
	assert_int_equal(status, 0);
	rt_exec_release(&ex);
}

/* A pooled sandbox that has no command yet: its init reads nothing but that command (another
 * message would end the sandbox) and reaps nothing, so an exec is refused until it runs. */
static void test_exec_before_a_pooled_sandbox_runs(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char out[64];
	assert_int_equal(sh(f, "echo early", NULL, out, sizeof(out), &err), -ESRCH);
	assert_non_null(strstr(err.msg, "waits for its command"));
	struct spec s;
	spec_init(&s);
	s.timeout_s = 0;
	s.pids = SPEC_DEFAULT_PIDS - 7; /* not the pool's: execs get the run's RLIMIT_NPROC */
	if (rt_sandbox_run(f->sb, &s, &err) < 0)
		fail_msg("run: %s", err.msg);
	spec_release(&s);
	assert_int_equal(sh(f, "echo $PPID; ulimit -u", NULL, out, sizeof(out), &err), 0);
	char want[32];
	snprintf(want, sizeof(want), "1\n%d\n", SPEC_DEFAULT_PIDS - 7);
	assert_string_equal(out, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exec_runs_as_inits_child_in_a_group_of_its_own),
	    cmocka_unit_test(test_init_holds_the_commands_capabilities_and_no_more),
	    cmocka_unit_test(test_command_holds_only_its_stdio),
	    cmocka_unit_test(test_failures_come_back_as_errors),
	    cmocka_unit_test(test_terminal),
	    cmocka_unit_test(test_malformed_requests_start_nothing),
	    cmocka_unit_test(test_starts_wait_for_room_and_can_be_given_up),
	};
	int failed = cmocka_run_group_tests_name("init_exec (skiff-init)", tests, setup, teardown);
	/* Per test: each gets a fresh sandbox (a group setup would share one). */
	const struct CMUnitTest in_place[] = {
	    cmocka_unit_test_setup_teardown(test_exec_runs_as_inits_child_in_a_group_of_its_own,
	                                    setup_in_place, teardown),
	    cmocka_unit_test_setup_teardown(test_init_holds_the_commands_capabilities_and_no_more,
	                                    setup_in_place, teardown),
	    cmocka_unit_test_setup_teardown(test_command_holds_only_its_stdio, setup_in_place,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_failures_come_back_as_errors, setup_in_place,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_terminal, setup_in_place, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_requests_start_nothing, setup_in_place,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_starts_wait_for_room_and_can_be_given_up,
	                                    setup_in_place, teardown),
	    cmocka_unit_test_setup_teardown(test_exec_before_a_pooled_sandbox_runs, setup_pooled,
	                                    teardown),
	};
	return failed | cmocka_run_group_tests_name("init_exec (in place)", in_place, NULL, NULL);
}
