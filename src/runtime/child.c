/* The sandbox's side of a start: this code runs in the cloned child, which becomes pid 1 of the
 * sandbox (our init). It waits for the runtime to map its ids and place it in its cgroups, builds
 * the root filesystem, forks and execs the command with capabilities cut, no_new_privs and
 * seccomp, then reaps, forwards signals and reports the command's exit status. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/timing.h"
#include "caps.h"
#include "internal.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define NOFILE_LIMIT 65536
#define CORE_LIMIT   0

/* Signals init forwards to the main command. */
static const int FORWARDED[] = {SIGHUP,  SIGINT,   SIGQUIT, SIGTERM, SIGUSR1,
                                SIGUSR2, SIGWINCH, SIGCONT, SIGALRM};

_Noreturn static void fail_as(int sync_fd, int type, struct sk_error *err)
{
	rt_msg_send(sync_fd, type, err->code, err->msg, -1);
	_exit(1);
}

_Noreturn static void fail(int sync_fd, struct sk_error *err)
{
	fail_as(sync_fd, RT_MSG_ERROR, err);
}

/* What the command process reports through the close-on-exec pipe when it can't exec. */
struct exec_failure {
	int type; /* RT_MSG_ERROR (setup) or RT_MSG_EXEC_ERROR (the program itself) */
	struct sk_error err;
};

static int close_fds_except(int keep)
{
	if (keep > 3 && syscall(SYS_close_range, 3, keep - 1, 0) < 0)
		return -errno;
	if (syscall(SYS_close_range, keep + 1, ~0U, 0) < 0)
		return -errno;
	return 0;
}

static int build_env(const struct spec *s, const char *hostname, char ***ret)
{
	size_t n = s->envc + 4;
	char **env = calloc(n + 1, sizeof(char *));
	if (!env)
		return -ENOMEM;
	size_t k = 0;
	static char path[] = "PATH=" DEFAULT_PATH, home[] = "HOME=/root";
	static char host[80];
	snprintf(host, sizeof(host), "HOSTNAME=%s", hostname);
	char *defaults[] = {path, home, host};
	for (size_t d = 0; d < ARRAY_SIZE(defaults); d++) {
		size_t klen = strchr(defaults[d], '=') - defaults[d] + 1;
		int overridden = 0;
		for (size_t i = 0; i < s->envc; i++)
			overridden |= !strncmp(s->env[i], defaults[d], klen);
		if (!overridden)
			env[k++] = defaults[d];
	}
	for (size_t i = 0; i < s->envc; i++)
		env[k++] = s->env[i];
	env[k] = NULL;
	*ret = env;
	return 0;
}

/* In the forked command process: last steps before exec. Reports failure on err_fd. */
_Noreturn static void exec_command(const struct rt_child_args *a, int err_fd)
{
	const struct spec *s = a->spec;
	struct exec_failure f = {.type = RT_MSG_ERROR};
	struct sk_error *errp = &f.err;
	/* The command starts clean: default dispositions (ignored ones survive exec), no mask. */
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	struct rlimit nofile = {NOFILE_LIMIT, NOFILE_LIMIT}, core = {CORE_LIMIT, CORE_LIMIT};
	struct rlimit nproc = {s->pids, s->pids};
	setrlimit(RLIMIT_NOFILE, &nofile);
	setrlimit(RLIMIT_CORE, &core);
	/* The uid range is the sandbox's own, so RLIMIT_NPROC counts this sandbox only. */
	setrlimit(RLIMIT_NPROC, &nproc);

	const char *wd = s->workdir ? s->workdir : "/";
	if (chdir(wd) < 0) {
		sk_error_errno(errp, -errno, "workdir %s", wd);
		goto fail;
	}
	char **env;
	if (build_env(s, a->hostname, &env) < 0) {
		sk_error_set(errp, -ENOMEM, "out of memory");
		goto fail;
	}
	if (caps_restrict(a->rt->caps, errp) < 0)
		goto fail;
	/* PATH lookup uses the sandbox's PATH, not ours. */
	const char *pathenv = DEFAULT_PATH;
	for (char **e = env; *e; e++)
		if (!strncmp(*e, "PATH=", 5))
			pathenv = *e + 5;
	setenv("PATH", pathenv, 1);
	/* The time exec began, for the start's breakdown: init reads it before the EOF. */
	uint64_t now = timing_now_ns();
	if (write(err_fd, &now, sizeof(now)) < 0) {
		/* init is gone: the sandbox is being torn down */
	}
	execvpe(s->argv[0], s->argv, env);
	int r = -errno;
	f.type = RT_MSG_EXEC_ERROR;
	sk_error_errno(errp, r, "run %s", s->argv[0]);
fail:
	if (write(err_fd, &f, sizeof(f)) < 0) {
		/* nothing more to do */
	}
	_exit(127);
}

/* init's loop: reap everything, forward signals to main, report main's exit. */
_Noreturn static void init_loop(int sync_fd, pid_t main_pid, const sigset_t *mask)
{
	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(mask, &si);
		if (sig < 0)
			continue;
		if (sig != SIGCHLD) {
			kill(main_pid, sig);
			continue;
		}
		for (;;) {
			int status;
			pid_t p = waitpid(-1, &status, WNOHANG);
			if (p <= 0)
				break;
			if (p == main_pid) {
				char when[32];
				snprintf(when, sizeof(when), "%llu",
				         (unsigned long long)timing_now_ns());
				rt_msg_send(sync_fd, RT_MSG_EXIT, status, when, -1);
				/* Leaving kills every other process of the pid namespace. */
				_exit(0);
			}
		}
	}
}

_Noreturn void rt_child_main(const struct rt_child_args *a)
{
	struct sk_error err = {0};
	int sync_fd = a->sync_fd;
	prctl(PR_SET_NAME, "skiff-init");
	if (close_fds_except(sync_fd) < 0) {
		sk_error_errno(&err, -errno, "close inherited fds");
		fail(sync_fd, &err);
	}
	struct rt_msg m;
	int lower_fd = -1;
	ssize_t n = rt_msg_recv(sync_fd, &m, &lower_fd);
	if (n <= 0 || m.type != RT_MSG_GO || lower_fd < 0)
		_exit(1); /* the runtime gave up on us; it reports why */
	struct timing t = {0};
	timing_mark(&t, "init_go");

	/* Become root of our user namespace (the runtime mapped 0 to our host range). */
	if (setresgid(0, 0, 0) < 0 || setgroups(0, NULL) < 0 || setresuid(0, 0, 0) < 0) {
		sk_error_errno(&err, -errno, "become root in the user namespace");
		fail(sync_fd, &err);
	}
	/* Credential changes cleared it: from here on, the runtime's death kills us. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct pollfd pfd = {.fd = sync_fd, .events = POLLRDHUP};
	if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP)))
		_exit(1);
	if (unshare(CLONE_NEWCGROUP) < 0) {
		sk_error_errno(&err, -errno, "new cgroup namespace");
		fail(sync_fd, &err);
	}
	umask(022);
	timing_mark(&t, "init_ids_cgroupns");
	if (rootfs_setup(a->scratch, lower_fd, a->spec, &t, &err) < 0)
		fail(sync_fd, &err);
	close(lower_fd);
	if (sethostname(a->hostname, strlen(a->hostname)) < 0) {
		sk_error_errno(&err, -errno, "sethostname");
		fail(sync_fd, &err);
	}
	if (net_loopback_up(&err) < 0)
		fail(sync_fd, &err);
	timing_mark(&t, "init_hostname_lo");
	/* A session of our own: the host terminal's job control and signals reach the sandbox
	 * only through the runtime. */
	setsid();

	sigset_t mask;
	sigemptyset(&mask);
	for (size_t i = 0; i < ARRAY_SIZE(FORWARDED); i++)
		sigaddset(&mask, FORWARDED[i]);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);

	/* Loaded once, here, so that init and the command share one filter: init keeps it, the
	 * command inherits it across fork and exec. */
	prctl(PR_SET_DUMPABLE, 0);
	int r = rt_seccomp_load(&a->rt->seccomp);
	if (r < 0) {
		sk_error_errno(&err, r, "load seccomp profile");
		fail(sync_fd, &err);
	}
	timing_mark(&t, "seccomp");

	int errpipe[2];
	if (pipe2(errpipe, O_CLOEXEC) < 0) {
		sk_error_errno(&err, -errno, "pipe");
		fail(sync_fd, &err);
	}
	/* vfork: no copy of init's memory (a fork costs ~1 ms on a VM); init waits until the
	 * command has exec'd or failed, which it would do anyway. */
	pid_t main_pid = vfork();
	if (main_pid < 0) {
		sk_error_errno(&err, -errno, "fork the command");
		fail(sync_fd, &err);
	}
	if (main_pid == 0) {
		close(errpipe[0]);
		close(sync_fd);
		exec_command(a, errpipe[1]);
	}
	close(errpipe[1]);
	timing_mark(&t, "init_fork");
	struct exec_failure ef;
	ssize_t got;
	uint64_t exec_ns = 0;
	do {
		got = read(errpipe[0], &exec_ns, sizeof(exec_ns));
	} while (got < 0 && errno == EINTR);
	if (got == (ssize_t)sizeof(exec_ns)) {
		timing_mark_at(&t, "command_prepare", exec_ns);
		do {
			got = read(errpipe[0], &ef, sizeof(ef));
		} while (got < 0 && errno == EINTR);
	} else if (got > 0) {
		/* An error report came before the timestamp: read the rest of it. */
		memcpy(&ef, &exec_ns, got);
		ssize_t more;
		do {
			more = read(errpipe[0], (char *)&ef + got, sizeof(ef) - got);
		} while (more < 0 && errno == EINTR);
		got += more > 0 ? more : 0;
	}
	close(errpipe[0]);
	if (got == (ssize_t)sizeof(ef)) {
		ef.err.msg[sizeof(ef.err.msg) - 1] = '\0';
		fail_as(sync_fd, ef.type == RT_MSG_EXEC_ERROR ? RT_MSG_EXEC_ERROR : RT_MSG_ERROR,
		        &ef.err);
	}

	/* init keeps no privilege: nothing in the sandbox may gain one through it. */
	if (caps_restrict(0, &err) < 0) {
		kill(main_pid, SIGKILL);
		fail(sync_fd, &err);
	}
	timing_mark(&t, "command_exec");
	char marks[SK_ERROR_MSG_BYTES];
	timing_format(&t, marks, sizeof(marks));
	rt_msg_send(sync_fd, RT_MSG_STARTED, main_pid, marks, -1);
	init_loop(sync_fd, main_pid, &mask);
}
