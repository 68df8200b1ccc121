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

#define COMMAND_STACK_BYTES (128 * 1024)

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

/* Capabilities cut to the runtime's set, and the seccomp profile when the command does not
 * inherit init's. */
static int command_restrict(const struct rt *rt, const struct rt_command *s, struct sk_error *err)
{
	if (caps_restrict(rt->caps, err) < 0)
		return -1;
	if (s->load_seccomp) {
		int r = rt_seccomp_load(&rt->seccomp);
		if (r < 0)
			return sk_error_errno(err, r, "load seccomp profile");
	}
	return 0;
}

_Noreturn void rt_command_exec(const struct rt *rt, const struct rt_command *s, int err_fd,
                               int go_fd)
{
	rt_command_exec_with(s, err_fd, go_fd, command_restrict, rt);
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

/* init's capabilities once it is set up: none, or, where it starts execs itself, exactly the
 * set its commands get (a fork of init execs as the sandbox's root, which under no_new_privs
 * gets what it held). */
static int init_caps_drop(const struct rt_child_args *a, struct sk_error *err)
{
	/* The bounding set was cut before the sandbox was ready (off a pooled start's path). */
	return a->serve_execs ? caps_set(a->rt->caps, err) : caps_clear(err);
}

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
	/* init keeps no more privilege than its commands: nothing in the sandbox may gain one
	 * through it. It drops them before the command may exec, so no command ever sees an init
	 * with more capabilities than its own. */
	if (init_caps_drop(a, &err) < 0) {
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

/* Receive a pooled sandbox's command: RT_MSG_RUN carries "argc envc nproc" and a memfd of its
 * strings (rt_command_memfd). The strings live in *ret_buf and *ret_vec (init's own memory).
 * Sets the host name if given. */
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
	if (sscanf(m.text, "%lu %lu %lu", &argc, &envc, &nproc) != 3)
		return sk_error_set(err, -EPROTO, "bad command header");
	cmd->nproc = nproc;
	const char *hostname;
	int r = rt_command_parse(memfd, argc, envc, cmd, ret_buf, ret_vec, &hostname, err);
	if (r < 0)
		return r;
	if (hostname[0]) {
		if (sethostname(hostname, strlen(hostname)) < 0) {
			r = -errno;
			free(*ret_buf);
			free(*ret_vec);
			*ret_buf = NULL;
			*ret_vec = NULL;
			return sk_error_errno(err, r, "sethostname");
		}
		cmd->hostname = hostname;
	}
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
	if (unshare(CLONE_NEWCGROUP | (a->own_netns ? CLONE_NEWNET : 0)) < 0) {
		sk_error_errno(&err, -errno, "new cgroup and network namespaces");
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
	/* Where init keeps its commands' capabilities, their bounding set is cut now: init's
	 * effective set stays whole until the command is on its way (sethostname, the clone). */
	if (a->serve_execs && caps_bounding_restrict(a->rt->caps, &err) < 0)
		fail(sync_fd, &err);

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
	} else if (init_caps_drop(a, &err) < 0) {
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
		rt_init_exe_run(exe_fd, sync_fd, a->events_fd, main_pid, a->serve_execs);
	rt_init_loop(sync_fd, a->events_fd, main_pid, &mask, a->serve_execs);
}
