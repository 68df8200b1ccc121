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
	file_call_done_fn done;
	int output; /* an output read: it may wait on the worker; reading it is not activity */
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
	file_call_done_fn done = fc->done;
	call->obj = NULL;
	file_call_end(call->srv, fc);
	done(call, NULL, NULL, 504, "deadline_exceeded", "the worker did not answer in time");
}

static void file_call_aborted(struct http_request *req)
{
	struct api_call *call = req->data;
	struct file_call *fc = call ? call->obj : NULL;
	if (!fc)
		return;
	file_call_done_fn done = fc->done;
	struct sandbox_rec *sb = fc->output ? sandbox_find(call->srv, fc->sandbox) : NULL;
	if (sb && sb->worker && sb->worker->connected) /* the worker need not wait for output */
		link_command(call->srv, sb->worker, "file_cancel",
		             json_pack("{s:s, s:s}", "sandbox", fc->sandbox, "request", fc->id));
	call->obj = NULL;
	fc->call = NULL;
	file_call_end(call->srv, fc);
	done(call, NULL, NULL, 499, "cancelled", "the client went away");
}

/* A path inside the sandbox from the query or the body: absolute, bounded, no NUL. */
static int path_valid(const char *p, size_t len)
{
	return len > 0 && len < SPEC_MAX_PATH_BYTES && p[0] == '/' && strlen(p) == len;
}

void file_call_send(struct api_call *call, struct sandbox_rec *sb, const char *op, json_t *args,
                    file_call_done_fn done)
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
		done(call, NULL, NULL, 503, "unavailable", "out of memory");
		return;
	}
	fc->output = !strcmp(op, "output");
	if (!fc->output)
		sandbox_touch(srv, sb); /* I/O: not idle */
	fc->call = call;
	fc->done = done;
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
		done(call, NULL, NULL, 503, "unavailable", "the worker can't take commands");
	}
}

void file_done_json(struct api_call *call, json_t *result, const struct file_bytes *bytes,
                    int status, const char *code, const char *msg)
{
	(void)bytes;
	if (result)
		api_reply_json(call, 200, json_incref(result));
	else
		api_reply_error(call, status, code, "%s", msg);
}

/* fs/stat: the entry alone. */
static void done_stat(struct api_call *call, json_t *result, const struct file_bytes *bytes,
                      int status, const char *code, const char *msg)
{
	file_done_json(call, result ? json_object_get(result, "entry") : NULL, bytes,
	               result ? 500 : status, result ? "internal" : code,
	               result ? "the worker sent no entry" : msg);
}

static int status_of(const char *code)
{
	static const struct {
		const char *code;
		int status;
	} MAP[] = {{"invalid_argument", 400},  {"not_found", 404},
	           {"conflict", 409},          {"payload_too_large", 413},
	           {"permission_denied", 403}, {"resource_exhausted", 429},
	           {"unavailable", 503},       {"deadline_exceeded", 504}};
	for (size_t i = 0; i < ARRAY_SIZE(MAP); i++)
		if (!strcmp(code, MAP[i].code))
			return MAP[i].status;
	return 500;
}

/* The worker's part of a file call, checked: its call, or NULL when it has none to answer (timed
 * out, its client left, not this worker's sandbox). */
static struct file_call *file_call_of(struct server *srv, struct worker_rec *w, json_t *msg)
{
	const char *id = json_string_value(json_object_get(msg, "request"));
	const char *sbid = json_string_value(json_object_get(msg, "sandbox"));
	struct file_call *fc = id ? map_get(&srv->file_calls, id) : NULL;
	if (!fc)
		return NULL;
	struct sandbox_rec *sb = sandbox_find(srv, fc->sandbox);
	if (!sbid || strcmp(sbid, fc->sandbox) || !sb || sb->worker != w)
		return NULL;
	if (!fc->output) /* an operation as long as the idle limit ends no less active */
		sandbox_touch(srv, sb);
	return fc;
}

void link_file_done(struct server *srv, struct worker_rec *w, json_t *ev)
{
	struct file_call *fc = file_call_of(srv, w, ev);
	if (!fc)
		return;
	struct api_call *call = fc->call;
	file_call_done_fn done = fc->done;
	call->obj = NULL;
	file_call_end(srv, fc);
	json_t *err = json_object_get(ev, "error");
	if (!json_is_true(json_object_get(ev, "ok")) || err) {
		const char *code = json_string_value(json_object_get(err, "code"));
		const char *msg = json_string_value(json_object_get(err, "message"));
		done(call, NULL, NULL, status_of(code ? code : "internal"),
		     code ? code : "internal", msg ? msg : "the file operation failed");
		return;
	}
	json_t *result = json_object_get(ev, "result");
	done(call, json_is_object(result) ? result : NULL, NULL, 500, "internal",
	     "the worker sent no result");
}

void link_output(struct http_request *req)
{
	struct api_call *call = req->data;
	size_t scan =
	    req->body_len < LINK_OUTPUT_MAX_META_BYTES ? req->body_len : LINK_OUTPUT_MAX_META_BYTES;
	const char *nl = memchr(req->body, '\n', scan);
	json_t *meta = nl ? json_loadb(req->body, (size_t)(nl - req->body), 0, NULL) : NULL;
	if (!json_is_object(meta)) {
		json_decref(meta);
		api_reply_error(call, 400, "invalid_argument", "expected a JSON line, then bytes");
		return;
	}
	struct worker_rec *w = link_worker_of(call, meta);
	if (!w) {
		json_decref(meta);
		return;
	}
	/* The bytes: each stream's "length" of them, in order, and nothing else. */
	json_t *result = json_object_get(meta, "result");
	json_t *parts[2] = {json_object_get(result, "stdout"), json_object_get(result, "stderr")};
	if (!parts[0] && !parts[1])
		parts[0] = result;
	struct file_bytes bytes = {{NULL, NULL}, {0, 0}};
	const char *p = nl + 1;
	size_t left = req->body_len - (size_t)(p - req->body);
	int ok = json_is_object(result);
	for (int i = 0; i < 2 && ok; i++) {
		json_t *len = json_object_get(parts[i], "length");
		if (!parts[i])
			continue;
		ok = json_is_integer(len) && json_integer_value(len) >= 0 &&
		     (size_t)json_integer_value(len) <= left;
		if (!ok)
			break;
		bytes.data[i] = p;
		bytes.len[i] = (size_t)json_integer_value(len);
		p += bytes.len[i];
		left -= bytes.len[i];
	}
	if (!ok || left) {
		json_decref(meta);
		api_reply_error(call, 400, "invalid_argument", "the lengths don't match the bytes");
		return;
	}
	struct file_call *fc = file_call_of(call->srv, w, meta);
	struct sandbox_rec *sb = fc ? sandbox_find(call->srv, fc->sandbox) : NULL;
	if (sb && bytes.len[0] + bytes.len[1] > 0)
		sandbox_touch(call->srv, sb); /* output read: the exec's I/O */
	if (fc) {
		struct api_call *fcall = fc->call;
		file_call_done_fn done = fc->done;
		fcall->obj = NULL;
		file_call_end(call->srv, fc);
		done(fcall, result, &bytes, 500, "internal", "");
	}
	json_decref(meta);
	api_reply_json(call, 200, json_object());
}

/* The bytes of a file or output read as the raw reply, with what an output read says of them
 * in headers: where they start, how many were written so far, whether the writer has ended. */
int file_result_bytes(json_t *part, const struct file_bytes *bytes, int i, const char **ret,
                      size_t *ret_len, char **ret_owned)
{
	*ret_owned = NULL;
	if (bytes) {
		*ret = bytes->data[i] ? bytes->data[i] : "";
		*ret_len = bytes->len[i];
		return 0;
	}
	const char *b64 = json_string_value(json_object_get(part, "data_b64"));
	size_t blen = b64 ? strlen(b64) : 0;
	char *data = b64 ? malloc(blen / 4 * 3 + 1) : NULL;
	long n = data ? base64_decode(b64, blen, (unsigned char *)data) : -EBADMSG;
	if (n < 0) {
		free(data);
		return -EBADMSG;
	}
	*ret = *ret_owned = data;
	*ret_len = (size_t)n;
	return 0;
}

/* The bytes of a file or output read as the raw reply, with what an output read says of them
 * in headers: where they start, how many were written so far, whether the writer has ended. */
void file_done_raw(struct api_call *call, json_t *result, const struct file_bytes *bytes,
                   int status, const char *code, const char *msg)
{
	if (!result) {
		api_reply_error(call, status, code, "%s", msg);
		return;
	}
	const char *data;
	size_t len;
	_cleanup_free_ char *owned = NULL;
	if (file_result_bytes(result, bytes, 0, &data, &len, &owned) < 0) {
		api_reply_error(call, 500, "internal", "the worker sent unreadable data");
		return;
	}
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
	struct http_request *req = call->req;
	req->data = NULL;
	api_call_free(call);
	http_reply(req, 200, "application/octet-stream", data, len);
}

/* The "path" query parameter into path (size bytes): 0, or -1 after a 400 reply. */
static int query_path(struct api_call *call, char *path, size_t size)
{
	int n = http_query_get(call->req, "path", 0, path, size);
	if (n < 0 || !path_valid(path, (size_t)n)) {
		api_reply_error(call, 400, "invalid_argument",
		                "path: an absolute path inside the sandbox is required");
		return -1;
	}
	return 0;
}

/* GET /v1/sandboxes/{id}/files?path= */
void api_files_get(struct http_request *req)
{
	struct api_call *call = req->data;
	char path[SPEC_MAX_PATH_BYTES + 1];
	if (query_path(call, path, sizeof(path)) < 0)
		return;
	struct sandbox_rec *sb = api_sandbox_running(call, "its files exist only while it runs");
	if (sb)
		file_call_send(
		    call, sb, "file_read",
		    json_pack("{s:s, s:I}", "path", path, "max", (json_int_t)SERVER_MAX_FILE_BYTES),
		    file_done_raw);
}

/* PUT /v1/sandboxes/{id}/files?path=&mode=&parents= with the raw bytes as the body. */
void api_files_put(struct http_request *req)
{
	struct api_call *call = req->data;
	char path[SPEC_MAX_PATH_BYTES + 1], mode_s[16];
	if (query_path(call, path, sizeof(path)) < 0)
		return;
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
	if (api_query_bool(call, "parents", &parents) < 0)
		return;
	struct sandbox_rec *sb = api_sandbox_running(call, "its files exist only while it runs");
	if (!sb)
		return;
	json_t *b64 = api_body_base64(call);
	if (b64)
		file_call_send(call, sb, "file_write",
		               json_pack("{s:s, s:o, s:i, s:b}", "path", path, "data_b64", b64,
		                         "mode", (int)mode, "parents", parents),
		               file_done_json);
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
	if (query_path(call, path, sizeof(path)) < 0)
		return;
	int depth = 1;
	if (!strcmp(op, "fs_list") && depth_param(call, &depth) < 0)
		return;
	struct sandbox_rec *sb = api_sandbox_running(call, "its files exist only while it runs");
	if (sb)
		file_call_send(call, sb, op, json_pack("{s:s, s:i}", "path", path, "depth", depth),
		               strcmp(op, "fs_stat") ? file_done_json : done_stat);
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
		file_call_send(call, sb, op, args, file_done_json);
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
		file_call_done_fn done = fc->done;
		call->obj = NULL;
		file_call_end(srv, fc);
		done(call, NULL, NULL, 503, "unavailable", "the sandbox's worker was lost");
	}
}

/* At shutdown: answer every file call still waiting. */
void file_calls_cancel_all(struct server *srv)
{
	size_t pos = 0;
	struct file_call *fc;
	while ((fc = map_next(&srv->file_calls, &pos))) {
		struct api_call *call = fc->call;
		file_call_done_fn done = fc->done;
		call->obj = NULL;
		file_call_end(srv, fc);
		done(call, NULL, NULL, 503, "unavailable", "the server is stopping");
	}
}
