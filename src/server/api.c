/* What every route handler shares: replies in the API's shapes, the one mapping from an error to
 * a status, body parsing with limits, list parameters. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../lib/clock.h"
#include "../lib/encoding.h"
#include "../lib/jsonlim.h"
#include "server.h"

void api_call_free(struct api_call *call)
{
	if (!call)
		return;

	if (call->inflight_key[0])
		free(map_remove(&call->srv->idem_inflight, call->inflight_key));
	free(call);
}

void api_reply_json(struct api_call *call, int status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	struct http_request *req = call->req;
	req->data = NULL;
	api_call_free(call); /* before the reply, which frees req */
	if (!text) {
		http_reply_error(req, 500, "internal", "out of memory");
	} else {
		http_reply(req, status, "application/json", text, strlen(text));
		free(text);
	}
}

void api_reply_error(struct api_call *call, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	api_reply_verror(call, status, code, fmt, ap);
	va_end(ap);
}

void api_reply_verror(struct api_call *call, int status, const char *code, const char *fmt,
                      va_list ap)
{
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	struct http_request *req = call->req;
	req->data = NULL;
	api_call_free(call);
	http_reply_error(req, status, code, "%s", msg);
}

/* The one mapping from an error code to an HTTP status. */
void api_reply_sk_error(struct api_call *call, const struct sk_error *err)
{
	int status = 500;
	const char *code = "internal";
	switch (-err->code) {
	case SK_EINVAL_SPEC:
	case EINVAL: status = 400, code = "invalid_argument"; break;
	case ENOENT: status = 404, code = "not_found"; break;
	case EEXIST:
	case EBUSY: status = 409, code = "conflict"; break;
	case EACCES:
	case EPERM: status = 403, code = "permission_denied"; break;
	case E2BIG:
	case EMSGSIZE: status = 413, code = "payload_too_large"; break;
	case ENOSPC:
	case EAGAIN: status = 429, code = "resource_exhausted"; break;
	case ETIMEDOUT: status = 504, code = "deadline_exceeded"; break;
	case EHOSTDOWN:
	case ENOTCONN: status = 503, code = "unavailable"; break;
	}
	api_reply_error(call, status, code, "%s", err->msg);
}

json_t *api_body_object(struct api_call *call)
{
	struct http_request *req = call->req;
	/* Any Content-Type is taken as JSON: `curl -d` sends form-urlencoded by default. */
	if (req->body_len == 0) {
		api_reply_error(call, 400, "invalid_argument", "a JSON object body is required");
		return NULL;
	}
	if (!json_depth_within(req->body, req->body_len, JSON_MAX_DEPTH)) {
		api_reply_error(call, 400, "invalid_argument", "JSON nested deeper than %d levels",
		                JSON_MAX_DEPTH);
		return NULL;
	}
	json_error_t jerr;
	json_t *v = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!v) {
		api_reply_error(call, 400, "invalid_argument",
		                "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
		                jerr.text);
		return NULL;
	}
	if (!json_is_object(v)) {
		json_decref(v);
		api_reply_error(call, 400, "invalid_argument", "the body must be a JSON object");
		return NULL;
	}
	return v;
}

json_t *api_body_base64(struct api_call *call)
{
	struct http_request *req = call->req;
	char *b64 = malloc(base64_encoded_size(req->body_len));
	if (!b64) {
		api_reply_error(call, 503, "unavailable", "out of memory");
		return NULL;
	}
	base64_encode(req->body ? req->body : "", req->body_len, b64);
	json_t *v = json_string(b64);
	free(b64);
	if (!v)
		api_reply_error(call, 503, "unavailable", "out of memory");
	return v;
}

int api_can_see(const struct api_call *call, const char *workspace_id)
{
	return call->who.role == ROLE_ADMIN || !strcmp(call->who.workspace_id, workspace_id);
}

int api_list_params(struct api_call *call, size_t *ret_limit, char *cursor, size_t cursor_size)
{
	char buf[32];
	size_t limit = SERVER_DEFAULT_LIST_LIMIT;
	int r = http_query_get(call->req, "limit", 0, buf, sizeof(buf));
	if (r >= 0) {
		char *end;
		unsigned long v = strtoul(buf, &end, 10);
		if (!buf[0] || *end || v < 1 || v > SERVER_MAX_LIST_LIMIT) {
			api_reply_error(call, 400, "invalid_argument",
			                "limit: expected an integer from 1 to %d",
			                SERVER_MAX_LIST_LIMIT);
			return -1;
		}
		limit = v;
	} else if (r != -ENOENT) {
		api_reply_error(call, 400, "invalid_argument", "limit: bad value");
		return -1;
	}
	cursor[0] = '\0';
	r = http_query_get(call->req, "cursor", 0, cursor, cursor_size);
	if (r < 0 && r != -ENOENT) {
		api_reply_error(call, 400, "invalid_argument", "cursor: bad value");
		return -1;
	}
	if (r < 0)
		cursor[0] = '\0';
	*ret_limit = limit;
	return 0;
}

static int page_cmp(const void *a, const void *b, void *id_of)
{
	const char *(*f)(const void *) = (const char *(*)(const void *))id_of;
	return strcmp(f(*(const void *const *)a), f(*(const void *const *)b));
}

void api_reply_page(struct api_call *call, const void **items, size_t n, size_t limit,
                    const char *(*id_of)(const void *item), json_t *(*to_json)(const void *item))
{
	qsort_r(items, n, sizeof(*items), page_cmp, (void *)id_of);
	json_t *list = json_array();
	for (size_t i = 0; i < n && i < limit; i++)
		json_array_append_new(list, to_json(items[i]));
	json_t *next = n > limit ? json_string(id_of(items[limit - 1])) : json_null();
	api_reply_json(call, 200, json_pack("{s:o, s:o}", "items", list, "next_cursor", next));
}

void api_reply_map_page(struct api_call *call, const struct map *m,
                        const char *(*id_of)(const void *item),
                        const char *(*workspace_of)(const void *item),
                        json_t *(*to_json)(const void *item))
{
	size_t limit;
	char cursor[ID_MAX_BYTES + 1];
	if (api_list_params(call, &limit, cursor, sizeof(cursor)) < 0)
		return;
	const void **all = malloc(sizeof(*all) * (m->len + 1));
	if (!all) {
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	size_t n = 0, pos = 0;
	const void *item;
	while ((item = map_next(m, &pos)))
		if (api_can_see(call, workspace_of(item)) &&
		    (!cursor[0] || strcmp(id_of(item), cursor) > 0))
			all[n++] = item;
	api_reply_page(call, all, n, limit, id_of, to_json);
	free(all);
}

json_t *api_time(int64_t ms)
{
	if (!ms)
		return json_null();
	char buf[RFC3339_BYTES];
	clock_format_rfc3339(ms, buf, sizeof(buf));
	return json_string(buf);
}

struct workspace_rec *api_workspace_find(struct server *srv, const char *id_or_name)
{
	struct workspace_rec *w = map_get(&srv->workspaces, id_or_name);
	if (w)
		return w;
	size_t pos = 0;
	while ((w = map_next(&srv->workspaces, &pos)))
		if (!strcmp(w->row.name, id_or_name))
			return w;
	return NULL;
}

struct sandbox_rec *api_sandbox_of_call(struct api_call *call)
{
	const char *id = call->req->params[0];
	struct sandbox_rec *sb = sandbox_find(call->srv, id);
	if (!sb || !api_can_see(call, sb->row.workspace_id)) {
		api_reply_error(call, 404, "not_found", "sandbox %.64s not found", id);
		return NULL;
	}
	return sb;
}

struct sandbox_rec *api_sandbox_running(struct api_call *call, const char *why)
{
	struct sandbox_rec *sb = api_sandbox_of_call(call);
	if (!sb)
		return NULL;
	if (strcmp(sb->row.state, "running")) {
		api_reply_error(call, 409, "conflict", "sandbox %s is %s: %s", sb->row.id,
		                sb->row.state, why);
		return NULL;
	}
	if (!sb->worker || !sb->worker->connected) {
		api_reply_error(call, 503, "unavailable", "the worker of %s is not connected",
		                sb->row.id);
		return NULL;
	}
	return sb;
}

void api_healthz(struct http_request *req)
{
	static const char OK[] = "{\"status\":\"ok\"}";
	http_reply(req, 200, "application/json", OK, sizeof(OK) - 1);
}

int api_query_bool(struct api_call *call, const char *key, int *ret)
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
