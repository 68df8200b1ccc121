/* What init does once the sandbox runs: it reaps, logs execs' exits to the events log, forwards
 * signals to the main command and reports the main command's status. Linked into the runtime
 * (init runs it in place when skiff-init can't be had) and into skiff-init, the small program a
 * sandbox's init execs into, so that each idle sandbox holds a few pages instead of a copy of
 * whatever process started it. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "../lib/timing.h"
#include "internal.h"

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

_Noreturn void rt_init_loop(int sync_fd, int events_fd, pid_t main_pid, const sigset_t *mask)
{
	/* Reap first: a child may have ended before we waited (or before skiff-init was exec'd;
	 * its SIGCHLD stays pending across the exec, but looking costs nothing). */
	for (;;) {
		reap(sync_fd, events_fd, main_pid);
		siginfo_t si;
		int sig = sigwaitinfo(mask, &si);
		if (sig > 0 && sig != SIGCHLD && main_pid > 0)
			kill(main_pid, sig);
	}
}
