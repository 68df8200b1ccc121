/* Exec into a running sandbox. The runtime forks an intermediate that joins the sandbox's
 * cgroups, then its namespaces through init's pidfd (setns), becomes its root and forks the
 * command: the command is in the sandbox's pid namespace, and when the intermediate exits it
 * becomes init's child. So it outlives the process that asked for it, and init records its exit
 * status in the events log, where any process (this one, or one that re-attached) finds it.
 * The intermediate hands back a pidfd for the command, its pid inside and its start time. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "../lib/sock.h"
#include "internal.h"

#define EXEC_NS_FLAGS                                                                              \
	(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | \
	 CLONE_NEWCGROUP)
#define EXEC_STATUS_WAIT_MS 2000 /* how long init may take to log a status after the exit */

/* What the intermediate reports (with the command's pidfd attached on success): the same
 * struct rt_exec_hello init sends for an exec it starts. */
static void hello_send(int fd, const struct rt_exec_hello *h, int pass_fd)
{
	sock_send_fd(fd, h, sizeof(*h), pass_fd);
}

_Noreturn static void intermediate_fail(int fd, int type, int code, const char *fmt,
                                        const char *what)
{
	struct rt_exec_hello h = {.kind = EXEC_HELLO, .type = type, .code = code};
	snprintf(h.msg, sizeof(h.msg), fmt, what, strerror(-code));
	hello_send(fd, &h, -1);
	_exit(1);
}

int rt_sandbox_join_cgroups(const struct rt_sandbox *sb, pid_t pid, struct sk_error *err)
{
	char num[16];
	snprintf(num, sizeof(num), "%d", (int)pid);
	for (int i = 0; i < sb->rt->cg.nhier; i++) {
		if (sb->cg.dirfd[i] < 0)
			continue;
		int r = fs_write_str_at(sb->cg.dirfd[i], "cgroup.procs", num);
		if (r < 0)
			return sk_error_errno(err, r, "join the sandbox's cgroups");
	}
	return 0;
}

int rt_sandbox_enter(const struct rt_sandbox *sb, struct sk_error *err)
{
	int r = rt_sandbox_join_cgroups(sb, 0, err);
	if (r < 0)
		return r;
	if (setns(sb->pidfd, EXEC_NS_FLAGS) < 0)
		return sk_error_errno(err, -errno, "join the sandbox's namespaces");
	if (setresgid(0, 0, 0) < 0 || setgroups(0, NULL) < 0 || setresuid(0, 0, 0) < 0)
		return sk_error_errno(err, -errno, "become the sandbox's root");
	return 0;
}

/* The intermediate: in a fork of the runtime. Never returns. */
_Noreturn static void intermediate(struct rt_sandbox *sb, const struct rt_exec_spec *es, int fd)
{
	/* stdio first, while host paths still mean the host. */
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	for (int i = 0; i < 3; i++) {
		int src = es->stdio[i] >= 0 ? es->stdio[i] : devnull;
		if (src < 0 || dup2(src, i) < 0)
			intermediate_fail(fd, RT_MSG_ERROR, -errno, "%s: %s", "stdio");
	}
	if (devnull > 2)
		close(devnull);
	/* A fork of its starter (the spawner holds other sandboxes' pipes, terminals and
	 * pidfds): not dumpable before it enters, so that no process of the sandbox can reach
	 * its fds through /proc, and holding only what it needs once it is in. */
	prctl(PR_SET_DUMPABLE, 0);
	struct sk_error eerr = {0};
	if (rt_sandbox_enter(sb, &eerr) < 0) {
		struct rt_exec_hello h = {
		    .kind = EXEC_HELLO, .type = RT_MSG_ERROR, .code = eerr.code};
		snprintf(h.msg, sizeof(h.msg), "%s", eerr.msg);
		hello_send(fd, &h, -1);
		_exit(1);
	}
	int pty = -1;
	if (es->pty && (pty = rt_pty_open(es->pty_rows, es->pty_cols)) < 0)
		intermediate_fail(fd, RT_MSG_ERROR, pty, "%s: %s",
		                  "open a terminal in the sandbox");
	int keep[2] = {fd, pty};
	if (fs_close_all_except(keep, pty >= 0 ? 2 : 1) < 0)
		intermediate_fail(fd, RT_MSG_ERROR, -errno, "%s: %s", "close the starter's fds");
	char hostname[65] = "";
	gethostname(hostname, sizeof(hostname) - 1);
	/* We are still in the host's pid namespace (setns only moves our children), and an
	 * orphan goes to the reaper of its parent's namespace: the command's parent must be in
	 * the sandbox's, so that init inherits it. Hence a second process. */
	pid_t mid = fork();
	if (mid < 0)
		intermediate_fail(fd, RT_MSG_ERROR, -errno, "%s: %s", "fork");
	if (mid > 0) {
		int status;
		while (waitpid(mid, &status, 0) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	int errpipe[2];
	if (pipe2(errpipe, O_CLOEXEC | O_DIRECT) < 0)
		intermediate_fail(fd, RT_MSG_ERROR, -errno, "%s: %s", "pipe");
	pid_t pid = fork();
	if (pid < 0)
		intermediate_fail(fd, RT_MSG_ERROR, -errno, "%s: %s", "fork the command");
	if (pid == 0) {
		close(errpipe[0]);
		int keep[1] = {errpipe[1]};
		fs_close_all_except(keep, 1);
		struct rt_command cmd = {
		    .argv = es->argv,
		    .env = es->env,
		    .envc = es->envc,
		    .workdir = es->workdir,
		    .hostname = hostname,
		    .nproc = sb->base.pids,
		    .load_seccomp = 1,
		    .ctty = es->pty,
		};
		rt_command_exec(sb->rt, &cmd, errpipe[1], -1);
	}
	close(errpipe[1]);
	/* The command is our child until we exit: nobody can reap it before we have its pidfd.
	 * We are in the sandbox's pid namespace and see its /proc: pid is its pid in there. */
	struct rt_exec_hello h = {.kind = EXEC_HELLO, .type = RT_MSG_STARTED, .nspid = pid};
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (proc_start_time(pid, &h.start) < 0) {
		kill(pid, SIGKILL);
		close(pidfd);
		pidfd = -1;
		errno = ESRCH;
	}
	struct exec_report rep;
	uint64_t about_ns;
	if (exec_report_wait(errpipe[0], &rep, &about_ns) > 0) {
		h.type = rep.type;
		h.code = rep.err.code;
		snprintf(h.msg, sizeof(h.msg), "%s", rep.err.msg);
	}
	if (pidfd < 0 && h.type == RT_MSG_STARTED) {
		h.type = RT_MSG_ERROR;
		h.code = -errno;
		snprintf(h.msg, sizeof(h.msg), "pidfd of the command: %s", strerror(errno));
	}
	int fds[2] = {pidfd, pty};
	sock_send_fds(fd, &h, sizeof(h), fds, h.type != RT_MSG_STARTED ? 0 : pty >= 0 ? 2 : 1);
	_exit(0);
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* The pid (in our namespace) of the process a pidfd refers to, from its fdinfo; 0 if gone. */
static pid_t pidfd_host_pid(int pidfd)
{
	char path[64], text[1024];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
	if (fs_read_at(AT_FDCWD, path, text, sizeof(text)) <= 0)
		return 0;
	const char *p = strstr(text, "\nPid:");
	int pid = p ? atoi(p + 5) : 0;
	return pid > 0 ? pid : 0;
}

/* What came back on an exec's reply socket so far (exec_via_init). */
struct exec_replies {
	struct rt_exec_hello hello;
	struct exec_report fail; /* type -1: none */
	int pidfd, pty, got_hello;
};

/* Read one message of init's or the command's into x: 1, or 0 at EOF, or -errno. A message
 * of a kind, size or fd that doesn't fit is dropped, its fd closed. */
static int exec_reply_take(int reply, const struct rt_exec_spec *es, struct exec_replies *x)
{
	union {
		struct rt_exec_hello hello;
		struct exec_report rep;
	} u;
	int fd = -1;
	ssize_t n = sock_recv_fd(reply, &u, sizeof(u), &fd);
	if (n <= 0)
		return (int)n;
	if (n == (ssize_t)sizeof(u.hello) && u.hello.kind == EXEC_HELLO && !x->got_hello &&
	    (u.hello.type == RT_MSG_STARTED || u.hello.type == RT_MSG_ERROR)) {
		x->got_hello = 1;
		x->hello = u.hello;
		x->hello.msg[sizeof(x->hello.msg) - 1] = '\0';
		if (u.hello.type == RT_MSG_STARTED && fd >= 0)
			x->pidfd = TAKE_FD(fd);
	} else if (n == (ssize_t)sizeof(u.rep) && u.rep.type == EXEC_PTY && es->pty && x->pty < 0 &&
	           fd >= 0) {
		x->pty = TAKE_FD(fd);
	} else if (n == (ssize_t)sizeof(u.rep) &&
	           (u.rep.type == RT_MSG_ERROR || u.rep.type == RT_MSG_EXEC_ERROR)) {
		x->fail = u.rep;
		x->fail.err.msg[sizeof(x->fail.err.msg) - 1] = '\0';
	}
	if (fd >= 0)
		close(fd);
	return 1;
}

/* The exec through init (RT_START_INIT_EXECS): one message on init's socket, init forks the
 * command, which reports on a socket of this exec's own. Returns 1 where init can't be asked
 * (it does not serve, or its socket is closed): the caller takes the setns way. */
static int exec_via_init(struct rt_sandbox *sb, const struct rt_exec_spec *es, struct rt_exec *ret,
                         struct sk_error *err)
{
	if (!(sb->flags & RT_START_INIT_EXECS) || sb->sync_fd < 0 || sb->attached)
		return 1;
	size_t argc = 0;
	while (es->argv[argc])
		argc++;
	if (argc > SPEC_MAX_ARGS)
		return sk_error_set(err, -SK_EINVAL_SPEC, "exec: more than %d arguments",
		                    SPEC_MAX_ARGS);
	_cleanup_close_ int memfd =
	    rt_command_memfd(es->workdir, NULL, es->argv, argc, es->env, es->envc, err);
	if (memfd < 0)
		return memfd;
	int rp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, rp) < 0)
		return sk_error_errno(err, -errno, "socketpair");
	_cleanup_close_ int reply = rp[0];
	_cleanup_close_ int theirs = rp[1];
	_cleanup_close_ int devnull = -1;
	int fds[5] = {theirs, memfd, -1, -1, -1};
	size_t nfds = 2;
	if (!es->pty) {
		for (int i = 0; i < 3; i++) {
			if (es->stdio[i] < 0 && devnull < 0 &&
			    (devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
				return sk_error_errno(err, -errno, "open /dev/null");
			fds[nfds++] = es->stdio[i] >= 0 ? es->stdio[i] : devnull;
		}
	}
	long long deadline = now_ms() + RT_EXEC_START_TIMEOUT_MS;
	/* init's queue has room unless it is far behind (it shares the sandbox's CPU limit). */
	struct pollfd out = {.fd = sb->sync_fd, .events = POLLOUT};
	int pr;
	while ((pr = poll(&out, 1, RT_EXEC_START_TIMEOUT_MS)) < 0 && errno == EINTR)
		;
	if (pr == 0)
		return sk_error_set(err, -ETIMEDOUT, "exec into %s: init takes no request", sb->id);
	struct rt_msg m = {.type = RT_MSG_EXEC};
	snprintf(m.text, sizeof(m.text), "%zu %zu %llu %d %u %u", argc, es->envc,
	         (unsigned long long)sb->base.pids, es->pty ? 1 : 0, es->pty_rows, es->pty_cols);
	int r = sock_send_fds(sb->sync_fd, &m, offsetof(struct rt_msg, text) + strlen(m.text) + 1,
	                      fds, nfds);
	if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN)
		return 1; /* init is gone, or never listened: the sandbox ends or is ending */
	if (r < 0)
		return sk_error_errno(err, r, "exec into %s: ask init", sb->id);
	close(TAKE_FD(theirs));
	/* Init's word (with the command's pidfd), the command's (a terminal's master, why it
	 * failed), then EOF: once it exec'd or failed, and init let go of the socket. */
	struct exec_replies x = {.fail = {.type = -1}, .pidfd = -1, .pty = -1};
	for (;;) {
		struct pollfd pfd = {.fd = reply, .events = POLLIN};
		int left = (int)(deadline - now_ms());
		int pr = poll(&pfd, 1, left > 0 ? left : 0);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			r = -ETIMEDOUT;
			break;
		}
		r = exec_reply_take(reply, es, &x);
		if (r <= 0)
			break;
	}
	if (r < 0) {
		/* Given up. init may have sent its word (and the pidfd) since we last looked: after
		 * this shutdown, whatever it sends fails (and init then ends the command itself),
		 * and what it sent before is read here, so the command is ended below either way.
		 */
		shutdown(reply, SHUT_RD);
		while (exec_reply_take(reply, es, &x) > 0)
			;
	}
	const struct rt_exec_hello *h = &x.hello;
	const struct exec_report *fail = &x.fail;
	if (r < 0 || fail->type >= 0 || h->type != RT_MSG_STARTED || x.pidfd < 0 ||
	    (es->pty && x.pty < 0)) {
		/* A command that did not get as far as its exec is ended: nobody waits for it. */
		if (x.pidfd >= 0) {
			syscall(SYS_pidfd_send_signal, x.pidfd, SIGKILL, NULL, 0);
			close(x.pidfd);
		}
		if (x.pty >= 0)
			close(x.pty);
		if (r == -ETIMEDOUT)
			return sk_error_set(err, -ETIMEDOUT,
			                    "exec into %s: not started within %d ms (the sandbox "
			                    "may be stopping its processes)",
			                    sb->id, RT_EXEC_START_TIMEOUT_MS);
		/* init went, or could not fork in a pid namespace that is closing. */
		if (!rt_sandbox_running(sb))
			return sk_error_set(err, -ESRCH, "sandbox %s is not running", sb->id);
		if (r < 0)
			return sk_error_errno(err, r, "exec into %s: init's reply", sb->id);
		if (fail->type == RT_MSG_EXEC_ERROR)
			return sk_error_set(
			    err, fail->err.code == -ENOENT ? -SK_ECMD_NOTFOUND : -SK_ECMD_EXEC,
			    "%s", fail->err.msg);
		if (fail->type == RT_MSG_ERROR)
			return sk_error_set(err, fail->err.code < 0 ? fail->err.code : -EIO,
			                    "exec into %s: %s", sb->id, fail->err.msg);
		if (x.got_hello && h->type == RT_MSG_ERROR)
			return sk_error_set(err, h->code < 0 ? h->code : -EIO, "exec into %s: %s",
			                    sb->id, h->msg);
		return sk_error_set(err, -EIO, "exec into %s: init did not start it", sb->id);
	}
	*ret = (struct rt_exec){.pid = pidfd_host_pid(x.pidfd),
	                        .nspid = h->nspid,
	                        .start = h->start,
	                        .pidfd = x.pidfd,
	                        .pty_fd = x.pty};
	return 0;
}

int rt_sandbox_exec(struct rt_sandbox *sb, const struct rt_exec_spec *es, struct rt_exec *ret,
                    struct sk_error *err)
{
	if (!es->argv || !es->argv[0] || !es->argv[0][0])
		return sk_error_set(err, -SK_EINVAL_SPEC, "exec: no command given");
	if (es->envc > SPEC_MAX_ENV)
		return sk_error_set(err, -SK_EINVAL_SPEC, "exec: more than %d variables",
		                    SPEC_MAX_ENV);
	if (!rt_sandbox_running(sb))
		return sk_error_set(err, -ESRCH, "sandbox %s is not running", sb->id);
	/* A pooled sandbox's init, until its command comes, reads that and nothing else (another
	 * message would end it), and reaps nothing (an exec's status would never be known). */
	if ((sb->flags & RT_START_POOLED) && !sb->ran)
		return sk_error_set(
		    err, -ESRCH, "sandbox %s is not running yet: it waits for its command", sb->id);
	int via = exec_via_init(sb, es, ret, err);
	if (via <= 0)
		return via;
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		return sk_error_errno(err, -errno, "socketpair");
	pid_t pid = fork();
	if (pid < 0) {
		int r = -errno;
		close(sp[0]);
		close(sp[1]);
		return sk_error_errno(err, r, "fork");
	}
	if (pid == 0) {
		close(sp[0]);
		/* A group of our own: the helpers and the command, until it execs, can be ended
		 * together (the sandbox can stop or hold them, see below). */
		setpgid(0, 0);
		intermediate(sb, es, sp[1]);
	}
	setpgid(pid, pid); /* also here: whichever runs first */
	close(sp[1]);
	struct rt_exec_hello h;
	int fds[2] = {-1, -1}; /* the command's pidfd, the terminal's master */
	int pidfd = -1;
	_cleanup_close_ int pty = -1;
	/* The sandbox's processes may signal the helpers inside its pid namespace (SIGSTOP them,
	 * say): a start that takes too long is ended, helpers and command together. */
	ssize_t n = -1;
	int timed_out = 0;
	struct pollfd pfd = {.fd = sp[0], .events = POLLIN};
	long long deadline = now_ms() + RT_EXEC_START_TIMEOUT_MS;
	for (;;) {
		int left = (int)(deadline - now_ms());
		int pr = poll(&pfd, 1, left > 0 ? left : 0);
		if (pr > 0) {
			n = sock_recv_fds(sp[0], &h, sizeof(h), fds, 2);
			pidfd = fds[0];
			pty = fds[1];
			break;
		}
		if (pr == 0 || errno != EINTR) {
			kill(-pid, SIGKILL);
			timed_out = 1;
			break;
		}
	}
	close(sp[0]);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	if (timed_out)
		return sk_error_set(err, -ETIMEDOUT,
		                    "exec into %s: not started within %d ms (the sandbox may be "
		                    "stopping its processes)",
		                    sb->id, RT_EXEC_START_TIMEOUT_MS);
	if (n != (ssize_t)sizeof(h)) {
		if (pidfd >= 0)
			close(pidfd);
		return sk_error_set(err, -EIO, "exec into %s: the helper died", sb->id);
	}
	h.msg[sizeof(h.msg) - 1] = '\0';
	if (h.type == RT_MSG_EXEC_ERROR)
		return sk_error_set(err, h.code == -ENOENT ? -SK_ECMD_NOTFOUND : -SK_ECMD_EXEC,
		                    "%s", h.msg);
	if (h.type != RT_MSG_STARTED || pidfd < 0 || (es->pty && pty < 0)) {
		if (pidfd >= 0)
			close(pidfd);
		return sk_error_set(err, h.code < 0 ? h.code : -EIO, "exec into %s: %s", sb->id,
		                    h.msg);
	}
	*ret = (struct rt_exec){.pid = pidfd_host_pid(pidfd),
	                        .nspid = h.nspid,
	                        .start = h.start,
	                        .pidfd = pidfd,
	                        .pty_fd = TAKE_FD(pty)};
	return 0;
}

int rt_exec_wait(struct rt_sandbox *sb, const struct rt_exec *ex, int timeout_ms, int *ret_status)
{
	long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	struct pollfd p = {.fd = ex->pidfd, .events = POLLIN};
	for (;;) {
		int left = deadline < 0 ? -1 : (int)(deadline - now_ms());
		if (deadline >= 0 && left < 0)
			left = 0;
		int r = poll(&p, 1, left);
		if (r > 0)
			break;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
	/* It exited; init reaps it and logs its status (right away, unless init itself is gone). */
	long long until = now_ms() + EXEC_STATUS_WAIT_MS;
	long backoff_ns = 1000000L;
	for (;;) {
		if (state_events_exit(sb->rt->inst_dir, sb->id, ex->nspid, ex->start, ret_status) ==
		    0)
			return 0;
		if (now_ms() >= until || !rt_sandbox_running(sb))
			break;
		struct timespec ts = {0, backoff_ns};
		nanosleep(&ts, NULL);
		if (backoff_ns < 50 * 1000000L)
			backoff_ns *= 2;
	}
	/* init may have logged it just before it went. */
	if (state_events_exit(sb->rt->inst_dir, sb->id, ex->nspid, ex->start, ret_status) == 0)
		return 0;
	return -ESRCH;
}

int rt_exec_status(struct rt_sandbox *sb, const struct rt_exec *ex, int *ret_status)
{
	const char *inst_dir = sb->rt->inst_dir;
	if (state_events_exit(inst_dir, sb->id, ex->nspid, ex->start, ret_status) == 0)
		return 0;
	if (rt_sandbox_running(sb))
		return -EAGAIN;
	/* init may have logged it just before it went. */
	if (state_events_exit(inst_dir, sb->id, ex->nspid, ex->start, ret_status) == 0)
		return 0;
	return -ESRCH;
}

int rt_exec_attach(pid_t pid, pid_t nspid, unsigned long long start, struct rt_exec *ret,
                   struct sk_error *err)
{
	*ret =
	    (struct rt_exec){.pid = pid, .nspid = nspid, .start = start, .pidfd = -1, .pty_fd = -1};
	if (pid <= 0 || nspid <= 0 || start == 0)
		return sk_error_set(err, -EINVAL, "exec record: bad pid or start time");
	/* A pidfd for the very process the record names (its start time checked): pids recycle. */
	int fd = proc_pidfd_open(pid, start);
	if (fd >= 0)
		ret->pidfd = fd;
	else if (fd != -ESRCH)
		return sk_error_errno(err, fd, "pidfd_open %d", (int)pid);
	return 0;
}

int rt_exec_signal(const struct rt_exec *ex, int sig)
{
	if (syscall(SYS_pidfd_send_signal, ex->pidfd, sig, NULL, 0) < 0)
		return -errno;
	return 0;
}

void rt_exec_release(struct rt_exec *ex)
{
	if (ex->pidfd >= 0)
		close(ex->pidfd);
	ex->pidfd = -1;
	if (ex->pty_fd >= 0)
		close(ex->pty_fd);
	ex->pty_fd = -1;
}
