/* /v1/tokens, /v1/workspaces and /v1/whoami. Secrets are 256 random bits shown once; only their
 * SHA-256 is kept. */
#include <stdlib.h>
#include <string.h>

#include "../lib/clock.h"
#include "../lib/hash.h"
#include "server.h"

#define TOKEN_SECRET_PREFIX "sk_"

static int name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= STORE_NAME_BYTES)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

static json_t *token_json(const struct store_token *t)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "id", t->id, "name", t->name,
	                 "workspace", t->workspace_id, "role", t->role, "created_at",
	                 api_time(t->created_ms), "expires_at", api_time(t->expires_ms));
}

static json_t *workspace_json(const struct store_workspace *w)
{
	return json_pack("{s:s, s:s, s:o}", "id", w->id, "name", w->name, "created_at",
	                 api_time(w->created_ms));
}

void api_whoami(struct http_request *req)
{
	struct api_call *call = req->data;
	const struct token_rec *t = call->who.token;
	struct workspace_rec *w = map_get(&call->srv->workspaces, t->row.workspace_id);
	api_reply_json(call, 200,
	               json_pack("{s:s, s:s, s:s, s:s, s:o}", "token", t->row.id, "workspace",
	                         t->row.workspace_id, "workspace_name", w ? w->row.name : "",
	                         "role", t->row.role, "expires_at", api_time(t->row.expires_ms)));
}

/* Tokens. */
struct token_write {
	struct api_call *call;
	struct store_token row;
	char secret[80];
	int delete;
};

static int token_write_fn(struct store_tx *tx, void *ud)
{
	struct token_write *w = ud;
	return w->delete ? store_token_delete(tx, w->row.id) : store_token_put(tx, &w->row);
}

static void token_write_done(void *ud, int rc)
{
	struct token_write *w = ud;
	struct api_call *call = w->call;
	struct server *srv = call->srv;
	if (rc < 0) {
		if (w->delete) /* still in the store: it must keep working, or come back at restart
		                */
			auth_token_add(srv, &w->row);
		api_reply_error(call, 503, "unavailable", "the state store failed");
	} else if (w->delete) {
		api_reply_json(call, 200, token_json(&w->row));
	} else if (auth_token_add(srv, &w->row) < 0) {
		api_reply_error(call, 503, "unavailable", "out of memory");
	} else {
		json_t *o = token_json(&w->row);
		json_object_set_new(o, "secret", json_string(w->secret));
		server_logf(srv, "level=info msg=\"token created\" token=%s workspace=%s role=%s",
		            w->row.id, w->row.workspace_id, w->row.role);
		api_reply_json(call, 201, o);
	}
	explicit_bzero(w->secret, sizeof(w->secret));
	free(w);
}

void api_tokens_create(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	json_t *body = api_body_object(call);
	if (!body)
		return;
	const char *name = NULL, *role = NULL, *ws = NULL, *expires = NULL;
	const char *key;
	json_t *v;
	json_object_foreach (body, key, v) {
		const char **dst = !strcmp(key, "name")         ? &name
		                   : !strcmp(key, "role")       ? &role
		                   : !strcmp(key, "workspace")  ? &ws
		                   : !strcmp(key, "expires_at") ? &expires
		                                                : NULL;
		if (!dst) {
			api_reply_error(call, 400, "invalid_argument", "unknown field \"%.64s\"",
			                key);
			goto out;
		}
		if (json_is_null(v))
			continue;
		if (!json_is_string(v)) {
			api_reply_error(call, 400, "invalid_argument", "%s: expected a string",
			                key);
			goto out;
		}
		*dst = json_string_value(v);
	}
	if (!name || !name_valid(name)) {
		api_reply_error(call, 400, "invalid_argument",
		                "name: required, 1-%d characters of [A-Za-z0-9._-]",
		                STORE_NAME_BYTES - 1);
		goto out;
	}
	enum role r = role ? role_parse(role) : ROLE_NONE;
	if (r == ROLE_NONE) {
		api_reply_error(call, 400, "invalid_argument",
		                "role: required, one of admin, owner, developer, viewer, "
		                "sandbox-agent");
		goto out;
	}
	if (r > call->who.role) {
		api_reply_error(call, 403, "permission_denied",
		                "a %s token can't create a %s token", role_name(call->who.role),
		                role_name(r));
		goto out;
	}
	const char *ws_id = call->who.workspace_id;
	if (ws) {
		struct workspace_rec *w = api_workspace_find(srv, ws);
		if (!w || !api_can_see(call, w->row.id)) {
			api_reply_error(call, 404, "not_found", "workspace %.64s not found", ws);
			goto out;
		}
		ws_id = w->row.id;
	}
	int64_t exp = 0;
	if (expires) {
		if (clock_parse_rfc3339(expires, &exp) < 0) {
			api_reply_error(call, 400, "invalid_argument",
			                "expires_at: expected an RFC 3339 time such as "
			                "2030-01-01T00:00:00Z");
			goto out;
		}
		if (exp <= clock_now_ms()) {
			api_reply_error(call, 400, "invalid_argument", "expires_at: in the past");
			goto out;
		}
	}
	if (srv->tokens.len >= SERVER_MAX_TOKENS) {
		api_reply_error(call, 429, "resource_exhausted", "too many tokens (%d)",
		                SERVER_MAX_TOKENS);
		goto out;
	}
	struct token_write *w = calloc(1, sizeof(*w));
	char hex[65];
	if (!w || id_new("tk-", w->row.id, sizeof(w->row.id)) < 0 ||
	    random_hex(32, hex, sizeof(hex)) < 0) {
		free(w);
		api_reply_error(call, 503, "unavailable", "can't make a token now");
		goto out;
	}
	w->call = call;
	snprintf(w->secret, sizeof(w->secret), TOKEN_SECRET_PREFIX "%s", hex);
	explicit_bzero(hex, sizeof(hex));
	sha256_hex(w->secret, strlen(w->secret), w->row.secret_hash);
	snprintf(w->row.workspace_id, sizeof(w->row.workspace_id), "%s", ws_id);
	snprintf(w->row.name, sizeof(w->row.name), "%s", name);
	snprintf(w->row.role, sizeof(w->row.role), "%s", role_name(r));
	w->row.created_ms = clock_now_ms();
	w->row.expires_ms = exp;
	if (server_persist(srv, token_write_fn, token_write_done, w) < 0) {
		free(w);
		api_reply_error(call, 503, "unavailable", "the state store is unavailable");
	}
out:
	json_decref(body);
}

static const char *token_id(const void *t)
{
	return ((const struct token_rec *)t)->row.id;
}

static const char *token_workspace(const void *t)
{
	return ((const struct token_rec *)t)->row.workspace_id;
}

static json_t *token_item(const void *t)
{
	return token_json(&((const struct token_rec *)t)->row);
}

void api_tokens_list(struct http_request *req)
{
	struct api_call *call = req->data;
	api_reply_map_page(call, &call->srv->tokens, token_id, token_workspace, token_item);
}

void api_tokens_delete(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	const char *id = req->params[0];
	size_t pos = 0;
	struct token_rec *t, *found = NULL;
	while ((t = map_next(&srv->tokens, &pos)))
		if (!strcmp(t->row.id, id) && api_can_see(call, t->row.workspace_id))
			found = t;
	if (!found) {
		api_reply_error(call, 404, "not_found", "token %.64s not found", id);
		return;
	}
	if (!strcmp(found->row.role, "admin")) {
		size_t admins = 0, apos = 0;
		while ((t = map_next(&srv->tokens, &apos)))
			admins += !strcmp(t->row.role, "admin");
		if (admins <= 1) {
			api_reply_error(
			    call, 409, "conflict",
			    "%s is the last admin token; create another admin token first",
			    found->row.id);
			return;
		}
	}
	if (role_parse(found->row.role) > call->who.role) {
		api_reply_error(call, 403, "permission_denied",
		                "a %s token can't delete a %s token", role_name(call->who.role),
		                found->row.role);
		return;
	}
	struct token_write *w = calloc(1, sizeof(*w));
	if (!w) {
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	w->call = call;
	w->delete = 1;
	w->row = found->row;
	/* Gone from memory now: from this moment it authenticates nothing. */
	map_remove(&srv->tokens, found->row.secret_hash);
	free(found);
	tunnels_close_token(srv, w->row.id, 0); /* nor keeps any tunnel open */
	if (server_persist(srv, token_write_fn, token_write_done, w) < 0) {
		free(w);
		api_reply_error(call, 503, "unavailable", "the state store is unavailable");
	}
}

/* Workspaces. */
struct workspace_write {
	struct api_call *call;
	struct store_workspace row;
};

static int workspace_write_fn(struct store_tx *tx, void *ud)
{
	struct workspace_write *w = ud;
	return store_workspace_put(tx, &w->row);
}

static void workspace_write_done(void *ud, int rc)
{
	struct workspace_write *w = ud;
	struct api_call *call = w->call;
	struct server *srv = call->srv;
	struct workspace_rec *rec = NULL;
	if (rc == -EEXIST) {
		api_reply_error(call, 409, "conflict", "a workspace named %s exists", w->row.name);
	} else if (rc < 0) {
		api_reply_error(call, 503, "unavailable", "the state store failed");
	} else if (!(rec = calloc(1, sizeof(*rec)))) {
		api_reply_error(call, 503, "unavailable", "out of memory");
	} else {
		rec->row = w->row;
		map_put(&srv->workspaces, rec->row.id, rec);
		server_logf(srv, "level=info msg=\"workspace created\" workspace=%s name=%s",
		            rec->row.id, rec->row.name);
		api_reply_json(call, 201, workspace_json(&rec->row));
	}
	free(w);
}

void api_workspaces_create(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	json_t *body = api_body_object(call);
	if (!body)
		return;
	json_t *name = json_object_get(body, "name");
	if (json_object_size(body) != 1 || !json_is_string(name) ||
	    !name_valid(json_string_value(name))) {
		api_reply_error(call, 400, "invalid_argument",
		                "expected {\"name\":…}: 1-%d characters of [A-Za-z0-9._-]",
		                STORE_NAME_BYTES - 1);
		goto out;
	}
	if (api_workspace_find(srv, json_string_value(name))) {
		api_reply_error(call, 409, "conflict", "a workspace named %s exists",
		                json_string_value(name));
		goto out;
	}
	if (srv->workspaces.len >= SERVER_MAX_WORKSPACES) {
		api_reply_error(call, 429, "resource_exhausted", "too many workspaces");
		goto out;
	}
	struct workspace_write *w = calloc(1, sizeof(*w));
	if (!w || id_new("ws-", w->row.id, sizeof(w->row.id)) < 0) {
		free(w);
		api_reply_error(call, 503, "unavailable", "out of memory");
		goto out;
	}
	w->call = call;
	snprintf(w->row.name, sizeof(w->row.name), "%s", json_string_value(name));
	w->row.created_ms = clock_now_ms();
	if (server_persist(srv, workspace_write_fn, workspace_write_done, w) < 0) {
		free(w);
		api_reply_error(call, 503, "unavailable", "the state store is unavailable");
	}
out:
	json_decref(body);
}

static const char *workspace_id(const void *w)
{
	return ((const struct workspace_rec *)w)->row.id;
}

static json_t *workspace_item(const void *w)
{
	return workspace_json(&((const struct workspace_rec *)w)->row);
}

void api_workspaces_list(struct http_request *req)
{
	struct api_call *call = req->data;
	api_reply_map_page(call, &call->srv->workspaces, workspace_id, workspace_id,
	                   workspace_item);
}
