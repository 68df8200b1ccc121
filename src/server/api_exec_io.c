/* /v1/sandboxes/{id}/execs/{ex}/stdin, /signal and /resize: what a client sends a running exec.
 * The server checks the request and who asks; the worker's spawner writes to the exec's stdin
 * or terminal, signals it, sizes its terminal, and answers (see docs/WORKER.md). Like file
 * operations, nothing here is persisted. */
#include <string.h>

#include "../lib/signame.h"
#include "server.h"

/* The exec of the route and the request's JSON object body; else replies (404, 400). */
static struct exec_rec *exec_and_body(struct api_call *call, json_t **ret_body)
{
	struct exec_rec *ex = exec_of_call(call);
	json_t *body = ex ? api_body_object(call) : NULL;
	if (!body)
		return NULL;
	*ret_body = body;
	return ex;
}

/* Whether the exec was started with flag ("stdin", "pty") true in its body. */
static int exec_flag(const struct exec_rec *ex, const char *flag)
{
	json_t *body = ex->row.command_json ? json_loads(ex->row.command_json, 0, NULL) : NULL;
	int on = json_is_true(json_object_get(body, flag));
	json_decref(body);
	return on;
}

/* The exec still runs (or starts); else replies 409. Then its sandbox, running, with its worker
 * connected; else replies. */
static struct sandbox_rec *exec_running(struct api_call *call, struct exec_rec *ex)
{
	if (strcmp(ex->row.state, "pending") && strcmp(ex->row.state, "running")) {
		api_reply_error(call, 409, "conflict", "exec %s has ended (%s)", ex->row.id,
		                ex->row.state);
		return NULL;
	}
	return api_sandbox_running(call, "its execs run only while it runs");
}

/* A stdin write answered (or failed): its bytes no longer count as on their way. */
static void stdin_done(struct api_call *call, json_t *result, const struct file_bytes *bytes,
                       int status, const char *code, const char *msg)
{
	call->srv->stdin_bytes -= call->stdin_bytes;
	call->stdin_bytes = 0;
	file_done_json(call, result, bytes, status, code, msg);
}

/* POST …/stdin[?eof=true] with the raw bytes as the body: they are appended to the exec's stdin
 * (a terminal's input); the reply comes once they are in (a full pipe waits for the exec to
 * read). eof closes stdin after them. One write at a time per exec: 409 while one waits. */
void api_exec_stdin(struct http_request *req)
{
	struct api_call *call = req->data;
	struct exec_rec *ex = exec_of_call(call);
	int eof;
	if (!ex || api_query_bool(call, "eof", &eof) < 0)
		return;
	if (!exec_flag(ex, "stdin") && !exec_flag(ex, "pty")) {
		api_reply_error(call, 409, "conflict",
		                "exec %s was started without stdin: start it with \"stdin\": true",
		                ex->row.id);
		return;
	}
	struct sandbox_rec *sb = exec_running(call, ex);
	if (!sb)
		return;
	struct server *srv = call->srv;
	if (req->body_len > srv->cfg.max_stdin_inflight_bytes - srv->stdin_bytes) {
		api_reply_error(
		    call, 429, "resource_exhausted",
		    "%zu bytes of stdin are on their way to executions already; try again "
		    "shortly",
		    srv->stdin_bytes);
		return;
	}
	json_t *b64 = api_body_base64(call);
	if (!b64)
		return;
	call->stdin_bytes = req->body_len;
	srv->stdin_bytes += req->body_len;
	/* file_call_send calls sandbox_touch: a stdin write is I/O for idle_timeout_s. */
	file_call_send(
	    call, sb, "stdin",
	    json_pack("{s:s, s:o, s:b}", "exec", ex->row.id, "data_b64", b64, "eof", eof),
	    stdin_done);
}

/* POST …/signal {"signal": "TERM" | "SIGTERM" | 15}: to the exec's process (its pidfd). */
void api_exec_signal(struct http_request *req)
{
	struct api_call *call = req->data;
	json_t *body;
	struct exec_rec *ex = exec_and_body(call, &body);
	if (!ex)
		return;
	json_t *v = json_object_get(body, "signal");
	int sig = -1;
	if (json_is_string(v))
		sig = signal_parse(json_string_value(v), json_string_length(v));
	else if (json_is_integer(v) && json_integer_value(v) >= 1 &&
	         json_integer_value(v) <= SIGNAME_MAX)
		sig = (int)json_integer_value(v);
	if (sig < 0 || json_object_size(body) != 1) {
		api_reply_error(
		    call, 400, "invalid_argument",
		    "signal: a name such as \"TERM\" or \"SIGKILL\", or a number from 1 "
		    "to %d (and no other field)",
		    SIGNAME_MAX);
		json_decref(body);
		return;
	}
	json_decref(body);
	struct sandbox_rec *sb = exec_running(call, ex);
	if (sb)
		file_call_send(call, sb, "signal",
		               json_pack("{s:s, s:i}", "exec", ex->row.id, "signal", sig),
		               file_done_json);
}

/* POST …/resize {"rows": R, "cols": C}: the size of the exec's terminal (it gets SIGWINCH). */
void api_exec_resize(struct http_request *req)
{
	struct api_call *call = req->data;
	json_t *body;
	struct exec_rec *ex = exec_and_body(call, &body);
	if (!ex)
		return;
	if (!pty_size_valid(body)) {
		api_reply_error(call, 400, "invalid_argument",
		                "expected {\"rows\": R, \"cols\": C}, each from 1 to %d",
		                EXEC_PTY_MAX_SIZE);
		json_decref(body);
		return;
	}
	json_t *args =
	    json_pack("{s:s, s:O, s:O}", "exec", ex->row.id, "rows", json_object_get(body, "rows"),
	              "cols", json_object_get(body, "cols"));
	json_decref(body);
	if (!exec_flag(ex, "pty")) {
		json_decref(args);
		api_reply_error(call, 409, "conflict",
		                "exec %s has no terminal: start it with \"pty\": true", ex->row.id);
		return;
	}
	struct sandbox_rec *sb = exec_running(call, ex);
	if (sb)
		file_call_send(call, sb, "resize", args, file_done_json);
	else
		json_decref(args);
}
