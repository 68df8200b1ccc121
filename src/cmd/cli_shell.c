/* skiff sandbox shell: an interactive terminal in a running sandbox. The command (default: sh)
 * runs as an exec with a pseudo-terminal ("pty": true) and stdin; this terminal is put in raw
 * mode, what is typed goes to the exec's stdin (POST …/stdin), its output is followed (GET
 * …/output?format=ndjson&follow=true, on its own connection and thread) and printed as it
 * comes, and a window resize is passed on (POST …/resize). Ends with the command's status.
 * Interrupted (SIGTERM, SIGHUP, SIGINT, SIGQUIT) or failing, it hangs up the terminal there
 * (SIGHUP to the command, as a terminal that goes away does), so that an abandoned shell does
 * not keep its sandbox busy; the command ends unless it ignores the hangup. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"

#define SHELL_USAGE            "ID [-- CMD...]"
#define SHELL_INPUT_BYTES      (64 * 1024) /* one stdin post at most */
#define SHELL_DEFAULT_ROWS     24
#define SHELL_DEFAULT_COLS     80
#define SHELL_HANGUP_TIMEOUT_S 5 /* the hangup posted when interrupted or failing */

static int wake_pipe[2] = {-1, -1};  /* SIGWINCH and the output's end wake the input loop */
static struct termios saved_termios; /* the terminal as it was, restored however we end */
static volatile sig_atomic_t raw_mode;
static volatile sig_atomic_t interrupted; /* the signal that asks us to end, until handled */

static void terminal_restore(void)
{
	if (raw_mode) {
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
		raw_mode = 0;
	}
}

/* A signal that ends the process: the terminal back first, then the signal's own end. */
static void on_fatal(int sig)
{
	terminal_restore();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* A signal that ends the shell: the input loop hangs up the exec first, then ends by it. */
static void on_interrupt(int sig)
{
	int saved = errno;
	interrupted = sig;
	if (write(wake_pipe[1], "x", 1) < 0) {
	}
	errno = saved;
}

static void on_winch(int sig)
{
	(void)sig;
	int saved = errno;
	if (write(wake_pipe[1], "w", 1) < 0) { /* full: a wake-up is pending anyway */
	}
	errno = saved;
}

struct output_thread {
	struct cli c; /* a client of its own: libcurl handles are one thread's */
	char *base;
	int exit_code;
	int r;
	struct sk_error err;
};

static void *output_main(void *ud)
{
	struct output_thread *t = ud;
	t->r = cli_output_stream(&t->c, t->base, CLI_OUT_STDOUT | CLI_OUT_STDERR, true,
	                         &t->exit_code, &t->err);
	if (write(wake_pipe[1], "e", 1) < 0) {
	}
	return NULL;
}

static void window_size(int *rows, int *cols)
{
	struct winsize ws;
	*rows = SHELL_DEFAULT_ROWS;
	*cols = SHELL_DEFAULT_COLS;
	if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
		*rows = ws.ws_row;
		*cols = ws.ws_col;
	}
}

/* POST body (len bytes; NULL: none) to base + rest. */
static int post(struct cli *c, const char *base, const char *rest, const void *body, size_t len,
                struct sk_error *err)
{
	_cleanup_free_ char *path = NULL, *reply = NULL;
	size_t rlen;
	if (asprintf(&path, "%s%s", base, rest) < 0)
		return sk_error_errno(err, -ENOMEM, "shell");
	return cli_http_raw(c, "POST", path, body ? body : "", len, CLI_REQUEST_TIMEOUT_S, &reply,
	                    &rlen, NULL, err);
}

/* Hang up the exec's terminal: what a terminal that goes away does to its session. Best
 * effort: we are ending anyway (and the server may be what failed). */
static void hang_up(struct cli *c, const char *exec_base)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_json_ json_t *json = json_pack("{s:s}", "signal", "HUP");
	_cleanup_json_ json_t *reply = NULL;
	struct sk_error err = {0};
	if (json && asprintf(&path, "%s/signal", exec_base) >= 0)
		cli_http(c, "POST", path, json, SHELL_HANGUP_TIMEOUT_S, &reply, &err);
}

static int resize(struct cli *c, const char *exec_base, struct sk_error *err)
{
	int rows, cols;
	window_size(&rows, &cols);
	_cleanup_free_ char *path = NULL;
	_cleanup_json_ json_t *json = json_pack("{s:i, s:i}", "rows", rows, "cols", cols);
	_cleanup_json_ json_t *reply = NULL;
	if (asprintf(&path, "%s/resize", exec_base) < 0)
		return sk_error_errno(err, -ENOMEM, "shell");
	return cli_http(c, "POST", path, json, CLI_REQUEST_TIMEOUT_S, &reply, err);
}

/* Typed input to the exec's stdin until this side's EOF (then stdin is closed there) or the
 * output's end. */
static int input_loop(struct cli *c, const char *exec_base, bool tty, struct sk_error *err)
{
	_cleanup_free_ char *buf = malloc(SHELL_INPUT_BYTES);
	if (!buf)
		return sk_error_errno(err, -ENOMEM, "shell");
	bool in_open = true;
	for (;;) {
		struct pollfd p[2] = {{.fd = wake_pipe[0], .events = POLLIN},
		                      {.fd = STDIN_FILENO, .events = POLLIN}};
		if (poll(p, in_open ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			return sk_error_errno(err, -errno, "poll");
		}
		if (p[0].revents) {
			char w[64];
			ssize_t n = read(wake_pipe[0], w, sizeof(w));
			if (n > 0 && memchr(w, 'e', (size_t)n))
				return 0; /* the output ended: the command is done */
			if (interrupted)
				return 1;
			if (n > 0 && tty && resize(c, exec_base, err) < 0)
				return -1;
		}
		if (in_open && p[1].revents) {
			ssize_t n = read(STDIN_FILENO, buf, SHELL_INPUT_BYTES);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				in_open = false;
				if (post(c, exec_base, "/stdin?eof=true", NULL, 0, err) < 0)
					return -1;
				continue;
			}
			if (post(c, exec_base, "/stdin", buf, (size_t)n, err) < 0)
				return -1;
		}
	}
}

int cli_sandbox_shell(struct cli *c, int argc, char **argv)
{
	char **cmd;
	int ncmd;
	int nopts = cli_split_dashdash(argc, argv, &cmd, &ncmd);
	if (nopts == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: skiff sandbox shell %s\n", SHELL_USAGE);
		return 0;
	}
	if (nopts != 2 || !argv[1][0] || argv[1][0] == '-')
		return cli_usage_error("sandbox shell", SHELL_USAGE, "expected one sandbox ID");
	static char *const SH[] = {"sh", NULL};
	if (ncmd == 0) {
		cmd = (char **)SH;
		ncmd = 1;
	}
	bool tty = isatty(STDIN_FILENO);
	int rows, cols;
	window_size(&rows, &cols);
	const char *term = getenv("TERM");
	_cleanup_json_ json_t *body =
	    json_pack("{s:o, s:b, s:b, s:{s:i, s:i}, s:{s:s}}", "command", cli_json_argv(ncmd, cmd),
	              "stdin", 1, "pty", 1, "pty_size", "rows", rows, "cols", cols, "env", "TERM",
	              term && term[0] ? term : "xterm-256color");
	_cleanup_free_ char *eid = cli_escape(argv[1]), *path = NULL;
	struct sk_error err = {0};
	_cleanup_json_ json_t *ex = NULL;
	if (!body || !eid || asprintf(&path, "/v1/sandboxes/%s/exec", eid) < 0) {
		sk_error_errno(&err, -ENOMEM, "shell");
		return cli_fail(&err);
	}
	if (cli_http(c, "POST", path, body, CLI_REQUEST_TIMEOUT_S, &ex, &err) < 0)
		return cli_fail(&err);
	const char *exid = cli_json_str(ex, "id");
	_cleanup_free_ char *eex = exid ? cli_escape(exid) : NULL, *exec_base = NULL;
	struct output_thread t = {.exit_code = -1};
	if (!eex || asprintf(&exec_base, "/v1/sandboxes/%s/execs/%s", eid, eex) < 0 ||
	    asprintf(&t.base, "%s/output", exec_base) < 0) {
		sk_error_errno(&err, -ENOMEM, "shell");
		return cli_fail(&err);
	}
	t.c.url = strdup(c->url);
	t.c.token = strdup(c->token);
	if (!t.c.url || !t.c.token || pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		sk_error_errno(&err, -ENOMEM, "shell");
		cli_release(&t.c);
		free(t.base);
		return cli_fail(&err);
	}
	bool raw = tty && tcgetattr(STDIN_FILENO, &saved_termios) == 0;
	signal(SIGPIPE, SIG_IGN); /* a closed stdout is an error to report, not an end */
	if (raw) {
		struct termios rawt = saved_termios;
		cfmakeraw(&rawt);
		atexit(terminal_restore);
		static const int FATAL[] = {SIGSEGV, SIGABRT};
		for (size_t i = 0; i < ARRAY_SIZE(FATAL); i++)
			signal(FATAL[i], on_fatal);
		raw_mode = 1;
		tcsetattr(STDIN_FILENO, TCSANOW, &rawt);
		struct sigaction sa = {.sa_handler = on_winch};
		sigemptyset(&sa.sa_mask);
		sigaction(SIGWINCH, &sa, NULL);
	}
	static const int INTERRUPT[] = {SIGTERM, SIGHUP, SIGQUIT, SIGINT};
	for (size_t i = 0; i < ARRAY_SIZE(INTERRUPT); i++) {
		struct sigaction sa = {.sa_handler = on_interrupt};
		sigemptyset(&sa.sa_mask);
		sigaction(INTERRUPT[i], &sa, NULL);
	}
	pthread_t th;
	int st = 1;
	if (pthread_create(&th, NULL, output_main, &t) != 0) {
		sk_error_set(&err, -EAGAIN, "shell: can't start the output thread");
	} else {
		int r = input_loop(c, exec_base, raw, &err);
		if (r != 0) {
			/* Nobody drives the exec any more: hang it up, then end here (the output
			 * thread is still in its request), by the signal when one asked. */
			hang_up(c, exec_base);
			terminal_restore();
			fflush(stdout);
			if (r > 0) {
				signal(interrupted, SIG_DFL);
				raise(interrupted);
			}
			if (r < 0)
				cli_fail(&err);
			_exit(1);
		}
		pthread_join(th, NULL);
		if (t.r < 0)
			err = t.err;
		else
			st = t.exit_code >= 0 && t.exit_code <= 255 ? t.exit_code : 1;
	}
	if (raw) {
		signal(SIGWINCH, SIG_DFL);
		terminal_restore();
	}
	cli_release(&t.c);
	free(t.base);
	if (err.code)
		return cli_fail(&err);
	return st;
}
