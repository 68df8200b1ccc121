/* Execs and signals. An exec's stdout and stderr are files of the sandbox's state directory
 * (execs/<ex>.stdout, .stderr) that the command writes itself; its stdin is /dev/null, a pipe, or
 * a terminal (spawner_stdin.c); its end is its pidfd, its status what init logged for it. What
 * a restarted spawner needs to find it again is in execs/<ex>.json. */
#include <dirent.h>
#include <errno.h>
#include <sys/inotify.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/clock.h"
#include "spawner_internal.h"

/* Signals the main command gets through init (which forwards these), and SIGKILL (the sandbox
 * ends). Others would reach init itself. */
static const int MAIN_SIGNALS[] = {SIGHUP,  SIGINT,   SIGQUIT, SIGTERM, SIGUSR1,
                                   SIGUSR2, SIGWINCH, SIGCONT, SIGALRM, SIGKILL};

struct sp_exec *sp_exec_find(struct sp_sandbox *s, const char *id)
{
	for (struct sp_exec *e = s->execs; e; e = e->next)
		if (!strcmp(e->id, id))
			return e;
	return NULL;
}

static void start_fds_close(struct sp_exec *e)
{
	for (int i = 0; i < 3; i++)
		if (e->start_fds[i] >= 0)
			close(TAKE_FD(e->start_fds[i]));
}

void sp_exec_free(struct sp_exec *e)
{
	if (!e)
		return;
	sp_stdin_release(&e->in);
	rt_exec_release(&e->ex);
	start_fds_close(e);
	json_decref(e->start_req);
	free(e);
}

static struct sp_exec *starting_find(struct sp_sandbox *s, const char *id)
{
	for (struct sp_exec *e = s->starting; e; e = e->next)
		if (!strcmp(e->id, id))
			return e;
	return NULL;
}

static int starting_has(const struct sp_sandbox *s, const struct sp_exec *e)
{
	for (const struct sp_exec *x = s->starting; x; x = x->next)
		if (x == e)
			return 1;
	return 0;
}

/* Take e, one of them, out of s's starting list. */
static void starting_unlink(struct sp_sandbox *s, struct sp_exec *e)
{
	for (struct sp_exec **p = &s->starting; *p; p = &(*p)->next) {
		if (*p == e) {
			*p = e->next;
			e->next = NULL;
			s->nstarting--;
			return;
		}
	}
}

void sp_exec_record(struct sp_sandbox *s, struct sp_exec *e)
{
	char name[64];
	snprintf(name, sizeof(name), "execs/%s.json", e->id);
	json_t *rec = e->running ? json_pack("{s:i, s:i, s:I, s:I, s:b}", "pid", (int)e->ex.pid,
	                                     "nspid", (int)e->ex.nspid, "start",
	                                     (json_int_t)e->ex.start, "deadline_ms",
	                                     (json_int_t)e->deadline_ms, "timed_out", e->timed_out)
	                         : json_pack("{s:s, s:i, s:I}", "state", e->end_state, "exit_code",
	                                     e->exit_code, "ended_ms", (json_int_t)e->ended_ms);
	json_t *in = e->running ? sp_stdin_record(e) : NULL;
	if (rec && in)
		json_object_set_new(rec, "stdin", in);
	else
		json_decref(in);
	if (!rec || sp_record_write(rt_sandbox_dir(s->sb), name, rec) < 0)
		sp_log("error", "record exec %s of %s: failed", e->id, s->id);
	json_decref(rec);
}

static void exec_event(struct spawner *sp, struct sp_sandbox *s, struct sp_exec *e)
{
	json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I}", "event", "exec_ended", "id", s->id,
	                       "exec", e->id, "state", e->end_state, "exit_code", e->exit_code,
	                       "ended_ms", (json_int_t)e->ended_ms);
	/* A waited exec's output goes with its end: the worker needs no output op for it. */
	json_t *out = e->capture && ev ? sp_exec_output_inline(e) : NULL;
	if (out)
		json_object_set_new(ev, "output_inline", out);
	sp_event(sp, ev);
}

static void exec_ended(struct spawner *sp, struct sp_sandbox *s, struct sp_exec *e,
                       const char *state, int code)
{
	sp_stdin_end(sp, e, "has ended", 0);
	rt_exec_release(&e->ex);
	e->running = 0;
	e->recheck_mono = 0;
	e->end_state = !strcmp(state, "lost") ? "lost" : "exited";
	e->exit_code = code;
	e->ended_ms = clock_now_ms();
	for (int i = 0; i < 2; i++)
		sp_output_trim(&e->out[i]);
	sp_exec_record(s, e);
	sp->oreads_due = 1;
	exec_event(sp, s, e);
}

/* Watch s's events log for the status init logs once it has reaped an exec: its pidfd fires
 * at the exit, init's reap comes just after, and a timer would add its whole period. Returns 1
 * when the watch is new (look again: the line may have come just before it). */
static int status_watch(struct spawner *sp, struct sp_sandbox *s)
{
	if (s->events_wd > 0)
		return 0;
	if (sp->status_ino_fd < 0)
		sp->status_ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	char path[4096];
	if (sp->status_ino_fd < 0 || (size_t)snprintf(path, sizeof(path), "%s/events",
	                                              rt_sandbox_dir(s->sb)) >= sizeof(path))
		return 0;
	int wd = inotify_add_watch(sp->status_ino_fd, path, IN_MODIFY);
	if (wd <= 0)
		return 0; /* the timer alone, then */
	s->events_wd = wd;
	return 1;
}

/* The watch goes once no exec of s waits for its status, however the last one learnt it. */
static void status_unwatch_if_idle(struct spawner *sp, struct sp_sandbox *s)
{
	if (s->events_wd <= 0)
		return;
	for (const struct sp_exec *e = s->execs; e; e = e->next)
		if (e->running && e->exited_mono && !e->status_known)
			return;
	inotify_rm_watch(sp->status_ino_fd, s->events_wd);
	s->events_wd = 0;
}

void sp_exec_status_inotify(struct spawner *sp, int64_t now)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	int wds[64], nwd = 0, all = 0;
	ssize_t n;
	while ((n = read(sp->status_ino_fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= n;) {
			const struct inotify_event *ev = (const void *)(buf + off);
			if (ev->wd < 0 || nwd == (int)ARRAY_SIZE(wds))
				all = 1; /* the queue overflowed: everyone looks */
			else
				wds[nwd++] = ev->wd;
			off += (ssize_t)sizeof(*ev) + ev->len;
		}
	}
	for (struct sp_sandbox *s = sp->sandboxes; s; s = s->next) {
		if (s->events_wd <= 0)
			continue;
		int hit = all;
		for (int i = 0; !hit && i < nwd; i++)
			hit = wds[i] == s->events_wd;
		if (!hit)
			continue;
		for (struct sp_exec *e = s->execs; e; e = e->next)
			if (e->running && e->exited_mono && !e->status_known)
				sp_exec_check(sp, s, e, now);
	}
}

void sp_exec_check(struct spawner *sp, struct sp_sandbox *s, struct sp_exec *e, int64_t now)
{
	if (!e->running)
		return;
	if (!e->exited_mono)
		e->exited_mono = now;
	if (!e->status_known) {
		int status;
		int r = rt_exec_status(s->sb, &e->ex, &status);
		if (r == -EAGAIN && status_watch(sp, s))
			r = rt_exec_status(s->sb, &e->ex, &status);
		if (r == -EAGAIN && now - e->exited_mono < SPAWNER_EXEC_DRAIN_MS) {
			e->recheck_mono = now + SP_EXEC_STATUS_RECHECK_MS;
			return;
		}
		e->status_known = 1;
		status_unwatch_if_idle(sp, s);
		e->end_state = r < 0 ? "lost" : "exited";
		if (r < 0)
			e->exit_code = 137;
		else if (e->timed_out)
			e->exit_code = 124;
		else
			e->exit_code =
			    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	}
	/* A terminal's last output may still be on its way to the stdout file: its holder exits
	 * once it has copied everything (every slave closed); it gets a while. */
	if (sp_stdin_draining(e) && now - e->exited_mono < SPAWNER_EXEC_DRAIN_MS) {
		e->recheck_mono = e->exited_mono + SPAWNER_EXEC_DRAIN_MS;
		return;
	}
	exec_ended(sp, s, e, e->end_state, e->exit_code);
}

static void exec_queue_run(struct spawner *sp, struct sp_sandbox *s, int64_t now);

void sp_exec_timers(struct spawner *sp, struct sp_sandbox *s, int64_t now)
{
	for (struct sp_exec *e = s->starting, *next; e; e = next) {
		next = e->next; /* e goes from the list at its deadline */
		if (now >= rt_exec_start_deadline_ms(e->start))
			sp_exec_start_step(sp, s, e);
	}
	exec_queue_run(sp, s, now);
	for (struct sp_exec *e = s->execs; e; e = e->next) {
		if (!e->running)
			continue;
		sp_stdin_timers(sp, e, now);
		if (e->recheck_mono && now >= e->recheck_mono)
			sp_exec_check(sp, s, e, now);
		else if (!e->exited_mono && e->deadline_mono && now >= e->deadline_mono) {
			e->deadline_mono = 0;
			e->timed_out = 1;
			sp_exec_record(s, e); /* a restarted spawner reports 124 too */
			rt_exec_signal(&e->ex, SIGKILL);
		}
	}
}

static struct sp_exec *exec_new(struct sp_sandbox *s, const char *exid)
{
	struct sp_exec *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->ex.pidfd = e->ex.pty_fd = -1;
	e->in.fd = e->in.holder_pidfd = -1;
	e->start_fds[0] = e->start_fds[1] = e->start_fds[2] = -1;
	snprintf(e->id, sizeof(e->id), "%s", exid);
	char name[64];
	for (int i = 0; i < 2; i++) {
		snprintf(name, sizeof(name), "execs/%s.%s", exid, i ? "stderr" : "stdout");
		sp_output_init(&e->out[i], rt_sandbox_dir(s->sb), name);
	}
	return e;
}

/* Open execs/<ex>.stdout and .stderr, new. */
static int exec_files_open(struct sp_sandbox *s, struct sp_exec *e, int fds[2],
                           struct sk_error *err)
{
	char dir[600];
	snprintf(dir, sizeof(dir), "%s/execs", rt_sandbox_dir(s->sb));
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return sk_error_errno(err, -errno, "mkdir %s", dir);
	for (int i = 0; i < 2; i++) {
		fds[i] =
		    open(e->out[i].path,
		         O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fds[i] < 0) {
			int r = -errno;
			if (i == 1) {
				close(fds[0]);
				unlink(e->out[0].path);
			}
			if (r == -EEXIST)
				return sk_error_set(err, -EEXIST, "exec %s exists", e->id);
			return sk_error_errno(err, r, "open %s", e->out[i].path);
		}
	}
	return 0;
}

/* The request's stdin, pty and pty_size: what the exec's stdin is, and a terminal's size. */
static int exec_input_options(json_t *req, enum sp_stdin_kind *ret_kind, json_int_t size[2],
                              struct sk_error *err)
{
	static const char *const FLAGS[] = {"stdin", "pty"};
	int on[2] = {0, 0};
	for (int i = 0; i < 2; i++) {
		json_t *v = json_object_get(req, FLAGS[i]);
		if (v && !json_is_null(v) && !json_is_boolean(v))
			return sk_error_set(err, -EINVAL, "%s: expected a boolean", FLAGS[i]);
		on[i] = json_is_true(v);
	}
	size[0] = SP_PTY_DEFAULT_ROWS;
	size[1] = SP_PTY_DEFAULT_COLS;
	json_t *ps = json_object_get(req, "pty_size");
	if (ps && !json_is_null(ps)) {
		if (!on[1] || !json_is_object(ps))
			return sk_error_set(err, -EINVAL, "pty_size: an object, with pty only");
		int r;
		if ((r = sp_json_int(ps, "rows", 1, SP_PTY_MAX_ROWS, &size[0], err)) < 0 ||
		    (r = sp_json_int(ps, "cols", 1, SP_PTY_MAX_COLS, &size[1], err)) < 0)
			return r == -ENOENT ? sk_error_set(err, -EINVAL, "pty_size: rows and cols")
			                    : r;
	}
	*ret_kind = on[1] ? SP_STDIN_PTY : on[0] ? SP_STDIN_PIPE : SP_STDIN_NONE;
	return 0;
}

int sp_exec_request(struct spawner *sp, json_t *req, struct sp_sandbox **ret_s,
                    const char **ret_exid, struct sk_error *err)
{
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0)
		return r;
	const char *exid;
	r = sp_json_string(req, "exec", &exid, err);
	if (r == -ENOENT || (r == 0 && !id_is_valid("ex-", exid)))
		return sk_error_set(err, -EINVAL, "exec: expected an exec id (ex-…)");
	if (r < 0)
		return r;
	*ret_s = s;
	*ret_exid = exid;
	return 0;
}

/* The request of an exec of s's that waits for a start (exec_queue), or NULL. */
static json_t *queued_find(struct sp_sandbox *s, const char *id)
{
	size_t i;
	json_t *w;
	json_array_foreach (s->exec_queue, i, w) {
		json_t *req = json_array_get(w, 0);
		const char *qid = json_string_value(json_object_get(req, "exec"));
		if (qid && !strcmp(qid, id))
			return req;
	}
	return NULL;
}

/* Whether id is an exec of s's, started, on its way or waiting for its turn. */
static int exec_known(struct sp_sandbox *s, const char *id)
{
	return sp_exec_find(s, id) || starting_find(s, id) || queued_find(s, id);
}

/* Queue req until one of s's starts ends: 1 (answered then), or -ENOMEM. */
static int exec_queue_add(struct sp_sandbox *s, json_t *req, struct sk_error *err)
{
	if (!s->exec_queue)
		s->exec_queue = json_array();
	json_t *w =
	    json_pack("[O, I]", req, (json_int_t)(sp_now_mono() + RT_EXEC_START_TIMEOUT_MS));
	if (!s->exec_queue || json_array_append_new(s->exec_queue, w) < 0)
		return sk_error_set(err, -ENOMEM, "out of memory");
	return 1;
}

int64_t sp_exec_queue_deadline(const struct sp_sandbox *s)
{
	return json_integer_value(json_array_get(json_array_get(s->exec_queue, 0), 1));
}

/* e's start came to its end, r and xerr being rt_sandbox_exec's: e is one of s's execs from now
 * on (0; reply says whether it started), or it goes (-errno, in *err). A command that could not
 * be run is an exec that ended at once: *ret_failed_code (127, 126; else -1) is the status the
 * caller ends it with, once the op is answered. */
static int exec_start_done(struct spawner *sp, struct sp_sandbox *s, struct sp_exec *e, int r,
                           const struct sk_error *xerr, json_t *reply, int *ret_failed_code,
                           struct sk_error *err)
{
	*ret_failed_code = -1;
	if (r == -SK_ECMD_NOTFOUND || r == -SK_ECMD_EXEC) {
		/* Like a shell: the reason on its stderr, 127 or 126 as its status. */
		dprintf(e->start_fds[1], "%s\n", xerr->msg);
		*ret_failed_code = r == -SK_ECMD_NOTFOUND ? 127 : 126;
		json_object_set_new(reply, "started", json_false());
	} else if (r < 0) {
		*err = *xerr;
		goto fail;
	} else {
		if (e->start_kind != SP_STDIN_NONE) {
			int stream = e->start_kind == SP_STDIN_PTY ? TAKE_FD(e->ex.pty_fd)
			                                           : TAKE_FD(e->start_fds[2]);
			if ((r = sp_stdin_start(sp, s, e, e->start_kind, stream, e->start_fds[0],
			                        err)) < 0) {
				rt_exec_signal(&e->ex, SIGKILL);
				goto fail;
			}
		}
		if (e->start_timeout_ms > 0) {
			e->deadline_mono = sp_now_mono() + e->start_timeout_ms;
			e->deadline_ms = clock_now_ms() + e->start_timeout_ms;
		}
		json_object_set_new(reply, "started", json_true());
	}
	start_fds_close(e);
	e->running = 1;
	if (*ret_failed_code < 0)
		sp_exec_record(s, e);
	e->next = s->execs;
	s->execs = e;
	s->nexecs++;
	return 0;
fail:
	for (int i = 0; i < 2; i++)
		unlink(e->out[i].path);
	sp_exec_free(e);
	return r;
}

/* The exec op; from_queue: req waited for its turn in s->exec_queue (and is out of it now). */
static int exec_op(struct spawner *sp, json_t *req, json_t *reply, int from_queue,
                   struct sk_error *err)
{
	struct sp_sandbox *s;
	const char *exid;
	int r = sp_exec_request(sp, req, &s, &exid, err);
	if (r < 0)
		return r;
	/* command, env and workdir are checked as a create's are. */
	json_t *cmd = json_object_get(req, "command");
	if (!json_is_array(cmd) || json_array_size(cmd) == 0)
		return sk_error_set(err, -EINVAL, "command: expected a non-empty array of strings");
	json_t *timeout = json_object_get(req, "timeout_s");
	if (timeout && !json_is_null(timeout) &&
	    (!json_is_number(timeout) || !(json_number_value(timeout) >= 0) ||
	     json_number_value(timeout) > SPEC_MAX_TIMEOUT_S))
		return sk_error_set(err, -EINVAL, "timeout_s: expected null or a number in [0, %g]",
		                    SPEC_MAX_TIMEOUT_S);
	enum sp_stdin_kind kind = SP_STDIN_NONE;
	json_int_t pty_size[2];
	if ((r = exec_input_options(req, &kind, pty_size, err)) < 0)
		return r;
	json_t *capture = json_object_get(req, "capture");
	if (capture && !json_is_boolean(capture))
		return sk_error_set(err, -EINVAL, "capture: expected a boolean");
	json_t *sub = json_object();
	json_object_set(sub, "command", cmd);
	const char *keys[] = {"env", "workdir"};
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (json_object_get(req, keys[i]))
			json_object_set(sub, keys[i], json_object_get(req, keys[i]));
	json_t *env = json_object_get(sub, "env");
	if (kind == SP_STDIN_PTY && (!env || json_is_object(env)) &&
	    !json_object_get(env, "TERM")) {
		env = env ? json_copy(env) : json_object();
		json_object_set_new(env, "TERM", json_string(SP_PTY_DEFAULT_TERM));
		json_object_set_new(sub, "env", env);
	}
	_cleanup_free_ char *text = json_dumps(sub, JSON_COMPACT);
	json_decref(sub);
	if (!text)
		return sk_error_set(err, -ENOMEM, "out of memory");
	struct spec spec;
	spec_init(&spec);
	struct sp_exec *e = NULL;
	int fds[2] = {-1, -1};
	int in[2] = {-1, -1}; /* stdin: the command's end, the write end */
	if ((r = spec_apply_json(&spec, text, strlen(text), err)) < 0 ||
	    (r = spec_validate(&spec, err)) < 0)
		goto out;
	if (exec_known(s, exid)) {
		r = sk_error_set(err, -EEXIST, "exec %s exists", exid);
		goto out;
	}
	if (s->state != SP_RUNNING || s->end_reason != SP_RUNNING) {
		r = sk_error_set(err, -ESRCH, "sandbox %s is not running", s->id);
		goto out;
	}
	int running = s->nstarting + (int)json_array_size(s->exec_queue);
	for (struct sp_exec *x = s->execs; x; x = x->next)
		running += x->running;
	if (running >= SPAWNER_MAX_EXECS_PER_SANDBOX) {
		r = sk_error_set(err, -EAGAIN, "sandbox %s runs %d execs already", s->id, running);
		goto out;
	}
	/* Each start holds fds until init takes it (its reply socket, strings, stdio, output
	 * files): an init that is behind gets a few at once, and the rest wait their turn, in
	 * order, holding only their request. */
	if (s->nstarting >= SPAWNER_MAX_STARTS_PER_SANDBOX ||
	    (!from_queue && json_array_size(s->exec_queue) > 0)) {
		r = exec_queue_add(s, req, err);
		goto out;
	}
	e = exec_new(s, exid);
	if (!e) {
		r = sk_error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	e->capture = json_is_true(capture);
	if ((r = exec_files_open(s, e, fds, err)) < 0) {
		fds[0] = fds[1] = -1;
		goto out;
	}
	if (kind == SP_STDIN_PIPE && pipe2(in, O_CLOEXEC) < 0) {
		r = sk_error_errno(err, -errno, "pipe");
		for (int i = 0; i < 2; i++)
			unlink(e->out[i].path);
		goto out;
	}
	struct rt_exec_spec es = {
	    .argv = spec.argv,
	    .env = spec.env,
	    .envc = spec.envc,
	    .workdir = spec.workdir,
	    .stdio = {in[0], fds[0], fds[1]},
	    .pty = kind == SP_STDIN_PTY,
	    .pty_rows = (unsigned short)pty_size[0],
	    .pty_cols = (unsigned short)pty_size[1],
	};
	e->start_kind = kind;
	if (json_is_number(timeout) && json_number_value(timeout) > 0)
		e->start_timeout_ms = (int64_t)(json_number_value(timeout) * 1000);
	e->start_fds[0] = TAKE_FD(fds[0]);
	e->start_fds[1] = TAKE_FD(fds[1]);
	e->start_fds[2] = TAKE_FD(in[1]);
	struct sk_error xerr = {0};
	struct rt_exec_start *st = NULL;
	r = rt_sandbox_exec_begin(s->sb, &es, &e->ex, &st, &xerr);
	if (r == 1) {
		/* init starts it: answered from the loop (sp_exec_start_step). */
		e->start = st;
		e->start_req = json_incref(json_object_get(req, "req"));
		e->next = s->starting;
		s->starting = TAKE_PTR(e);
		s->nstarting++;
		goto out;
	}
	int failed_code;
	r = exec_start_done(sp, s, TAKE_PTR(e), r, &xerr, reply, &failed_code, err);
	if (r == 0 && failed_code >= 0)
		exec_ended(sp, s, s->execs, "exited", failed_code);
out:
	for (int i = 0; i < 2; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		if (in[i] >= 0)
			close(in[i]);
	}
	sp_exec_free(e);
	spec_release(&spec);
	return r;
}

int sp_op_exec(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	return exec_op(sp, req, reply, 0, err);
}

/* s's queued execs, in order, while it has room for their starts; those that waited too long
 * fail as a start that took too long does. */
static void exec_queue_run(struct spawner *sp, struct sp_sandbox *s, int64_t now)
{
	while (json_array_size(s->exec_queue) > 0) {
		int64_t deadline = sp_exec_queue_deadline(s);
		if (s->nstarting >= SPAWNER_MAX_STARTS_PER_SANDBOX && now < deadline)
			return;
		json_t *req = json_incref(json_array_get(json_array_get(s->exec_queue, 0), 0));
		json_array_remove(s->exec_queue, 0);
		struct sk_error err = {0};
		json_t *reply = json_object();
		int r = now >= deadline
		            ? sk_error_set(&err, -ETIMEDOUT,
		                           "exec into %s: not started within %d ms (its init is "
		                           "behind on the execs before it)",
		                           s->id, RT_EXEC_START_TIMEOUT_MS)
		            : exec_op(sp, req, reply, 1, &err);
		sp_reply(sp, json_object_get(req, "req"), "exec", r, reply, &err);
		json_decref(reply);
		json_decref(req);
	}
}

void sp_exec_start_step(struct spawner *sp, struct sp_sandbox *s, struct sp_exec *e)
{
	/* e may be gone, ended earlier in this turn of the loop (its sandbox did): the list says,
	 * and no start is added during the turn, so the address can't be a new one's. */
	if (!starting_has(s, e))
		return;
	struct sk_error xerr = {0};
	int r = sp_now_mono() >= rt_exec_start_deadline_ms(e->start)
	            ? rt_exec_start_cancel(s->sb, e->start, &xerr)
	            : rt_exec_start_step(s->sb, e->start, &e->ex, &xerr);
	if (r == 1) /* more to come */
		return;
	starting_unlink(s, e);
	e->start = NULL;
	json_t *req_id = TAKE_PTR(e->start_req);
	json_t *reply = json_object();
	struct sk_error err = {0};
	int failed_code;
	r = exec_start_done(sp, s, e, r, &xerr, reply, &failed_code, &err);
	sp_answer(sp, req_id, reply, r < 0 ? &err : NULL);
	json_decref(req_id);
	/* Its end after the op's answer, as when it is answered at once. */
	if (r == 0 && failed_code >= 0)
		exec_ended(sp, s, s->execs, "exited", failed_code);
}

void sp_exec_starts_cancel(struct spawner *sp, struct sp_sandbox *s)
{
	struct sk_error gone = {0};
	sk_error_set(&gone, -ESRCH, "sandbox %s is not running", s->id);
	while (s->starting) {
		struct sp_exec *e = s->starting;
		s->starting = e->next;
		s->nstarting--;
		struct sk_error xerr = {0};
		rt_exec_start_cancel(s->sb, TAKE_PTR(e->start), &xerr);
		if (sp)
			sp_answer(sp, e->start_req, NULL, &gone);
		for (int i = 0; i < 2; i++)
			unlink(e->out[i].path);
		sp_exec_free(e);
	}
	size_t i;
	json_t *w;
	json_array_foreach (s->exec_queue, i, w)
		if (sp)
			sp_answer(sp, json_object_get(json_array_get(w, 0), "req"), NULL, &gone);
	json_decref(TAKE_PTR(s->exec_queue));
}

/* One exec record: an ended exec as it ended; a running one found again (its pidfd watched),
 * or, when it is gone, ended with what init logged for it. */
static void exec_adopt(struct spawner *sp, struct sp_sandbox *s, const char *exid, json_t *rec)
{
	struct sp_exec *e = exec_new(s, exid);
	if (!e)
		return;
	const char *state = json_string_value(json_object_get(rec, "state"));
	int64_t now = sp_now_mono();
	if (state) {
		e->end_state = !strcmp(state, "lost") ? "lost" : "exited";
		e->exit_code = (int)json_integer_value(json_object_get(rec, "exit_code"));
		e->ended_ms = json_integer_value(json_object_get(rec, "ended_ms"));
	} else {
		e->running = 1;
		e->timed_out = json_is_true(json_object_get(rec, "timed_out"));
		struct sk_error err = {0};
		if (rt_exec_attach(
		        (pid_t)json_integer_value(json_object_get(rec, "pid")),
		        (pid_t)json_integer_value(json_object_get(rec, "nspid")),
		        (unsigned long long)json_integer_value(json_object_get(rec, "start")),
		        &e->ex, &err) < 0)
			sp_log("error", "exec %s of %s: %s", exid, s->id, err.msg);
		sp_stdin_adopt(e, json_object_get(rec, "stdin"));
		e->deadline_ms = json_integer_value(json_object_get(rec, "deadline_ms"));
		if (e->deadline_ms > 0) {
			int64_t left = e->deadline_ms - clock_now_ms();
			e->deadline_mono = now + (left > 0 ? left : 0);
		}
	}
	e->next = s->execs;
	s->execs = e;
	s->nexecs++;
	if (e->running && e->ex.pidfd < 0)
		sp_exec_check(sp, s, e, now); /* gone while no spawner watched */
}

void sp_execs_adopt(struct spawner *sp, struct sp_sandbox *s)
{
	char dir[700];
	snprintf(dir, sizeof(dir), "%s/execs", rt_sandbox_dir(s->sb));
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		char exid[ID_MAX_BYTES];
		const char *dot = strchr(de->d_name, '.');
		size_t n = dot ? (size_t)(dot - de->d_name) : 0;
		if (!dot || strcmp(dot, ".json") || n >= sizeof(exid))
			continue;
		memcpy(exid, de->d_name, n);
		exid[n] = '\0';
		if (!id_is_valid("ex-", exid) || sp_exec_find(s, exid))
			continue;
		char path[800];
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		json_t *rec = json_load_file(path, 0, NULL);
		if (json_is_object(rec))
			exec_adopt(sp, s, exid, rec);
		else
			sp_log("error", "exec record %s: unreadable", path);
		json_decref(rec);
	}
	closedir(d);
}

/* The server asks after execs it believes run (after either side restarted): those that ended
 * are reported again, those unknown here as lost; running ones are reported when they end. */
int sp_op_exec_check(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply;
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0)
		return r;
	json_t *ids = json_object_get(req, "execs");
	if (!json_is_array(ids))
		return sk_error_set(err, -EINVAL, "execs: expected an array of exec ids");
	size_t i;
	json_t *v;
	json_array_foreach (ids, i, v) {
		const char *exid = json_string_value(v);
		if (!exid || !id_is_valid("ex-", exid))
			continue;
		struct sp_exec *e = sp_exec_find(s, exid);
		if ((e && e->running) || starting_find(s, exid) || queued_find(s, exid))
			continue; /* reported when it ends */
		if (e) {
			exec_event(sp, s, e);
			continue;
		}
		sp_event(sp, json_pack("{s:s, s:s, s:s, s:s, s:i, s:I}", "event", "exec_ended",
		                       "id", s->id, "exec", exid, "state", "lost", "exit_code", 137,
		                       "ended_ms", (json_int_t)clock_now_ms()));
	}
	return 0;
}

int sp_op_signal(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0)
		return r;
	json_int_t sig;
	r = sp_json_int(req, "signal", 1, SIGRTMAX, &sig, err);
	if (r == -ENOENT)
		return sk_error_set(err, -EINVAL, "signal: missing");
	if (r < 0)
		return r;
	const char *exid;
	r = sp_json_string(req, "exec", &exid, err);
	if (r < 0 && r != -ENOENT)
		return r;
	if (r == 0) {
		struct sp_exec *e = sp_exec_find(s, exid);
		if (!e)
			return sk_error_set(err, -ENOENT, "no exec %.64s in %s", exid, s->id);
		if (!e->running || e->exited_mono)
			return sk_error_set(err, -ESRCH, "exec %s is not running", e->id);
		if ((r = rt_exec_signal(&e->ex, (int)sig)) < 0)
			return sk_error_errno(err, r, "signal exec %s", e->id);
		json_object_set_new(reply, "signal", json_integer(sig));
		return 0;
	}
	if (s->state != SP_RUNNING)
		return sk_error_set(err, -ESRCH, "sandbox %s is not running", s->id);
	if (!s->has_command)
		return sk_error_set(err, -ESRCH, "sandbox %s has no main command", s->id);
	int allowed = 0;
	for (size_t i = 0; i < ARRAY_SIZE(MAIN_SIGNALS); i++)
		allowed |= MAIN_SIGNALS[i] == sig;
	if (!allowed)
		return sk_error_set(err, -EINVAL, "signal %d can't be sent to the main command",
		                    (int)sig);
	if (sig == SIGKILL) {
		/* init can't pass it on: the sandbox ends, as killed by that signal. */
		rt_sandbox_kill(s->sb, RT_END_KILLED);
		return 0;
	}
	if ((r = rt_sandbox_signal(s->sb, (int)sig)) < 0)
		return sk_error_errno(err, r, "signal sandbox %s", s->id);
	return 0;
}
