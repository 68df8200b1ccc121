/* skiff-stdin: the holder of an exec's stdin pipe or terminal (see src/worker/stdin_holder.h).
 * `skiff-stdin pipe`: hold the pipe's write end (fd 3) until nobody reads it any more.
 * `skiff-stdin pty`: copy the master's output (fd 3) to the exec's stdout file (fd 4) until
 * every slave is closed (EIO), which also ends a session the command left behind. It only
 * copies bytes: it drops every capability and can't be traced or dumped. Not for people: the
 * spawner starts it with its descriptors ready. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "../lib/error.h"
#include "../runtime/caps.h"
#include "../worker/stdin_holder.h"

#define HOLDER_COPY_BYTES (64 * 1024)

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* the file can't take it (disk full): the terminal must not stall
			         */
		p += w;
		n -= (size_t)w;
	}
}

static int hold_pipe(void)
{
	struct pollfd p = {.fd = STDIN_HOLDER_STREAM_FD, .events = 0};
	for (;;)
		if (poll(&p, 1, -1) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL)))
			return 0;
}

static int copy_terminal(void)
{
	static char buf[HOLDER_COPY_BYTES];
	struct pollfd p = {.fd = STDIN_HOLDER_STREAM_FD, .events = POLLIN};
	for (;;) {
		ssize_t n = read(STDIN_HOLDER_STREAM_FD, buf, sizeof(buf));
		if (n > 0)
			write_all(STDIN_HOLDER_OUTPUT_FD, buf, (size_t)n);
		else if (n < 0 && errno == EAGAIN)
			poll(&p, 1, -1);
		else if (n == 0 || errno != EINTR)
			return 0;
	}
}

int main(int argc, char **argv)
{
	/* Root's exec gave it capabilities back: drop them all first. */
	struct sk_error err = {0};
	if (caps_clear(&err) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return 1;
	prctl(PR_SET_DUMPABLE, 0);
	prctl(PR_SET_NAME, STDIN_HOLDER_NAME);
	if (argc == 2 && !strcmp(argv[1], "pipe"))
		return hold_pipe();
	if (argc == 2 && !strcmp(argv[1], "pty"))
		return copy_terminal();
	return 2;
}
