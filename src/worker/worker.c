/* The worker's loop: the spawner on one side (framed JSON over a socket), the server on the other
 * (register, long-poll for commands, post events). */
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../http/http.h"
#include "../lib/clock.h"
#include "../lib/encoding.h"
#include "../lib/id.h"
#include "../lib/logfmt.h"
#include "../server/server.h"
#include "spawner.h"

struct spawn_call; /* a request to the spawner waiting for its reply */
typedef void (*spawn_cb)(struct worker *w, json_t *reply, void *ud);

struct spawn_call {
	struct spawn_call *next;
	long req;
	spawn_cb cb;
	void *ud;
};

struct capture {
	struct capture *next;
	char exec[ID_MAX_BYTES];
};

struct tunnel;

struct worker {
	uv_loop_t *loop;
	struct worker_config cfg;
	char name[64], secret[128], host[64];
	uv_pipe_t spawner;
	char *rbuf;
	size_t rlen, rcap;
	long next_req;
	struct spawn_call *calls;
	struct http_client *poll_client, *event_client;
	char id[ID_MAX_BYTES];
	long long epoch;
	int registered, registering, polling, posting, closing;
	json_t *acks;          /* command ids to acknowledge with the next poll */
	json_t *events;        /* to post */
	json_t *posting_batch; /* posted, not yet answered */
	json_t *recent;        /* command ids carried out lately (object used as a set) */
	json_t *recent_order;
	struct capture *captures; /* execs whose output goes back with their end */
	uv_tcp_t *passed;         /* a socket passed with the spawner's reply being handled */
	struct tunnel *tunnels;   /* being set up or relaying */
	uv_timer_t heartbeat, retry;
	int heartbeat_ms;
	void (*done)(void *);
	void *done_ud;
	int handles_open;
};

static void wlog(struct worker *w, const char *fmt, ...) _printf_(2, 3);
static void wlog(struct worker *w, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	logfmt_vline(w->cfg.log, "component=worker ", fmt, ap);
	va_end(ap);
}

/* The spawner. */
static void spawner_write_done(uv_write_t *wr, int status)
{
	(void)status;
	free(wr->data);
	free(wr);
}

static int spawner_send_json(struct worker *w, json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	if (!text)
		return -ENOMEM;
	size_t len = strlen(text);
	if (len > SPAWNER_MAX_MSG_BYTES) {
		free(text);
		return -EMSGSIZE;
	}
	char *frame = malloc(len + 4);
	uv_write_t *wr = malloc(sizeof(*wr));
	if (!frame || !wr) {
		free(frame);
		free(wr);
		free(text);
		return -ENOMEM;
	}
	uint32_t be = htonl((uint32_t)len);
	memcpy(frame, &be, 4);
	memcpy(frame + 4, text, len);
	free(text);
	wr->data = frame;
	uv_buf_t buf = uv_buf_init(frame, (unsigned)(len + 4));
	int r = uv_write(wr, (uv_stream_t *)&w->spawner, &buf, 1, spawner_write_done);
	if (r < 0) {
		free(frame);
		free(wr);
	}
	return r;
}

/* Send op to the spawner. cb runs exactly once: with the reply (an error reply too), or with NULL
 * when the request could not be sent or the spawner is gone (then perhaps before spawn returns).
 * Steals msg (which may be NULL: a failed json_pack). */
static void spawn(struct worker *w, json_t *msg, spawn_cb cb, void *ud)
{
	struct spawn_call *c = msg ? calloc(1, sizeof(*c)) : NULL;
	if (!c) {
		json_decref(msg);
		cb(w, NULL, ud);
		return;
	}
	c->req = ++w->next_req;
	c->cb = cb;
	c->ud = ud;
	json_object_set_new(msg, "req", json_integer(c->req));
	int r = w->closing ? -ESHUTDOWN : spawner_send_json(w, msg);
	json_decref(msg);
	if (r < 0) {
		free(c);
		wlog(w, "level=error msg=\"can't send to the spawner\" errno=%d", -r);
		cb(w, NULL, ud);
		return;
	}
	c->next = w->calls;
	w->calls = c;
}

static void event_queue(struct worker *w, json_t *ev);
static int reply_ok(json_t *reply);
static void spawner_event(struct worker *w, json_t *msg);

/* The socket the spawner passed with its last frame, as a TCP handle; NULL when none came. */
static uv_tcp_t *spawner_passed_socket(struct worker *w)
{
	if (uv_pipe_pending_count(&w->spawner) == 0) {
		wlog(w, "level=error msg=\"a spawner reply said it passed a socket; none came\"");
		return NULL;
	}
	uv_tcp_t *tcp = malloc(sizeof(*tcp));
	/* Only accepting takes it off libuv's queue: one left there would be taken for the next
	 * reply's, a socket into another sandbox. */
	if (!tcp)
		abort();
	uv_tcp_init(w->loop, tcp);
	if (uv_accept((uv_stream_t *)&w->spawner, (uv_stream_t *)tcp) < 0) {
		http_tcp_free(tcp);
		return NULL;
	}
	return tcp;
}

static void spawner_message(struct worker *w, const char *data, size_t len)
{
	json_t *msg = json_loadb(data, len, 0, NULL);
	if (!json_is_object(msg)) {
		wlog(w, "level=error msg=\"unreadable message from the spawner\"");
		json_decref(msg);
		return;
	}
	if (json_object_get(msg, "event")) {
		spawner_event(w, msg);
		json_decref(msg);
		return;
	}
	/* A socket came with this reply (SCM_RIGHTS on the pipe, queued by libuv in order): take
	 * it now, whoever waits for the reply, so that the next one is not mistaken for it. */
	if (json_is_true(json_object_get(msg, "fd")))
		w->passed = spawner_passed_socket(w);
	long req = (long)json_integer_value(json_object_get(msg, "req"));
	for (struct spawn_call **p = &w->calls; *p; p = &(*p)->next) {
		if ((*p)->req != req)
			continue;
		struct spawn_call *c = *p;
		*p = c->next;
		c->cb(w, msg, c->ud);
		free(c);
		break;
	}
	http_tcp_free(TAKE_PTR(w->passed)); /* nobody took it */
	json_decref(msg);
}

static void spawner_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct worker *w = h->data;
	(void)suggested;
	if (w->rcap - w->rlen < 65536) {
		size_t cap = w->rcap ? w->rcap * 2 : 131072;
		char *p = realloc(w->rbuf, cap);
		if (!p) {
			*buf = uv_buf_init(NULL, 0);
			return;
		}
		w->rbuf = p;
		w->rcap = cap;
	}
	*buf = uv_buf_init(w->rbuf + w->rlen, (unsigned)(w->rcap - w->rlen));
}

static void spawner_gone(struct worker *w)
{
	wlog(w, "level=error msg=\"the spawner is gone\"");
	uv_read_stop((uv_stream_t *)&w->spawner);
	while (w->calls) {
		struct spawn_call *c = w->calls;
		w->calls = c->next;
		c->cb(w, NULL, c->ud);
		free(c);
	}
}

static void spawner_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct worker *w = s->data;
	(void)buf;
	if (n < 0) {
		spawner_gone(w);
		return;
	}
	w->rlen += (size_t)n;
	size_t off = 0;
	while (w->rlen - off >= 4) {
		uint32_t be;
		memcpy(&be, w->rbuf + off, 4);
		size_t len = ntohl(be);
		if (len > SPAWNER_MAX_MSG_BYTES) {
			spawner_gone(w);
			return;
		}
		if (w->rlen - off < 4 + len)
			break;
		spawner_message(w, w->rbuf + off + 4, len);
		off += 4 + len;
	}
	memmove(w->rbuf, w->rbuf + off, w->rlen - off);
	w->rlen -= off;
}

/* Events to the server: queued, posted one request at a time, and at least every heartbeat. */
static void events_post(struct worker *w);

static void event_queue(struct worker *w, json_t *ev)
{
	if (json_array_size(w->events) >= WORKER_MAX_EVENTS_QUEUED) {
		wlog(w, "level=error msg=\"event queue full: dropping an event\"");
		json_decref(ev);
		return;
	}
	json_array_append_new(w->events, ev);
	events_post(w);
}

static void do_register(struct worker *w);

static void retry_fire(uv_timer_t *t);

static void events_posted(void *ud, int err, int status, const char *body, size_t len)
{
	struct worker *w = ud;
	(void)body, (void)len;
	w->posting = 0;
	json_t *batch = w->posting_batch;
	w->posting_batch = NULL;
	if (w->closing) {
		json_decref(batch);
		return;
	}
	if (err == 0 && status == 409) {
		/* A new epoch: the server reconciles from what the spawner reports. */
		json_decref(batch);
		w->registered = 0;
		do_register(w);
		return;
	}
	if (err == 0 && status == 413) {
		wlog(w,
		     "level=error msg=\"the server refused an event batch as too large: dropped\" "
		     "events=%zu",
		     json_array_size(batch));
		json_decref(batch);
	} else if (err < 0 || status != 200) {
		/* Not delivered: the batch goes back in front, and is sent again shortly. */
		wlog(w, "level=warn msg=\"posting events failed\" err=%d status=%d", err, status);
		json_array_extend(batch, w->events);
		json_decref(w->events);
		w->events = batch;
		uv_timer_start(&w->retry, retry_fire, WORKER_RETRY_MS, 0);
		return;
	} else {
		json_decref(batch);
	}
	if (json_array_size(w->events))
		events_post(w);
}

/* Post the queued events, in order, as many as fit in WORKER_EVENTS_BATCH_BYTES (at least one). */
static void events_post(struct worker *w)
{
	if (!w->registered || w->posting || w->closing)
		return;
	json_t *batch = json_array();
	size_t bytes = 0;
	while (batch && json_array_size(w->events)) {
		json_t *ev = json_array_get(w->events, 0);
		size_t n = json_dumpb(ev, NULL, 0, JSON_COMPACT);
		if (json_array_size(batch) && bytes + n > WORKER_EVENTS_BATCH_BYTES)
			break;
		json_array_append(batch, ev);
		json_array_remove(w->events, 0);
		bytes += n;
	}
	json_t *body =
	    batch ? json_pack("{s:I, s:O}", "epoch", (json_int_t)w->epoch, "events", batch) : NULL;
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!text) {
		if (batch) {
			json_array_extend(batch, w->events);
			json_decref(w->events);
			w->events = batch;
		}
		uv_timer_start(&w->retry, retry_fire, WORKER_RETRY_MS, 0);
		return;
	}
	w->posting_batch = batch;
	char path[128], auth[200];
	snprintf(path, sizeof(path), "/internal/v1/workers/%s/events", w->id);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", w->secret);
	const char *headers[] = {auth, "Content-Type: application/json", NULL};
	if (http_client_request(w->event_client, "POST", path, headers, text, strlen(text),
	                        WORKER_REQUEST_TIMEOUT_MS, events_posted, w) == 0) {
		w->posting = 1;
	} else {
		json_array_extend(batch, w->events);
		json_decref(w->events);
		w->events = batch;
		w->posting_batch = NULL;
		uv_timer_start(&w->retry, retry_fire, WORKER_RETRY_MS, 0);
	}
	free(text);
}

static void heartbeat(uv_timer_t *t)
{
	struct worker *w = t->data;
	events_post(w); /* an empty post is the heartbeat */
}

/* What the spawner reports. */
static json_t *capture_output(json_t *reply, const char *stream, int *truncated)
{
	const char *b64 = json_string_value(json_object_get(reply, "data_b64"));
	json_int_t size = json_integer_value(json_object_get(reply, "size"));
	json_int_t offset = json_integer_value(json_object_get(reply, "offset"));
	if (!b64)
		return NULL;
	size_t blen = strlen(b64);
	unsigned char *data = malloc(blen / 4 * 3 + 1);
	long n = data ? base64_decode(b64, blen, data) : -ENOMEM;
	json_t *o = json_object();
	char key[32];
	if (n >= 0 && utf8_valid(data, (size_t)n)) {
		json_object_set_new(o, stream, json_stringn((const char *)data, (size_t)n));
	} else if (n >= 0) {
		snprintf(key, sizeof(key), "%s_b64", stream);
		json_object_set_new(o, key, json_string(b64));
	}
	if (offset > 0 || (n >= 0 && size > offset + n))
		*truncated = 1;
	free(data);
	return o;
}

struct exec_end {
	json_t *event; /* exec_ended, completed with the output */
	json_t *output;
	int truncated;
	int pending;
};

struct exec_end_stream {
	struct exec_end *e;
	const char *stream;
};

static void exec_end_finish(struct worker *w, struct exec_end *e)
{
	if (!json_object_get(e->output, "stdout") && !json_object_get(e->output, "stdout_b64"))
		json_object_set_new(e->output, "stdout", json_string(""));
	if (!json_object_get(e->output, "stderr") && !json_object_get(e->output, "stderr_b64"))
		json_object_set_new(e->output, "stderr", json_string(""));
	json_object_set_new(e->output, "truncated", json_boolean(e->truncated));
	json_object_set_new(e->event, "output", e->output);
	event_queue(w, e->event);
	free(e);
}

/* One stream's output (the output op's reply form) into the exec's end. */
static void exec_end_take(struct exec_end *e, json_t *reply, const char *stream)
{
	json_t *o = capture_output(reply, stream, &e->truncated);
	if (o)
		json_object_update(e->output, o);
	json_decref(o);
}

static void exec_end_output(struct worker *w, json_t *reply, void *ud)
{
	struct exec_end_stream *es = ud;
	struct exec_end *e = es->e;
	if (reply_ok(reply))
		exec_end_take(e, reply, es->stream);
	free(es);
	if (--e->pending == 0)
		exec_end_finish(w, e);
}

static int capture_take(struct worker *w, const char *exec)
{
	for (struct capture **p = &w->captures; *p; p = &(*p)->next)
		if (!strcmp((*p)->exec, exec)) {
			struct capture *c = *p;
			*p = c->next;
			free(c);
			return 1;
		}
	return 0;
}

static void spawner_event(struct worker *w, json_t *msg)
{
	const char *type = json_string_value(json_object_get(msg, "event"));
	if (!type || !json_is_string(json_object_get(msg, "id")))
		return;
	json_t *ev = json_deep_copy(msg);
	json_object_del(ev, "event");
	/* A waited exec's output, when the spawner sent it with the end: the server never sees
	 * it in this form. */
	json_t *inline_out = json_incref(json_object_get(ev, "output_inline"));
	json_object_del(ev, "output_inline");
	json_object_set_new(ev, "type", json_string(type));
	json_object_set(ev, "sandbox", json_object_get(msg, "id"));
	json_object_del(ev, "id");
	if (strcmp(type, "exec_ended") ||
	    !capture_take(w, json_string_value(json_object_get(msg, "exec")) ?: "")) {
		json_decref(inline_out);
		event_queue(w, ev);
		return;
	}
	struct exec_end *e = calloc(1, sizeof(*e));
	if (!e) {
		json_decref(inline_out);
		event_queue(w, ev);
		return;
	}
	e->event = ev;
	e->output = json_object();
	static const char *const STREAMS[] = {"stdout", "stderr"};
	if (json_is_object(inline_out) && json_is_object(json_object_get(inline_out, "stdout")) &&
	    json_is_object(json_object_get(inline_out, "stderr"))) {
		for (int i = 0; i < 2; i++)
			exec_end_take(e, json_object_get(inline_out, STREAMS[i]), STREAMS[i]);
		json_decref(inline_out);
		exec_end_finish(w, e);
		return;
	}
	json_decref(inline_out);
	e->pending = 1; /* held until both requests are sent */
	for (int i = 0; i < 2; i++) {
		struct exec_end_stream *es = malloc(sizeof(*es));
		json_t *req =
		    json_pack("{s:s, s:O, s:O, s:s, s:i, s:i}", "op", "output", "id",
		              json_object_get(msg, "id"), "exec", json_object_get(msg, "exec"),
		              "stream", STREAMS[i], "offset", 0, "max", EXEC_WAIT_MAX_OUTPUT_BYTES);
		if (!es || !req) {
			free(es);
			json_decref(req);
			continue;
		}
		*es = (struct exec_end_stream){e, STREAMS[i]};
		e->pending++;
		spawn(w, req, exec_end_output, es);
	}
	if (--e->pending == 0)
		exec_end_finish(w, e);
}

/* Commands from the server. */
static const char *error_message(json_t *reply)
{
	const char *m =
	    reply ? json_string_value(json_object_get(json_object_get(reply, "error"), "message"))
	          : "the spawner is gone";
	return m ? m : "failed";
}

static const char *error_code(json_t *reply)
{
	const char *c =
	    reply ? json_string_value(json_object_get(json_object_get(reply, "error"), "code"))
	          : NULL;
	return c ? c : "unavailable";
}

static int reply_ok(json_t *reply)
{
	return reply && json_is_true(json_object_get(reply, "ok"));
}

static void created(struct worker *w, json_t *reply, void *ud)
{
	json_t *sandbox = ud;
	if (reply_ok(reply))
		event_queue(w,
		            json_pack("{s:s, s:o, s:O?}", "type", "sandbox_started", "sandbox",
		                      sandbox, "started_ms", json_object_get(reply, "started_ms")));
	else
		event_queue(w, json_pack("{s:s, s:o, s:s, s:s}", "type", "sandbox_failed",
		                         "sandbox", sandbox, "code", error_code(reply), "message",
		                         error_message(reply)));
}

struct exec_ctx {
	json_t *sandbox, *exec;
};

static void exec_started(struct worker *w, json_t *reply, void *ud)
{
	struct exec_ctx *x = ud;
	if (reply_ok(reply)) {
		if (json_is_true(json_object_get(reply, "started")))
			event_queue(w, json_pack("{s:s, s:O, s:O, s:I}", "type", "exec_started",
			                         "sandbox", x->sandbox, "exec", x->exec,
			                         "started_ms", (json_int_t)clock_now_ms()));
	} else {
		capture_take(w, json_string_value(x->exec));
		event_queue(w, json_pack("{s:s, s:O, s:O, s:s}", "type", "exec_failed", "sandbox",
		                         x->sandbox, "exec", x->exec, "message",
		                         error_message(reply)));
	}
	json_decref(x->sandbox);
	json_decref(x->exec);
	free(x);
}

static void logged_reply(struct worker *w, json_t *reply, void *ud)
{
	const char *op = ud;
	if (!reply_ok(reply))
		wlog(w, "level=warn msg=\"spawner refused\" op=%s error=\"%.200s\"", op,
		     error_message(reply));
}

/* A terminate done: the sandbox goes too, unless the server keeps its output (a timeout). */
static void terminated(struct worker *w, json_t *reply, void *ud)
{
	json_t *cmd = ud;
	logged_reply(w, reply, "terminate");
	if (reply && !json_is_false(json_object_get(cmd, "remove")))
		spawn(
		    w,
		    json_pack("{s:s, s:O}", "op", "remove", "id", json_object_get(cmd, "sandbox")),
		    logged_reply, "remove");
	json_decref(cmd);
}

/* File operations: the spawner moves at most 1 MiB a call; whole files (up to
 * SERVER_MAX_FILE_BYTES) are read and written here in chunks. */
#define FILE_CHUNK_BYTES (1024 * 1024)

struct file_op {
	json_t *sandbox, *request, *path;
	unsigned char *data; /* read: what came so far; write: what goes */
	size_t len, cap, off;
	size_t max;
	int mode, parents;
	int sent; /* a request went to the spawner: a NULL reply now means it is gone */
};

static void file_op_free(struct file_op *f)
{
	json_decref(f->sandbox);
	json_decref(f->request);
	json_decref(f->path);
	free(f->data);
	free(f);
}

static void file_done(struct worker *w, struct file_op *f, json_t *result, json_t *reply)
{
	json_t *ev = json_pack("{s:s, s:O, s:O}", "type", "file_done", "sandbox", f->sandbox,
	                       "request", f->request);
	if (ev && result) {
		json_object_set_new(ev, "ok", json_true());
		json_object_set_new(ev, "result", result);
	} else if (ev) {
		json_decref(result);
		json_object_set_new(ev, "ok", json_false());
		json_object_set_new(ev, "error",
		                    json_pack("{s:s, s:s}", "code", error_code(reply), "message",
		                              error_message(reply)));
	}
	if (ev)
		event_queue(w, ev);
	file_op_free(f);
}

static void file_fail(struct worker *w, struct file_op *f, const char *code, const char *msg)
{
	json_t *reply = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
	file_done(w, f, NULL, reply);
	json_decref(reply);
}

static void file_read_next(struct worker *w, json_t *reply, void *ud)
{
	struct file_op *f = ud;
	if (reply) { /* a chunk came back */
		if (!reply_ok(reply)) {
			file_done(w, f, NULL, reply);
			return;
		}
		const char *b64 = json_string_value(json_object_get(reply, "data_b64"));
		size_t blen = b64 ? strlen(b64) : 0;
		/* blen / 4 * 3 counts the padding too: the limit is checked on what decodes. */
		if (f->len + blen / 4 * 3 > f->max + 2) {
			file_fail(w, f, "payload_too_large",
			          "the file is larger than the API's limit");
			return;
		}
		if (f->cap < f->len + blen / 4 * 3 + 1) {
			size_t cap = f->len + blen / 4 * 3 + 1;
			unsigned char *p = realloc(f->data, cap);
			if (!p) {
				file_fail(w, f, "unavailable", "out of memory");
				return;
			}
			f->data = p, f->cap = cap;
		}
		long n = base64_decode(b64 ? b64 : "", blen, f->data + f->len);
		if (n < 0) {
			file_fail(w, f, "internal", "the spawner sent unreadable data");
			return;
		}
		f->len += (size_t)n;
		if (f->len > f->max) {
			file_fail(w, f, "payload_too_large",
			          "the file is larger than the API's limit");
			return;
		}
		if (json_is_true(json_object_get(reply, "eof")) || n == 0) {
			char *out = malloc(base64_encoded_size(f->len));
			if (!out) {
				file_fail(w, f, "unavailable", "out of memory");
				return;
			}
			base64_encode(f->data ? f->data : (unsigned char *)"", f->len, out);
			json_t *result =
			    json_pack("{s:s, s:I}", "data_b64", out, "size", (json_int_t)f->len);
			free(out);
			file_done(w, f, result, NULL);
			return;
		}
	} else if (f->sent) {
		file_fail(w, f, "unavailable", "the spawner is gone");
		return;
	}
	f->sent = 1;
	spawn(w,
	      json_pack("{s:s, s:O, s:O, s:I, s:i}", "op", "file_read", "id", f->sandbox, "path",
	                f->path, "offset", (json_int_t)f->len, "max", FILE_CHUNK_BYTES),
	      file_read_next, f);
}

static void file_write_next(struct worker *w, json_t *reply, void *ud)
{
	struct file_op *f = ud;
	if ((reply && !reply_ok(reply)) || (!reply && f->sent)) {
		file_done(w, f, NULL, reply);
		return;
	}
	if (reply && f->off >= f->len) {
		file_done(w, f, json_pack("{s:I}", "size", (json_int_t)f->len), NULL);
		return;
	}
	size_t n = f->len - f->off < FILE_CHUNK_BYTES ? f->len - f->off : FILE_CHUNK_BYTES;
	char *b64 = malloc(base64_encoded_size(n));
	if (!b64) {
		file_fail(w, f, "unavailable", "out of memory");
		return;
	}
	base64_encode(f->data ? f->data + f->off : (unsigned char *)"", n, b64);
	json_t *req =
	    json_pack("{s:s, s:O, s:O, s:s, s:I, s:b, s:i, s:b}", "op", "file_write", "id",
	              f->sandbox, "path", f->path, "data_b64", b64, "offset", (json_int_t)f->off,
	              "truncate", f->off == 0, "mode", f->mode, "parents", f->parents);
	free(b64);
	f->off += n;
	f->sent = 1;
	spawn(w, req, file_write_next, f);
}

static void file_simple_done(struct worker *w, json_t *reply, void *ud)
{
	struct file_op *f = ud;
	if (!reply_ok(reply)) {
		file_done(w, f, NULL, reply);
		return;
	}
	json_t *result = json_deep_copy(reply);
	json_object_del(result, "ok");
	json_object_del(result, "req");
	file_done(w, f, result, NULL);
}

/* Output reads go to the server as raw bytes, not base64 in JSON (which costs more than the
 * read itself): the spawner says which bytes of which file (its reply carries path and length
 * per stream), the worker reads them and posts {epoch, request, sandbox, result}\n then the
 * bytes (stdout's, then stderr's) to /internal/v1/workers/{wk}/output. */
struct output_post {
	struct worker *w;
	json_t *sandbox, *request;
};

/* A post that did not land (an epoch change, a restarting server, a timeout) still answers its
 * call, as an error event, rather than leaving the reader waiting for the call's deadline. */
static void output_posted(void *ud, int err, int status, const char *body, size_t len)
{
	struct output_post *op = ud;
	struct worker *w = op->w;
	(void)body, (void)len;
	if ((err < 0 || status != 200) && !w->closing) {
		wlog(w, "level=warn msg=\"posting output failed\" err=%d status=%d", err, status);
		json_t *ev =
		    json_pack("{s:s, s:O, s:O, s:b, s:{s:s, s:s}}", "type", "file_done", "sandbox",
		              op->sandbox, "request", op->request, "ok", 0, "error", "code",
		              "unavailable", "message", "the worker could not deliver the output");
		if (ev)
			event_queue(w, ev);
	}
	json_decref(op->sandbox);
	json_decref(op->request);
	free(op);
}

/* Read part's bytes (its path, offset, length) onto buf; the part then says where they start
 * and how many they are. Bytes that were punched out meanwhile (the file is kept to its last
 * SPAWNER_OUTPUT_KEEP_BYTES) read as zeros: those are cut off, as dropped. */
static int output_part_read(json_t *part, char *buf, size_t *len)
{
	const char *path = json_string_value(json_object_get(part, "path"));
	json_int_t off = json_integer_value(json_object_get(part, "offset"));
	json_int_t want = json_integer_value(json_object_get(part, "length"));
	if (!path || off < 0 || want < 0 || want > SPAWNER_MAX_MSG_BYTES)
		return -EBADMSG;
	ssize_t n = 0;
	if (want > 0) {
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
		if (fd < 0)
			return -errno;
		n = pread(fd, buf + *len, (size_t)want, (off_t)off);
		if (n < 0)
			return -errno;
		off_t data = lseek(fd, 0, SEEK_DATA);
		if (data > off) {
			size_t cut =
			    (size_t)(data - off) < (size_t)n ? (size_t)(data - off) : (size_t)n;
			memmove(buf + *len, buf + *len + cut, (size_t)n - cut);
			n -= (ssize_t)cut;
			off += (json_int_t)cut;
		}
	}
	json_object_del(part, "path");
	json_object_set_new(part, "offset", json_integer(off));
	json_object_set_new(part, "length", json_integer(n));
	*len += (size_t)n;
	return 0;
}

static void output_read_done(struct worker *w, json_t *reply, void *ud)
{
	struct file_op *f = ud;
	if (!reply_ok(reply)) {
		file_done(w, f, NULL, reply);
		return;
	}
	json_auto_t *result = json_deep_copy(reply);
	json_object_del(result, "ok");
	json_object_del(result, "req");
	json_t *parts[2] = {json_object_get(result, "stdout"), json_object_get(result, "stderr")};
	if (!parts[0] && !parts[1])
		parts[0] = result; /* one stream */
	size_t cap = 0, len = 0;
	int r = 0;
	for (int i = 0; i < 2; i++) {
		json_int_t n =
		    parts[i] ? json_integer_value(json_object_get(parts[i], "length")) : 0;
		if (n < 0 || n > SPAWNER_MAX_MSG_BYTES)
			r = -EBADMSG;
		else
			cap += (size_t)n;
	}
	_cleanup_free_ char *buf = r == 0 ? malloc(cap + 1) : NULL;
	if (r == 0 && !buf)
		r = -ENOMEM;
	for (int i = 0; i < 2 && r == 0; i++)
		if (parts[i])
			r = output_part_read(parts[i], buf, &len);
	if (r < 0) {
		char msg[128];
		snprintf(msg, sizeof(msg), "reading the output failed: %s", strerror(-r));
		file_fail(w, f, "internal", msg);
		return;
	}
	json_auto_t *meta =
	    json_pack("{s:I, s:O, s:O, s:O}", "epoch", (json_int_t)w->epoch, "request", f->request,
	              "sandbox", f->sandbox, "result", result);
	_cleanup_free_ char *head = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
	size_t hlen = head ? strlen(head) : 0;
	_cleanup_free_ char *body = head ? malloc(hlen + 1 + len) : NULL;
	if (!body) {
		file_fail(w, f, "internal", "out of memory");
		return;
	}
	memcpy(body, head, hlen);
	body[hlen] = '\n';
	memcpy(body + hlen + 1, buf, len);
	char path[128], auth[200];
	snprintf(path, sizeof(path), "/internal/v1/workers/%s/output", w->id);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", w->secret);
	const char *headers[] = {auth, "Content-Type: application/octet-stream", NULL};
	struct output_post *op = malloc(sizeof(*op));
	if (!op) {
		file_fail(w, f, "internal", "out of memory");
		return;
	}
	*op = (struct output_post){w, json_incref(f->sandbox), json_incref(f->request)};
	if (http_client_request(w->event_client, "POST", path, headers, body, hlen + 1 + len,
	                        WORKER_REQUEST_TIMEOUT_MS, output_posted, op) < 0)
		output_posted(op, -EIO, 0, NULL, 0);
	file_op_free(f);
}

static void file_command(struct worker *w, json_t *cmd)
{
	const char *op = json_string_value(json_object_get(cmd, "file_op"));
	struct file_op *f = calloc(1, sizeof(*f));
	if (!f || !op)
		return (void)free(f);
	f->sandbox = json_incref(json_object_get(cmd, "sandbox"));
	f->request = json_incref(json_object_get(cmd, "request"));
	f->path = json_incref(json_object_get(cmd, "path"));
	if (!strcmp(op, "file_read")) {
		json_int_t max = json_integer_value(json_object_get(cmd, "max"));
		f->max =
		    max > 0 && max <= SERVER_MAX_FILE_BYTES ? (size_t)max : SERVER_MAX_FILE_BYTES;
		file_read_next(w, NULL, f);
	} else if (!strcmp(op, "file_write")) {
		const char *b64 = json_string_value(json_object_get(cmd, "data_b64"));
		size_t blen = b64 ? strlen(b64) : 0;
		f->data = malloc(blen / 4 * 3 + 1);
		long n = f->data && b64 ? base64_decode(b64, blen, f->data) : -EINVAL;
		if (n < 0 || !json_is_string(f->path)) {
			file_fail(w, f, "invalid_argument", "file_write: bad data");
			return;
		}
		f->len = (size_t)n;
		f->mode = (int)json_integer_value(json_object_get(cmd, "mode"));
		f->parents = json_is_true(json_object_get(cmd, "parents"));
		file_write_next(w, NULL, f);
	} else if (!strncmp(op, "fs_", 3) || !strcmp(op, "output") || !strcmp(op, "stdin") ||
	           !strcmp(op, "signal") || !strcmp(op, "resize") || !strcmp(op, "snapshot")) {
		json_t *req = json_deep_copy(cmd);
		static const char *const DROP[] = {"id", "op", "sandbox", "request", "file_op"};
		for (size_t i = 0; req && i < ARRAY_SIZE(DROP); i++)
			json_object_del(req, DROP[i]);
		int output = !strcmp(op, "output");
		if (req) {
			json_object_set_new(req, "op", json_string(op));
			json_object_set(req, "id", f->sandbox);
			if (output)
				json_object_set_new(req, "inline", json_false());
		}
		spawn(w, req, output ? output_read_done : file_simple_done, f);
	} else {
		file_fail(w, f, "invalid_argument", "unknown file operation");
	}
}

/* Tunnels (docs/WORKER.md): a socket into the sandbox's network namespace from the spawner,
 * connected to the port on its loopback, and a connection of our own to the server, upgraded;
 * then a relay between the two until either ends. A tunnel that fails before the server has its
 * connection is reported with a tunnel_failed event. */
struct tunnel {
	struct tunnel *next;
	struct worker *w; /* NULL once it stopped */
	char id[ID_MAX_BYTES];
	char sandbox[ID_MAX_BYTES];
	int port;
	uv_tcp_t *sb_tcp, *srv_tcp; /* until the relay takes them */
	uv_timer_t *timer;          /* the setup's deadline */
	uv_connect_t sb_connect, srv_connect;
	char head[WORKER_TUNNEL_MAX_HEAD_BYTES]; /* the server's answer, and what followed it */
	size_t head_len;
	struct http_relay *relay;
	int refs; /* the list, connects in flight, handles closing */
};

struct tunnel_write {
	uv_write_t w;
	char data[];
};

static void tunnel_unref(struct tunnel *t)
{
	if (--t->refs == 0)
		free(t);
}

static void tunnel_handle_closed(uv_handle_t *h)
{
	struct tunnel *t = h->data;
	free(h);
	tunnel_unref(t);
}

static void tunnel_close_handle(struct tunnel *t, uv_handle_t *h)
{
	if (!h)
		return;
	t->refs++;
	h->data = t;
	uv_close(h, tunnel_handle_closed);
}

/* Stop t: off the list, its handles closed (a relay that has them is the caller's to close); it
 * is freed once every callback of its own has run. */
static void tunnel_stop(struct tunnel *t)
{
	struct worker *w = t->w;
	if (!w)
		return;
	for (struct tunnel **p = &w->tunnels; *p; p = &(*p)->next)
		if (*p == t) {
			*p = t->next;
			break;
		}
	t->w = NULL;
	tunnel_close_handle(t, (uv_handle_t *)TAKE_PTR(t->sb_tcp));
	tunnel_close_handle(t, (uv_handle_t *)TAKE_PTR(t->srv_tcp));
	tunnel_close_handle(t, (uv_handle_t *)TAKE_PTR(t->timer));
	tunnel_unref(t);
}

/* The tunnel failed before the server got its connection: tell it, and stop. */
static void tunnel_fail(struct tunnel *t, const char *code, const char *fmt, ...) _printf_(3, 4);
static void tunnel_fail(struct tunnel *t, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	event_queue(t->w, json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "tunnel_failed", "sandbox",
	                            t->sandbox, "tunnel", t->id, "code", code, "message", msg));
	tunnel_stop(t);
}

static void tunnel_relay_ended(void *ud)
{
	struct tunnel *t = ud;
	t->relay = NULL;
	tunnel_stop(t);
}

static void tunnel_timeout(uv_timer_t *timer)
{
	struct tunnel *t = timer->data;
	tunnel_fail(t, "deadline_exceeded", "the tunnel to port %d of %s was not set up in time",
	            t->port, t->sandbox);
}

static void tunnel_head_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct tunnel *t = h->data;
	*buf = uv_buf_init(t->head + t->head_len, (unsigned)(sizeof(t->head) - t->head_len));
}

/* The server's answer to the upgrade: 101, then the client's request, for the sandbox. */
static void tunnel_head_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	(void)buf;
	struct tunnel *t = s->data;
	struct worker *w = t->w;
	if (n == 0)
		return;
	if (n < 0) {
		wlog(w, "level=warn msg=\"the server closed a tunnel before answering\" tunnel=%s",
		     t->id);
		tunnel_stop(t);
		return;
	}
	t->head_len += (size_t)n;
	const char *end = memmem(t->head, t->head_len, "\r\n\r\n", 4);
	if (!end) {
		if (t->head_len == sizeof(t->head)) {
			wlog(w, "level=warn msg=\"a tunnel's answer is too large\" tunnel=%s",
			     t->id);
			tunnel_stop(t);
		}
		return;
	}
	uv_read_stop(s);
	if (t->head_len < 12 || memcmp(t->head, "HTTP/1.1 101", 12)) {
		/* The client went away meanwhile (404), or the server refused. */
		wlog(
		    w,
		    "level=info msg=\"the server did not take a tunnel\" tunnel=%s status=\"%.3s\"",
		    t->id, t->head_len >= 12 ? t->head + 9 : "?");
		tunnel_stop(t);
		return;
	}
	size_t head = (size_t)(end + 4 - t->head), rest = t->head_len - head;
	char *to_sandbox = rest ? malloc(rest) : NULL;
	if (rest && !to_sandbox) {
		tunnel_stop(t);
		return;
	}
	if (rest)
		memcpy(to_sandbox, t->head + head, rest);
	struct http_relay_config rc = {
	    .max_buffer_bytes = SERVER_TUNNEL_BUFFER_BYTES,
	    .idle_timeout_ms = SERVER_TUNNEL_IDLE_MS,
	    .on_end = tunnel_relay_ended,
	    .ud = t,
	};
	/* The server's side is a: the sandbox's EOF (its response sent) ends the tunnel. */
	int r = http_relay_new(w->loop, TAKE_PTR(t->srv_tcp), TAKE_PTR(t->sb_tcp), NULL, 0,
	                       to_sandbox, rest, &rc, &t->relay);
	tunnel_close_handle(t, (uv_handle_t *)TAKE_PTR(t->timer));
	if (r < 0)
		tunnel_stop(t);
}

static void tunnel_write_done(uv_write_t *req, int status)
{
	(void)status; /* a failed write shows as the server's EOF */
	free(req);
}

static void tunnel_srv_connected(uv_connect_t *c, int status)
{
	struct tunnel *t = c->data;
	struct worker *w = t->w;
	if (!w || status == UV_ECANCELED) {
		tunnel_unref(t);
		return;
	}
	tunnel_unref(t); /* the list's reference still holds it */
	if (status < 0) {
		tunnel_fail(t, "unavailable", "the worker could not connect to the server: %s",
		            uv_strerror(status));
		return;
	}
	uv_tcp_nodelay(t->srv_tcp, 1);
	char head[512];
	int n = snprintf(head, sizeof(head),
	                 "POST /internal/v1/workers/%s/tunnels/%s HTTP/1.1\r\n"
	                 "Host: %s\r\n"
	                 "Authorization: Bearer %s\r\n"
	                 "Connection: Upgrade\r\n"
	                 "Upgrade: " LINK_TUNNEL_PROTOCOL "\r\n"
	                 "Content-Length: 0\r\n\r\n",
	                 w->id, t->id, w->host, w->secret);
	struct tunnel_write *wr =
	    n > 0 && (size_t)n < sizeof(head) ? malloc(sizeof(*wr) + (size_t)n) : NULL;
	if (!wr) {
		tunnel_fail(t, "internal", "out of memory");
		return;
	}
	memcpy(wr->data, head, (size_t)n);
	uv_buf_t buf = uv_buf_init(wr->data, (unsigned)n);
	t->srv_tcp->data = t;
	if (uv_write(&wr->w, (uv_stream_t *)t->srv_tcp, &buf, 1, tunnel_write_done) < 0) {
		free(wr);
		tunnel_fail(t, "unavailable", "the worker could not write to the server");
		return;
	}
	uv_read_start((uv_stream_t *)t->srv_tcp, tunnel_head_alloc, tunnel_head_read);
}

static void tunnel_sb_connected(uv_connect_t *c, int status)
{
	struct tunnel *t = c->data;
	struct worker *w = t->w;
	if (!w || status == UV_ECANCELED) {
		tunnel_unref(t);
		return;
	}
	tunnel_unref(t);
	if (status < 0) {
		tunnel_fail(t, "unavailable", "nothing answers on port %d in %s: %s", t->port,
		            t->sandbox, uv_strerror(status));
		return;
	}
	uv_tcp_nodelay(t->sb_tcp, 1);
	t->srv_tcp = malloc(sizeof(*t->srv_tcp));
	if (!t->srv_tcp) {
		tunnel_fail(t, "internal", "out of memory");
		return;
	}
	uv_tcp_init(w->loop, t->srv_tcp);
	t->srv_connect.data = t;
	int r = uv_tcp_connect(&t->srv_connect, t->srv_tcp, http_client_addr(w->poll_client),
	                       tunnel_srv_connected);
	if (r < 0) {
		tunnel_fail(t, "unavailable", "the worker could not connect to the server: %s",
		            uv_strerror(r));
		return;
	}
	t->refs++;
}

static void tunnel_socket_made(struct worker *w, json_t *reply, void *ud)
{
	struct tunnel *t = ud;
	if (!t->w) { /* stopped meanwhile (the worker closes) */
		tunnel_unref(t);
		return;
	}
	tunnel_unref(t);
	if (!reply_ok(reply)) {
		tunnel_fail(t, error_code(reply), "%s", error_message(reply));
		return;
	}
	t->sb_tcp = TAKE_PTR(w->passed);
	if (!t->sb_tcp) {
		tunnel_fail(t, "internal", "the spawner passed no socket");
		return;
	}
	struct sockaddr_in lo;
	uv_ip4_addr("127.0.0.1", t->port, &lo);
	t->sb_connect.data = t;
	int r =
	    uv_tcp_connect(&t->sb_connect, t->sb_tcp, (struct sockaddr *)&lo, tunnel_sb_connected);
	if (r < 0) {
		tunnel_fail(t, "unavailable", "connect to port %d in %s: %s", t->port, t->sandbox,
		            uv_strerror(r));
		return;
	}
	t->refs++;
}

/* tunnel {sandbox, port, tunnel} */
static void tunnel_command(struct worker *w, json_t *cmd)
{
	const char *id = json_string_value(json_object_get(cmd, "tunnel"));
	const char *sandbox = json_string_value(json_object_get(cmd, "sandbox"));
	json_t *port = json_object_get(cmd, "port");
	if (!id || !sandbox || strlen(id) >= ID_MAX_BYTES || strlen(sandbox) >= ID_MAX_BYTES ||
	    !json_is_integer(port) || json_integer_value(port) < 1 ||
	    json_integer_value(port) > 65535) {
		wlog(w,
		     "level=warn msg=\"a tunnel command without a valid tunnel, port or sandbox\"");
		return;
	}
	struct tunnel *t = calloc(1, sizeof(*t));
	uv_timer_t *timer = malloc(sizeof(*timer));
	if (!t || !timer) {
		free(t);
		free(timer);
		event_queue(w, json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "tunnel_failed",
		                         "sandbox", sandbox, "tunnel", id, "code", "unavailable",
		                         "message", "the worker is out of memory"));
		return;
	}
	t->w = w;
	t->refs = 1;
	snprintf(t->id, sizeof(t->id), "%s", id);
	snprintf(t->sandbox, sizeof(t->sandbox), "%s", sandbox);
	t->port = (int)json_integer_value(port);
	t->timer = timer;
	uv_timer_init(w->loop, timer);
	timer->data = t;
	uv_timer_start(timer, tunnel_timeout, WORKER_TUNNEL_SETUP_MS, 0);
	t->next = w->tunnels;
	w->tunnels = t;
	t->refs++;
	spawn(w, json_pack("{s:s, s:s}", "op", "tunnel_socket", "id", sandbox), tunnel_socket_made,
	      t);
}

static int command_seen(struct worker *w, const char *id)
{
	if (json_object_get(w->recent, id))
		return 1;
	json_object_set_new(w->recent, id, json_true());
	json_array_append_new(w->recent_order, json_string(id));
	if (json_array_size(w->recent_order) > WORKER_RECENT_COMMANDS) {
		json_object_del(w->recent, json_string_value(json_array_get(w->recent_order, 0)));
		json_array_remove(w->recent_order, 0);
	}
	return 0;
}

static void command_run(struct worker *w, json_t *cmd)
{
	const char *id = json_string_value(json_object_get(cmd, "id"));
	const char *op = json_string_value(json_object_get(cmd, "op"));
	json_t *sandbox = json_object_get(cmd, "sandbox");
	if (!id || !op || !json_is_string(sandbox))
		return;
	json_array_append_new(w->acks, json_string(id));
	if (command_seen(w, id))
		return;
	if (!strcmp(op, "create")) {
		spawn(w,
		      json_pack("{s:s, s:O, s:O}", "op", "create", "id", sandbox, "spec",
		                json_object_get(cmd, "spec")),
		      created, json_incref(sandbox));
	} else if (!strcmp(op, "exec")) {
		struct exec_ctx *x = calloc(1, sizeof(*x));
		if (!x)
			return;
		x->sandbox = json_incref(sandbox);
		x->exec = json_incref(json_object_get(cmd, "exec"));
		if (json_is_true(json_object_get(cmd, "capture"))) {
			struct capture *c = calloc(1, sizeof(*c));
			if (c) {
				snprintf(c->exec, sizeof(c->exec), "%s",
				         json_string_value(x->exec) ?: "");
				c->next = w->captures;
				w->captures = c;
			}
		}
		json_t *req = json_pack(
		    "{s:s, s:O, s:O, s:O, s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:b}", "op", "exec",
		    "id", sandbox, "exec", x->exec, "command", json_object_get(cmd, "command"),
		    "env", json_object_get(cmd, "env"), "workdir", json_object_get(cmd, "workdir"),
		    "timeout_s", json_object_get(cmd, "timeout_s"), "stdin",
		    json_object_get(cmd, "stdin"), "pty", json_object_get(cmd, "pty"), "pty_size",
		    json_object_get(cmd, "pty_size"), "capture",
		    json_is_true(json_object_get(cmd, "capture")));
		spawn(w, req, exec_started, x);
	} else if (!strcmp(op, "terminate")) {
		spawn(w,
		      json_pack("{s:s, s:O, s:O}", "op", "terminate", "id", sandbox, "grace_ms",
		                json_object_get(cmd, "grace_ms")),
		      terminated, json_incref(cmd));
	} else if (!strcmp(op, "remove")) {
		spawn(w, json_pack("{s:s, s:O}", "op", "remove", "id", sandbox), logged_reply,
		      "remove");
	} else if (!strcmp(op, "file")) {
		file_command(w, cmd);
	} else if (!strcmp(op, "tunnel")) {
		tunnel_command(w, cmd);
	} else if (!strcmp(op, "timeout")) {
		spawn(w,
		      json_pack("{s:s, s:O, s:O}", "op", "timeout", "id", sandbox, "timeout_s",
		                json_object_get(cmd, "timeout_s")),
		      logged_reply, "timeout");
	} else if (!strcmp(op, "file_cancel")) {
		/* The reader of an output read went away: the spawner need not wait for output. */
		const char *request = json_string_value(json_object_get(cmd, "request"));
		for (struct spawn_call *c = w->calls; c && request; c = c->next) {
			struct file_op *f = c->cb == output_read_done ? c->ud : NULL;
			if (f && !strcmp(json_string_value(f->request) ?: "", request)) {
				spawn(w,
				      json_pack("{s:s, s:I}", "op", "output_cancel", "read",
				                (json_int_t)c->req),
				      logged_reply, "output_cancel");
				break;
			}
		}
	} else if (!strcmp(op, "exec_check")) {
		spawn(w,
		      json_pack("{s:s, s:O, s:O}", "op", "exec_check", "id", sandbox, "execs",
		                json_object_get(cmd, "execs")),
		      logged_reply, "exec_check");
	} else {
		wlog(w, "level=warn msg=\"unknown command\" op=%.32s", op);
	}
}

/* Long-poll. */
static void poll_next(struct worker *w);

static void retry_fire(uv_timer_t *t)
{
	struct worker *w = t->data;
	if (!w->registered) {
		do_register(w);
	} else {
		poll_next(w);
		events_post(w);
	}
}

static void polled(void *ud, int err, int status, const char *body, size_t len)
{
	struct worker *w = ud;
	w->polling = 0;
	if (w->closing)
		return;
	if (err == 0 && status == 409) {
		w->registered = 0;
		do_register(w);
		return;
	}
	if (err < 0 || status != 200) {
		wlog(w, "level=warn msg=\"poll failed\" err=%d status=%d", err, status);
		uv_timer_start(&w->retry, retry_fire, WORKER_RETRY_MS, 0);
		return;
	}
	json_t *reply = json_loadb(body, len, 0, NULL);
	json_t *cmds = json_object_get(reply, "commands");
	size_t i;
	json_t *cmd;
	json_array_foreach (cmds, i, cmd)
		command_run(w, cmd);
	json_decref(reply);
	poll_next(w);
}

static void poll_next(struct worker *w)
{
	if (!w->registered || w->polling || w->closing)
		return;
	json_t *body = json_pack("{s:I, s:O}", "epoch", (json_int_t)w->epoch, "acks", w->acks);
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!text) {
		uv_timer_start(&w->retry, retry_fire, WORKER_RETRY_MS, 0);
		return;
	}
	json_array_clear(w->acks);
	char path[128], auth[200];
	snprintf(path, sizeof(path), "/internal/v1/workers/%s/poll", w->id);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", w->secret);
	const char *headers[] = {auth, "Content-Type: application/json", NULL};
	if (http_client_request(w->poll_client, "POST", path, headers, text, strlen(text),
	                        SERVER_POLL_HOLD_MS + WORKER_REQUEST_TIMEOUT_MS, polled, w) == 0)
		w->polling = 1;
	else
		uv_timer_start(&w->retry, retry_fire, WORKER_RETRY_MS, 0);
	free(text);
}

/* Registration: what the spawner runs goes with it, for the server to reconcile. */
static void registered(void *ud, int err, int status, const char *body, size_t len)
{
	struct worker *w = ud;
	w->registering = 0;
	if (w->closing)
		return;
	json_t *reply = err == 0 && status == 200 ? json_loadb(body, len, 0, NULL) : NULL;
	const char *id = json_string_value(json_object_get(reply, "worker"));
	json_t *epoch = json_object_get(reply, "epoch");
	if (!id || !json_is_integer(epoch) || strlen(id) >= sizeof(w->id)) {
		wlog(w, "level=warn msg=\"registration failed\" err=%d status=%d", err, status);
		json_decref(reply);
		uv_timer_start(&w->retry, retry_fire, WORKER_RETRY_MS, 0);
		return;
	}
	snprintf(w->id, sizeof(w->id), "%s", id);
	w->epoch = json_integer_value(epoch);
	json_int_t hb = json_integer_value(json_object_get(reply, "heartbeat_ms"));
	w->heartbeat_ms = hb > 0 && hb < 60000 ? (int)hb : 2000;
	json_decref(reply);
	w->registered = 1;
	json_array_clear(w->acks);
	wlog(w, "level=info msg=\"registered\" worker=%s epoch=%lld", w->id, w->epoch);
	uv_timer_start(&w->heartbeat, heartbeat, (uint64_t)w->heartbeat_ms,
	               (uint64_t)w->heartbeat_ms);
	poll_next(w);
	events_post(w);
}

static void hello_reply(struct worker *w, json_t *reply, void *ud)
{
	(void)ud;
	if (w->closing)
		return;
	if (!reply_ok(reply)) {
		wlog(w, "level=error msg=\"the spawner did not answer hello\" error=\"%.200s\"",
		     error_message(reply));
		uv_timer_start(&w->retry, retry_fire, WORKER_RETRY_MS, 0);
		w->registering = 0;
		return;
	}
	json_t *body = json_pack("{s:i, s:s, s:{s:i}, s:{}, s:O}", "version", LINK_VERSION, "name",
	                         w->name, "capacity", "cpus", (int)sysconf(_SC_NPROCESSORS_ONLN),
	                         "labels", "sandboxes", json_object_get(reply, "sandboxes"));
	if (!json_is_array(json_object_get(body, "sandboxes")))
		json_object_set_new(body, "sandboxes", json_array());
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	char auth[200];
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", w->secret);
	const char *headers[] = {auth, "Content-Type: application/json", NULL};
	if (!text ||
	    http_client_request(w->event_client, "POST", "/internal/v1/workers/register", headers,
	                        text, strlen(text), WORKER_REQUEST_TIMEOUT_MS, registered, w) < 0) {
		w->registering = 0;
		uv_timer_start(&w->retry, retry_fire, WORKER_RETRY_MS, 0);
	}
	free(text);
}

/* Ask the spawner what runs, then register with that. */
static void do_register(struct worker *w)
{
	if (w->registering || w->closing)
		return;
	w->registering = 1;
	uv_timer_stop(&w->heartbeat);
	spawn(w, json_pack("{s:s}", "op", "hello"), hello_reply, NULL);
}

int worker_new(uv_loop_t *loop, const struct worker_config *cfg, struct worker **ret,
               struct sk_error *err)
{
	struct worker *w = calloc(1, sizeof(*w));
	if (!w)
		return sk_error_set(err, -ENOMEM, "out of memory");
	w->loop = loop;
	w->cfg = *cfg;
	snprintf(w->name, sizeof(w->name), "%s", cfg->name);
	snprintf(w->secret, sizeof(w->secret), "%s", cfg->secret);
	snprintf(w->host, sizeof(w->host), "%s", cfg->server_host);
	w->cfg.name = w->name;
	w->cfg.secret = w->secret;
	w->cfg.server_host = w->host;
	w->acks = json_array();
	w->events = json_array();
	w->recent = json_object();
	w->recent_order = json_array();
	int r;
	if ((r = http_client_new(loop, w->host, cfg->server_port, &w->poll_client, err)) < 0 ||
	    (r = http_client_new(loop, w->host, cfg->server_port, &w->event_client, err)) < 0)
		goto fail;
	/* ipc: the spawner passes sockets (SCM_RIGHTS) with some replies. */
	uv_pipe_init(loop, &w->spawner, 1);
	if ((r = uv_pipe_open(&w->spawner, cfg->spawner_fd)) < 0) {
		sk_error_set(err, r, "open the spawner's socket: %s", uv_strerror(r));
		uv_close((uv_handle_t *)&w->spawner, NULL);
		goto fail;
	}
	w->spawner.data = w;
	uv_read_start((uv_stream_t *)&w->spawner, spawner_alloc, spawner_read);
	uv_timer_init(loop, &w->heartbeat);
	uv_timer_init(loop, &w->retry);
	w->heartbeat.data = w->retry.data = w;
	w->handles_open = 3;
	do_register(w);
	*ret = w;
	return 0;
fail:
	if (w->poll_client)
		http_client_close(w->poll_client);
	if (w->event_client)
		http_client_close(w->event_client);
	json_decref(w->acks);
	json_decref(w->events);
	json_decref(w->recent);
	json_decref(w->recent_order);
	free(w);
	return r;
}

static void handle_closed(uv_handle_t *h)
{
	struct worker *w = h->data;
	if (--w->handles_open > 0)
		return;
	while (w->captures) {
		struct capture *c = w->captures;
		w->captures = c->next;
		free(c);
	}
	json_decref(w->acks);
	json_decref(w->events);
	json_decref(w->posting_batch);
	json_decref(w->recent);
	json_decref(w->recent_order);
	free(w->rbuf);
	void (*done)(void *) = w->done;
	void *ud = w->done_ud;
	free(w);
	if (done)
		done(ud);
}

void worker_close(struct worker *w, void (*done)(void *), void *ud)
{
	w->closing = 1;
	w->done = done;
	w->done_ud = ud;
	http_client_close(w->poll_client);
	http_client_close(w->event_client);
	/* Replies still owed by the spawner are dropped: run their callbacks with nothing. */
	while (w->calls) {
		struct spawn_call *c = w->calls;
		w->calls = c->next;
		c->cb(w, NULL, c->ud);
		free(c);
	}
	while (w->tunnels) {
		struct tunnel *t = w->tunnels;
		if (t->relay)
			http_relay_close(TAKE_PTR(t->relay));
		tunnel_stop(t);
	}
	uv_close((uv_handle_t *)&w->spawner, handle_closed);
	uv_close((uv_handle_t *)&w->heartbeat, handle_closed);
	uv_close((uv_handle_t *)&w->retry, handle_closed);
}
