/* The worker link, server side: registration with reconcile, epochs, commands long-polled and
 * acknowledged, events that double as heartbeats. The same HTTP path serves a worker in this
 * process (skiffd dev) and one on another machine. */
#include <stdlib.h>
#include <string.h>

#include "../lib/clock.h"
#include "server.h"

#define POLL_MAX_COMMANDS 100
#define POLL_MAX_BYTES    (4 * 1024 * 1024) /* a reply holds at least one command */

struct worker_rec *link_worker_of(struct api_call *call, json_t *body)
{
	struct worker_rec *w = map_get(&call->srv->workers, call->req->params[0]);
	json_t *epoch = json_object_get(body, "epoch");
	if (!w) {
		api_reply_error(call, 404, "not_found", "worker %.64s is not registered",
		                call->req->params[0]);
		return NULL;
	}
	if (!json_is_integer(epoch) || json_integer_value(epoch) != w->row.epoch) {
		api_reply_error(call, 409, "conflict",
		                "epoch %lld is not the current one of %s: register again",
		                (long long)json_integer_value(epoch), w->row.id);
		return NULL;
	}
	w->last_seen_ms = clock_now_ms();
	w->connected = 1;
	return w;
}

/* The body of a poll or events call and the worker it comes from, checked; or NULL, replied. */
static struct worker_rec *worker_of_body(struct api_call *call, json_t **ret_body)
{
	json_t *body = api_body_object(call);
	if (!body)
		return NULL;
	struct worker_rec *w = link_worker_of(call, body);
	if (!w) {
		json_decref(body);
		return NULL;
	}
	*ret_body = body;
	return w;
}

static void command_free(struct command *c)
{
	json_decref(c->body);
	free(c);
}

/* Answer the worker's waiting poll with what is queued. */
static void poll_answer(struct worker_rec *w)
{
	struct http_request *req = w->poll;
	if (!req)
		return;
	w->poll = NULL;
	req->on_abort = NULL;
	server_timer_free(TAKE_PTR(w->poll_timer));
	json_t *cmds = json_array();
	int n = 0;
	size_t bytes = 0;
	for (struct command *c = w->queue; c && n < POLL_MAX_COMMANDS; c = c->next, n++) {
		size_t size = json_dumpb(c->body, NULL, 0, JSON_COMPACT);
		if (n > 0 && bytes + size > POLL_MAX_BYTES)
			break; /* the rest goes with the next poll */
		bytes += size;
		json_array_append(cmds, c->body);
	}
	api_reply_json(req->data, 200, json_pack("{s:o}", "commands", cmds));
}

int link_command(struct server *srv, struct worker_rec *w, const char *op, json_t *body)
{
	if (!body)
		return -ENOMEM;
	if (w->nqueue >= SERVER_MAX_PENDING_COMMANDS) {
		json_decref(body);
		return -ENOSPC;
	}
	struct command *c = calloc(1, sizeof(*c));
	if (!c || id_new("cm-", c->id, sizeof(c->id)) < 0) {
		free(c);
		json_decref(body);
		return -ENOMEM;
	}
	json_object_set_new(body, "id", json_string(c->id));
	json_object_set_new(body, "op", json_string(op));
	c->body = body;
	*w->queue_tail = c;
	w->queue_tail = &c->next;
	w->nqueue++;
	(void)srv;
	poll_answer(w);
	return 0;
}

static void commands_ack(struct worker_rec *w, json_t *acks)
{
	size_t i;
	json_t *v;
	json_array_foreach (acks, i, v) {
		const char *id = json_string_value(v);
		if (!id)
			continue;
		for (struct command **p = &w->queue; *p; p = &(*p)->next) {
			if (strcmp((*p)->id, id))
				continue;
			struct command *c = *p;
			*p = c->next;
			if (w->queue_tail == &c->next)
				w->queue_tail = p;
			w->nqueue--;
			command_free(c);
			break;
		}
	}
}

struct worker_rec *link_pick_worker(struct server *srv)
{
	struct worker_rec *best = NULL, *w;
	size_t best_load = 0, pos = 0;
	while ((w = map_next(&srv->workers, &pos))) {
		if (!w->connected)
			continue;
		size_t load = 0, spos = 0;
		struct sandbox_rec *sb;
		while ((sb = map_next(&srv->sandboxes, &spos)))
			load += sb->worker == w && !sandbox_ended(sb);
		if (!best || load < best_load)
			best = w, best_load = load;
	}
	return best;
}

/* A worker gone: what it ran is lost. */
static void worker_lost(struct server *srv, struct worker_rec *w)
{
	w->connected = 0;
	w->row.epoch++; /* what it says under the old epoch is refused: it registers again */
	file_calls_worker_lost(srv, w);
	tunnels_close(srv, NULL, w, 503, "its worker was lost");
	server_logf(srv, "level=warn msg=\"worker lost\" worker=%s", w->row.id);
	size_t pos = 0;
	struct sandbox_rec *sb;
	while ((sb = map_next(&srv->sandboxes, &pos))) {
		if (sb->worker != w || sandbox_ended(sb))
			continue;
		if (!strcmp(sb->row.state, "pending"))
			sandbox_create_failed(srv, sb, 503, "unavailable", "its worker was lost");
		else
			sandbox_set_ended(srv, sb, "lost", -1, 0);
	}
}

void link_check_workers(struct server *srv)
{
	int64_t lost_ms =
	    srv->cfg.worker_lost_ms > 0 ? srv->cfg.worker_lost_ms : SERVER_WORKER_LOST_MS;
	int64_t now = clock_now_ms();
	size_t pos = 0;
	struct worker_rec *w;
	while ((w = map_next(&srv->workers, &pos)))
		if (w->connected && !w->poll && now - w->last_seen_ms > lost_ms)
			worker_lost(srv, w);
}

static void poll_timeout(uv_timer_t *t)
{
	poll_answer(t->data);
}

/* The worker hung up during its long-poll (it died, or its connection did): no poll waits now,
 * so its silence from here on counts toward being lost. */
static void poll_aborted(struct http_request *req)
{
	struct api_call *call = req->data;
	struct worker_rec *w = call ? call->obj : NULL;
	if (w && w->poll == req)
		poll_answer(w); /* the reply is dropped; it frees the request */
}

void link_poll(struct http_request *req)
{
	struct api_call *call = req->data;
	json_t *body;
	struct worker_rec *w = worker_of_body(call, &body);
	if (!w)
		return;
	json_t *acks = json_object_get(body, "acks");
	if (json_is_array(acks))
		commands_ack(w, acks);
	json_decref(body);
	if (w->poll) /* a newer poll replaces the one waiting */
		poll_answer(w);
	w->poll = req;
	call->obj = w;
	req->on_abort = poll_aborted;
	if (w->queue || call->srv->stopping) {
		poll_answer(w);
		return;
	}
	w->poll_timer = server_timer_new(call->srv, poll_timeout, SERVER_POLL_HOLD_MS, w);
	if (!w->poll_timer)
		poll_answer(w);
}

/* At shutdown: answer every waiting poll. */
void link_release_polls(struct server *srv)
{
	size_t pos = 0;
	struct worker_rec *w;
	while ((w = map_next(&srv->workers, &pos)))
		poll_answer(w);
}

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

static int64_t num(json_t *o, const char *key)
{
	return (int64_t)json_integer_value(json_object_get(o, key));
}

static int status_of_code(const char *code)
{
	if (!strcmp(code, "invalid_argument"))
		return 400;
	if (!strcmp(code, "not_found"))
		return 404;
	if (!strcmp(code, "conflict"))
		return 409;
	if (!strcmp(code, "resource_exhausted"))
		return 429;
	if (!strcmp(code, "unavailable"))
		return 503;
	return 500;
}

static int valid_end_state(const char *s)
{
	static const char *const STATES[] = {"exited", "terminated", "timeout",
	                                     "oom",    "lost",       "failed"};
	for (size_t i = 0; i < ARRAY_SIZE(STATES); i++)
		if (!strcmp(s, STATES[i]))
			return 1;
	return 0;
}

static void event_apply(struct server *srv, struct worker_rec *w, json_t *ev)
{
	const char *type = str(ev, "type");
	if (!strcmp(type, "file_done")) {
		link_file_done(srv, w, ev);
		return;
	}
	if (!strcmp(type, "tunnel_failed")) {
		link_tunnel_failed(srv, w, ev);
		return;
	}
	struct sandbox_rec *sb = sandbox_find(srv, str(ev, "sandbox"));
	if (!sb || sb->worker != w) {
		char safe[40];
		server_logf(srv,
		            "level=warn msg=\"event for a sandbox the worker does not run\" "
		            "worker=%s type=\"%s\"",
		            w->row.id, log_safe(type, safe, sizeof(safe)));
		return;
	}
	if (!strcmp(type, "sandbox_started")) {
		if (sandbox_ended(
		        sb)) /* it failed here meanwhile (timed out): it must not run there */
			link_command(srv, w, "terminate",
			             json_pack("{s:s, s:i}", "sandbox", sb->row.id, "grace_ms", 0));
		else
			sandbox_set_running(srv, sb, num(ev, "started_ms"));
	} else if (!strcmp(type, "sandbox_failed")) {
		const char *code = str(ev, "code");
		sandbox_create_failed(srv, sb, status_of_code(code), code[0] ? code : "internal",
		                      str(ev, "message"));
	} else if (!strcmp(type, "sandbox_ended")) {
		const char *state = str(ev, "state");
		json_t *code = json_object_get(ev, "exit_code");
		/* A build step's sandbox: the layer the worker captured of it. */
		const char *layer = str(ev, "layer");
		if (img_digest_valid(layer))
			snprintf(sb->layer, sizeof(sb->layer), "%s", layer);
		snprintf(sb->layer_error, sizeof(sb->layer_error), "%s", str(ev, "layer_error"));
		sandbox_set_ended(srv, sb, valid_end_state(state) ? state : "lost",
		                  json_is_integer(code) ? (int)json_integer_value(code) : -1,
		                  num(ev, "ended_ms"));
	} else if (!strncmp(type, "exec_", 5)) {
		struct exec_rec *ex = map_get(&sb->execs, str(ev, "exec"));
		if (!ex)
			return;
		if (!strcmp(type, "exec_started")) {
			exec_set_started(srv, ex, num(ev, "started_ms"));
		} else if (!strcmp(type, "exec_ended")) {
			json_t *code = json_object_get(ev, "exit_code");
			json_t *out = json_object_get(ev, "output");
			const char *state = str(ev, "state");
			exec_set_ended(srv, ex, !strcmp(state, "lost") ? "lost" : "exited",
			               json_is_integer(code) ? (int)json_integer_value(code) : -1,
			               num(ev, "ended_ms"),
			               json_is_object(out) && ex->capture ? json_incref(out)
			                                                  : NULL);
		} else if (!strcmp(type, "exec_failed")) {
			char safe[256];
			server_logf(srv, "level=warn msg=\"exec failed\" exec=%s error=\"%s\"",
			            ex->row.id, log_safe(str(ev, "message"), safe, sizeof(safe)));
			exec_set_ended(srv, ex, "failed", -1, 0, NULL);
		}
	}
}

void link_events(struct http_request *req)
{
	struct api_call *call = req->data;
	json_t *body;
	struct worker_rec *w = worker_of_body(call, &body);
	if (!w)
		return;
	json_t *events = json_object_get(body, "events");
	size_t i;
	json_t *ev;
	json_array_foreach (events, i, ev)
		if (json_is_object(ev))
			event_apply(call->srv, w, ev);
	json_decref(body);
	api_reply_json(call, 200, json_object());
}

/* Registration. */
struct worker_write {
	struct api_call *call;
	struct worker_rec *w;
	struct store_worker row;
};

static int worker_write_fn(struct store_tx *tx, void *ud)
{
	struct worker_write *ww = ud;
	return store_worker_put(tx, &ww->row);
}

static void worker_write_done(void *ud, int rc)
{
	struct worker_write *ww = ud;
	if (rc < 0)
		api_reply_error(ww->call, 503, "unavailable", "the state store failed");
	else
		api_reply_json(ww->call, 200,
		               json_pack("{s:s, s:I, s:i, s:i}", "worker", ww->w->row.id, "epoch",
		                         (json_int_t)ww->w->row.epoch, "heartbeat_ms",
		                         SERVER_HEARTBEAT_MS, "poll_hold_ms", SERVER_POLL_HOLD_MS));
	store_worker_release(&ww->row);
	free(ww);
}

static json_t *reported(json_t *list, const char *id)
{
	size_t i;
	json_t *v;
	json_array_foreach (list, i, v)
		if (!strcmp(str(v, "id"), id))
			return v;
	return NULL;
}

static int create_queued(struct worker_rec *w, const char *sandbox_id)
{
	for (struct command *c = w->queue; c; c = c->next)
		if (!strcmp(str(c->body, "op"), "create") &&
		    !strcmp(str(c->body, "sandbox"), sandbox_id))
			return 1;
	return 0;
}

/* The sandbox's execs that the server believes run: when the worker has the sandbox, it is asked
 * after them (it reports those that ended, and those it doesn't know as lost; running ones end
 * later with an event); else they are lost now. */
static void execs_check(struct server *srv, struct worker_rec *w, struct sandbox_rec *sb,
                        int known_there)
{
	json_t *ids = known_there ? json_array() : NULL;
	size_t pos = 0;
	struct exec_rec *ex;
	while ((ex = map_next(&sb->execs, &pos))) {
		if (strcmp(ex->row.state, "running") && strcmp(ex->row.state, "pending"))
			continue;
		if (!ids || json_array_append_new(ids, json_string(ex->row.id)) < 0)
			exec_set_ended(srv, ex, "lost", -1, 0, NULL);
	}
	if (ids && json_array_size(ids))
		link_command(srv, w, "exec_check",
		             json_pack("{s:s, s:o}", "sandbox", sb->row.id, "execs", ids));
	else
		json_decref(ids);
}

/* What the server believes of this worker's sandboxes against what the worker says it runs. */
static void reconcile(struct server *srv, struct worker_rec *w, json_t *list)
{
	/* Execs and tunnels in flight did not survive whatever made the worker register again. */
	for (struct command **p = &w->queue; *p;) {
		struct command *c = *p;
		/* A tunnel waiting for the old worker process is answered at its deadline. */
		if (strcmp(str(c->body, "op"), "exec") && strcmp(str(c->body, "op"), "tunnel")) {
			p = &c->next;
			continue;
		}
		*p = c->next;
		if (w->queue_tail == &c->next)
			w->queue_tail = p;
		w->nqueue--;
		command_free(c);
	}
	size_t pos = 0;
	struct sandbox_rec *sb;
	while ((sb = map_next(&srv->sandboxes, &pos))) {
		if (strcmp(sb->row.worker_id, w->row.id))
			continue;
		sb->worker = w;
		json_t *r = reported(list, sb->row.id);
		/* The worker keeps an ended sandbox's exec records until it removes it. */
		execs_check(srv, w, sb, r && !(sandbox_ended(sb) && sb->removed));
		if (sandbox_ended(sb)) {
			/* Ended here (deleted, lost, failed, timed out) but running there: end it
			 * there too; a timed-out one keeps its output until DELETE, as at its
			 * deadline. */
			if (r && !strcmp(str(r, "state"), "running"))
				link_command(
				    srv, w, "terminate",
				    json_pack("{s:s, s:i, s:b}", "sandbox", sb->row.id, "grace_ms",
				              0, "remove",
				              sb->removed || strcmp(sb->row.state, "timeout")));
			else if (r && sb->removed)
				link_command(srv, w, "remove",
				             json_pack("{s:s}", "sandbox", sb->row.id));
			continue;
		}
		if (!r) {
			if (!create_queued(w, sb->row.id)) {
				if (!strcmp(sb->row.state, "pending"))
					sandbox_create_failed(srv, sb, 503, "unavailable",
					                      "the worker restarted");
				else
					sandbox_set_ended(srv, sb, "lost", -1, 0);
			}
			continue;
		}
		const char *state = str(r, "state");
		if (!strcmp(state, "running")) {
			sandbox_set_running(srv, sb, num(r, "started_ms"));
		} else {
			json_t *code = json_object_get(r, "exit_code");
			sandbox_set_running(srv, sb, num(r, "started_ms"));
			sandbox_set_ended(srv, sb, valid_end_state(state) ? state : "lost",
			                  json_is_integer(code) ? (int)json_integer_value(code)
			                                        : -1,
			                  num(r, "ended_ms"));
		}
	}
	/* What the worker runs that the server does not know: remove it. */
	size_t i;
	json_t *v;
	json_array_foreach (list, i, v) {
		const char *id = str(v, "id");
		if (sandbox_find(srv, id))
			continue;
		json_t *cmd = json_pack("{s:s}", "sandbox", id);
		if (cmd)
			link_command(srv, w, "remove", cmd);
	}
}

void link_register(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	json_t *body = api_body_object(call);
	if (!body)
		return;
	json_t *version = json_object_get(body, "version");
	const char *name = str(body, "name");
	json_t *list = json_object_get(body, "sandboxes");
	if (!json_is_integer(version) || json_integer_value(version) != LINK_VERSION) {
		api_reply_error(call, 400, "invalid_argument",
		                "link version: this server speaks %d", LINK_VERSION);
		goto out;
	}
	if (!name[0] || strlen(name) >= STORE_NAME_BYTES || (list && !json_is_array(list))) {
		api_reply_error(call, 400, "invalid_argument", "name and sandboxes are required");
		goto out;
	}
	struct worker_rec *w = NULL, *it;
	size_t pos = 0;
	while ((it = map_next(&srv->workers, &pos)))
		if (!strcmp(it->row.name, name))
			w = it;
	if (!w) {
		w = calloc(1, sizeof(*w));
		if (!w || id_new("wk-", w->row.id, sizeof(w->row.id)) < 0 ||
		    map_put(&srv->workers, w->row.id, w) < 0) {
			free(w);
			api_reply_error(call, 503, "unavailable", "out of memory");
			goto out;
		}
		snprintf(w->row.name, sizeof(w->row.name), "%s", name);
		w->row.registered_ms = clock_now_ms();
		w->queue_tail = &w->queue;
	}
	if (w->poll)
		poll_answer(w);
	w->row.epoch++;
	w->row.last_seen_ms = w->last_seen_ms = clock_now_ms();
	w->connected = 1;
	json_decref(w->capacity);
	w->capacity = json_incref(json_object_get(body, "capacity"));
	free(w->row.info_json);
	json_t *info = json_pack("{s:O?, s:O?}", "capacity", json_object_get(body, "capacity"),
	                         "labels", json_object_get(body, "labels"));
	w->row.info_json = info ? json_dumps(info, JSON_COMPACT) : NULL;
	json_decref(info);
	server_logf(srv,
	            "level=info msg=\"worker registered\" worker=%s name=%s epoch=%lld "
	            "sandboxes=%zu",
	            w->row.id, w->row.name, (long long)w->row.epoch, json_array_size(list));
	reconcile(srv, w, list ? list : json_array());

	struct worker_write *ww = calloc(1, sizeof(*ww));
	if (!ww) {
		api_reply_error(call, 503, "unavailable", "out of memory");
		goto out;
	}
	ww->call = call;
	ww->w = w;
	ww->row = w->row;
	ww->row.info_json = w->row.info_json ? strdup(w->row.info_json) : NULL;
	if (server_persist(srv, worker_write_fn, worker_write_done, ww) < 0) {
		store_worker_release(&ww->row);
		free(ww);
		api_reply_error(call, 503, "unavailable", "the state store is unavailable");
	}
out:
	json_decref(body);
}

void api_workers_list(struct http_request *req)
{
	struct api_call *call = req->data;
	json_t *items = json_array();
	size_t pos = 0;
	struct worker_rec *w;
	while ((w = map_next(&call->srv->workers, &pos)))
		json_array_append_new(
		    items, json_pack("{s:s, s:s, s:I, s:b, s:o, s:O?}", "id", w->row.id, "name",
		                     w->row.name, "epoch", (json_int_t)w->row.epoch, "connected",
		                     w->connected, "last_seen_at", api_time(w->last_seen_ms),
		                     "capacity", w->capacity));
	api_reply_json(call, 200, json_pack("{s:o, s:n}", "items", items, "next_cursor"));
}
