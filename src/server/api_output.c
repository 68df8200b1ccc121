/* Exec output and the main command's logs: GET /v1/sandboxes/{id}/execs/{ex}/output and
 * GET /v1/sandboxes/{id}/logs. The bytes live in files on the worker (a cap per stream, older
 * bytes dropped); the server reads them through file calls ("output") at byte offsets, so every
 * read can resume and a reader never holds up the process.
 *
 *   ?stream=stdout|stderr&offset=N[&max=M]  the raw bytes of one stream from N (at most M, at
 *       most 1 MiB a call); X-Skiff-Offset says where they start (later than N when older bytes
 *       were dropped), X-Skiff-Size how many were written so far, X-Skiff-Eof whether the
 *       writer ended.
 *   ?format=ndjson[&stdout_offset=N][&stderr_offset=M]  both streams as events
 *       {"stream","offset","data_b64"}, then {"exit_code"} once both ended.
 *   &follow=true  streams (chunked) until the writer ends: each read waits on the worker for
 *       new bytes; the next is sent only when the client has taken the last (on_drain), so a
 *       slow client costs the server one write buffer, never more. A stream that ends without
 *       its end (raw: X-Skiff-Eof never came; ndjson: no exit_code) is resumed from the
 *       offsets the client has. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/encoding.h"
#include "server.h"

struct output_read {
	struct api_call *call;
	char sandbox[ID_MAX_BYTES];
	char exec[ID_MAX_BYTES]; /* "": the main command's */
	int ndjson, follow;
	int stream; /* raw: 0 stdout, 1 stderr */
	uint64_t offset[2];
	size_t max;
	int started; /* the reply's head is out */
	uv_timer_t *timer;
	unsigned exit_waited_ms;
	unsigned long answers; /* read answers written */
};

/* End the reply and free everything: status 200 ends it whole; another is an error reply when
 * nothing was sent yet, else a cut (the body ends without its last chunk). */
static void output_finish(struct output_read *o, int status, const char *code, const char *msg)
{
	struct api_call *call = o->call;
	struct http_request *req = call->req;
	req->on_abort = NULL;
	req->on_drain = NULL;
	call->stream = NULL;
	server_timer_free(o->timer);
	int started = o->started;
	free(o);
	if (!started) {
		api_reply_error(call, status, code, "%s", msg);
		return;
	}
	req->data = NULL;
	api_call_free(call);
	if (status == 200)
		http_reply_end(req);
	else
		http_reply_abort(req); /* cut short: the client resumes from its offsets */
}

static void output_aborted(struct http_request *req)
{
	struct api_call *call = req->data;
	if (call && call->stream)
		output_finish(call->stream, 499, "cancelled", "the client went away");
}

static void output_done(struct api_call *call, json_t *result, const struct file_bytes *bytes,
                        int status, const char *code, const char *msg);

/* Ask the worker for what follows the offsets. */
static void output_next(struct output_read *o)
{
	struct api_call *call = o->call;
	struct sandbox_rec *sb = sandbox_find(call->srv, o->sandbox);
	if (!sb || sb->removed || !sb->worker || !sb->worker->connected) {
		int gone = !sb || sb->removed;
		output_finish(o, gone ? 409 : 503, gone ? "conflict" : "unavailable",
		              gone ? "the sandbox was deleted: its output is gone"
		                   : "the sandbox's worker is not connected");
		return;
	}
	static const char *const NAMES[] = {"stdout", "stderr"};
	json_t *args = json_pack("{s:s, s:I, s:I}", "stream", o->ndjson ? "both" : NAMES[o->stream],
	                         "max", (json_int_t)o->max, "wait_ms",
	                         (json_int_t)(o->follow ? OUTPUT_FOLLOW_WAIT_MS : 0));
	if (args && o->ndjson) {
		json_object_set_new(args, "stdout_offset", json_integer((json_int_t)o->offset[0]));
		json_object_set_new(args, "stderr_offset", json_integer((json_int_t)o->offset[1]));
	} else if (args) {
		json_object_set_new(args, "offset", json_integer((json_int_t)o->offset[o->stream]));
	}
	if (args && o->exec[0])
		json_object_set_new(args, "exec", json_string(o->exec));
	file_call_send(call, sb, "output", args, output_done);
}

static void output_timer(uv_timer_t *t)
{
	output_next(t->data);
}

static void output_drained(struct http_request *req)
{
	struct api_call *call = req->data;
	req->on_drain = NULL;
	if (call && call->stream)
		output_next(call->stream);
}

/* The main command's or the exec's exit code once the server knows it ended; -1 before. */
static int output_exit_code(struct output_read *o, json_t **ret)
{
	struct sandbox_rec *sb = sandbox_find(o->call->srv, o->sandbox);
	if (!sb)
		return -1;
	if (o->exec[0]) {
		struct exec_rec *ex = map_get(&sb->execs, o->exec);
		if (!ex || !strcmp(ex->row.state, "running") || !strcmp(ex->row.state, "pending"))
			return -1;
		*ret = ex->row.exit_code >= 0 ? json_integer(ex->row.exit_code) : json_null();
		return 0;
	}
	if (!strcmp(sb->row.state, "running") || !strcmp(sb->row.state, "pending"))
		return -1;
	*ret = sb->row.exit_code >= 0 ? json_integer(sb->row.exit_code) : json_null();
	return 0;
}

/* The reply's head, at the first answer: errors before it are plain API errors. */
static int output_start(struct output_read *o, json_t *result)
{
	struct http_request *req = o->call->req;
	if (!o->ndjson) {
		char val[32];
		json_t *off = json_object_get(result, "offset");
		snprintf(val, sizeof(val), "%lld", (long long)json_integer_value(off));
		http_reply_header(req, "X-Skiff-Offset", val);
	}
	o->started = 1;
	req->on_abort = output_aborted;
	return http_reply_start(req, 200,
	                        o->ndjson ? "application/x-ndjson" : "application/octet-stream");
}

/* One stream's part of an answer as an ndjson event; returns the bytes it carried. */
static long ndjson_event(struct output_read *o, int si, json_t *part,
                         const struct file_bytes *bytes, int *ret_write)
{
	static const char *const NAMES[] = {"stdout", "stderr"};
	json_t *off = json_object_get(part, "offset");
	const char *data;
	size_t n;
	_cleanup_free_ char *owned = NULL;
	if (!json_is_integer(off) || file_result_bytes(part, bytes, si, &data, &n, &owned) < 0)
		return -EBADMSG;
	uint64_t start = (uint64_t)json_integer_value(off);
	if (n == 0) {
		if (start > o->offset[si])
			o->offset[si] = start; /* dropped before it was read */
		return 0;
	}
	char head[96];
	int hlen =
	    snprintf(head, sizeof(head), "{\"stream\":\"%s\",\"offset\":%llu,\"data_b64\":\"",
	             NAMES[si], (unsigned long long)start);
	size_t blen = base64_encoded_size(n) - 1; /* without its NUL */
	_cleanup_free_ char *line = malloc((size_t)hlen + blen + 4);
	if (!line)
		return -ENOMEM;
	memcpy(line, head, (size_t)hlen);
	base64_encode((const unsigned char *)data, n, line + hlen);
	memcpy(line + (size_t)hlen + blen, "\"}\n", 3);
	int r = http_reply_write(o->call->req, line, (size_t)hlen + blen + 3);
	if (r == -EAGAIN)
		*ret_write = r;
	else if (r < 0)
		return r;
	o->offset[si] = start + n;
	return (long)n;
}

static long raw_write(struct output_read *o, json_t *result, const struct file_bytes *bytes,
                      int *ret_write)
{
	json_t *off = json_object_get(result, "offset");
	const char *data;
	size_t n;
	_cleanup_free_ char *owned = NULL;
	if (!json_is_integer(off) || file_result_bytes(result, bytes, 0, &data, &n, &owned) < 0)
		return -EBADMSG;
	/* Raw bytes can't say that some were dropped: a raw follow that would skip some ends cut
	 * short instead, and the client's next read (X-Skiff-Offset) shows where they resume. */
	if (o->answers > 0 && (uint64_t)json_integer_value(off) != o->offset[o->stream])
		return -ESPIPE;
	if (n > 0) {
		int r = http_reply_write(o->call->req, data, n);
		if (r == -EAGAIN)
			*ret_write = r;
		else if (r < 0)
			return r;
	}
	o->offset[o->stream] = (uint64_t)json_integer_value(off) + n;
	return (long)n;
}

static void output_exit_timer(uv_timer_t *t);

/* Run fn once, OUTPUT_FOLLOW_RETRY_MS from now. */
static int output_timer_start(struct output_read *o, uv_timer_cb fn)
{
	if (!o->timer) {
		o->timer = server_timer_new(o->call->srv, fn, OUTPUT_FOLLOW_RETRY_MS, o);
		return o->timer ? 0 : -ENOMEM;
	}
	uv_timer_start(o->timer, fn, OUTPUT_FOLLOW_RETRY_MS, 0);
	return 0;
}

/* The end of an ndjson stream: its exit code once the server knows it (the worker's event
 * that says so may come a little after the output's end), then the end of the reply. */
static void output_exit(struct output_read *o)
{
	json_t *code_v = NULL;
	if (output_exit_code(o, &code_v) < 0 && o->exit_waited_ms < OUTPUT_EXIT_WAIT_MS &&
	    output_timer_start(o, output_exit_timer) == 0) {
		o->exit_waited_ms += OUTPUT_FOLLOW_RETRY_MS;
		return;
	}
	if (code_v) {
		char line[64];
		int len = json_is_integer(code_v)
		              ? snprintf(line, sizeof(line), "{\"exit_code\":%lld}\n",
		                         (long long)json_integer_value(code_v))
		              : snprintf(line, sizeof(line), "{\"exit_code\":null}\n");
		json_decref(code_v);
		http_reply_write(o->call->req, line, (size_t)len);
	}
	output_finish(o, 200, "", "");
}

static void output_exit_timer(uv_timer_t *t)
{
	output_exit(t->data);
}

static void output_done(struct api_call *call, json_t *result, const struct file_bytes *bytes,
                        int status, const char *code, const char *msg)
{
	struct output_read *o = call->stream;
	if (!result) {
		output_finish(o, status, code, msg);
		return;
	}
	call->req->on_abort = output_aborted;
	if (!o->started && output_start(o, result) < 0) {
		output_finish(o, 499, "cancelled", "the client went away");
		return;
	}
	int wrote = 0;
	long got = 0;
	/* Once the client's buffer is full, the other stream waits for the next read (its offset
	 * did not move): a connection holds one event over the limit at most. */
	int si = 0;
	for (; si < 2 && o->ndjson && got >= 0 && wrote != -EAGAIN; si++) {
		static const char *const NAMES[] = {"stdout", "stderr"};
		json_t *part = json_object_get(result, NAMES[si]);
		long n = part ? ndjson_event(o, si, part, bytes, &wrote) : -EBADMSG;
		got = n < 0 ? n : got + n;
	}
	int skipped = o->ndjson && si < 2; /* stderr's part waits for the next read */
	if (!o->ndjson)
		got = raw_write(o, result, bytes, &wrote);
	if (got == -ESPIPE) {
		output_finish(o, 500, "internal", "output was dropped before it was read");
		return;
	}
	if (got < 0) {
		output_finish(o, 500, "internal", "the worker sent unreadable output");
		return;
	}
	o->answers++;
	if (skipped && got >= 0) {
		call->req->on_drain = output_drained; /* read again once the client took this */
		return;
	}
	if (json_is_true(json_object_get(result, "eof"))) {
		if (o->ndjson)
			output_exit(o);
		else
			output_finish(o, 200, "", "");
		return;
	}
	if (!o->follow) {
		output_finish(o, 200, "", "");
		return;
	}
	if (wrote == -EAGAIN) {
		call->req->on_drain = output_drained;
		return;
	}
	if (got > 0) {
		output_next(o);
		return;
	}
	/* Nothing new and the worker did not wait (its readers are at their limit, or the wait
	 * ran out): ask again a little later rather than at once. */
	if (output_timer_start(o, output_timer) < 0)
		output_finish(o, 503, "unavailable", "out of memory");
}

/* A query parameter as a count of bytes (0 or more); 0 when absent, 1 when present, -1 after a
 * 400 reply. */
static int query_u64(struct api_call *call, const char *key, uint64_t *ret)
{
	char num[32];
	int r = http_query_get(call->req, key, 0, num, sizeof(num));
	if (r == -ENOENT)
		return 0;
	char *end;
	errno = 0;
	long long v = r > 0 && num[0] >= '0' && num[0] <= '9' ? strtoll(num, &end, 10) : -1;
	if (r <= 0 || v < 0 || *end || errno == ERANGE) {
		api_reply_error(call, 400, "invalid_argument",
		                "%s: expected a number of bytes, 0 or more", key);
		return -1;
	}
	*ret = (uint64_t)v;
	return 1;
}

static void output_get(struct http_request *req, const char *exec)
{
	struct api_call *call = req->data;
	struct output_read q = {.call = call, .max = OUTPUT_MAX_READ_BYTES};
	char stream[16], fmt[16];
	int r = http_query_get(req, "format", 0, fmt, sizeof(fmt));
	if (r >= 0 && !strcmp(fmt, "ndjson"))
		q.ndjson = 1;
	else if (r != -ENOENT && (r < 0 || strcmp(fmt, "raw"))) {
		api_reply_error(call, 400, "invalid_argument", "format: raw or ndjson");
		return;
	}
	r = http_query_get(req, "stream", 0, stream, sizeof(stream));
	if (r >= 0 && q.ndjson) {
		api_reply_error(call, 400, "invalid_argument",
		                "stream: not with format=ndjson, which sends both");
		return;
	}
	if (r >= 0 && !strcmp(stream, "stderr"))
		q.stream = 1;
	else if (r != -ENOENT && (r < 0 || strcmp(stream, "stdout"))) {
		api_reply_error(call, 400, "invalid_argument", "stream: stdout or stderr");
		return;
	}
	uint64_t max = q.max;
	if (query_u64(call, "max", &max) < 0 || api_query_bool(call, "follow", &q.follow) < 0)
		return;
	if (max == 0) {
		api_reply_error(call, 400, "invalid_argument", "max: expected 1 or more bytes");
		return;
	}
	q.max = max < q.max ? (size_t)max : q.max;
	if (q.ndjson) {
		if (query_u64(call, "stdout_offset", &q.offset[0]) < 0 ||
		    query_u64(call, "stderr_offset", &q.offset[1]) < 0)
			return;
	} else if (query_u64(call, "offset", &q.offset[q.stream]) < 0) {
		return;
	}
	const char *id = req->params[0];
	struct sandbox_rec *sb = sandbox_find(call->srv, id);
	if (!sb || !api_can_see(call, sb->row.workspace_id)) {
		api_reply_error(call, 404, "not_found", "sandbox %.64s not found", id);
		return;
	}
	if (exec && !map_get(&sb->execs, exec)) {
		api_reply_error(call, 404, "not_found", "exec %.64s not found in %s", exec,
		                sb->row.id);
		return;
	}
	if (sb->removed || !sb->worker || !sb->worker->connected) {
		api_reply_error(call, sb->removed ? 409 : 503,
		                sb->removed ? "conflict" : "unavailable",
		                sb->removed ? "sandbox %s was deleted: its output is gone"
		                            : "the worker of %s is not connected",
		                sb->row.id);
		return;
	}
	snprintf(q.sandbox, sizeof(q.sandbox), "%s", sb->row.id);
	snprintf(q.exec, sizeof(q.exec), "%s", exec ? exec : "");
	if (!q.ndjson && !q.follow) {
		/* One read, answered whole with its headers. */
		json_t *args =
		    json_pack("{s:s, s:I, s:I}", "stream", q.stream ? "stderr" : "stdout", "offset",
		              (json_int_t)q.offset[q.stream], "max", (json_int_t)q.max);
		if (args && exec)
			json_object_set_new(args, "exec", json_string(exec));
		file_call_send(call, sb, "output", args, file_done_raw);
		return;
	}
	struct output_read *o = malloc(sizeof(*o));
	if (!o) {
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	*o = q;
	call->stream = o;
	output_next(o);
}

void api_exec_output(struct http_request *req)
{
	output_get(req, req->params[1]);
}

void api_sandbox_logs(struct http_request *req)
{
	output_get(req, NULL);
}
