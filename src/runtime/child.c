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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "../lib/timing.h"
#include "caps.h"
#include "internal.h"

#define DEFAULT_PATH        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define NOFILE_LIMIT        65536
#define COMMAND_STACK_BYTES (128 * 1024)
#define CORE_LIMIT          0

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

/* The command's environment in env (room for SPEC_MAX_ENV + 4 entries): our defaults unless
 * the spec sets them, then the spec's. Allocates nothing: the command process shares init's memory.
 */
static void build_env(char *const *given, size_t envc, char *host, char **env)
{
	static char path[] = "PATH=" DEFAULT_PATH, home[] = "HOME=/root";
	char *defaults[] = {path, home, host};
	size_t k = 0;
	for (size_t d = 0; d < ARRAY_SIZE(defaults); d++) {
		size_t klen = strchr(defaults[d], '=') - defaults[d] + 1;
		int overridden = 0;
		for (size_t i = 0; i < envc; i++)
			overridden |= !strncmp(given[i], defaults[d], klen);
		if (!overridden)
			env[k++] = defaults[d];
	}
	for (size_t i = 0; i < envc; i++)
		env[k++] = given[i];
	env[k] = NULL;
}

/* execvpe without touching environ (it is shared with the runtime): search path for file. */
static void exec_search(const char *file, char *const argv[], char *const envp[], const char *path)
{
	if (strchr(file, '/')) {
		execve(file, argv, envp);
		return;
	}
	int saw_eacces = 0;
	char buf[SPEC_MAX_PATH_BYTES * 2];
	for (const char *p = path;;) {
		const char *colon = strchrnul(p, ':');
		int dlen = (int)(colon - p);
		if (dlen == 0)
			snprintf(buf, sizeof(buf), "%s", file);
		else
			snprintf(buf, sizeof(buf), "%.*s/%s", dlen, p, file);
		execve(buf, argv, envp);
		if (errno == EACCES)
			saw_eacces = 1;
		else if (errno != ENOENT && errno != ENOTDIR)
			return;
		if (!*colon)
			break;
		p = colon + 1;
	}
	errno = saw_eacces ? EACCES : ENOENT;
}

int exec_report_wait(int fd, struct exec_report *ret_failure, uint64_t *ret_about_ns)
{
	for (;;) {
		struct exec_report rep;
		ssize_t got = read(fd, &rep, sizeof(rep));
		if (got < 0 && errno == EINTR)
			continue;
		if (got != (ssize_t)sizeof(rep))
			return 0; /* EOF: the exec went through */
		if (rep.type == EXEC_ABOUT_TO) {
			*ret_about_ns = rep.ns;
			continue;
		}
		rep.type = rep.type == RT_MSG_EXEC_ERROR ? RT_MSG_EXEC_ERROR : RT_MSG_ERROR;
		rep.err.msg[sizeof(rep.err.msg) - 1] = '\0';
		*ret_failure = rep;
		return 1;
	}
}

_Noreturn void rt_command_exec(const struct rt *rt, const struct rt_command *s, int err_fd,
                               int go_fd)
{
	struct exec_report f = {.type = RT_MSG_ERROR};
	struct sk_error *errp = &f.err;
	/* The command starts clean: default dispositions (ignored ones survive exec), no mask. */
	for (int sig = 1; sig < SIGRTMIN; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
		signal(sig, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	struct rlimit nofile, core = {CORE_LIMIT, CORE_LIMIT};
	struct rlimit nproc = {s->nproc, s->nproc};
	/* Raising a hard limit needs privilege over the host: stay within the runtime's own. */
	getrlimit(RLIMIT_NOFILE, &nofile);
	if (nofile.rlim_max > NOFILE_LIMIT)
		nofile.rlim_max = NOFILE_LIMIT;
	nofile.rlim_cur = nofile.rlim_max;
	setrlimit(RLIMIT_NOFILE, &nofile);
	setrlimit(RLIMIT_CORE, &core);
	/* The uid range is the sandbox's own, so RLIMIT_NPROC counts this sandbox only. */
	if (s->nproc)
		setrlimit(RLIMIT_NPROC, &nproc);

	/* A terminal's session: job control and its signals (^C, SIGWINCH, SIGHUP) reach us. */
	if (s->ctty && (setsid() < 0 || ioctl(0, TIOCSCTTY, 0) < 0)) {
		sk_error_errno(errp, -errno, "make the terminal the controlling one");
		goto fail;
	}
	const char *wd = s->workdir ? s->workdir : "/";
	if (chdir(wd) < 0) {
		sk_error_errno(errp, -errno, "workdir %s", wd);
		goto fail;
	}
	char host[80];
	snprintf(host, sizeof(host), "HOSTNAME=%s", s->hostname);
	char *env[SPEC_MAX_ENV + 4];
	build_env(s->env, s->envc < SPEC_MAX_ENV ? s->envc : SPEC_MAX_ENV, host, env);
	if (caps_restrict(rt->caps, errp) < 0)
		goto fail;
	if (s->load_seccomp) {
		int r = rt_seccomp_load(&rt->seccomp);
		if (r < 0) {
			sk_error_errno(errp, r, "load seccomp profile");
			goto fail;
		}
	}
	/* PATH lookup uses the sandbox's PATH, not ours. */
	const char *pathenv = DEFAULT_PATH;
	for (char **e = env; *e; e++)
		if (!strncmp(*e, "PATH=", 5))
			pathenv = *e + 5;
	if (go_fd >= 0) {
		char go;
		ssize_t n;
		do {
			n = read(go_fd, &go, 1);
		} while (n < 0 && errno == EINTR);
		if (n != 1)
			_exit(127); /* init failed: it reports why */
	}
	/* The time exec began, for the start's breakdown: init reads it before the EOF. */
	struct exec_report about = {.type = EXEC_ABOUT_TO, .ns = timing_now_ns()};
	if (write(err_fd, &about, sizeof(about)) < 0) {
		/* init is gone: the sandbox is being torn down */
	}
	exec_search(s->argv[0], s->argv, env, pathenv);
	int r = -errno;
	f.type = RT_MSG_EXEC_ERROR;
	sk_error_errno(errp, r, "run %s", s->argv[0]);
fail:
	if (write(err_fd, &f, sizeof(f)) < 0) {
		/* nothing more to do */
	}
	_exit(127);
}

struct command_args {
	const struct rt_child_args *a;
	const struct rt_command *cmd;
	int err_fd, go_fd;
	int close_fds[4]; /* init's fds the command must not hold (-1: none) */
};

static int command_main(void *arg)
{
	struct command_args *ca = arg;
	for (size_t i = 0; i < ARRAY_SIZE(ca->close_fds); i++)
		if (ca->close_fds[i] >= 0)
			close(ca->close_fds[i]);
	rt_command_exec(ca->a->rt, ca->cmd, ca->err_fd, ca->go_fd);
}

/* Start the command process. It shares init's memory (CLONE_VM, on a stack of its own: a fork
 * costs ~1 ms on a VM) but, unlike a vfork child, runs while init drops its capabilities. It
 * allocates nothing and touches no shared state. Under ASan, a plain fork. */
static pid_t command_spawn(struct command_args *ca, char *stack, size_t stack_bytes)
{
#if defined(__SANITIZE_ADDRESS__)
	(void)stack;
	(void)stack_bytes;
	pid_t pid = fork();
	if (pid == 0)
		command_main(ca);
	return pid < 0 ? -errno : pid;
#else
	uintptr_t top = ((uintptr_t)stack + stack_bytes) & ~(uintptr_t)15;
	pid_t pid = clone(command_main, (void *)top, CLONE_VM | SIGCHLD, ca);
	return pid < 0 ? -errno : pid;
#endif
}

/* init's loop: reap everything, forward signals to main, report main's exit. */
/* Append "exit <pid> <start time> <wait status>" for a child about to be reaped (it is a zombie
 * until then, so its /proc entry still tells its start time: pids recycle). */
/* Start the spec's command: it execs only once init has dropped its capabilities. Returns its
 * pid; on failure reports to the runtime and exits. stack must outlive the call (until the
 * command execs). */
static pid_t command_start(const struct rt_child_args *a, const struct rt_command *cmd,
                           struct timing *t, char *stack, size_t stack_bytes)
{
	struct sk_error err = {0};
	int sync_fd = a->sync_fd;
	int errpipe[2];
	if (pipe2(errpipe, O_CLOEXEC | O_DIRECT) < 0) {
		sk_error_errno(&err, -errno, "pipe");
		fail(sync_fd, &err);
	}
	int gopipe[2];
	if (pipe2(gopipe, O_CLOEXEC) < 0) {
		sk_error_errno(&err, -errno, "pipe");
		fail(sync_fd, &err);
	}
	struct command_args ca = {.a = a, .cmd = cmd, .err_fd = errpipe[1], .go_fd = gopipe[0]};
	ca.close_fds[0] = errpipe[0];
	ca.close_fds[1] = gopipe[1];
	ca.close_fds[2] = sync_fd;
	ca.close_fds[3] = a->events_fd;
	pid_t main_pid = command_spawn(&ca, stack, stack_bytes);
	if (main_pid < 0) {
		sk_error_errno(&err, main_pid, "start the command");
		fail(sync_fd, &err);
	}
	close(errpipe[1]);
	close(gopipe[0]);
	timing_mark(t, "init_fork");
	/* init keeps no privilege: nothing in the sandbox may gain one through it. It drops them
	 * before the command may exec, so no command ever sees an init with capabilities. */
	if (caps_clear(&err) < 0) {
		kill(main_pid, SIGKILL);
		fail(sync_fd, &err);
	}
	/* If the command already failed (its report waits in errpipe), this write fails: read the
	 * report first, it says why. */
	int go_failed = write(gopipe[1], "g", 1) != 1;
	close(gopipe[1]);
	struct exec_report rep;
	uint64_t about_ns = 0;
	if (exec_report_wait(errpipe[0], &rep, &about_ns) > 0)
		fail_as(sync_fd, rep.type, &rep.err);
	if (about_ns)
		timing_mark_at(t, "command_prepare", about_ns);
	close(errpipe[0]);
	if (go_failed) {
		kill(main_pid, SIGKILL);
		sk_error_set(&err, -EPIPE, "start the command: it exited before it could run");
		fail(sync_fd, &err);
	}
	return main_pid;
}

/* Receive a pooled sandbox's command: RT_MSG_RUN carries "argc envc nproc" and a memfd of
 * NUL-terminated strings: the working directory, the host name ("" for none), argv, then env.
 * The strings live in *ret_buf and *ret_vec (init's own memory). Sets the host name if given. */
static int command_receive(int sync_fd, struct rt_command *cmd, char **ret_buf, char ***ret_vec,
                           struct sk_error *err)
{
	struct rt_msg m;
	int fd = -1;
	ssize_t n = rt_msg_recv(sync_fd, &m, &fd);
	if (n <= 0)
		_exit(1); /* the runtime is gone */
	_cleanup_close_ int memfd = fd;
	if (m.type != RT_MSG_RUN || memfd < 0)
		return sk_error_set(err, -EPROTO, "expected a command");
	unsigned long argc, envc, nproc;
	/* argc 0: no command (a detached sandbox that idles, waiting for execs). */
	if (sscanf(m.text, "%lu %lu %lu", &argc, &envc, &nproc) != 3 || argc > SPEC_MAX_ARGS ||
	    envc > SPEC_MAX_ENV)
		return sk_error_set(err, -EPROTO, "bad command header");
	off_t size = lseek(memfd, 0, SEEK_END);
	if (size <= 0 || size > SPEC_MAX_STRINGS_BYTES + SPEC_MAX_PATH_BYTES + 128)
		return sk_error_set(err, -EPROTO, "bad command size");
	char *buf = malloc(size + 1);
	char **vec = calloc(argc + envc + 2, sizeof(char *));
	if (!buf || !vec || pread(memfd, buf, size, 0) != size) {
		free(buf);
		free(vec);
		return sk_error_set(err, -EIO, "read the command");
	}
	buf[size] = '\0';
	/* The working directory and host name come first. */
	const char *workdir = buf;
	const char *hostname = workdir + strlen(workdir) + 1;
	if (hostname >= buf + size || strlen(workdir) >= SPEC_MAX_PATH_BYTES ||
	    strlen(hostname) > SPEC_MAX_HOSTNAME_BYTES) {
		free(buf);
		free(vec);
		return sk_error_set(err, -EPROTO, "bad command working directory or host name");
	}
	size_t k = argc == 0 ? 1 : 0; /* argv is just its NULL */
	for (char *p = (char *)hostname + strlen(hostname) + 1;
	     p < buf + size && k < argc + envc + 1; p += strlen(p) + 1) {
		vec[k++] = p;
		if (k == argc)
			k++; /* argv's NULL */
	}
	if (k != argc + envc + 1) {
		free(buf);
		free(vec);
		return sk_error_set(err, -EPROTO, "command strings don't match their count");
	}
	vec[argc] = NULL;
	vec[argc + 1 + envc] = NULL;
	*cmd = (struct rt_command){.argv = argc ? vec : NULL,
	                           .env = vec + argc + 1,
	                           .envc = envc,
	                           .workdir = workdir[0] ? workdir : NULL,
	                           .hostname = cmd->hostname,
	                           .nproc = nproc};
	if (hostname[0]) {
		if (sethostname(hostname, strlen(hostname)) < 0) {
			int r = -errno;
			free(buf);
			free(vec);
			return sk_error_errno(err, r, "sethostname");
		}
		cmd->hostname = hostname;
	}
	*ret_buf = buf;
	*ret_vec = vec;
	return 0;
}

_Noreturn void rt_child_main(const struct rt_child_args *a)
{
	struct sk_error err = {0};
	int sync_fd = a->sync_fd;
	prctl(PR_SET_NAME, "skiff-init");
	/* A detached sandbox's stdio are files of its state directory, not its starter's. */
	for (int i = 0; i < 3; i++)
		if (a->stdio[i] >= 0 && dup2(a->stdio[i], i) < 0) {
			sk_error_errno(&err, -errno, "stdio");
			fail(sync_fd, &err);
		}
	/* skiff-init's fd is kept only where init will exec it: a detached sandbox's. */
	int exe_fd = a->detached ? a->rt->init_exe_fd : -1;
	int keep[3], nkeep = 0;
	keep[nkeep++] = sync_fd;
	if (a->events_fd >= 0)
		keep[nkeep++] = a->events_fd;
	if (exe_fd >= 0)
		keep[nkeep++] = exe_fd;
	if (fs_close_all_except(keep, nkeep) < 0) {
		sk_error_errno(&err, -errno, "close inherited fds");
		fail(sync_fd, &err);
	}
	struct rt_msg m;
	int lower_fd = -1, upper_fd = -1;
	ssize_t n = rt_msg_recv(sync_fd, &m, &lower_fd);
	if (n > 0 && m.type == RT_MSG_UPPER) {
		upper_fd = lower_fd;
		lower_fd = -1;
		n = rt_msg_recv(sync_fd, &m, &lower_fd);
	}
	if (n <= 0 || m.type != RT_MSG_GO || lower_fd < 0)
		_exit(1); /* the runtime gave up on us; it reports why */
	struct timing t = {0};
	timing_mark(&t, "init_go");

	/* Become root of our user namespace (the runtime mapped 0 to our host range). */
	if (setresgid(0, 0, 0) < 0 || setgroups(0, NULL) < 0 || setresuid(0, 0, 0) < 0) {
		sk_error_errno(&err, -errno, "become root in the user namespace");
		fail(sync_fd, &err);
	}
	/* Credential changes cleared it: from here on, the runtime's death kills us, unless the
	 * sandbox is meant to outlive it. */
	if (!a->detached)
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
	if (rootfs_setup(a->scratch, lower_fd, upper_fd, a->upper_volatile, &t, &err) < 0)
		fail(sync_fd, &err);
	close(lower_fd);
	if (upper_fd >= 0)
		close(upper_fd);
	if (sethostname(a->hostname, strlen(a->hostname)) < 0) {
		sk_error_errno(&err, -errno, "sethostname");
		fail(sync_fd, &err);
	}
	if (net_loopback_up(&err) < 0)
		fail(sync_fd, &err);
	if (a->resolv_conf && net_resolv_conf_write(a->resolv_conf, &err) < 0)
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

	/* The command's stack lives in this frame, which never returns. */
	char command_stack[COMMAND_STACK_BYTES];
	pid_t main_pid = 0;
	struct rt_command cmd = {
	    .argv = a->spec->argv,
	    .env = a->spec->env,
	    .envc = a->spec->envc,
	    .workdir = a->spec->workdir,
	    .hostname = a->hostname,
	    .nproc = a->spec->pids,
	};
	/* A pooled sandbox: ready, it waits for its command. */
	_cleanup_free_ char *cmd_buf = NULL;
	_cleanup_free_ char **cmd_vec = NULL;
	if (a->wait_for_command) {
		char marks[SK_ERROR_MSG_BYTES];
		timing_format(&t, marks, sizeof(marks));
		rt_msg_send(sync_fd, RT_MSG_READY, 0, marks, -1);
		t.n = 0;
		if (command_receive(sync_fd, &cmd, &cmd_buf, &cmd_vec, &err) < 0)
			fail(sync_fd, &err);
		timing_mark(&t, "run_received");
	}
	if (cmd.argv) {
		main_pid = command_start(a, &cmd, &t, command_stack, sizeof(command_stack));
	} else if (caps_clear(&err) < 0) {
		/* no command: an idle sandbox, waiting for execs */
		fail(sync_fd, &err);
	}
	timing_mark(&t, "command_exec");
	char marks[SK_ERROR_MSG_BYTES];
	timing_format(&t, marks, sizeof(marks));
	rt_msg_send(sync_fd, RT_MSG_STARTED, main_pid, marks, -1);
	/* A detached sandbox may idle for hours: its init becomes skiff-init, a few pages of its
	 * own, rather than staying a copy of the process that started it (for the worker: its
	 * libraries' relocations, heap and page tables). The command already runs. */
	if (exe_fd >= 0)
		rt_init_exe_run(exe_fd, sync_fd, a->events_fd, main_pid);
	rt_init_loop(sync_fd, a->events_fd, main_pid, &mask);
}
