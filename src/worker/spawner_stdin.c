/* Exec stdin and terminals: the holder process that keeps an exec's stdin pipe or terminal open
 * whatever happens to the spawner, the stdin and resize ops, and writes that wait for room (one
 * per exec at a time). See struct sp_stdin. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "../lib/encoding.h"
#include "../lib/fsutil.h"
#include "spawner_internal.h"
#include "stdin_holder.h"

#define HOLDER_REAP_WAIT_MS 1000 /* a killed holder that is not our child: waited for this long */

static const char *const KIND_NAMES[] = {
    [SP_STDIN_NONE] = "none", [SP_STDIN_PIPE] = "pipe", [SP_STDIN_PTY] = "pty"};

/* ---- the holder ---- */

/* In the spawner's child: its descriptors, session and signals made ready, then the holder
 * program in its place (stdin_holder.h). errno goes to err_fd when the exec fails. */
_Noreturn static void holder_exec(const char *path, enum sp_stdin_kind kind, int stream_fd,
                                  int out_fd, int err_fd)
{
	/* A session of its own, default signals: the daemon's process group, terminal and ignored
	 * stop signals are not its. */
	setsid();
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	int a = fcntl(stream_fd, F_DUPFD_CLOEXEC, 10);
	int b = out_fd >= 0 ? fcntl(out_fd, F_DUPFD_CLOEXEC, 10) : -1;
	int e = fcntl(err_fd, F_DUPFD_CLOEXEC, 10);
	if (a < 0 || e < 0 || dup2(a, STDIN_HOLDER_STREAM_FD) < 0 ||
	    (b >= 0 && dup2(b, STDIN_HOLDER_OUTPUT_FD) < 0))
		_exit(1);
	int keep[3] = {STDIN_HOLDER_STREAM_FD, e, STDIN_HOLDER_OUTPUT_FD};
	if (fs_close_all_except(keep, b >= 0 ? 3 : 2) < 0)
		_exit(1);
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	for (int i = 0; i < 3 && devnull >= 0; i++)
		dup2(devnull, i);
	char *argv[] = {(char *)STDIN_HOLDER_NAME, (char *)KIND_NAMES[kind], NULL};
	char *envp[] = {NULL};
	execve(path, argv, envp);
	int saved = errno;
	if (write(e, &saved, sizeof(saved)) < 0) {
	}
	_exit(127);
}

int sp_stdin_start(struct spawner *sp, struct sp_sandbox *s, struct sp_exec *e,
                   enum sp_stdin_kind kind, int stream_fd, int out_fd, struct sk_error *err)
{
	_cleanup_close_ int fd = stream_fd;
	int ep[2];
	if (pipe2(ep, O_CLOEXEC) < 0)
		return sk_error_errno(err, -errno, "start the stdin holder of %s", e->id);
	_cleanup_close_ int ep_read = ep[0];
	_cleanup_close_ int ep_write = ep[1];
	pid_t pid = fork();
	if (pid < 0)
		return sk_error_errno(err, -errno, "fork the stdin holder of %s", e->id);
	if (pid == 0)
		holder_exec(sp->holder_path, kind, fd, kind == SP_STDIN_PTY ? out_fd : -1,
		            ep_write);
	close(TAKE_FD(ep_write));
	/* The holder's exec closes its end: nothing read means it runs the holder program. */
	int exec_errno = 0;
	ssize_t n;
	while ((n = read(ep_read, &exec_errno, sizeof(exec_errno))) < 0 && errno == EINTR)
		;
	int pidfd = n == 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
	unsigned long long start = 0;
	int r = n != 0 ? sk_error_errno(err, n > 0 ? -exec_errno : -EIO, "run the stdin holder %s",
	                                sp->holder_path)
	        : pidfd < 0 ? sk_error_errno(err, -errno, "watch the stdin holder of %s", e->id)
	                    : 0;
	if (r == 0 && (r = proc_start_time(pid, &start)) < 0)
		sk_error_errno(err, r, "watch the stdin holder of %s", e->id);
	else if (r == 0)
		r = rt_sandbox_join_cgroups(s->sb, pid, err);
	if (r < 0) {
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		if (pidfd >= 0)
			close(pidfd);
		return r;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	e->in = (struct sp_stdin){.kind = kind,
	                          .fd = TAKE_FD(fd),
	                          .holder = pid,
	                          .holder_start = start,
	                          .holder_pidfd = pidfd,
	                          .holder_child = 1,
	                          .at_line_start = 1};
	return 0;
}

/* ---- the holder from the spawner's side ---- */

static void holder_reap(struct sp_stdin *in, int wait)
{
	if (in->holder_pidfd < 0)
		return;
	if (in->holder_child) {
		/* Killed just before (holder_kill): SIGKILL ends it at once, so this wait is short,
		 * and without it a holder that had not quite gone yet stays a zombie for good. */
		while (waitpid(in->holder, NULL, 0) < 0 && errno == EINTR)
			;
	} else if (wait) {
		struct pollfd p = {.fd = in->holder_pidfd, .events = POLLIN};
		poll(&p, 1, HOLDER_REAP_WAIT_MS);
	}
	close(in->holder_pidfd);
	in->holder_pidfd = -1;
	in->holder = 0;
}

static void holder_kill(struct sp_stdin *in)
{
	if (in->holder_pidfd >= 0)
		syscall(SYS_pidfd_send_signal, in->holder_pidfd, SIGKILL, NULL, 0);
}

void sp_stdin_holder_exited(struct sp_exec *e)
{
	holder_reap(&e->in, 0);
}

int sp_stdin_draining(const struct sp_exec *e)
{
	return e->in.kind == SP_STDIN_PTY && e->in.holder_pidfd >= 0;
}

/* ---- writes ---- */

static void write_clear(struct sp_stdin *in)
{
	json_decref(in->req_id);
	in->req_id = NULL;
	free(in->buf);
	in->buf = NULL;
	in->len = in->off = in->data_len = 0;
	in->eof_after = 0;
	in->deadline_mono = 0;
}

/* Of the write in progress, the client's bytes that went in. */
static size_t written(const struct sp_stdin *in)
{
	return in->off < in->data_len ? in->off : in->data_len;
}

/* Answer the write in progress later (after the current reply): with err, or with what it
 * wrote. */
static void write_answer(struct spawner *sp, struct sp_stdin *in, const struct sk_error *err)
{
	sp_answer(
	    sp, in->req_id,
	    err ? NULL
	        : json_pack("{s:I, s:b}", "written", (json_int_t)written(in), "eof", in->eof_after),
	    err);
	write_clear(in);
}

/* A pipe's end: ours and the holder's are its last write ends, so the command reads EOF. (A
 * terminal's end-of-file is a character, typed with the data: the terminal stays open.) */
static void input_close(struct sp_sandbox *s, struct sp_exec *e)
{
	struct sp_stdin *in = &e->in;
	if (in->kind != SP_STDIN_PIPE)
		return;
	in->eof = 1;
	close(in->fd);
	in->fd = -1;
	holder_kill(in);
	sp_exec_record(s, e);
}

/* Write what the write in progress still has: 1 when done (stdin closed after it when asked),
 * 0 when the rest waits for room, or a negative code in err. */
static int write_pump(struct sp_sandbox *s, struct sp_exec *e, struct sk_error *err)
{
	struct sp_stdin *in = &e->in;
	while (in->off < in->len) {
		ssize_t n = write(in->fd, in->buf + in->off, in->len - in->off);
		if (n > 0) {
			in->off += (size_t)n;
			in->at_line_start = in->buf[in->off - 1] == '\n' ||
			                    (in->off > in->data_len && in->eof_after);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		/* EPIPE, EIO: nobody reads it any more. */
		return sk_error_set(
		    err, -ESRCH, "exec %s no longer reads its stdin: %zu of %zu bytes were written",
		    e->id, written(in), in->data_len);
	}
	if (in->eof_after)
		input_close(s, e);
	return 1;
}

void sp_stdin_writable(struct spawner *sp, struct sp_sandbox *s, struct sp_exec *e)
{
	struct sp_stdin *in = &e->in;
	if (!in->req_id)
		return;
	struct sk_error err = {0};
	int r = write_pump(s, e, &err);
	if (r != 0)
		write_answer(sp, in, r < 0 ? &err : NULL);
}

void sp_stdin_timers(struct spawner *sp, struct sp_exec *e, int64_t now)
{
	struct sp_stdin *in = &e->in;
	if (!in->req_id || now < in->deadline_mono)
		return;
	struct sk_error err;
	sk_error_set(&err, -ETIME,
	             "exec %s did not read its stdin within %d s: %zu of %zu bytes were written, "
	             "the rest was dropped",
	             e->id, SP_STDIN_WRITE_TIMEOUT_MS / 1000, written(in), in->data_len);
	write_answer(sp, in, &err);
}

void sp_stdin_end(struct spawner *sp, struct sp_exec *e, const char *why, int wait)
{
	struct sp_stdin *in = &e->in;
	if (in->req_id) {
		struct sk_error err;
		sk_error_set(&err, -ESRCH, "exec %s %s: %zu of %zu bytes were written to its stdin",
		             e->id, why, written(in), in->data_len);
		write_answer(sp, in, &err);
	}
	if (in->fd >= 0)
		close(in->fd);
	in->fd = -1;
	holder_kill(in);
	holder_reap(in, wait);
}

void sp_stdin_release(struct sp_stdin *in)
{
	write_clear(in);
	if (in->fd >= 0)
		close(in->fd);
	in->fd = -1;
	if (in->holder_pidfd >= 0)
		close(in->holder_pidfd);
	in->holder_pidfd = -1;
}

/* ---- ops ---- */

/* The request's exec, running, with a stdin of its own; else err set. */
static int exec_with_stdin(struct spawner *sp, json_t *req, struct sp_sandbox **ret_s,
                           struct sp_exec **ret_e, struct sk_error *err)
{
	struct sp_sandbox *s;
	const char *exid;
	int r = sp_exec_request(sp, req, &s, &exid, err);
	if (r < 0)
		return r;
	struct sp_exec *e = sp_exec_find(s, exid);
	if (!e)
		return sk_error_set(err, -ENOENT, "no exec %s in %s", exid, s->id);
	if (e->in.kind == SP_STDIN_NONE)
		return sk_error_set(err, -EBUSY, "exec %s was started without stdin", e->id);
	if (!e->running || e->exited_mono)
		return sk_error_set(err, -ESRCH, "exec %s has ended", e->id);
	if (e->in.fd < 0 && !e->in.eof)
		return sk_error_set(err, -ESRCH,
		                    "the stdin of exec %s was lost (its holder process is gone)",
		                    e->id);
	*ret_s = s;
	*ret_e = e;
	return 0;
}

int sp_op_stdin(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	struct sp_sandbox *s;
	struct sp_exec *e;
	int r = exec_with_stdin(sp, req, &s, &e, err);
	if (r < 0)
		return r;
	struct sp_stdin *in = &e->in;
	const char *b64 = "";
	r = sp_json_string(req, "data_b64", &b64, err);
	if (r < 0 && r != -ENOENT)
		return r;
	json_t *eof = json_object_get(req, "eof");
	if (eof && !json_is_boolean(eof))
		return sk_error_set(err, -EINVAL, "eof: expected a boolean");
	size_t blen = strlen(b64);
	if (blen > base64_encoded_size(SP_STDIN_MAX_WRITE_BYTES) - 1)
		return sk_error_set(err, -EMSGSIZE, "data_b64: at most %d bytes a request",
		                    SP_STDIN_MAX_WRITE_BYTES);
	if (in->eof)
		return sk_error_set(err, -ESRCH, "the stdin of exec %s is closed", e->id);
	if (in->req_id)
		return sk_error_set(err, -EBUSY,
		                    "a write to the stdin of exec %s is in progress: one at a time",
		                    e->id);
	/* A terminal's input ends as a user ends it: with its end-of-file character (^D). In
	 * canonical mode a ^D after part of a line only hands that part over; a second one then
	 * makes the read return end-of-file. The terminal stays: more input may follow, and more
	 * ends of file (a shell reads its next command after a `cat` ended). */
	unsigned char veof = _POSIX_VDISABLE;
	struct termios t;
	if (json_is_true(eof) && in->kind == SP_STDIN_PTY && tcgetattr(in->fd, &t) == 0)
		veof = t.c_cc[VEOF];
	in->buf = malloc(blen / 4 * 3 + 3);
	long n = in->buf ? base64_decode(b64, blen, in->buf) : -ENOMEM;
	if (n < 0) {
		write_clear(in);
		return n == -ENOMEM ? sk_error_set(err, -ENOMEM, "out of memory")
		                    : sk_error_set(err, -EINVAL, "data_b64: not base64");
	}
	in->len = in->data_len = (size_t)n;
	if (veof != _POSIX_VDISABLE) {
		int partial = n > 0 ? in->buf[n - 1] != '\n' : !in->at_line_start;
		if (partial && (t.c_lflag & ICANON))
			in->buf[in->len++] = veof;
		in->buf[in->len++] = veof;
	}
	in->eof_after = json_is_true(eof);
	in->req_id = json_incref(json_object_get(req, "req"));
	r = write_pump(s, e, err);
	if (r == 0) {
		in->deadline_mono = sp_now_mono() + SP_STDIN_WRITE_TIMEOUT_MS;
		return 1;
	}
	if (r > 0) {
		json_object_set_new(reply, "written", json_integer((json_int_t)written(in)));
		json_object_set_new(reply, "eof", json_boolean(in->eof_after));
	}
	write_clear(in);
	return r < 0 ? r : 0;
}

int sp_op_resize(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	struct sp_sandbox *s;
	struct sp_exec *e;
	json_int_t rows, cols;
	int r = exec_with_stdin(sp, req, &s, &e, err);
	if (r < 0)
		return r;
	if ((r = sp_json_int(req, "rows", 1, SP_PTY_MAX_ROWS, &rows, err)) < 0 ||
	    (r = sp_json_int(req, "cols", 1, SP_PTY_MAX_COLS, &cols, err)) < 0)
		return r == -ENOENT ? sk_error_set(err, -EINVAL, "rows and cols: required") : r;
	if (e->in.kind != SP_STDIN_PTY)
		return sk_error_set(err, -EBUSY, "exec %s has no terminal", e->id);
	if ((r = rt_pty_resize(e->in.fd, (unsigned short)rows, (unsigned short)cols)) < 0)
		return sk_error_errno(err, r, "resize the terminal of exec %s", e->id);
	json_object_set_new(reply, "rows", json_integer(rows));
	json_object_set_new(reply, "cols", json_integer(cols));
	return 0;
}

/* ---- records ---- */

json_t *sp_stdin_record(const struct sp_exec *e)
{
	const struct sp_stdin *in = &e->in;
	if (in->kind == SP_STDIN_NONE)
		return NULL;
	return json_pack("{s:s, s:b, s:i, s:I}", "kind", KIND_NAMES[in->kind], "eof", in->eof,
	                 "holder", (int)in->holder, "holder_start", (json_int_t)in->holder_start);
}

void sp_stdin_adopt(struct sp_exec *e, json_t *rec)
{
	struct sp_stdin *in = &e->in;
	const char *kind = json_string_value(json_object_get(rec, "kind"));
	in->kind = SP_STDIN_NONE;
	for (size_t i = 0; kind && i < ARRAY_SIZE(KIND_NAMES); i++)
		if (!strcmp(kind, KIND_NAMES[i]))
			in->kind = (enum sp_stdin_kind)i;
	if (in->kind == SP_STDIN_NONE)
		return;
	in->eof = json_is_true(json_object_get(rec, "eof"));
	in->at_line_start = 1; /* not known: a single end-of-file character is the safer guess */
	in->holder = (pid_t)json_integer_value(json_object_get(rec, "holder"));
	in->holder_start =
	    (unsigned long long)json_integer_value(json_object_get(rec, "holder_start"));
	/* The holder, if that very process still runs; not ours to reap. */
	int pidfd = proc_pidfd_open(in->holder, in->holder_start);
	char comm[32] = "";
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)in->holder);
	ssize_t n = pidfd >= 0 ? fs_read_at(AT_FDCWD, path, comm, sizeof(comm) - 1) : -1;
	if (n > 0)
		comm[n] = '\0';
	if (n > 0 && comm[n - 1] == '\n')
		comm[n - 1] = '\0';
	if (pidfd < 0 || strcmp(comm, STDIN_HOLDER_NAME)) { /* gone, or not ours */
		if (pidfd >= 0)
			close(pidfd);
		in->holder = 0;
		return;
	}
	in->holder_pidfd = pidfd;
	if (in->eof && in->kind == SP_STDIN_PIPE) {
		holder_kill(in); /* closed, and killed when its closer stopped short */
		return;
	}
	in->fd = (int)syscall(SYS_pidfd_getfd, pidfd, STDIN_HOLDER_STREAM_FD, 0);
	if (in->fd < 0) {
		/* Not ours to write any more (e.g. ptrace refused): the exec gets its EOF now
		 * rather than a stdin nobody can write or close. */
		sp_log("error", "take back the stdin of exec %s from its holder %d: %s", e->id,
		       (int)in->holder, strerror(errno));
		in->eof = 1;
		holder_kill(in);
	}
}
