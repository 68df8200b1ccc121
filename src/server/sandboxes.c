/* The sandbox and exec model: their JSON, how they change when the worker reports, and the calls
 * waiting for them to change. */
#include <stdlib.h>
#include <string.h>

#include "../lib/clock.h"
#include "server.h"

struct sandbox_rec *sandbox_find(struct server *srv, const char *id)
{
	return map_get(&srv->sandboxes, id);
}

int sandbox_ended(const struct sandbox_rec *sb)
{
	return strcmp(sb->row.state, "pending") && strcmp(sb->row.state, "running");
}

static void exec_rec_free(struct exec_rec *ex)
{
	store_exec_release(&ex->row);
	json_decref(ex->output);
	free(ex);
}

void sandbox_rec_free(struct sandbox_rec *sb)
{
	if (!sb)
		return;
	size_t pos = 0;
	struct exec_rec *ex;
	while ((ex = map_next(&sb->execs, &pos)))
		exec_rec_free(ex);
	map_release(&sb->execs);
	json_decref(sb->spec);
	json_decref(sb->tags);
	store_sandbox_release(&sb->row);
	free(sb);
}

static json_t *spec_field(const struct sandbox_rec *sb, const char *key)
{
	json_t *v = json_object_get(sb->spec, key);
	return v ? json_incref(v) : json_null();
}

json_t *sandbox_json(const struct sandbox_rec *sb)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(sb->row.id));
	json_object_set_new(o, "workspace", json_string(sb->row.workspace_id));
	json_object_set_new(o, "name", sb->row.name[0] ? json_string(sb->row.name) : json_null());
	json_object_set_new(o, "state", json_string(sb->row.state));
	json_object_set_new(o, "exit_code",
	                    sb->row.exit_code >= 0 ? json_integer(sb->row.exit_code) : json_null());
	static const char *const FIELDS[] = {
	    "image",      "command",  "env",           "workdir",   "cpu",
	    "memory_mib", "disk_mib", "pids",          "timeout_s", "idle_timeout_s",
	    "network",    "ports",    "cidr_allowlist"};
	for (size_t i = 0; i < ARRAY_SIZE(FIELDS); i++)
		json_object_set_new(o, FIELDS[i], spec_field(sb, FIELDS[i]));
	if (!json_is_array(json_object_get(o, "ports"))) /* made before ports existed */
		json_object_set_new(o, "ports", json_array());
	if (!json_is_array(json_object_get(o, "cidr_allowlist")))
		json_object_set_new(o, "cidr_allowlist", json_array());
	json_object_set(o, "tags", sb->tags);
	json_object_set_new(o, "created_at", api_time(sb->row.created_ms));
	json_object_set_new(o, "started_at", api_time(sb->row.started_ms));
	json_object_set_new(o, "ended_at", api_time(sb->row.ended_ms));
	json_object_set_new(o, "worker",
	                    sb->row.worker_id[0] ? json_string(sb->row.worker_id) : json_null());
	return o;
}

json_t *exec_json(const struct exec_rec *ex)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(ex->row.id));
	json_object_set_new(o, "sandbox", json_string(ex->row.sandbox_id));
	json_object_set_new(o, "state", json_string(ex->row.state));
	json_object_set_new(o, "exit_code",
	                    ex->row.exit_code >= 0 ? json_integer(ex->row.exit_code) : json_null());
	/* command_json holds the exec body as accepted; its command is what is shown. */
	json_t *body = ex->row.command_json ? json_loads(ex->row.command_json, 0, NULL) : NULL;
	json_t *cmd = json_object_get(body, "command");
	json_object_set(o, "command", cmd ? cmd : json_null());
	json_decref(body);
	json_object_set_new(o, "created_at", api_time(ex->row.created_ms));
	json_object_set_new(o, "started_at", api_time(ex->row.started_ms));
	json_object_set_new(o, "ended_at", api_time(ex->row.ended_ms));
	if (ex->output)
		json_object_update(o, ex->output);
	return o;
}

/* Persisting a row: the store gets a copy, so memory may change meanwhile. */
struct sandbox_write {
	struct server *srv;
	struct store_sandbox row;
	struct sandbox_rec *sb;
	void (*then)(struct server *srv, struct sandbox_rec *sb, int rc);
};

static int sandbox_write_fn(struct store_tx *tx, void *ud)
{
	struct sandbox_write *w = ud;
	return store_sandbox_put(tx, &w->row);
}

static void sandbox_write_done(void *ud, int rc)
{
	struct sandbox_write *w = ud;
	if (w->then)
		w->then(w->srv, w->sb, rc);
	store_sandbox_release(&w->row);
	free(w);
}

int sandbox_persist(struct server *srv, struct sandbox_rec *sb,
                    void (*then)(struct server *srv, struct sandbox_rec *sb, int rc))
{
	struct sandbox_write *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->srv = srv;
	w->sb = sb;
	w->then = then;
	w->row = sb->row;
	w->row.spec_json = json_dumps(sb->spec, JSON_COMPACT);
	w->row.tags_json = json_dumps(sb->tags, JSON_COMPACT);
	int r = -ENOMEM;
	if (w->row.spec_json && w->row.tags_json)
		r = server_persist(srv, sandbox_write_fn, sandbox_write_done, w);
	if (r < 0) {
		store_sandbox_release(&w->row);
		free(w);
	}
	return r;
}

struct exec_write {
	struct server *srv;
	struct store_exec row;
	struct exec_rec *ex;
	void (*then)(struct server *srv, struct exec_rec *ex, int rc);
};

static int exec_write_fn(struct store_tx *tx, void *ud)
{
	struct exec_write *w = ud;
	return store_exec_put(tx, &w->row);
}

static void exec_write_done(void *ud, int rc)
{
	struct exec_write *w = ud;
	if (w->then)
		w->then(w->srv, w->ex, rc);
	store_exec_release(&w->row);
	free(w);
}

int exec_persist(struct server *srv, struct exec_rec *ex,
                 void (*then)(struct server *srv, struct exec_rec *ex, int rc))
{
	struct exec_write *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->srv = srv;
	w->ex = ex;
	w->then = then;
	w->row = ex->row;
	w->row.command_json = ex->row.command_json ? strdup(ex->row.command_json) : NULL;
	int r = server_persist(srv, exec_write_fn, exec_write_done, w);
	if (r < 0) {
		store_exec_release(&w->row);
		free(w);
	}
	return r;
}

/* Waiters. */
static void waiter_timeout(uv_timer_t *t);
static void waiter_unlink(struct waiter *w);

/* The client went away: the waiter goes now (what it waited for goes on). */
static void waiter_aborted(struct http_request *req)
{
	struct api_call *call = req->data;
	struct waiter *w = call ? call->waiter : NULL;
	if (!w)
		return;
	waiter_unlink(w);
	free(w);
	api_reply_error(call, 499, "cancelled", "the client went away"); /* dropped; frees req */
}

void waiter_add(struct server *srv, struct waiter **list, struct api_call *call, int kind,
                void *obj, double timeout_s)
{
	if (srv->stopping) {
		api_reply_error(call, 503, "unavailable", "the server is stopping");
		return;
	}
	struct waiter *w = calloc(1, sizeof(*w));
	uv_timer_t *t =
	    w ? server_timer_new(srv, waiter_timeout, (uint64_t)(timeout_s * 1000), w) : NULL;
	if (!t) {
		free(w);
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	w->call = call;
	w->kind = kind;
	w->obj = obj;
	w->timer = t;
	w->list = list;
	w->next = *list;
	*list = w;
	call->waiter = w;
	call->req->on_abort = waiter_aborted;
}

static void waiter_unlink(struct waiter *w)
{
	for (struct waiter **p = w->list; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			break;
		}
	server_timer_free(w->timer);
}

/* Answer one waiter with the object's present state. */
static void waiter_answer(struct waiter *w, int timed_out)
{
	struct api_call *call = w->call;
	call->waiter = NULL;
	call->req->on_abort = NULL;
	struct sandbox_rec *sb = w->obj;
	struct exec_rec *ex = w->obj;
	switch (w->kind) {
	case WAIT_CREATE:
		if (timed_out) {
			api_reply_error(call, 504, "deadline_exceeded",
			                "sandbox %s did not start within %d s", sb->row.id,
			                SERVER_CREATE_TIMEOUT_MS / 1000);
		} else if (!strcmp(sb->row.state, "failed")) {
			api_reply_error(call, sb->fail_status ? sb->fail_status : 500,
			                sb->fail_code[0] ? sb->fail_code : "internal",
			                "sandbox %s failed to start: %s", sb->row.id,
			                sb->fail_message);
		} else {
			idem_record(call, 201, sandbox_json(sb));
		}
		break;
	case WAIT_ENDED:
	case WAIT_TERMINATE: api_reply_json(call, 200, sandbox_json(sb)); break;
	case WAIT_EXEC_STARTED:
		if (timed_out)
			api_reply_error(call, 504, "deadline_exceeded",
			                "exec %s did not start in time", ex->row.id);
		else
			api_reply_json(call, 201, exec_json(ex));
		break;
	case WAIT_EXEC_ENDED:
		if (timed_out)
			api_reply_error(call, 504, "deadline_exceeded",
			                "exec %s still runs; its state is at "
			                "/v1/sandboxes/%s/execs/%s",
			                ex->row.id, ex->row.sandbox_id, ex->row.id);
		else
			api_reply_json(call, 200, exec_json(ex));
		break;
	}
	free(w);
}

static void waiter_timeout(uv_timer_t *t)
{
	struct waiter *w = t->data;
	waiter_unlink(w);
	struct sandbox_rec *sb = w->obj;
	if (w->kind == WAIT_CREATE && !strcmp(sb->row.state, "pending"))
		sandbox_create_failed(w->call->srv, sb, 504, "deadline_exceeded",
		                      "the worker did not start it in time");
	if (w->kind == WAIT_TERMINATE && !sandbox_ended(sb))
		sb->terminating = 0; /* the next DELETE asks the worker again */
	waiter_answer(w, w->kind != WAIT_ENDED);
}

void waiters_wake(struct server *srv, struct waiter **list, int kind)
{
	(void)srv;
	struct waiter **p = list;
	while (*p) {
		struct waiter *w = *p;
		if (kind && w->kind != kind) {
			p = &w->next;
			continue;
		}
		*p = w->next;
		server_timer_free(w->timer);
		waiter_answer(w, 0);
	}
}

/* State changes reported by the worker. Each is persisted before the waiters are answered. */
static void sandbox_changed(struct server *srv, struct sandbox_rec *sb, int rc)
{
	(void)rc; /* logged by server_persist; memory is what we answer from */
	if (strcmp(sb->row.state, "pending"))
		waiters_wake(srv, &sb->waiters, WAIT_CREATE);
	if (sandbox_ended(sb)) {
		waiters_wake(srv, &sb->waiters, 0);
		size_t pos = 0;
		struct exec_rec *ex;
		while ((ex = map_next(&sb->execs, &pos)))
			if (!strcmp(ex->row.state, "running") || !strcmp(ex->row.state, "pending"))
				exec_set_ended(srv, ex, "lost", -1, sb->row.ended_ms, NULL);
	}
}

void sandbox_set_running(struct server *srv, struct sandbox_rec *sb, int64_t started_ms)
{
	if (strcmp(sb->row.state, "pending"))
		return;
	snprintf(sb->row.state, sizeof(sb->row.state), "running");
	sb->row.started_ms = started_ms ? started_ms : clock_now_ms();
	if (sb->row.started_ms >= sb->row.created_ms)
		metrics_sandbox_started(srv,
		                        (double)(sb->row.started_ms - sb->row.created_ms) / 1e3);
	double timeout = json_number_value(json_object_get(sb->spec, "timeout_s"));
	if (timeout > 0)
		sb->row.deadline_ms = sb->row.started_ms + (int64_t)(timeout * 1000);
	sandbox_touch(srv, sb); /* the idle clock starts */
	sandbox_timeouts_update(srv, sb);
	if (sandbox_persist(srv, sb, sandbox_changed) < 0)
		sandbox_changed(srv, sb, -ENOMEM);
}

void sandbox_set_ended(struct server *srv, struct sandbox_rec *sb, const char *state, int exit_code,
                       int64_t ended_ms)
{
	if (sandbox_ended(sb))
		return;
	/* Once its deadline passed here, the end is that timeout however the worker saw it: the
	 * server's terminate, or the worker lost. */
	if (sb->timeout_end_ms && (!strcmp(state, "terminated") || !strcmp(state, "lost"))) {
		state = "timeout";
		exit_code = 124;
	}
	snprintf(sb->row.state, sizeof(sb->row.state), "%s", state);
	sb->row.exit_code = exit_code;
	sb->row.ended_ms = ended_ms ? ended_ms : clock_now_ms();
	server_logf(srv, "level=info msg=\"sandbox ended\" sandbox=%s state=%s exit_code=%d",
	            sb->row.id, state, exit_code);
	sandbox_timeouts_update(srv, sb);
	tunnels_close(srv, sb->row.id, NULL, 502, "the sandbox ended");
	if (sandbox_persist(srv, sb, sandbox_changed) < 0)
		sandbox_changed(srv, sb, -ENOMEM);
	if (sb->build)
		builder_sandbox_ended(srv, sb);
}

void sandbox_create_failed(struct server *srv, struct sandbox_rec *sb, int status, const char *code,
                           const char *message)
{
	if (sandbox_ended(sb))
		return;
	sb->fail_status = status;
	snprintf(sb->fail_code, sizeof(sb->fail_code), "%s", code);
	snprintf(sb->fail_message, sizeof(sb->fail_message), "%s", message);
	char safe[256];
	server_logf(srv, "level=warn msg=\"sandbox failed to start\" sandbox=%s error=\"%s\"",
	            sb->row.id, log_safe(message, safe, sizeof(safe)));
	sandbox_set_ended(srv, sb, "failed", -1, 0);
}

static void exec_changed(struct server *srv, struct exec_rec *ex, int rc)
{
	(void)rc;
	if (strcmp(ex->row.state, "pending"))
		waiters_wake(srv, &ex->waiters, WAIT_EXEC_STARTED);
	if (strcmp(ex->row.state, "pending") && strcmp(ex->row.state, "running")) {
		waiters_wake(srv, &ex->waiters, 0);
		/* The output was for the ?wait=true reply only: it is not kept. */
		json_decref(ex->output);
		ex->output = NULL;
	}
}

void exec_set_started(struct server *srv, struct exec_rec *ex, int64_t started_ms)
{
	if (strcmp(ex->row.state, "pending"))
		return;
	snprintf(ex->row.state, sizeof(ex->row.state), "running");
	ex->row.started_ms = started_ms ? started_ms : clock_now_ms();
	if (exec_persist(srv, ex, exec_changed) < 0)
		exec_changed(srv, ex, -ENOMEM);
}

void exec_set_ended(struct server *srv, struct exec_rec *ex, const char *state, int exit_code,
                    int64_t ended_ms, json_t *output)
{
	if (strcmp(ex->row.state, "pending") && strcmp(ex->row.state, "running")) {
		json_decref(output);
		return;
	}
	struct sandbox_rec *sb = ex->sb;
	if (sb->execs_live && --sb->execs_live == 0) {
		sandbox_touch(srv, sb); /* idle from the end of its last exec */
		sandbox_timeouts_update(srv, sb);
	}
	if (!ex->row.started_ms)
		ex->row.started_ms = ended_ms ? ended_ms : clock_now_ms();
	snprintf(ex->row.state, sizeof(ex->row.state), "%s", state);
	ex->row.exit_code = exit_code;
	ex->row.ended_ms = ended_ms ? ended_ms : clock_now_ms();
	json_decref(ex->output);
	ex->output = output;
	if (exec_persist(srv, ex, exec_changed) < 0)
		exec_changed(srv, ex, -ENOMEM);
}

/* At shutdown: answer every waiting call. */
static void waiters_cancel(struct waiter **list)
{
	while (*list) {
		struct waiter *w = *list;
		*list = w->next;
		server_timer_free(w->timer);
		w->call->waiter = NULL;
		w->call->req->on_abort = NULL;
		api_reply_error(w->call, 503, "unavailable", "the server is stopping");
		free(w);
	}
}

void waiters_cancel_all(struct server *srv)
{
	size_t pos = 0;
	struct sandbox_rec *sb;
	while ((sb = map_next(&srv->sandboxes, &pos))) {
		size_t epos = 0;
		struct exec_rec *ex;
		while ((ex = map_next(&sb->execs, &epos)))
			waiters_cancel(&ex->waiters);
		waiters_cancel(&sb->waiters);
	}
}
