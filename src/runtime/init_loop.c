/* What init does once the sandbox runs: it reaps, logs execs' exits to the events log, forwards
 * signals to the main command and reports the main command's status. Linked into the runtime
 * (init runs it in place when skiff-init can't be had) and into skiff-init, the small program a
 * sandbox's init execs into, so that each idle sandbox holds a few pages instead of a copy of
 * whatever process started it. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "../lib/sock.h"
#include "../lib/timing.h"
#include "internal.h"

/* Every process init reaps is logged, the sandbox's orphans too (an exec started the setns way
 * is one): a sandbox that makes orphans without end would grow the log without end, on the host's
 * state directory. Past this size the log starts over: lookups read at most its last 4 MiB
 * (attach.c), and a sandbox gets near this only that way (its execs are at most 10,000 lines). */
#define EVENTS_LOG_WRAP_BYTES (16 * 1024 * 1024)

static void events_log_exit(int events_fd, pid_t pid)
{
	char path[64], stat[1024], line[96];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	unsigned long long start = 0;
	if (fs_read_at(AT_FDCWD, path, stat, sizeof(stat)) > 0)
		proc_stat_start_time(stat, &start);
	int status;
	if (waitpid(pid, &status, WNOHANG) != pid)
		return;
	int n = snprintf(line, sizeof(line), "exit %d %llu %d\n", (int)pid, start, status);
	struct stat st;
	if (fstat(events_fd, &st) == 0 && st.st_size > EVENTS_LOG_WRAP_BYTES &&
	    ftruncate(events_fd, 0) < 0) {
		/* then it grows on: nothing better to do */
	}
	if (write(events_fd, line, n) < 0) {
		/* the state directory is gone: nobody will ask */
	}
}

/* Reap what has exited; the main command's end is reported and ends init (and with it, every
 * other process of the pid namespace). */
static void reap(int sync_fd, int events_fd, pid_t main_pid)
{
	for (;;) {
		int status;
		pid_t p;
		if (events_fd >= 0) {
			/* Look first, then log and reap, so execs' statuses are kept. */
			siginfo_t ci = {0};
			if (waitid(P_ALL, 0, &ci, WEXITED | WNOHANG | WNOWAIT) < 0 || !ci.si_pid)
				return;
			p = ci.si_pid;
			if (p != main_pid) {
				events_log_exit(events_fd, p);
				continue;
			}
		}
		p = waitpid(events_fd >= 0 ? main_pid : -1, &status, WNOHANG);
		if (p <= 0)
			return;
		if (p == main_pid) {
			if (events_fd >= 0) {
				char line[48];
				int n = snprintf(line, sizeof(line), "main %d\n", status);
				if (write(events_fd, line, n) < 0) {
					/* nobody will ask */
				}
			}
			char when[32];
			snprintf(when, sizeof(when), "%llu", (unsigned long long)timing_now_ns());
			rt_msg_send(sync_fd, RT_MSG_EXIT, status, when, -1);
			_exit(0);
		}
	}
}

/* One exec the runtime asked for (RT_MSG_EXEC on sync_fd): "argc envc nproc pty rows cols" with
 * fds attached: the socket to reply on, a memfd of the command's strings (rt_command_memfd), and
 * stdin, stdout, stderr unless a terminal is asked for. The command is our child from the start:
 * we reap it and log its status like any exec's. We don't wait for its exec: it reports that
 * itself on the reply socket (close-on-exec: EOF once it exec'd). Returns -1 when the runtime
 * is gone (stop listening), else 0. */
static int serve_exec(int sync_fd)
{
	struct rt_msg m;
	int fds[5] = {-1, -1, -1, -1, -1};
	memset(&m, 0, sizeof(m));
	ssize_t n = sock_recv_fds(sync_fd, &m, sizeof(m), fds, ARRAY_SIZE(fds));
	if (n == 0)
		return -1;
	if (n < 0)
		return n == -EINTR || n == -EAGAIN ? 0 : -1;
	m.text[sizeof(m.text) - 1] = '\0';
	int reply = fds[0], memfd = fds[1];
	unsigned long argc = 0, envc = 0, nproc = 0;
	int pty = 0;
	unsigned short rows = 0, cols = 0;
	size_t nfds = 0;
	while (nfds < ARRAY_SIZE(fds) && fds[nfds] >= 0)
		nfds++;
	struct rt_exec_hello h = {.kind = EXEC_HELLO, .type = RT_MSG_ERROR, .code = -EPROTO};
	snprintf(h.msg, sizeof(h.msg), "init: a malformed exec request");
	int ok = (size_t)n >= offsetof(struct rt_msg, text) + 1 && m.type == RT_MSG_EXEC &&
	         sscanf(m.text, "%lu %lu %lu %d %hu %hu", &argc, &envc, &nproc, &pty, &rows,
	                &cols) == 6 &&
	         argc >= 1 && (pty == 0 || pty == 1) && nfds == (pty ? 2u : 5u);
	/* Nothing here keeps a fd that came with the request. */
	for (size_t i = nfds; i < ARRAY_SIZE(fds); i++)
		if (fds[i] >= 0)
			close(fds[i]), ok = 0;
	struct rt_command cmd = {.nproc = nproc, .ctty = pty};
	char *buf = NULL, **vec = NULL;
	struct sk_error err = {0};
	const char *given_host;
	if (ok && rt_command_parse(memfd, argc, envc, &cmd, &buf, &vec, &given_host, &err) < 0) {
		ok = 0;
		h.code = err.code;
		memcpy(h.msg, err.msg, sizeof(h.msg));
	}
	/* A runtime that gave up on the request (its end closed) gets no command started. */
	struct pollfd rp = {.fd = reply, .events = 0};
	int gone = reply < 0 || (poll(&rp, 1, 0) > 0 && (rp.revents & (POLLHUP | POLLERR)));
	pid_t pid = -1;
	if (ok && !gone) {
		char hostname[65] = "";
		gethostname(hostname, sizeof(hostname) - 1);
		cmd.hostname = hostname;
		pid = fork();
		if (pid == 0) {
			/* Our group, not init's: a kill(0, …) by the command reaches its own. */
			if (!pty)
				setpgid(0, 0);
			struct exec_report f = {.type = RT_MSG_ERROR};
			if (pty) {
				int master = rt_pty_open(rows, cols);
				if (master < 0) {
					sk_error_errno(&f.err, master,
					               "open a terminal in the sandbox");
					goto child_fail;
				}
				struct exec_report t = {.type = EXEC_PTY};
				int r = sock_send_fd(reply, &t, sizeof(t), master);
				close(master);
				if (r < 0)
					_exit(127); /* the runtime gave up */
			} else {
				for (int i = 0; i < 3; i++)
					if (dup2(fds[2 + i], i) < 0) {
						sk_error_errno(&f.err, -errno, "stdio");
						goto child_fail;
					}
			}
			int keep[1] = {reply};
			if (fs_close_all_except(keep, 1) < 0) {
				sk_error_errno(&f.err, -errno, "close init's fds");
				goto child_fail;
			}
			rt_command_exec_with(&cmd, reply, -1, NULL, NULL);
		child_fail:
			if (write(reply, &f, sizeof(f)) < 0) {
				/* the runtime gave up */
			}
			_exit(127);
		}
		if (pid < 0) {
			h.code = -errno;
			snprintf(h.msg, sizeof(h.msg), "init: fork: %s", strerror(errno));
		}
	}
	int pidfd = -1;
	if (pid > 0) {
		/* It is our child until we reap it: its pid and start time name it. */
		pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		h = (struct rt_exec_hello){
		    .kind = EXEC_HELLO, .type = RT_MSG_STARTED, .nspid = pid};
		if (pidfd < 0 || proc_start_time(pid, &h.start) < 0) {
			h = (struct rt_exec_hello){
			    .kind = EXEC_HELLO, .type = RT_MSG_ERROR, .code = -ESRCH};
			snprintf(h.msg, sizeof(h.msg), "init: the command's pidfd or start time");
			kill(pid, SIGKILL);
		}
	}
	if (!gone &&
	    sock_send_fd(reply, &h, sizeof(h), h.type == RT_MSG_STARTED ? pidfd : -1) < 0 &&
	    pid > 0)
		kill(pid, SIGKILL); /* nobody would know of it */
	if (pidfd >= 0)
		close(pidfd);
	for (size_t i = 0; i < nfds; i++)
		close(fds[i]);
	free(buf);
	free(vec);
	return 0;
}

_Noreturn void rt_init_loop(int sync_fd, int events_fd, pid_t main_pid, const sigset_t *mask,
                            int serve_execs)
{
	/* Serving execs, init waits on the runtime's socket and its signals together. */
	int sig_fd = serve_execs ? signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK) : -1;
	/* Reap first: a child may have ended before we waited (or before skiff-init was exec'd;
	 * its SIGCHLD stays pending across the exec, but looking costs nothing). */
	int listening = 1; /* to the runtime's requests on sync_fd (its reports go there too) */
	while (sig_fd >= 0) {
		reap(sync_fd, events_fd, main_pid);
		struct pollfd p[2] = {{.fd = sig_fd, .events = POLLIN},
		                      {.fd = sync_fd, .events = POLLIN}};
		if (poll(p, listening ? 2 : 1, -1) < 0)
			continue;
		if (p[0].revents & POLLIN) {
			struct signalfd_siginfo si[8];
			ssize_t got = read(sig_fd, si, sizeof(si));
			for (ssize_t i = 0; got > 0 && i < got / (ssize_t)sizeof(si[0]); i++) {
				int sig = (int)si[i].ssi_signo;
				if (sig != SIGCHLD && main_pid > 0)
					kill(main_pid, sig);
			}
		}
		/* The runtime's end closed: it has no more execs for us. A socket we can't read
		 * any more is shut for reading, so that the runtime's next request fails at once
		 * (it then takes the setns way) instead of waiting for a reply that never comes;
		 * our reports to it still go. */
		if (!listening)
			continue;
		if (p[1].revents & POLLIN) {
			if (serve_exec(sync_fd) < 0) {
				shutdown(sync_fd, SHUT_RD);
				listening = 0;
			}
		} else if (p[1].revents & (POLLHUP | POLLERR | POLLNVAL)) {
			listening = 0;
		}
	}
	for (;;) {
		reap(sync_fd, events_fd, main_pid);
		siginfo_t si;
		int sig = sigwaitinfo(mask, &si);
		if (sig > 0 && sig != SIGCHLD && main_pid > 0)
			kill(main_pid, sig);
	}
}
