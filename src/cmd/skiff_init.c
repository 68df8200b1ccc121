/* skiff-init: what a detached sandbox's init execs into once its command runs (see
 * src/runtime/init_exe.c). It inherits init's blocked signals, its no_new_privs, seccomp filter
 * and capabilities (none, or its commands' where it starts execs), and two fds; it runs the same
 * loop init ran before the exec. Not a program for people: the runtime starts it with
 * "SYNC_FD EVENTS_FD MAIN_PID SERVE_EXECS". */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "../runtime/internal.h"

/* What the runtime looks for before it execs us (the linker puts notes in the first page). */
#define NOTE_SECTION __attribute__((used, section(".note.skiff"), aligned(4)))
static const struct rt_init_note init_note NOTE_SECTION = RT_INIT_NOTE;

static int parse_int(const char *s, int min, long *ret)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > INT_MAX)
		return -1;
	*ret = v;
	return 0;
}

int main(int argc, char **argv)
{
	/* The runtime execs us only where the kernel keeps us not dumpable (fs.suid_dumpable 0 or
	 * 2): should the setting have changed since it looked, this closes us again at once. */
	prctl(PR_SET_DUMPABLE, 0);
	/* An exec through an fd names the process after the fd's number. */
	prctl(PR_SET_NAME, "skiff-init");
	long sync_fd, events_fd, main_pid, serve;
	if (argc != 5 || parse_int(argv[1], 0, &sync_fd) < 0 ||
	    parse_int(argv[2], -1, &events_fd) < 0 || parse_int(argv[3], 0, &main_pid) < 0 ||
	    parse_int(argv[4], 0, &serve) < 0 || serve > 1) {
		fprintf(stderr, "skiff-init: run by the sandbox runtime only\n");
		return 2;
	}
	sigset_t mask;
	if (sigprocmask(SIG_BLOCK, NULL, &mask) < 0 || !sigismember(&mask, SIGCHLD) ||
	    fcntl((int)sync_fd, F_SETFD, FD_CLOEXEC) < 0) {
		fprintf(stderr, "skiff-init: run by the sandbox runtime only\n");
		return 2;
	}
	if (events_fd >= 0)
		fcntl((int)events_fd, F_SETFD, FD_CLOEXEC);
	rt_init_loop((int)sync_fd, (int)events_fd, (pid_t)main_pid, &mask, (int)serve);
}
