/* The spawner's sandboxes: made (from the pool when it fits), ended (reaped, their cgroups and
 * uid range released at once, their output kept until remove), timed out, terminated, removed,
 * and found again by a restarted spawner. What the runtime does not record about a sandbox (its
 * deadline, how it ended in the API's words) is in SP_RECORD_NAME in its state directory. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/clock.h"
#include "../image/manifest.h"
#include "../lib/fsutil.h"
#include "spawner_internal.h"

static const char *const STATE_NAMES[] = {
    [SP_RUNNING] = "running", [SP_EXITED] = "exited", [SP_TERMINATED] = "terminated",
    [SP_TIMEOUT] = "timeout", [SP_OOM] = "oom",       [SP_LOST] = "lost",
};

const char *sp_state_name(enum sp_state s)
{
	return STATE_NAMES[s];
}

static enum sp_state state_parse(const char *name)
{
	for (size_t i = 0; name && i < ARRAY_SIZE(STATE_NAMES); i++)
		if (!strcmp(STATE_NAMES[i], name))
			return (enum sp_state)i;
	return SP_LOST;
}

struct sp_sandbox *sp_sandbox_find(struct spawner *sp, const char *id)
{
	for (struct sp_sandbox *s = sp->sandboxes; s; s = s->next)
		if (!strcmp(s->id, id))
			return s;
	return NULL;
}

int sp_sandbox_get(struct spawner *sp, json_t *req, struct sp_sandbox **ret, struct sk_error *err)
{
	const char *id;
	int r = sp_json_string(req, "id", &id, err);
	if (r == -ENOENT)
		return sk_error_set(err, -EINVAL, "id: missing");
	if (r < 0)
		return r;
	struct sp_sandbox *s = sp_sandbox_find(sp, id);
	if (!s)
		return sk_error_set(err, -ENOENT, "no sandbox %.64s", id);
	*ret = s;
	return 0;
}

void sp_sandbox_free(struct sp_sandbox *s)
{
	sp_exec_starts_cancel(NULL, s);
	while (s->execs) {
		struct sp_exec *e = s->execs;
		s->execs = e->next;
		sp_exec_free(e);
	}
	json_decref(s->waiters);
	free(s->layer_error);
	rt_sandbox_close(s->sb);
	free(s);
}

/* Write the spawner's record of s (through a rename: all or nothing). */
static void record_write(struct sp_sandbox *s)
{
	const char *dir = rt_sandbox_dir(s->sb);
	json_t *rec =
	    json_pack("{s:s, s:I, s:f, s:b}", "id", s->id, "started_ms", (json_int_t)s->started_ms,
	              "timeout_s", s->timeout_s, "has_command", s->has_command);
	if (rec && s->image[0])
		json_object_set_new(rec, "image_digest", json_string(s->image));
	if (rec && s->capture_layer)
		json_object_set_new(rec, "capture_layer", json_true());
	if (rec && s->disk_mib)
		json_object_set_new(rec, "disk_mib", json_integer((json_int_t)s->disk_mib));
	if (rec && s->layer[0])
		json_object_set_new(rec, "layer", json_string(s->layer));
	if (rec && s->layer_error)
		json_object_set_new(rec, "layer_error", json_string(s->layer_error));
	if (rec && s->state != SP_RUNNING) {
		json_object_set_new(rec, "state", json_string(sp_state_name(s->state)));
		json_object_set_new(rec, "exit_code", json_integer(s->exit_code));
		json_object_set_new(rec, "ended_ms", json_integer(s->ended_ms));
		json_object_set_new(rec, "cpu_ns", json_integer((json_int_t)s->usage.cpu_ns));
		json_object_set_new(rec, "memory_peak_bytes",
		                    json_integer((json_int_t)s->usage.memory_peak_bytes));
	}
	if (!rec || sp_record_write(dir, SP_RECORD_NAME, rec) < 0)
		sp_log("error", "record sandbox %s in %s: failed", s->id, dir);
	json_decref(rec);
}

static json_t *record_read(const char *dir)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/%s", dir, SP_RECORD_NAME);
	return json_load_file(path, 0, NULL);
}

static void outputs_init(struct sp_sandbox *s)
{
	sp_output_init(&s->out[0], rt_sandbox_dir(s->sb), "stdout");
	sp_output_init(&s->out[1], rt_sandbox_dir(s->sb), "stderr");
}

static struct sp_sandbox *sandbox_new(struct spawner *sp, const char *id, struct rt_sandbox *sb)
{
	struct sp_sandbox *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	snprintf(s->id, sizeof(s->id), "%s", id);
	s->sb = sb;
	s->waiters = json_array();
	outputs_init(s);
	s->next = sp->sandboxes;
	sp->sandboxes = s;
	return s;
}

/* After the sandbox's init is gone: how it ended, in the API's words. */
static void sandbox_reap(struct sp_sandbox *s)
{
	struct rt_result res;
	rt_sandbox_reap(s->sb, &res);
	s->usage = res.usage;
	s->exit_code = res.code;
	switch (res.end) {
	case RT_END_EXITED:
	case RT_END_SIGNALED:
		/* A terminate the command obeyed within the grace period ends as terminated. */
		s->state = s->end_reason == SP_TERMINATED ? SP_TERMINATED : SP_EXITED;
		break;
	case RT_END_OOM: s->state = SP_OOM; break;
	case RT_END_KILLED:
		s->state = s->end_reason == SP_TIMEOUT ? SP_TIMEOUT : SP_TERMINATED;
		s->exit_code = s->state == SP_TIMEOUT ? 124 : 137;
		break;
	case RT_END_LOST:
		s->state = s->end_reason == SP_RUNNING ? SP_LOST : s->end_reason;
		s->exit_code = s->state == SP_TIMEOUT ? 124 : 137;
		break;
	}
	s->ended_ms = clock_now_ms();
	s->deadline_mono = s->kill_mono = s->term_check_mono = s->oom_recheck_mono = 0;
}

/* Its cgroups, uid range and writable layer released; its record written. No event. */
static void sandbox_release(struct sp_sandbox *s)
{
	struct sk_error err = {0};
	if (rt_sandbox_release(s->sb, &err) < 0)
		sp_log("error", "release sandbox %s: %s", s->id, err.msg);
	for (int i = 0; i < 2; i++)
		sp_output_trim(&s->out[i]);
	record_write(s);
}

static json_t *ended_event(const struct sp_sandbox *s)
{
	json_t *ev = json_pack("{s:s, s:s, s:s, s:i, s:I}", "event", "sandbox_ended", "id", s->id,
	                       "state", sp_state_name(s->state), "exit_code", s->exit_code,
	                       "ended_ms", (json_int_t)s->ended_ms);
	if (ev && s->layer[0])
		json_object_set_new(ev, "layer", json_string(s->layer));
	else if (ev && s->capture_layer)
		json_object_set_new(ev, "layer_error",
		                    json_string(s->layer_error ? s->layer_error : "not stored"));
	return ev;
}

/* s ends or goes: the holders of its execs' stdin go now (before its cgroups do). */
static void stdin_end_all(struct spawner *sp, struct sp_sandbox *s, const char *why)
{
	for (struct sp_exec *e = s->execs; e; e = e->next)
		sp_stdin_end(sp, e, why, 1);
}

void sp_sandbox_end(struct spawner *sp, struct sp_sandbox *s)
{
	sp_files_cancel(sp, s);
	sp_exec_starts_cancel(sp, s);
	stdin_end_all(sp, s, "ended with its sandbox");
	/* A snapshot in progress reads a layer that is about to go. */
	if (s->job)
		sp_job_cancel(sp, s, "ended during its snapshot");
	sandbox_reap(s);
	/* A build step's layer is stored before anything of it is released. */
	if (s->capture_layer && sp_layer_capture(sp, s))
		return;
	sp_sandbox_end_done(sp, s);
}

void sp_sandbox_end_done(struct spawner *sp, struct sp_sandbox *s)
{
	sandbox_release(s);
	sp_event(sp, ended_event(s));
	sp->oreads_due = 1; /* readers of its output see the end */
	size_t i;
	json_t *req;
	json_array_foreach (s->waiters, i, req) {
		json_t *m = json_pack("{s:O, s:b, s:s, s:i}", "req", req, "ok", 1, "state",
		                      sp_state_name(s->state), "exit_code", s->exit_code);
		sp_event(sp, m); /* after the event, in order */
	}
	json_array_clear(s->waiters);
}

/* Kill the whole sandbox now; reason says what the end will be called. */
static void sandbox_kill(struct sp_sandbox *s, enum sp_state reason)
{
	if (s->end_reason == SP_RUNNING)
		s->end_reason = reason;
	rt_sandbox_kill(s->sb, RT_END_KILLED);
}

void sp_sandbox_oom(struct spawner *sp, struct sp_sandbox *s)
{
	(void)sp;
	int r = rt_sandbox_check_oom(s->sb);
	s->oom_recheck_mono = r == -EAGAIN ? sp_now_mono() + RT_OOM_RECHECK_MS : 0;
	/* r == 1: killed; init's pidfd says when it is gone. */
}

void sp_sandbox_timers(struct spawner *sp, int64_t now)
{
	for (struct sp_sandbox *s = sp->sandboxes; s; s = s->next) {
		if (s->state != SP_RUNNING)
			continue;
		if (s->oom_recheck_mono && now >= s->oom_recheck_mono)
			sp_sandbox_oom(sp, s);
		if (s->deadline_mono && now >= s->deadline_mono) {
			s->deadline_mono = 0;
			sandbox_kill(s, SP_TIMEOUT);
		}
		if (s->kill_mono && now >= s->kill_mono) {
			s->kill_mono = s->term_check_mono = 0;
			sandbox_kill(s, SP_TERMINATED);
		}
		if (s->term_check_mono && now >= s->term_check_mono) {
			/* No command to wait for: once every other process is gone, end it. */
			if (rt_sandbox_signal_all(s->sb, 0) == 0) {
				s->term_check_mono = s->kill_mono = 0;
				sandbox_kill(s, SP_TERMINATED);
			} else {
				s->term_check_mono = now + SP_TERM_CHECK_MS;
			}
		}
	}
}

/* ---- ops ---- */

static int create_begin(struct spawner *sp, const char *id, json_t *req, struct spec *spec,
                        struct sk_error *err);

int sp_op_create(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	const char *id;
	int r = sp_json_string(req, "id", &id, err);
	if (r == -ENOENT || (r == 0 && !id_is_valid("sb-", id)))
		return sk_error_set(err, -EINVAL, "id: expected a sandbox id (sb-…)");
	if (r < 0)
		return r;
	if (sp_sandbox_find(sp, id))
		return sk_error_set(err, -EEXIST, "sandbox %s exists", id);
	json_t *js = json_object_get(req, "spec");
	if (!json_is_object(js))
		return sk_error_set(err, -EINVAL, "spec: expected an object");
	/* Clients never name host paths: only images. */
	if (json_object_get(js, "rootfs"))
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "spec.rootfs: not allowed; name an image");
	for (struct sp_pending *p = sp->pending; p; p = p->next)
		if (!strcmp(p->id, id))
			return sk_error_set(err, -EEXIST, "sandbox %s exists", id);
	for (struct sp_starting *st = sp->starting; st; st = st->next)
		if (!strcmp(st->id, id))
			return sk_error_set(err, -EEXIST, "sandbox %s exists", id);
	_cleanup_free_ char *text = json_dumps(js, JSON_COMPACT);
	if (!text)
		return sk_error_set(err, -ENOMEM, "out of memory");
	struct spec spec;
	spec_init(&spec);
	if ((r = spec_apply_json_flags(&spec, text, strlen(text), SPEC_JSON_INTERNAL, err)) < 0 ||
	    (r = spec_set_string(&spec.label, id, "label", err)) < 0 ||
	    (r = spec_validate(&spec, err)) < 0)
		goto out;
	if (spec.image && strcmp(spec.image, "busybox") != 0) {
		r = sk_error_set(err, -SK_EINVAL_SPEC, "unknown image \"%.64s\"", spec.image);
		goto out;
	}
	if (spec.image_digest)
		r = sp_image_create(sp, id, req, &spec, reply, err);
	else if ((r = create_begin(sp, id, req, &spec, err)) < 0)
		sk_error_prefix(err, "create %s", id);
out:
	spec_release(&spec);
	return r;
}

/* A sandbox whose command runs becomes one of the spawner's: reply gets how it started. */
static int sandbox_started(struct spawner *sp, const char *id, const struct spec *spec,
                           struct rt_sandbox *sb, int pooled, json_t *reply, struct sk_error *err)
{
	struct sp_sandbox *s = sandbox_new(sp, id, sb);
	if (!s) {
		rt_sandbox_destroy(sb, NULL);
		return sk_error_set(err, -ENOMEM, "out of memory");
	}
	s->started_ms = clock_now_ms();
	s->has_command = spec->argv != NULL;
	s->timeout_s = spec->timeout_s;
	s->capture_layer = spec->capture_layer;
	s->disk_mib = spec->disk_mib;
	if (spec->image_digest)
		snprintf(s->image, sizeof(s->image), "%s", spec->image_digest);
	if (spec->timeout_s > 0)
		s->deadline_mono = sp_now_mono() + (int64_t)(spec->timeout_s * 1000);
	record_write(s);
	json_object_set_new(reply, "pooled", json_boolean(pooled));
	json_object_set_new(reply, "started_ms", json_integer(s->started_ms));
	return 0;
}

int sp_sandbox_create(struct spawner *sp, const char *id, const struct spec *spec,
                      const char *rootfs, json_t *reply, struct sk_error *err)
{
	struct rt_sandbox *sb;
	int pooled = 0;
	int r = rt_pool_start(&sp->pool, spec, rootfs, &sb, &pooled, err);
	if (r < 0)
		return r;
	return sandbox_started(sp, id, spec, sb, pooled, reply, err);
}

static void starting_free(struct sp_starting *st)
{
	if (st->sb)
		rt_sandbox_destroy(st->sb, NULL);
	json_decref(st->held);
	json_decref(st->req_id);
	spec_release(&st->spec);
	free(st);
}

/* Begin a create of the default root: from the pool, or on the spot, without waiting for init
 * (it builds the root and starts the command while the loop serves others). *spec is taken. The
 * op is answered from sp_create_step. */
static int create_begin(struct spawner *sp, const char *id, json_t *req, struct spec *spec,
                        struct sk_error *err)
{
	struct sp_starting *st = calloc(1, sizeof(*st));
	if (!st)
		return sk_error_set(err, -ENOMEM, "out of memory");
	int r = rt_pool_start_begin(&sp->pool, spec, sp->rootfs, &st->sb, &st->pooled, err);
	if (r < 0) {
		free(st);
		return r;
	}
	snprintf(st->id, sizeof(st->id), "%s", id);
	st->req_id = json_incref(json_object_get(req, "req"));
	st->held = json_array();
	st->begun_mono = sp_now_mono();
	st->spec = *spec; /* taken */
	spec_init(spec);
	st->next = sp->starting;
	sp->starting = st;
	sp->nstarting++;
	return 1;
}

static int starting_unlink(struct spawner *sp, struct sp_starting *st)
{
	for (struct sp_starting **p = &sp->starting; *p; p = &(*p)->next) {
		if (*p == st) {
			*p = st->next;
			sp->nstarting--;
			return 0;
		}
	}
	return -ENOENT;
}

void sp_create_step(struct spawner *sp, struct sp_starting *st)
{
	struct sk_error err = {0};
	/* A failed make of the pool's is retried on the spot: st->sb may change. */
	int r = rt_pool_start_step(&sp->pool, &st->sb, &st->spec, &st->pooled, &err);
	if (r == 1)
		return;
	starting_unlink(sp, st);
	json_t *reply = json_object();
	if (r == 0) /* else the step destroyed it */
		r = sandbox_started(sp, st->id, &st->spec, TAKE_PTR(st->sb), st->pooled, reply,
		                    &err);
	if (r < 0)
		sk_error_prefix(&err, "create %s", st->id);
	sp_answer(sp, st->req_id, reply, r < 0 ? &err : NULL);
	/* Then what waited for it, as if it came now: the sandbox runs, or there is none. */
	size_t i;
	json_t *held;
	json_array_foreach (st->held, i, held)
		sp_request_replay(sp, held);
	starting_free(st);
}

int sp_create_hold(struct spawner *sp, json_t *req, const char *op, struct sk_error *err)
{
	const char *id = json_string_value(json_object_get(req, "id"));
	struct sp_starting *st = sp->starting;
	/* A hello waits on any: replayed when that one is answered, it waits on the next. */
	if (strcmp(op, "hello") != 0)
		while (st && !(id && !strcmp(st->id, id)))
			st = st->next;
	if (!st)
		return 0;
	if (json_array_size(st->held) >= SP_CREATE_MAX_HELD)
		return sk_error_set(err, -EAGAIN,
		                    "%s: %d requests wait for sandbox %s's create already", op,
		                    SP_CREATE_MAX_HELD, st->id);
	if (json_array_append(st->held, req) < 0)
		return sk_error_set(err, -ENOMEM, "out of memory");
	return 1;
}

void sp_creates_release(struct spawner *sp)
{
	while (sp->starting) {
		struct sp_starting *st = sp->starting;
		sp->starting = st->next;
		starting_free(st);
	}
	sp->nstarting = 0;
}

/* A terminate or remove of a create still waiting for its image: the create is dropped. */
static int pending_cancel(struct spawner *sp, json_t *req, json_t *reply, const char *why)
{
	const char *id = json_string_value(json_object_get(req, "id"));
	if (!id || !sp_pending_cancel(sp, id, why))
		return 0;
	json_object_set_new(reply, "state", json_string(sp_state_name(SP_TERMINATED)));
	json_object_set_new(reply, "exit_code", json_integer(-1));
	return 1;
}

int sp_op_terminate(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	if (pending_cancel(sp, req, reply, "was terminated"))
		return 0;
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0)
		return r;
	json_int_t grace = SPAWNER_DEFAULT_KILL_GRACE_MS;
	r = sp_json_int(req, "grace_ms", 0, SP_MAX_GRACE_MS, &grace, err);
	if (r < 0 && r != -ENOENT)
		return r;
	if (s->state != SP_RUNNING) {
		json_object_set_new(reply, "state", json_string(sp_state_name(s->state)));
		json_object_set_new(reply, "exit_code", json_integer(s->exit_code));
		return 0;
	}
	/* Its file ops are answered now and their helpers killed: no grace for them. */
	sp_files_cancel(sp, s);
	json_array_append(s->waiters, json_object_get(req, "req"));
	if (s->end_reason != SP_RUNNING)
		return 1; /* already ending */
	s->end_reason = SP_TERMINATED;
	rt_sandbox_signal_all(s->sb, SIGTERM);
	int64_t now = sp_now_mono();
	if (grace == 0) {
		sandbox_kill(s, SP_TERMINATED);
		return 1;
	}
	s->kill_mono = now + grace;
	if (!s->has_command) {
		/* An idle sandbox often has nothing but its init: then it ends now, not at the
		 * first check. */
		if (rt_sandbox_signal_all(s->sb, 0) == 0) {
			s->kill_mono = 0;
			sandbox_kill(s, SP_TERMINATED);
			return 1;
		}
		s->term_check_mono = now + SP_TERM_CHECK_MS;
	}
	return 1;
}

int sp_op_remove(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	if (pending_cancel(sp, req, reply, "was removed"))
		return 0;
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0)
		return r;
	sp_files_cancel(sp, s);
	if (s->state == SP_RUNNING) {
		sandbox_kill(s, SP_TERMINATED);
		sp_sandbox_end(sp, s); /* waits for init: it was just killed */
	}
	if (s->job) { /* its layer, or a snapshot, being stored: too late */
		int ending = !s->job->req_id;
		sp_job_cancel(sp, s, "was removed before its layer was stored");
		if (ending)
			sp_sandbox_end_done(sp, s);
	}
	stdin_end_all(sp, s, "was removed with its sandbox");
	for (struct sp_sandbox **p = &sp->sandboxes; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	r = rt_sandbox_destroy(TAKE_PTR(s->sb), err);
	if (s->image[0] && sp->store_ok) {
		char holder[64];
		sp_image_holder(sp, s->id, holder, sizeof(holder));
		img_tree_release(&sp->store, s->image, holder);
	}
	sp_sandbox_free(s);
	sp->oreads_due = 1; /* its readers get "not found" */
	if (r < 0)
		return sk_error_prefix(err, "remove");
	return 0;
}

int sp_op_usage(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0)
		return r;
	struct cg_usage u = s->usage;
	if (s->state == SP_RUNNING && (r = rt_sandbox_usage(s->sb, &u)) < 0)
		return sk_error_errno(err, r, "usage of %s", s->id);
	json_object_set_new(reply, "cpu_s", json_real((double)u.cpu_ns / 1e9));
	json_object_set_new(reply, "memory_bytes", json_integer((json_int_t)u.memory_bytes));
	json_object_set_new(reply, "memory_peak_bytes",
	                    json_integer((json_int_t)u.memory_peak_bytes));
	return 0;
}

int sp_op_tunnel_socket(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply;
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0)
		return r;
	if (s->state != SP_RUNNING)
		return sk_error_set(err, -EBUSY, "sandbox %s is %s: its ports are gone", s->id,
		                    sp_state_name(s->state));
	int fd;
	if ((r = rt_sandbox_socket(s->sb, AF_INET, SOCK_STREAM, 0, &fd, err)) < 0)
		return r;
	sp->reply_fd = fd;
	return 0;
}

/* Change a running sandbox's timeout_s (counted from its start, like at create). */
int sp_op_timeout(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply;
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0)
		return r;
	json_t *t = json_object_get(req, "timeout_s");
	double v = json_number_value(t);
	if (!json_is_number(t) || !(v > 0) || v > SPEC_MAX_TIMEOUT_S)
		return sk_error_set(err, -EINVAL, "timeout_s: expected seconds up to %.0f",
		                    SPEC_MAX_TIMEOUT_S);
	if (s->state != SP_RUNNING)
		return sk_error_set(err, -EBUSY, "sandbox %s has ended", s->id);
	s->timeout_s = v;
	int64_t left = s->started_ms + (int64_t)(v * 1000) - clock_now_ms();
	s->deadline_mono = sp_now_mono() + (left > 0 ? left : 0);
	record_write(s);
	return 0;
}

/* Take a detached sandbox of the instance found in its state under the API id its record
 * carries. One that ended while no spawner ran is finished now (released, recorded). */
static void sandbox_adopt(struct spawner *sp, const struct rt_sandbox_info *info)
{
	struct sk_error err = {0};
	struct rt_sandbox *sb;
	if (rt_sandbox_attach(&sp->rt, info->id, &sb, &err) < 0) {
		sp_log("error", "re-attach %s: %s", info->id, err.msg);
		return;
	}
	struct sp_sandbox *s = sandbox_new(sp, info->label, sb);
	if (!s) {
		rt_sandbox_close(sb);
		return;
	}
	json_t *rec = record_read(rt_sandbox_dir(sb));
	s->started_ms = json_integer_value(json_object_get(rec, "started_ms"));
	s->timeout_s = json_number_value(json_object_get(rec, "timeout_s"));
	s->has_command = json_is_true(json_object_get(rec, "has_command")) || !rec;
	s->capture_layer = json_is_true(json_object_get(rec, "capture_layer"));
	json_int_t disk = json_integer_value(json_object_get(rec, "disk_mib"));
	s->disk_mib = disk > 0 ? (uint64_t)disk : 0;
	const char *image = json_string_value(json_object_get(rec, "image_digest"));
	const char *layer = json_string_value(json_object_get(rec, "layer"));
	const char *layer_error = json_string_value(json_object_get(rec, "layer_error"));
	if (image && strlen(image) == IMG_DIGEST_HEX - 1)
		snprintf(s->image, sizeof(s->image), "%s", image);
	if (layer && strlen(layer) == IMG_DIGEST_HEX - 1)
		snprintf(s->layer, sizeof(s->layer), "%s", layer);
	if (layer_error)
		s->layer_error = strdup(layer_error);
	const char *state = json_string_value(json_object_get(rec, "state"));
	if (state) {
		s->state = state_parse(state);
		s->exit_code = (int)json_integer_value(json_object_get(rec, "exit_code"));
		s->ended_ms = json_integer_value(json_object_get(rec, "ended_ms"));
		s->usage.cpu_ns = json_integer_value(json_object_get(rec, "cpu_ns"));
		s->usage.memory_peak_bytes =
		    json_integer_value(json_object_get(rec, "memory_peak_bytes"));
	} else if (!rt_sandbox_running(sb)) {
		/* A build step that ended while no spawner ran: its layer went with it (gc at our
		 * start removed its subvolume; a tmpfs went with its mount namespace). */
		sandbox_reap(s);
		if (s->capture_layer && !s->layer_error)
			s->layer_error = strdup("its spawner was not running when it ended: its "
			                        "layer is gone");
		sandbox_release(s);
	} else if (s->timeout_s > 0 && s->started_ms > 0) {
		int64_t left = s->started_ms + (int64_t)(s->timeout_s * 1000) - clock_now_ms();
		s->deadline_mono = sp_now_mono() + (left > 0 ? left : 0);
	}
	json_decref(rec);
	sp_execs_adopt(sp, s);
}

int sp_sandboxes_attach(struct spawner *sp, struct sk_error *err)
{
	struct rt_sandbox_info *list = NULL;
	int n = rt_sandbox_list(&sp->rt, &list, err);
	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		/* Pooled sandboxes (ours, or a crashed spawner's) carry no label yet. */
		if (!list[i].label[0] || list[i].state == RT_STATE_FOREGROUND ||
		    !id_is_valid("sb-", list[i].label) || sp_sandbox_find(sp, list[i].label))
			continue;
		sandbox_adopt(sp, &list[i]);
	}
	free(list);
	return 0;
}

int sp_op_hello(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)req;
	if (!sp->attached) {
		int r = sp_sandboxes_attach(sp, err);
		if (r < 0)
			return r;
		sp->attached = 1;
		sp_holds_gc(sp);
	}
	json_t *list = json_array();
	for (struct sp_sandbox *s = sp->sandboxes; s; s = s->next) {
		int ended = s->state != SP_RUNNING;
		json_t *entry = json_pack("{s:s, s:s, s:o, s:I, s:o}", "id", s->id, "state",
		                          sp_state_name(s->state), "exit_code",
		                          ended ? json_integer(s->exit_code) : json_null(),
		                          "started_ms", (json_int_t)s->started_ms, "ended_ms",
		                          ended ? json_integer(s->ended_ms) : json_null());
		if (entry && s->layer[0])
			json_object_set_new(entry, "layer", json_string(s->layer));
		else if (entry && s->layer_error)
			json_object_set_new(entry, "layer_error", json_string(s->layer_error));
		json_array_append_new(list, entry);
	}
	json_object_set_new(reply, "version", json_integer(1));
	json_object_set_new(reply, "instance", json_string(sp->rt.instance));
	json_object_set_new(reply, "sandboxes", list);
	return 0;
}
