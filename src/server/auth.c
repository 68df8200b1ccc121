/* Authentication and authorization: one check, in the router's gate, for every route. Tokens are
 * bearer secrets; only their SHA-256 is kept (in the store and in memory, keyed by hash). */
#include <stdlib.h>
#include <string.h>

#include "../lib/clock.h"
#include "../lib/hash.h"
#include "server.h"

static const char *const ROLE_NAMES[] = {
    [ROLE_SANDBOX_AGENT] = "sandbox-agent",
    [ROLE_VIEWER] = "viewer",
    [ROLE_DEVELOPER] = "developer",
    [ROLE_OWNER] = "owner",
    [ROLE_ADMIN] = "admin",
};

enum role role_parse(const char *s)
{
	for (size_t i = 1; i < ARRAY_SIZE(ROLE_NAMES); i++)
		if (!strcmp(s, ROLE_NAMES[i]))
			return (enum role)i;
	return ROLE_NONE;
}

const char *role_name(enum role r)
{
	return r > ROLE_NONE && r <= ROLE_ADMIN ? ROLE_NAMES[r] : "none";
}

int auth_token_add(struct server *srv, const struct store_token *row)
{
	struct token_rec *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->row = *row;
	int r = map_put(&srv->tokens, t->row.secret_hash, t);
	if (r < 0)
		free(t);
	return r;
}

/* Compare without leaking where the first difference is. */
static int equal_const_time(const char *a, const char *b, size_t n)
{
	unsigned char d = 0;
	for (size_t i = 0; i < n; i++)
		d |= (unsigned char)a[i] ^ (unsigned char)b[i];
	return d == 0;
}

static int allowed(enum role role, unsigned flags)
{
	if (flags & PERM_ANY)
		return 1;
	if (role == ROLE_ADMIN)
		return 1;
	if (flags & PERM_ADMIN)
		return 0;
	if (flags & PERM_OWNER)
		return role == ROLE_OWNER;
	if (role == ROLE_SANDBOX_AGENT)
		return (flags & PERM_SANDBOX) != 0;
	if (flags & PERM_WRITE)
		return role >= ROLE_DEVELOPER;
	if (flags & PERM_READ)
		return role >= ROLE_VIEWER;
	return 0;
}

/* The request died before its handler ran (client gone mid-body, body too large). */
static void call_on_free(struct http_request *req)
{
	api_call_free(req->data);
	req->data = NULL;
}

int auth_gate(struct http_request *req, void *gate_ud)
{
	struct server *srv = gate_ud;
	unsigned flags = req->route->flags;
	if (flags & PERM_PUBLIC)
		return 0;
	if (srv->stopping) {
		http_reply_error(req, 503, "unavailable", "the server is stopping");
		return 1;
	}

	const char *h = http_header_get(req, "Authorization");
	if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !h[7]) {
		http_reply_error(req, 401, "unauthenticated",
		                 "missing bearer token: send \"Authorization: Bearer <token>\"");
		return 1;
	}
	const char *secret = h + 7;
	char hash[SHA256_HEX_BYTES];
	if (strlen(secret) > 256 || sha256_hex(secret, strlen(secret), hash) < 0) {
		http_reply_error(req, 401, "unauthenticated", "invalid token");
		return 1;
	}

	struct principal who = {0};
	if (flags & PERM_WORKER) {
		if (!equal_const_time(hash, srv->worker_secret_hash, 64)) {
			http_reply_error(req, 401, "unauthenticated", "invalid worker token");
			return 1;
		}
		who.role = ROLE_NONE;
	} else {
		struct token_rec *t = map_get(&srv->tokens, hash);
		if (!t) {
			http_reply_error(req, 401, "unauthenticated", "invalid token");
			return 1;
		}
		if (t->row.expires_ms && t->row.expires_ms <= clock_now_ms()) {
			http_reply_error(req, 401, "unauthenticated", "token %s has expired",
			                 t->row.id);
			return 1;
		}
		who.token = t;
		who.role = role_parse(t->row.role);
		snprintf(who.workspace_id, sizeof(who.workspace_id), "%s", t->row.workspace_id);
		if (!allowed(who.role, flags)) {
			http_reply_error(req, 403, "permission_denied", "role %s may not %s %s",
			                 role_name(who.role), req->method, req->path);
			return 1;
		}
	}

	struct api_call *call = calloc(1, sizeof(*call));
	if (!call) {
		http_reply_error(req, 503, "unavailable", "out of memory");
		return 1;
	}
	call->srv = srv;
	call->req = req;
	call->who = who;
	req->data = call;
	req->on_free = call_on_free;
	return 0;
}
