/* /v1/sandboxes/{id}/ports: the ports a sandbox declared at create, and an authenticated HTTP
 * proxy to them. A request to /ports/{port}/… asks the sandbox's worker for a tunnel (a link
 * command); the worker connects to the port inside the sandbox's network namespace, then to us
 * (POST /internal/v1/workers/{wk}/tunnels/{tn}, upgraded). We then take both connections over:
 * the client's request goes down the tunnel rewritten (its path made relative, credentials and
 * hop-by-hop headers dropped, Connection: close), followed by its body, and from then on bytes
 * are relayed both ways until the sandbox's side ends, which ends the client's connection too.
 * So a streamed response, or an upgrade (WebSocket), passes as it comes. Nothing here is
 * persisted: a tunnel is not state of the control plane. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server.h"

struct tunnel_rec {
	char id[ID_MAX_BYTES]; /* tn-… */
	char sandbox[ID_MAX_BYTES];
	char workspace[ID_MAX_BYTES];
	char token[ID_MAX_BYTES]; /* the caller's token (tk-…): its deletion closes the tunnel */
	int64_t token_expires_ms; /* 0: never; the tunnel closes when the token expires */
	struct server *srv;
	struct worker_rec *worker;
	int port;
	struct api_call *call;    /* the client's request, until the worker connects */
	uv_timer_t *timer;        /* the worker's deadline */
	struct http_relay *relay; /* then */
	int one_request;          /* not a switched protocol: this request and its response */
};

/* Off the map and freed; the caller has dealt with its call and its relay. */
static void tunnel_free(struct tunnel_rec *t)
{
	struct sandbox_rec *sb = sandbox_find(t->srv, t->sandbox);
	if (sb && sb->tunnels_live && --sb->tunnels_live == 0) {
		sandbox_touch(t->srv, sb); /* idle from the end of its last tunnel */
		sandbox_timeouts_update(t->srv, sb);
	}
	map_remove(&t->srv->tunnels, t->id);
	server_timer_free(t->timer);
	free(t);
}

/* Answer the client's request still waiting for its tunnel, and drop the tunnel. */
static void tunnel_refuse(struct tunnel_rec *t, int status, const char *code, const char *fmt, ...)
    _printf_(4, 5);
static void tunnel_refuse(struct tunnel_rec *t, int status, const char *code, const char *fmt, ...)
{
	struct api_call *call = t->call;
	t->call = NULL;
	if (call) {
		call->obj = NULL;
		call->req->on_abort = NULL;
		va_list ap;
		va_start(ap, fmt);
		api_reply_verror(call, status, code, fmt, ap); /* fmt's strings may be t's */
		va_end(ap);
	}
	tunnel_free(t);
}

static void tunnel_timeout(uv_timer_t *timer)
{
	struct tunnel_rec *t = timer->data;
	tunnel_refuse(t, 504, "deadline_exceeded",
	              "port %d of sandbox %s: the tunnel was not set up within %d s", t->port,
	              t->sandbox, SERVER_TUNNEL_CONNECT_MS / 1000);
}

static void tunnel_client_aborted(struct http_request *req)
{
	struct api_call *call = req->data;
	struct tunnel_rec *t = call ? call->obj : NULL;
	if (t)
		tunnel_refuse(t, 499, "cancelled", "the client went away");
}

static void tunnel_relay_ended(void *ud)
{
	struct tunnel_rec *t = ud;
	t->relay = NULL;
	tunnel_free(t);
}

/* Cut a tunnel's relay, or answer its client still waiting with status and why. */
static void tunnel_close(struct tunnel_rec *t, int status, const char *code, const char *why)
{
	if (t->relay) {
		http_relay_close(TAKE_PTR(t->relay));
		tunnel_free(t);
	} else {
		tunnel_refuse(t, status, code, "port %d of sandbox %s: %s", t->port, t->sandbox,
		              why);
	}
}

void tunnels_close(struct server *srv, const char *sandbox, const struct worker_rec *w, int status,
                   const char *why)
{
	size_t pos = 0;
	struct tunnel_rec *t;
	while ((t = map_next(&srv->tunnels, &pos))) {
		if ((sandbox && strcmp(t->sandbox, sandbox)) || (w && t->worker != w))
			continue;
		tunnel_close(t, status, "unavailable", why);
	}
}

void tunnels_close_token(struct server *srv, const char *token_id, int64_t now_ms)
{
	size_t pos = 0;
	struct tunnel_rec *t;
	while ((t = map_next(&srv->tunnels, &pos))) {
		if (token_id ? !strcmp(t->token, token_id)
		             : t->token_expires_ms && t->token_expires_ms <= now_ms)
			tunnel_close(t, 401, "unauthenticated",
			             token_id ? "the token that opened it was deleted"
			                      : "the token that opened it expired");
	}
}

/* The sandbox's declared ports, as the create body gave them ([] when none). */
static json_t *declared_ports(const struct sandbox_rec *sb)
{
	json_t *p = json_object_get(sb->spec, "ports");
	return json_is_array(p) ? p : NULL;
}

static int port_declared(const struct sandbox_rec *sb, long port)
{
	size_t i;
	json_t *v;
	json_array_foreach (declared_ports(sb), i, v)
		if (json_integer_value(v) == port)
			return 1;
	return 0;
}

static json_t *ports_json(const struct sandbox_rec *sb)
{
	json_t *list = json_array();
	size_t i;
	json_t *v;
	json_array_foreach (declared_ports(sb), i, v) {
		char url[128];
		snprintf(url, sizeof(url), "/v1/sandboxes/%s/ports/%lld/", sb->row.id,
		         (long long)json_integer_value(v));
		json_array_append_new(list, json_pack("{s:O, s:s}", "port", v, "url", url));
	}
	return json_pack("{s:o}", "ports", list);
}

/* GET /v1/sandboxes/{id}/ports */
void api_ports_list(struct http_request *req)
{
	struct api_call *call = req->data;
	struct sandbox_rec *sb = api_sandbox_of_call(call);
	if (sb)
		api_reply_json(call, 200, ports_json(sb));
}

/* A port in a path: 1 to 65535 in decimal digits, else 0. */
static long port_parse(const char *s)
{
	long v = 0;
	size_t n = strlen(s);
	if (n == 0 || n > 5)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return 0;
		v = v * 10 + (s[i] - '0');
	}
	return v <= 65535 ? v : 0;
}

/* ANY /v1/sandboxes/{id}/ports/{port}[/{rest}] */
static int visible_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return 0;
	return 1;
}

void api_ports_proxy(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	struct sandbox_rec *sb = api_sandbox_of_call(call);
	if (!sb)
		return;
	long port = port_parse(req->params[1]);
	if (!port || !port_declared(sb, port)) {
		json_t *ports = declared_ports(sb);
		_cleanup_free_ char *list = ports ? json_dumps(ports, JSON_COMPACT) : NULL;
		api_reply_error(
		    call, 404, "not_found",
		    "sandbox %s does not serve port %.16s (its ports, given at create: %s)",
		    sb->row.id, req->params[1], list ? list : "[]");
		return;
	}
	if (!api_sandbox_running(call, "its ports are served only while it runs"))
		return;
	/* The path and query go into the sandbox's request line as they came: only what a
	 * request line may hold (llhttp lets tabs and bytes over 0x7f through). */
	if (!visible_ascii(req->nparams > 2 ? req->params[2] : "") || !visible_ascii(req->query)) {
		api_reply_error(
		    call, 400, "invalid_argument",
		    "the path and query may hold only visible ASCII (percent-encode the "
		    "rest)");
		return;
	}
	if (srv->tunnels.len >= SERVER_MAX_TUNNELS) {
		api_reply_error(call, 503, "unavailable",
		                "too many open tunnels (%d); try again shortly",
		                SERVER_MAX_TUNNELS);
		return;
	}
	size_t pos = 0, mine = 0;
	const struct tunnel_rec *other;
	while ((other = map_next(&srv->tunnels, &pos)))
		mine += !strcmp(other->workspace, sb->row.workspace_id);
	if (mine >= srv->cfg.max_tunnels_per_ws) {
		api_reply_error(call, 429, "resource_exhausted",
		                "this workspace has %zu tunnels open, its most; try again shortly",
		                srv->cfg.max_tunnels_per_ws);
		return;
	}
	struct tunnel_rec *t = calloc(1, sizeof(*t));
	uv_timer_t *timer =
	    t ? server_timer_new(srv, tunnel_timeout, SERVER_TUNNEL_CONNECT_MS, t) : NULL;
	if (!timer || id_new("tn-", t->id, sizeof(t->id)) < 0 ||
	    map_put(&srv->tunnels, t->id, t) < 0) {
		server_timer_free(timer);
		free(t);
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	t->srv = srv;
	t->worker = sb->worker;
	t->port = (int)port;
	t->call = call;
	snprintf(t->sandbox, sizeof(t->sandbox), "%s", sb->row.id);
	snprintf(t->workspace, sizeof(t->workspace), "%s", sb->row.workspace_id);
	if (call->who.token) {
		snprintf(t->token, sizeof(t->token), "%s", call->who.token->row.id);
		t->token_expires_ms = call->who.token->row.expires_ms;
	}
	t->timer = timer;
	sb->tunnels_live++; /* not idle while it is open */
	sandbox_touch(srv, sb);
	call->obj = t;
	req->on_abort = tunnel_client_aborted;
	if (link_command(srv, sb->worker, "tunnel",
	                 json_pack("{s:s, s:i, s:s}", "sandbox", sb->row.id, "port", (int)port,
	                           "tunnel", t->id)) < 0)
		tunnel_refuse(t, 503, "unavailable", "the worker of %s can't take commands",
		              sb->row.id);
}

void link_tunnel_failed(struct server *srv, struct worker_rec *w, json_t *ev)
{
	const char *id = json_string_value(json_object_get(ev, "tunnel"));
	struct tunnel_rec *t = id ? map_get(&srv->tunnels, id) : NULL;
	if (!t || t->worker != w || !t->call)
		return; /* answered already (timed out, the client left), or not this worker's */
	const char *code = json_string_value(json_object_get(ev, "code"));
	const char *msg = json_string_value(json_object_get(ev, "message"));
	/* The sandbox answered nothing (or ended): the gateway's failure, not the client's. */
	int status = code && !strcmp(code, "deadline_exceeded") ? 504
	             : code && !strcmp(code, "conflict")        ? 409
	                                                        : 502;
	tunnel_refuse(t, status, status == 502 ? "unavailable" : code, "%s",
	              msg ? msg : "the tunnel failed");
}

/* Whether a comma-separated header value (NULL: none) holds token, case-insensitively. */
static int has_token(const char *list, const char *token)
{
	size_t tlen = strlen(token);
	for (const char *p = list; p && *p;) {
		p += strspn(p, " \t,");
		size_t len = strcspn(p, " \t,");
		if (len == tlen && !strncasecmp(p, token, len))
			return 1;
		p += len;
	}
	return 0;
}

/* The header names a proxy never passes on: hop-by-hop ones (RFC 9110 7.6.1), the framing
 * (redone from the body as read), the caller's credentials, and what we set ourselves. */
static int header_dropped(const char *name, const char *connection)
{
	static const char *const DROP[] = {"Connection",
	                                   "Keep-Alive",
	                                   "Proxy-Connection",
	                                   "Proxy-Authenticate",
	                                   "Proxy-Authorization",
	                                   "TE",
	                                   "Trailer",
	                                   "Transfer-Encoding",
	                                   "Upgrade",
	                                   "Content-Length",
	                                   "Authorization",
	                                   "Expect",
	                                   "Forwarded",
	                                   "X-Real-IP"};
	for (size_t i = 0; i < ARRAY_SIZE(DROP); i++)
		if (!strcasecmp(name, DROP[i]))
			return 1;
	/* What says where the request came from is ours to say, whatever its name. */
	if (!strncasecmp(name, "X-Forwarded-", 12))
		return 1;
	/* Headers that Connection names are hop-by-hop too. */
	return has_token(connection, name);
}

/* Every Connection header's value, joined by commas (a request may send several). */
static char *connection_tokens(const struct http_request *req)
{
	size_t len = 0;
	for (size_t i = 0; i < req->nheaders; i++)
		if (!strcasecmp(req->headers[i].name, "Connection"))
			len += strlen(req->headers[i].value) + 1;
	char *all = malloc(len + 1), *p = all;
	if (!all)
		return NULL;
	for (size_t i = 0; i < req->nheaders; i++) {
		if (strcasecmp(req->headers[i].name, "Connection"))
			continue;
		size_t n = strlen(req->headers[i].value);
		memcpy(p, req->headers[i].value, n);
		p += n;
		*p++ = ',';
	}
	*p = '\0';
	return all;
}

/* Whether the client asks to switch protocols (a WebSocket): then the tunnel relays both ways
 * for as long as it lasts; else it carries this one request and its response. */
static int request_upgrades(const struct http_request *req, const char *connection)
{
	return http_header_get(req, "Upgrade") && has_token(connection, "upgrade");
}

/* The client's request as the sandbox gets it, with its body, behind the 101 that tells the
 * worker its tunnel is on: one malloc'ed buffer, with room for extra more bytes at its end. */
static char *tunnel_request(const struct tunnel_rec *t, const struct http_request *req,
                            size_t extra, size_t *ret_len)
{
	_cleanup_free_ char *head = NULL;
	size_t head_len = 0;
	FILE *f = open_memstream(&head, &head_len);
	if (!f)
		return NULL;
	_cleanup_free_ char *connection = connection_tokens(req);
	const char *upgrade = http_header_get(req, "Upgrade");
	if (!connection) {
		fclose(f);
		return NULL;
	}
	int upgrading = request_upgrades(req, connection);
	const char *rest = req->nparams > 2 ? req->params[2] : "";
	fputs("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
	      "Upgrade: " LINK_TUNNEL_PROTOCOL "\r\n\r\n",
	      f);
	fprintf(f, "%s /%s%s%s HTTP/1.%d\r\n", req->method, rest, req->query[0] ? "?" : "",
	        req->query, req->http_minor ? 1 : 0);
	for (size_t i = 0; i < req->nheaders; i++)
		if (!header_dropped(req->headers[i].name, connection))
			fprintf(f, "%s: %s\r\n", req->headers[i].name, req->headers[i].value);
	if (req->body_unread > 0 || req->body_len || http_header_get(req, "Content-Length") ||
	    http_header_get(req, "Transfer-Encoding"))
		fprintf(f, "Content-Length: %llu\r\n",
		        req->body_unread >= 0 ? (unsigned long long)req->body_unread
		                              : (unsigned long long)req->body_len);
	/* The client's address without its port ("ip:port", or "v6:…:port"). */
	const char *colon = strrchr(req->remote, ':');
	int iplen = colon ? (int)(colon - req->remote) : (int)strlen(req->remote);
	fprintf(f, "X-Forwarded-For: %.*s\r\nX-Forwarded-Proto: http\r\n", iplen, req->remote);
	fprintf(f, "X-Forwarded-Prefix: /v1/sandboxes/%s/ports/%d\r\n", t->sandbox, t->port);
	if (upgrading)
		fprintf(f, "Connection: Upgrade\r\nUpgrade: %s\r\n\r\n", upgrade);
	else
		fputs("Connection: close\r\n\r\n", f);
	if (fclose(f) != 0 || !head)
		return NULL;
	char *out = malloc(head_len + req->body_len + extra);
	if (!out)
		return NULL;
	memcpy(out, head, head_len);
	if (req->body_len) /* body is NULL when it was left on the connection */
		memcpy(out + head_len, req->body, req->body_len);
	*ret_len = head_len + req->body_len;
	return out;
}

/* POST /internal/v1/workers/{wk}/tunnels/{tn} (Upgrade: skiff-tunnel) */
void link_tunnel(struct http_request *req)
{
	struct api_call *wcall = req->data;
	struct server *srv = wcall->srv;
	struct tunnel_rec *t = map_get(&srv->tunnels, req->params[1]);
	struct worker_rec *w = map_get(&srv->workers, req->params[0]);
	if (!t || !t->call || t->worker != w) {
		api_reply_error(wcall, 404, "not_found",
		                "tunnel %.64s is not waiting for this worker (its client left, or "
		                "it timed out)",
		                req->params[1]);
		return;
	}
	const char *upgrade = http_header_get(req, "Upgrade");
	if (!upgrade || strcasecmp(upgrade, LINK_TUNNEL_PROTOCOL)) {
		api_reply_error(wcall, 400, "invalid_argument", "expected Upgrade: %s",
		                LINK_TUNNEL_PROTOCOL);
		return;
	}
	struct api_call *call = t->call;
	struct http_request *creq = call->req;
	/* Made before the client's request is let go; what the client sent after it is added
	 * once its connection is ours (at most a read buffer's worth). */
	size_t to_b_len = 0;
	char *to_b = tunnel_request(t, creq, HTTP_MAX_PENDING_BYTES, &to_b_len);
	_cleanup_free_ char *connection = connection_tokens(creq);
	t->one_request = !connection || !request_upgrades(creq, connection);
	/* A body of declared length was left on the client's connection: what of it was read
	 * already goes with the request, the rest is relayed as it comes. */
	uint64_t body_rest = creq->body_unread > 0 ? (uint64_t)creq->body_unread : 0;
	bool client_eof = creq->client_eof;
	uv_tcp_t *wtcp, *ctcp;
	char *wpending, *cpending;
	size_t wpending_len, cpending_len;
	req->data = NULL;
	int r = to_b ? http_hijack(req, 101, &wtcp, &wpending, &wpending_len) : -ENOMEM;
	if (r < 0) {
		free(to_b);
		api_reply_error(wcall, 503, "unavailable", "can't take the connection over");
		tunnel_refuse(t, 502, "unavailable",
		              "port %d of sandbox %s: the worker's connection failed", t->port,
		              t->sandbox);
		return;
	}
	api_call_free(wcall); /* req is gone */

	t->call = NULL;
	call->obj = NULL;
	creq->on_abort = NULL;
	creq->data = NULL;
	server_timer_free(TAKE_PTR(t->timer));
	r = http_hijack(creq, 101, &ctcp, &cpending, &cpending_len); /* frees creq */
	if (r < 0) {
		free(to_b);
		free(wpending);
		http_tcp_free(wtcp);
		tunnel_free(t);
		api_reply_error(call, 503, "unavailable", "can't take the connection over");
		return;
	}
	api_call_free(call);
	/* What the client sent after its request (and its body) goes on only on a switched
	 * protocol; otherwise a keep-alive client's next request (its token with it) must never
	 * reach the sandbox. */
	if (t->one_request && cpending_len > body_rest)
		cpending_len = (size_t)body_rest;
	if (cpending_len)
		memcpy(to_b + to_b_len, cpending, cpending_len);
	body_rest -= t->one_request ? cpending_len : 0;
	free(cpending);
	struct http_relay_config rc = {
	    .max_buffer_bytes = SERVER_TUNNEL_BUFFER_BYTES,
	    .idle_timeout_ms = SERVER_TUNNEL_IDLE_MS,
	    .one_request = t->one_request,
	    .a_request_bytes = body_rest,
	    .a_eof = client_eof,
	    .on_end = tunnel_relay_ended,
	    .ud = t,
	};
	/* The client is a, the worker b: the sandbox's end ends the client's connection. */
	if (http_relay_new(srv->loop, ctcp, wtcp, wpending, wpending_len, to_b,
	                   to_b_len + cpending_len, &rc, &t->relay) < 0)
		tunnel_free(t);
}
