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

/* The setns way: a fork of ours joins the sandbox and forks the command. */
static int exec_via_setns(struct rt_sandbox *sb, const struct rt_exec_spec *es, struct rt_exec *ret,
                          struct sk_error *err)
{
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

/* An exec through init on its way: what came back on its reply socket so far. */
struct rt_exec_start {
	int reply; /* ours, non-blocking */
	long long deadline_ms;
	/* The request, until init's queue has room for it (init_send) */
	int sync_fd; /* init's socket; -1 once sent */
	struct rt_msg m;
	size_t mlen;
	int fds[5]; /* what goes with it: ours until sent */
	size_t nfds;
	int pty; /* a terminal was asked for */
	struct rt_exec_hello hello;
	struct exec_report fail; /* type -1: none */
	int pidfd, pty_fd, got_hello;
};

/* Read one message of init's or the command's into st: 1, or 0 at EOF, or -errno (-EAGAIN:
 * nothing more yet). A message of a kind, size or fd that doesn't fit is dropped, its fd
 * closed. */
static int exec_reply_take(struct rt_exec_start *st)
{
	union {
		struct rt_exec_hello hello;
		struct exec_report rep;
	} u;
	int fd = -1;
	ssize_t n = sock_recv_fd(st->reply, &u, sizeof(u), &fd);
	if (n <= 0)
		return (int)n;
	if (n == (ssize_t)sizeof(u.hello) && u.hello.kind == EXEC_HELLO && !st->got_hello &&
	    (u.hello.type == RT_MSG_STARTED || u.hello.type == RT_MSG_ERROR)) {
		st->got_hello = 1;
		st->hello = u.hello;
		st->hello.msg[sizeof(st->hello.msg) - 1] = '\0';
		if (u.hello.type == RT_MSG_STARTED && fd >= 0)
			st->pidfd = TAKE_FD(fd);
	} else if (n == (ssize_t)sizeof(u.rep) && u.rep.type == EXEC_PTY && st->pty &&
	           st->pty_fd < 0 && fd >= 0) {
		st->pty_fd = TAKE_FD(fd);
	} else if (n == (ssize_t)sizeof(u.rep) &&
	           (u.rep.type == RT_MSG_ERROR || u.rep.type == RT_MSG_EXEC_ERROR)) {
		st->fail = u.rep;
		st->fail.err.msg[sizeof(st->fail.err.msg) - 1] = '\0';
	}
	if (fd >= 0)
		close(fd);
	return 1;
}

static void exec_start_free(struct rt_exec_start *st)
{
	for (size_t i = 0; i < st->nfds; i++)
		close(st->fds[i]);
	if (st->pidfd >= 0)
		close(st->pidfd);
	if (st->pty_fd >= 0)
		close(st->pty_fd);
	if (st->reply >= 0)
		close(st->reply);
	free(st);
}

/* The end of a start: r is 0 at the reply socket's EOF, or why it was given up. Fills *ret and
 * frees st. */
static int exec_start_finish(struct rt_sandbox *sb, struct rt_exec_start *st, int r,
                             struct rt_exec *ret, struct sk_error *err)
{
	if (r < 0) {
		/* Given up. init may have sent its word (and the pidfd) since we last looked: after
		 * this shutdown, whatever it sends fails (and init then ends the command itself),
		 * and what it sent before is read here, so the command is ended below either way.
		 */
		shutdown(st->reply, SHUT_RD);
		while (exec_reply_take(st) > 0)
			;
	}
	const struct rt_exec_hello *h = &st->hello;
	const struct exec_report *fail = &st->fail;
	if (r == 0 && fail->type < 0 && h->type == RT_MSG_STARTED && st->pidfd >= 0 &&
	    (!st->pty || st->pty_fd >= 0)) {
		*ret = (struct rt_exec){.pid = pidfd_host_pid(st->pidfd),
		                        .nspid = h->nspid,
		                        .start = h->start,
		                        .pidfd = TAKE_FD(st->pidfd),
		                        .pty_fd = TAKE_FD(st->pty_fd)};
		exec_start_free(st);
		return 0;
	}
	/* A command that did not get as far as its exec is ended: nobody waits for it. */
	if (st->pidfd >= 0)
		syscall(SYS_pidfd_send_signal, st->pidfd, SIGKILL, NULL, 0);
	if (r == -ETIMEDOUT)
		sk_error_set(err, -ETIMEDOUT,
		             "exec into %s: not started within %d ms (the sandbox may be stopping "
		             "its processes)",
		             sb->id, RT_EXEC_START_TIMEOUT_MS);
	else if (!rt_sandbox_running(sb)) /* init went, or could not fork: the sandbox ends */
		sk_error_set(err, -ESRCH, "sandbox %s is not running", sb->id);
	else if (r < 0)
		sk_error_errno(err, r, "exec into %s: init's reply", sb->id);
	else if (fail->type == RT_MSG_EXEC_ERROR)
		sk_error_set(err, fail->err.code == -ENOENT ? -SK_ECMD_NOTFOUND : -SK_ECMD_EXEC,
		             "%s", fail->err.msg);
	else if (fail->type == RT_MSG_ERROR)
		sk_error_set(err, fail->err.code < 0 ? fail->err.code : -EIO, "exec into %s: %s",
		             sb->id, fail->err.msg);
	else if (st->got_hello && h->type == RT_MSG_ERROR)
		sk_error_set(err, h->code < 0 ? h->code : -EIO, "exec into %s: %s", sb->id, h->msg);
	else
		sk_error_set(err, -EIO, "exec into %s: init did not start it", sb->id);
	exec_start_free(st);
	return err->code;
}

int rt_exec_start_fd(const struct rt_exec_start *st, short *events)
{
	*events = st->sync_fd >= 0 ? POLLOUT : POLLIN;
	return st->sync_fd >= 0 ? st->sync_fd : st->reply;
}

/* Send the request when init's queue has room: 0 sent, 1 not yet, 2 when init can't be asked
 * (it is gone, or does not listen), or -errno. */
static int init_send(struct rt_exec_start *st)
{
	struct pollfd out = {.fd = st->sync_fd, .events = POLLOUT};
	int pr;
	while ((pr = poll(&out, 1, 0)) < 0 && errno == EINTR)
		;
	if (pr == 0)
		return 1;
	int r = sock_send_fds(st->sync_fd, &st->m, st->mlen, st->fds, st->nfds);
	if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN)
		return 2;
	if (r < 0)
		return r;
	for (size_t i = 0; i < st->nfds; i++)
		close(st->fds[i]);
	st->nfds = 0;
	st->sync_fd = -1;
	return 0;
}

long long rt_exec_start_deadline_ms(const struct rt_exec_start *st)
{
	return st->deadline_ms;
}

int rt_exec_start_step(struct rt_sandbox *sb, struct rt_exec_start *st, struct rt_exec *ret,
                       struct sk_error *err)
{
	int r;
	if (st->sync_fd >= 0) {
		r = init_send(st);
		if (r == 1)
			return 1;
		if (r != 0) /* init went while the request waited */
			return exec_start_finish(sb, st, r == 2 ? -EPIPE : r, ret, err);
	}
	while ((r = exec_reply_take(st)) > 0)
		;
	if (r == -EAGAIN)
		return 1;
	return exec_start_finish(sb, st, r, ret, err);
}

int rt_exec_start_cancel(struct rt_sandbox *sb, struct rt_exec_start *st, struct sk_error *err)
{
	return exec_start_finish(sb, st, -ETIMEDOUT, NULL, err);
}

/* The exec through init (RT_START_INIT_EXECS): one message on init's socket, init forks the
 * command, which reports on a socket of this exec's own. Returns 1 with *ret_start on its way, or
 * 2 where init can't be asked (it does not serve, or its socket is closed): the caller takes the
 * setns way. */
static int exec_via_init(struct rt_sandbox *sb, const struct rt_exec_spec *es,
                         struct rt_exec_start **ret_start, struct sk_error *err)
{
	if (!(sb->flags & RT_START_INIT_EXECS) || sb->sync_fd < 0 || sb->attached)
		return 2;
	size_t argc = 0;
	while (es->argv[argc])
		argc++;
	if (argc > SPEC_MAX_ARGS)
		return sk_error_set(err, -SK_EINVAL_SPEC, "exec: more than %d arguments",
		                    SPEC_MAX_ARGS);
	struct rt_exec_start *st = calloc(1, sizeof(*st));
	if (!st)
		return sk_error_set(err, -ENOMEM, "out of memory");
	*st = (struct rt_exec_start){.reply = -1,
	                             .deadline_ms = now_ms() + RT_EXEC_START_TIMEOUT_MS,
	                             .sync_fd = sb->sync_fd,
	                             .m = {.type = RT_MSG_EXEC},
	                             .pty = es->pty,
	                             .fail = {.type = -1},
	                             .pidfd = -1,
	                             .pty_fd = -1};
	/* What goes with the request, in the order init reads it: the reply socket's other end,
	 * the strings, stdio. */
	int rp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, rp) < 0) {
		int r = -errno;
		exec_start_free(st);
		return sk_error_errno(err, r, "socketpair");
	}
	st->reply = rp[0];
	st->fds[st->nfds++] = rp[1];
	int memfd = rt_command_memfd(es->workdir, NULL, es->argv, argc, es->env, es->envc, err);
	if (memfd < 0) {
		exec_start_free(st);
		return memfd;
	}
	st->fds[st->nfds++] = memfd;
	/* Its stdio, ours until sent: the request may wait for room in init's queue. */
	for (int i = 0; i < 3 && !es->pty; i++) {
		int fd = es->stdio[i] >= 0 ? fcntl(es->stdio[i], F_DUPFD_CLOEXEC, 0)
		                           : open("/dev/null", O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			int r = -errno;
			exec_start_free(st);
			return sk_error_errno(err, r, "exec's stdio");
		}
		st->fds[st->nfds++] = fd;
	}
	if (fcntl(st->reply, F_SETFL, O_NONBLOCK) < 0) {
		int r = -errno;
		exec_start_free(st);
		return sk_error_errno(err, r, "fcntl");
	}
	snprintf(st->m.text, sizeof(st->m.text), "%zu %zu %llu %d %u %u", argc, es->envc,
	         (unsigned long long)sb->base.pids, es->pty ? 1 : 0, es->pty_rows, es->pty_cols);
	st->mlen = offsetof(struct rt_msg, text) + strlen(st->m.text) + 1;
	/* Sent now, or from rt_exec_start_step once init's queue has room (it is far behind: it
	 * shares the sandbox's CPU limit, or many execs came at once). */
	int r = init_send(st);
	if (r < 0 || r == 2) {
		exec_start_free(st);
		if (r == 2)
			return 2; /* init is gone, or never listened: the sandbox ends or is ending
			           */
		return sk_error_errno(err, r, "exec into %s: ask init", sb->id);
	}
	/* Init's word (with the command's pidfd), the command's (a terminal's master, why it
	 * failed), then EOF: once it exec'd or failed, and init let go of the socket. */
	*ret_start = st;
	return 1;
}

int rt_sandbox_exec_begin(struct rt_sandbox *sb, const struct rt_exec_spec *es, struct rt_exec *ret,
                          struct rt_exec_start **ret_start, struct sk_error *err)
{
	*ret_start = NULL;
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
	int via = exec_via_init(sb, es, ret_start, err);
	if (via != 2)
		return via;
	return exec_via_setns(sb, es, ret, err);
}

int rt_sandbox_exec(struct rt_sandbox *sb, const struct rt_exec_spec *es, struct rt_exec *ret,
                    struct sk_error *err)
{
	struct rt_exec_start *st;
	int r = rt_sandbox_exec_begin(sb, es, ret, &st, err);
	while (r == 1) {
		struct pollfd pfd;
		pfd.fd = rt_exec_start_fd(st, &pfd.events);
		long long left = st->deadline_ms - now_ms();
		int pr = poll(&pfd, 1, left > 0 ? (int)left : 0);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			return rt_exec_start_cancel(sb, st, err);
		r = rt_exec_start_step(sb, st, ret, err);
	}
	return r;
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
