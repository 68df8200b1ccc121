/* /v1/sandboxes/{id}/files and /fs/…: files inside a running sandbox. The server checks the
 * request and who asks; the worker's spawner does the work inside the sandbox's root (where `..`
 * and symlinks never leave it) and answers with a file_done event. Nothing here is persisted: a
 * file operation is not state of the control plane. */
#include <stdlib.h>
#include <string.h>

#include "../lib/encoding.h"
#include "../runtime/spec.h"
#include "server.h"

struct file_call {
	char id[ID_MAX_BYTES]; /* fr-… */
	char sandbox[ID_MAX_BYTES];
	struct api_call *call;
	uv_timer_t *timer;
	int raw;            /* reply with the file's bytes rather than JSON */
	const char *unwrap; /* reply with this member of the result (fs/stat: its entry) */
};

static void file_call_end(struct server *srv, struct file_call *fc)
{
	map_remove(&srv->file_calls, fc->id);
	if (fc->call) {
		fc->call->req->on_abort = NULL;
		fc->call->waiter = NULL;
	}
	server_timer_free(fc->timer);
	free(fc);
}

static void file_call_timeout(uv_timer_t *t)
{
	struct file_call *fc = t->data;
	struct api_call *call = fc->call;
	struct server *srv = call->srv;
	call->obj = NULL;
	file_call_end(srv, fc);
	api_reply_error(call, 504, "deadline_exceeded", "the worker did not answer in time");
}

static void file_call_aborted(struct http_request *req)
{
	struct api_call *call = req->data;
	struct file_call *fc = call ? call->obj : NULL;
	if (!fc)
		return;
	call->obj = NULL;
	fc->call = NULL;
	struct server *srv = call->srv;
	file_call_end(srv, fc);
	api_reply_error(call, 499, "cancelled", "the client went away");
}

/* A path inside the sandbox from the query or the body: absolute, bounded, no NUL. */
static int path_valid(const char *p, size_t len)
{
	return len > 0 && len < SPEC_MAX_PATH_BYTES && p[0] == '/' && strlen(p) == len;
}

/* Send op with args to the sandbox's worker and wait for its file_done. Steals args. */
static void file_call_start(struct api_call *call, struct sandbox_rec *sb, const char *op,
                            json_t *args, int raw)
{
	struct server *srv = call->srv;
	struct file_call *fc = calloc(1, sizeof(*fc));
	uv_timer_t *t =
	    fc ? server_timer_new(srv, file_call_timeout, SERVER_FILE_TIMEOUT_MS, fc) : NULL;
	if (!t || !args || id_new("fr-", fc->id, sizeof(fc->id)) < 0 ||
	    map_put(&srv->file_calls, fc->id, fc) < 0) {
		server_timer_free(t);
		free(fc);
		json_decref(args);
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	fc->call = call;
	fc->raw = raw;
	fc->unwrap = !strcmp(op, "fs_stat") ? "entry" : NULL;
	snprintf(fc->sandbox, sizeof(fc->sandbox), "%s", sb->row.id);
	fc->timer = t;
	call->obj = fc;
	call->req->on_abort = file_call_aborted;
	json_object_set_new(args, "sandbox", json_string(sb->row.id));
	json_object_set_new(args, "request", json_string(fc->id));
	json_object_set_new(args, "file_op", json_string(op));
	if (link_command(srv, sb->worker, "file", args) < 0) {
		call->obj = NULL;
		file_call_end(srv, fc);
		api_reply_error(call, 503, "unavailable", "the worker can't take commands");
	}
}

static int status_of(const char *code)
{
	static const struct {
		const char *code;
		int status;
	} MAP[] = {{"invalid_argument", 400},  {"not_found", 404},
	           {"conflict", 409},          {"payload_too_large", 413},
	           {"permission_denied", 403}, {"resource_exhausted", 429},
	           {"unavailable", 503}};
	for (size_t i = 0; i < ARRAY_SIZE(MAP); i++)
		if (!strcmp(code, MAP[i].code))
			return MAP[i].status;
	return 500;
}

void link_file_done(struct server *srv, struct worker_rec *w, json_t *ev)
{
	const char *id = json_string_value(json_object_get(ev, "request"));
	const char *sbid = json_string_value(json_object_get(ev, "sandbox"));
	struct file_call *fc = id ? map_get(&srv->file_calls, id) : NULL;
	if (!fc)
		return; /* timed out, or its client left */
	struct sandbox_rec *sb = sandbox_find(srv, fc->sandbox);
	if (!sbid || strcmp(sbid, fc->sandbox) || !sb || sb->worker != w)
		return; /* not this worker's to answer */
	struct api_call *call = fc->call;
	int raw = fc->raw;
	const char *unwrap = fc->unwrap;
	call->obj = NULL;
	file_call_end(srv, fc);
	json_t *err = json_object_get(ev, "error");
	if (!json_is_true(json_object_get(ev, "ok")) || err) {
		const char *code = json_string_value(json_object_get(err, "code"));
		const char *msg = json_string_value(json_object_get(err, "message"));
		api_reply_error(call, status_of(code ? code : "internal"), code ? code : "internal",
		                "%s", msg ? msg : "the file operation failed");
		return;
	}
	json_t *result = json_object_get(ev, "result");
	if (!raw) {
		json_t *out = unwrap ? json_object_get(result, unwrap) : result;
		api_reply_json(call, 200, out ? json_incref(out) : json_object());
		return;
	}
	const char *b64 = json_string_value(json_object_get(result, "data_b64"));
	size_t blen = b64 ? strlen(b64) : 0;
	/* Output reads say where the bytes start, how many were written so far, and whether the
	 * writer has ended. */
	static const char *const META[][2] = {
	    {"offset", "X-Skiff-Offset"}, {"size", "X-Skiff-Size"}, {"eof", "X-Skiff-Eof"}};
	for (size_t i = 0; i < ARRAY_SIZE(META); i++) {
		json_t *v = json_object_get(result, META[i][0]);
		char val[32];
		if (json_is_integer(v))
			snprintf(val, sizeof(val), "%lld", (long long)json_integer_value(v));
		else if (json_is_boolean(v))
			snprintf(val, sizeof(val), "%s", json_is_true(v) ? "true" : "false");
		else
			continue;
		http_reply_header(call->req, META[i][1], val);
	}
	unsigned char *data = malloc(blen / 4 * 3 + 1);
	long n = data ? base64_decode(b64 ? b64 : "", blen, data) : -ENOMEM;
	if (n < 0) {
		free(data);
		api_reply_error(call, 500, "internal", "the worker sent unreadable data");
		return;
	}
	struct http_request *req = call->req;
	req->data = NULL;
	api_call_free(call);
	http_reply(req, 200, "application/octet-stream", data, (size_t)n);
	free(data);
}

/* GET /v1/sandboxes/{id}/files?path= */
void api_files_get(struct http_request *req)
{
	struct api_call *call = req->data;
	char path[SPEC_MAX_PATH_BYTES + 1];
	int n = http_query_get(req, "path", 0, path, sizeof(path));
	if (n < 0 || !path_valid(path, (size_t)n)) {
		api_reply_error(call, 400, "invalid_argument",
		                "path: an absolute path inside the sandbox is required");
		return;
	}
	struct sandbox_rec *sb = api_sandbox_running(call, "its files exist only while it runs");
	if (sb)
		file_call_start(
		    call, sb, "file_read",
		    json_pack("{s:s, s:I}", "path", path, "max", (json_int_t)SERVER_MAX_FILE_BYTES),
		    1);
}

static int query_bool(struct api_call *call, const char *key, int *ret)
{
	char buf[8];
	int r = http_query_get(call->req, key, 0, buf, sizeof(buf));
	*ret = 0;
	if (r == -ENOENT)
		return 0;
	if (r >= 0 && (!strcmp(buf, "true") || !strcmp(buf, "1")))
		*ret = 1;
	else if (r < 0 || (strcmp(buf, "false") && strcmp(buf, "0"))) {
		api_reply_error(call, 400, "invalid_argument", "%s: expected true or false", key);
		return -1;
	}
	return 0;
}

/* PUT /v1/sandboxes/{id}/files?path=&mode=&parents= with the raw bytes as the body. */
void api_files_put(struct http_request *req)
{
	struct api_call *call = req->data;
	char path[SPEC_MAX_PATH_BYTES + 1], mode_s[16];
	int n = http_query_get(req, "path", 0, path, sizeof(path));
	if (n < 0 || !path_valid(path, (size_t)n)) {
		api_reply_error(call, 400, "invalid_argument",
		                "path: an absolute path inside the sandbox is required");
		return;
	}
	long mode = 0644;
	int m = http_query_get(req, "mode", 0, mode_s, sizeof(mode_s));
	if (m >= 0) {
		char *end;
		mode = strtol(mode_s, &end, 8);
		if (m < 1 || m > 4 || strspn(mode_s, "01234567") != (size_t)m || *end ||
		    mode > 01777) {
			api_reply_error(
			    call, 400, "invalid_argument",
			    "mode: octal permission bits, such as 644 or 755 (no setuid)");
			return;
		}
	} else if (m != -ENOENT) {
		api_reply_error(call, 400, "invalid_argument", "mode: bad value");
		return;
	}
	int parents;
	if (query_bool(call, "parents", &parents) < 0)
		return;
	struct sandbox_rec *sb = api_sandbox_running(call, "its files exist only while it runs");
	if (!sb)
		return;
	char *b64 = malloc(base64_encoded_size(req->body_len));
	if (!b64) {
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	base64_encode(req->body, req->body_len, b64);
	json_t *args = json_pack("{s:s, s:s, s:i, s:b}", "path", path, "data_b64", b64, "mode",
	                         (int)mode, "parents", parents);
	free(b64);
	file_call_start(call, sb, "file_write", args, 0);
}

static int depth_param(struct api_call *call, int *ret)
{
	char buf[8];
	int r = http_query_get(call->req, "depth", 0, buf, sizeof(buf));
	*ret = 1;
	if (r == -ENOENT)
		return 0;
	char *end;
	long v = r >= 0 ? strtol(buf, &end, 10) : -1;
	if (r < 0 || !buf[0] || *end || v < 1 || v > 16) {
		api_reply_error(call, 400, "invalid_argument", "depth: expected 1 to 16");
		return -1;
	}
	*ret = (int)v;
	return 0;
}

/* GET fs/list?path=&depth= and fs/stat?path= */
static void fs_query(struct http_request *req, const char *op)
{
	struct api_call *call = req->data;
	char path[SPEC_MAX_PATH_BYTES + 1];
	int n = http_query_get(req, "path", 0, path, sizeof(path));
	if (n < 0 || !path_valid(path, (size_t)n)) {
		api_reply_error(call, 400, "invalid_argument",
		                "path: an absolute path inside the sandbox is required");
		return;
	}
	int depth = 1;
	if (!strcmp(op, "fs_list") && depth_param(call, &depth) < 0)
		return;
	struct sandbox_rec *sb = api_sandbox_running(call, "its files exist only while it runs");
	if (sb)
		file_call_start(call, sb, op, json_pack("{s:s, s:i}", "path", path, "depth", depth),
		                0);
}

void api_fs_list(struct http_request *req)
{
	fs_query(req, "fs_list");
}

void api_fs_stat(struct http_request *req)
{
	fs_query(req, "fs_stat");
}

/* POST fs/mkdir {path, parents}, fs/remove {path, recursive}, fs/move {from, to} */
static void fs_change(struct http_request *req, const char *op, const char *const *paths,
                      const char *flag)
{
	struct api_call *call = req->data;
	json_t *body = api_body_object(call);
	if (!body)
		return;
	json_t *args = json_object();
	const char *key;
	json_t *v;
	json_object_foreach (body, key, v) {
		int is_path = !strcmp(key, paths[0]) || (paths[1] && !strcmp(key, paths[1]));
		if (is_path) {
			if (!json_is_string(v) ||
			    !path_valid(json_string_value(v), json_string_length(v))) {
				api_reply_error(
				    call, 400, "invalid_argument",
				    "%s: an absolute path inside the sandbox is required", key);
				goto out;
			}
		} else if (flag && !strcmp(key, flag)) {
			if (!json_is_boolean(v)) {
				api_reply_error(call, 400, "invalid_argument",
				                "%s: expected a boolean", key);
				goto out;
			}
		} else {
			api_reply_error(call, 400, "invalid_argument", "unknown field \"%.64s\"",
			                key);
			goto out;
		}
		json_object_set(args, key, v);
	}
	for (int i = 0; i < 2 && paths[i]; i++)
		if (!json_object_get(args, paths[i])) {
			api_reply_error(call, 400, "invalid_argument", "%s: required", paths[i]);
			goto out;
		}
	struct sandbox_rec *sb = api_sandbox_running(call, "its files exist only while it runs");
	if (sb) {
		file_call_start(call, sb, op, args, 0);
		args = NULL;
	}
out:
	json_decref(args);
	json_decref(body);
}

void api_fs_mkdir(struct http_request *req)
{
	static const char *const P[] = {"path", NULL};
	fs_change(req, "fs_mkdir", P, "parents");
}

void api_fs_remove(struct http_request *req)
{
	static const char *const P[] = {"path", NULL};
	fs_change(req, "fs_remove", P, "recursive");
}

void api_fs_move(struct http_request *req)
{
	static const char *const P[] = {"from", "to"};
	fs_change(req, "fs_move", P, NULL);
}

/* GET /v1/sandboxes/{id}/execs/{ex}/output and /v1/sandboxes/{id}/logs:
 * ?stream=stdout|stderr&offset=N[&max=M] → the bytes of one stream from offset N (at most M, and
 * at most 1 MiB a call); X-Skiff-Offset says where they start (later than N when older bytes were
 * dropped), X-Skiff-Size how many were written so far, X-Skiff-Eof whether the writer ended.
 * Reads are resumable: ask again from offset + the bytes received. */
static void output_get(struct http_request *req, const char *exec)
{
	struct api_call *call = req->data;
	char stream[16], num[32];
	int r = http_query_get(req, "stream", 0, stream, sizeof(stream));
	if (r == -ENOENT)
		snprintf(stream, sizeof(stream), "stdout");
	else if (r < 0 || (strcmp(stream, "stdout") && strcmp(stream, "stderr"))) {
		api_reply_error(call, 400, "invalid_argument", "stream: stdout or stderr");
		return;
	}
	long long offset = 0, max = OUTPUT_MAX_READ_BYTES;
	static const char *const KEYS[] = {"offset", "max"};
	long long *vals[] = {&offset, &max};
	for (int i = 0; i < 2; i++) {
		r = http_query_get(req, KEYS[i], 0, num, sizeof(num));
		if (r == -ENOENT)
			continue;
		char *end;
		long long v = r >= 0 ? strtoll(num, &end, 10) : -1;
		if (r < 0 || !num[0] || *end || v < 0) {
			api_reply_error(call, 400, "invalid_argument",
			                "%s: expected a number of bytes, 0 or more", KEYS[i]);
			return;
		}
		*vals[i] = v;
	}
	if (max > OUTPUT_MAX_READ_BYTES)
		max = OUTPUT_MAX_READ_BYTES;
	char fmt[16];
	if (http_query_get(req, "format", 0, fmt, sizeof(fmt)) != -ENOENT ||
	    http_query_get(req, "follow", 0, fmt, sizeof(fmt)) != -ENOENT) {
		api_reply_error(call, 400, "invalid_argument",
		                "format and follow: not supported yet; read with offsets");
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
	json_t *args = json_pack("{s:s, s:I, s:I}", "stream", stream, "offset", (json_int_t)offset,
	                         "max", (json_int_t)max);
	if (args && exec)
		json_object_set_new(args, "exec", json_string(exec));
	file_call_start(call, sb, "output", args, 1);
}

void api_exec_output(struct http_request *req)
{
	output_get(req, req->params[1]);
}

void api_sandbox_logs(struct http_request *req)
{
	output_get(req, NULL);
}

/* A worker lost: the file calls it was to answer are answered now. */
void file_calls_worker_lost(struct server *srv, struct worker_rec *w)
{
	size_t pos = 0;
	struct file_call *fc;
	while ((fc = map_next(&srv->file_calls, &pos))) {
		struct sandbox_rec *sb = sandbox_find(srv, fc->sandbox);
		if (sb && sb->worker != w)
			continue;
		struct api_call *call = fc->call;
		call->obj = NULL;
		file_call_end(srv, fc);
		api_reply_error(call, 503, "unavailable", "the sandbox's worker was lost");
	}
}

/* At shutdown: answer every file call still waiting. */
void file_calls_cancel_all(struct server *srv)
{
	size_t pos = 0;
	struct file_call *fc;
	while ((fc = map_next(&srv->file_calls, &pos))) {
		struct api_call *call = fc->call;
		call->obj = NULL;
		file_call_end(srv, fc);
		api_reply_error(call, 503, "unavailable", "the server is stopping");
	}
}
