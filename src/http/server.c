/* The HTTP/1.1 server: listening, connections, request parsing with llhttp, and the limits on
 * everything a client controls (head size and count, body size per route, connections, time).
 *
 * A connection answers one request at a time: once a request's message is complete the parser
 * pauses, and bytes that arrive meanwhile (pipelined requests) wait in the connection's read
 * buffer, which is fixed in size (reading stops when it is full). Watching the socket while a
 * handler works is what lets a client's disconnect abort a deferred reply. Connections and
 * requests are freed only from libuv close callbacks or once a reply has ended, so a pointer
 * held on the stack stays valid until the callback it is in returns. */
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

enum conn_state {
	CONN_IDLE,   /* waiting for a request's first byte */
	CONN_HEAD,   /* reading a request's head */
	CONN_BODY,   /* reading its body */
	CONN_BUSY,   /* the request is with its handler (or its reply is being written) */
	CONN_LINGER, /* an error reply was sent: drop input until EOF, then close */
};

struct http_conn {
	struct http_server *srv;
	struct http_conn *prev, *next;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_shutdown_t shutdown;
	llhttp_t parser;
	enum conn_state state;
	struct http_req_priv *req; /* being parsed or answered: at most one */
	char *in;                  /* HTTP_READ_BUFFER_BYTES: read, not yet parsed */
	size_t in_off, in_len;
	size_t write_queued;
	int fail_status; /* set by a parser callback that refused the request */
	const char *fail_msg;
	int open_handles;
	bool reading;
	bool processing;         /* inside conn_process: do not recurse */
	bool close_when_flushed; /* close (after a shutdown) once writes are done */
	bool closing;
	bool shutdown_started;
	bool eof;      /* the client closed its side */
	bool rejected; /* over max_connections: answered 503 */
	char remote[64];
};

struct http_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	bool listener_init;
	struct http_limits limits;
	const struct http_route *routes;
	size_t nroutes;
	http_gate_fn gate;
	void *gate_ud;
	void *ud;
	void (*on_done)(const struct http_request *req, int status, uint64_t duration_ns, void *ud);
	llhttp_settings_t settings;
	struct http_conn *conns;
	unsigned nconns, nrejecting;
	size_t bodies_bytes; /* request bodies held by requests of open connections */
	int port;
	bool closing;
	void (*done)(void *);
	void *done_ud;
};

struct write_req {
	uv_write_t w;
	struct http_conn *conn;
	size_t len;
	char data[];
};

static void conn_process(struct http_conn *conn);
static void conn_read_update(struct http_conn *conn);
static void conn_timer(struct http_conn *conn, unsigned ms);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void conn_close(struct http_conn *conn);
static void server_maybe_done(struct http_server *srv);

/* ---- requests ---- */

void http_req_free(struct http_req_priv *rp)
{
	if (!rp)
		return;
	/* A request the gate saw but whose handler never ran: the application's data goes with it
	 * (once: the request is freed right after). */
	if (!rp->dispatched && rp->pub.on_free) {
		void (*on_free)(struct http_request *) = rp->pub.on_free;
		rp->pub.on_free = NULL;
		on_free(&rp->pub);
	}
	struct http_reply_hdr *h = rp->rhdrs;
	while (h) {
		struct http_reply_hdr *next = h->next;
		free(h);
		h = next;
	}
	free(rp->head);
	free(rp->hoff);
	free(rp->params_buf);
	free(rp->pub.headers);
	free(rp->pub.body);
	free(rp);
}

static struct http_req_priv *req_new(struct http_conn *conn)
{
	struct http_req_priv *rp = calloc(1, sizeof(*rp));
	if (!rp)
		return NULL;
	rp->conn = conn;
	rp->pub.server = conn->srv;
	rp->pub.priv_ = rp;
	rp->pub.query = "";
	rp->pub.body_unread = -1;
	rp->rhdrs_tail = &rp->rhdrs;
	rp->start_ns = uv_hrtime();
	memcpy(rp->pub.remote, conn->remote, sizeof(rp->pub.remote));
	return rp;
}

/* ---- writing ---- */

static void conn_after_write(struct http_conn *conn);

static void on_write(uv_write_t *w, int status)
{
	struct write_req *wr = (struct write_req *)w;
	struct http_conn *conn = wr->conn;
	conn->write_queued -= wr->len;
	free(wr);
	if (status < 0) {
		conn_close(conn);
		return;
	}
	/* Progress: a client has the idle timeout to take each write. */
	if (conn->state == CONN_IDLE || (conn->state == CONN_BUSY && conn->write_queued > 0))
		conn_timer(conn, conn->srv->limits.idle_timeout_ms);
	else if (conn->state == CONN_BUSY)
		uv_timer_stop(&conn->timer);
	conn_after_write(conn);
}

int http_conn_write(struct http_conn *conn, const void *a, size_t alen, const void *b, size_t blen,
                    const void *c, size_t clen)
{
	if (conn->closing)
		return -EPIPE;
	size_t len = alen + blen + clen;
	struct write_req *wr = malloc(sizeof(*wr) + len);
	if (!wr) {
		conn_close(conn);
		return -ENOMEM;
	}
	wr->conn = conn;
	wr->len = len;
	if (alen)
		memcpy(wr->data, a, alen);
	if (blen)
		memcpy(wr->data + alen, b, blen);
	if (clen)
		memcpy(wr->data + alen + blen, c, clen);
	uv_buf_t buf = uv_buf_init(wr->data, (unsigned)len);
	int r = uv_write(&wr->w, (uv_stream_t *)&conn->tcp, &buf, 1, on_write);
	if (r < 0) {
		free(wr);
		conn_close(conn);
		return r == UV_EPIPE ? -EPIPE : r;
	}
	conn->write_queued += len;
	if (conn->state == CONN_BUSY)
		conn_timer(conn, conn->srv->limits.idle_timeout_ms);
	return 0;
}

size_t http_conn_write_queued(const struct http_conn *conn)
{
	return conn->write_queued;
}

size_t http_conn_write_limit(const struct http_conn *conn)
{
	return conn->srv->limits.max_write_buffer;
}

/* ---- closing ---- */

static void on_handle_closed(uv_handle_t *h)
{
	struct http_conn *conn = h->data;
	if (--conn->open_handles > 0)
		return;
	struct http_server *srv = conn->srv;
	if (conn->prev)
		conn->prev->next = conn->next;
	else
		srv->conns = conn->next;
	if (conn->next)
		conn->next->prev = conn->prev;
	if (conn->rejected)
		srv->nrejecting--;
	else
		srv->nconns--;
	free(conn->in);
	free(conn);
	server_maybe_done(srv);
}

/* The request's body no longer counts against the server's max_bodies_bytes: it leaves its
 * connection (a detached request may outlive the server, so it is counted only while attached). */
static void req_body_uncount(struct http_req_priv *rp)
{
	if (rp && rp->conn && rp->body_counted) {
		rp->conn->srv->bodies_bytes -= rp->body_counted;
		rp->body_counted = 0;
	}
}

/* Let go of a request the connection no longer answers: freed, unless the gate is running on it
 * (its caller frees it once the gate returns). Not for a request with its handler. */
static void req_drop(struct http_req_priv *rp)
{
	if (!rp)
		return;
	req_body_uncount(rp);
	rp->conn = NULL;
	if (!rp->in_gate)
		http_req_free(rp);
}

/* Close the connection now. A request with its handler is detached (it stays valid until the
 * handler ends it) and its on_abort runs; one still being parsed (or gated) is dropped. */
static void conn_close(struct http_conn *conn)
{
	if (conn->closing)
		return;
	conn->closing = true;
	struct http_req_priv *rp = conn->req;
	conn->req = NULL;
	uv_close((uv_handle_t *)&conn->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&conn->timer, on_handle_closed);
	if (!rp)
		return;
	if (!rp->dispatched) {
		req_drop(rp);
		return;
	}
	req_body_uncount(rp);
	rp->conn = NULL;
	rp->aborted = true;
	/* Last: on_abort may reply, which frees the request. */
	if (rp->pub.on_abort && !rp->in_reply)
		rp->pub.on_abort(&rp->pub);
}

static void on_linger_timeout(uv_timer_t *t)
{
	conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
	struct http_conn *conn = s->data;
	if (conn->closing)
		return;
	if (status < 0 || conn->eof) {
		conn_close(conn);
		return;
	}
	/* The reply is out; read (and drop) until the client closes, so that input it sent and we
	 * never read does not turn our close into a reset that destroys the reply on its side. */
	uv_timer_start(&conn->timer, on_linger_timeout, HTTP_LINGER_MS, 0);
}

/* Stop taking requests; shut the connection down once every queued byte is written. A client
 * that does not take the bytes within the idle timeout is cut off. */
static void conn_close_when_flushed(struct http_conn *conn)
{
	if (conn->closing || conn->shutdown_started)
		return;
	conn->state = CONN_LINGER;
	conn->in_len = 0;
	conn->close_when_flushed = true;
	uv_timer_start(&conn->timer, on_linger_timeout, conn->srv->limits.idle_timeout_ms, 0);
	conn_read_update(conn);
	if (conn->write_queued == 0)
		conn_after_write(conn);
}

static void conn_after_write(struct http_conn *conn)
{
	if (conn->closing)
		return;
	if (conn->close_when_flushed) {
		if (conn->write_queued > 0)
			return;
		conn->close_when_flushed = false;
		conn->shutdown_started = true;
		conn->shutdown.data = conn;
		if (uv_shutdown(&conn->shutdown, (uv_stream_t *)&conn->tcp, on_shutdown) < 0)
			conn_close(conn);
		return;
	}
	struct http_req_priv *rp = conn->req;
	size_t limit = conn->srv->limits.max_write_buffer;
	if (rp && rp->want_drain && conn->write_queued <= limit / 2) {
		rp->want_drain = false;
		if (rp->pub.on_drain)
			rp->pub.on_drain(&rp->pub);
		return;
	}
	if (conn->state == CONN_IDLE && conn->write_queued <= limit)
		conn_process(conn);
}

/* Answer a request we refuse (no handler) with an error and close the connection. */
static void conn_fail(struct http_conn *conn, int status, const char *msg)
{
	if (conn->closing || conn->state == CONN_LINGER)
		return;
	struct http_req_priv *rp = conn->req;
	conn->req = NULL;
	req_drop(rp);
	conn->state = CONN_LINGER;
	conn->in_len = 0;
	if (http_conn_write_error(conn, status, http_status_code_name(status), msg) < 0)
		return;
	conn_close_when_flushed(conn);
}

/* ---- timers ---- */

static void on_timeout(uv_timer_t *t)
{
	struct http_conn *conn = t->data;
	switch (conn->state) {
	case CONN_IDLE: conn_close(conn); break;
	case CONN_HEAD: conn_fail(conn, 408, "request head not received in time"); break;
	case CONN_BODY: conn_fail(conn, 408, "request body not received in time"); break;
	case CONN_BUSY:
		/* The client took none of the reply for the idle timeout. */
		if (conn->write_queued > 0)
			conn_close(conn);
		break;
	default: break;
	}
}

static void conn_timer(struct http_conn *conn, unsigned ms)
{
	/* From now, not from the start of this loop turn (a long turn would shorten it). */
	uv_update_time(conn->srv->loop);
	uv_timer_start(&conn->timer, on_timeout, ms, 0);
}

/* ---- parser callbacks ---- */

static int head_append(struct http_conn *conn, const char *at, size_t len)
{
	struct http_req_priv *rp = conn->req;
	size_t max = conn->srv->limits.max_header_bytes;
	if (rp->head_len + len + 1 > max) {
		conn->fail_status = 431;
		conn->fail_msg = "request head too large";
		return HPE_USER;
	}
	if (rp->head_len + len + 1 > rp->head_cap) {
		size_t cap = rp->head_cap ? rp->head_cap : 512;
		while (cap < rp->head_len + len + 1)
			cap *= 2;
		if (cap > max)
			cap = max;
		char *p = realloc(rp->head, cap);
		if (!p) {
			conn->fail_status = 503;
			conn->fail_msg = "out of memory";
			return HPE_USER;
		}
		rp->head = p;
		rp->head_cap = cap;
	}
	memcpy(rp->head + rp->head_len, at, len);
	rp->head_len += len;
	rp->head[rp->head_len] = '\0';
	return 0;
}

static int on_message_begin(llhttp_t *p)
{
	struct http_conn *conn = p->data;
	conn->req = req_new(conn);
	if (!conn->req) {
		conn->fail_status = 503;
		conn->fail_msg = "out of memory";
		return -1;
	}
	conn->state = CONN_HEAD;
	conn_timer(conn, conn->srv->limits.head_timeout_ms);
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct http_conn *conn = p->data;
	if (conn->req->url_len + len > HTTP_MAX_PATH_BYTES) {
		conn->fail_status = 414;
		conn->fail_msg = "request target too long";
		return HPE_USER;
	}
	conn->req->url_len += len;
	return head_append(conn, at, len);
}

static int on_url_complete(llhttp_t *p)
{
	struct http_conn *conn = p->data;
	int r = head_append(conn, "", 0);
	if (r)
		return r;
	conn->req->url_done = true;
	conn->req->head_len++; /* keep the NUL */
	return 0;
}

/* Trailers of a chunked body: counted against the head limit, not kept (the request's headers
 * point into its head buffer, which must not move once they are handed out). */
static int trailer_count(struct http_conn *conn, size_t len)
{
	struct http_req_priv *rp = conn->req;
	rp->trailer_bytes += len + 1;
	if (rp->trailer_bytes > conn->srv->limits.max_header_bytes) {
		conn->fail_status = 431;
		conn->fail_msg = "request trailers too large";
		return HPE_USER;
	}
	return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct http_conn *conn = p->data;
	struct http_req_priv *rp = conn->req;
	if (conn->state == CONN_BODY)
		return trailer_count(conn, len);
	if (rp->in_value || rp->nhoff == 0) {
		/* A new header (otherwise, more of the name split across reads). */
		if (rp->nhoff >= conn->srv->limits.max_headers) {
			conn->fail_status = 431;
			conn->fail_msg = "too many headers";
			return HPE_USER;
		}
		if (rp->nhoff == rp->hoff_cap) {
			size_t cap = rp->hoff_cap ? rp->hoff_cap * 2 : 16;
			struct http_hdr_off *h = realloc(rp->hoff, cap * sizeof(*h));
			if (!h) {
				conn->fail_status = 503;
				conn->fail_msg = "out of memory";
				return HPE_USER;
			}
			rp->hoff = h;
			rp->hoff_cap = cap;
		}
		rp->hoff[rp->nhoff++] = (struct http_hdr_off){rp->head_len, rp->head_len};
		rp->in_value = false;
	}
	return head_append(conn, at, len);
}

/* End the string being read into the head (a header's name or value) with its NUL; a value
 * loses its trailing whitespace first (llhttp skips the leading). */
static int head_end_string(struct http_conn *conn, bool trim)
{
	struct http_req_priv *rp = conn->req;
	int r = head_append(conn, "", 0);
	if (r)
		return r;
	size_t start = trim ? rp->hoff[rp->nhoff - 1].value : rp->head_len;
	while (rp->head_len > start &&
	       (rp->head[rp->head_len - 1] == ' ' || rp->head[rp->head_len - 1] == '\t'))
		rp->head[--rp->head_len] = '\0';
	rp->head_len++;
	return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
	struct http_conn *conn = p->data;
	struct http_req_priv *rp = conn->req;
	if (conn->state == CONN_BODY)
		return 0;
	int r = head_end_string(conn, false);
	if (r)
		return r;
	rp->hoff[rp->nhoff - 1].value = rp->head_len;
	rp->in_value = true;
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct http_conn *conn = p->data;
	if (conn->state == CONN_BODY)
		return trailer_count(conn, len);
	return head_append(conn, at, len);
}

static int on_header_value_complete(llhttp_t *p)
{
	struct http_conn *conn = p->data;
	if (conn->state == CONN_BODY)
		return 0;
	return head_end_string(conn, true);
}

/* Split the URL into path and query; only origin-form ("/path?query") is served. */
static int req_split_url(struct http_req_priv *rp)
{
	if (!rp->head || rp->url_len == 0)
		return -EINVAL;
	char *url = rp->head + rp->url_off;
	if (url[0] != '/')
		return -EINVAL;
	char *q = memchr(url, '?', rp->url_len);
	if (q) {
		*q = '\0';
		rp->pub.query = q + 1;
	}
	char *hash = strchr(q ? q + 1 : url, '#');
	if (hash)
		*hash = '\0';
	rp->pub.path = url;
	return 0;
}

/* Run the gate on a routed request whose head is complete (none of its body is read yet).
 * Returns 0 when it may go on (its body is read next), -1 when it is over: the gate replied
 * (with Connection: close, and the connection drops the rest of the request and closes) or the
 * connection died meanwhile; the request is freed then. */
static int req_gate(struct http_conn *conn, struct http_req_priv *rp)
{
	struct http_server *srv = conn->srv;
	struct http_request *req = &rp->pub;
	/* keep_alive is still false: a reply from the gate closes the connection, since the body
	 * that may follow is never read. in_gate keeps the request alive while the gate works:
	 * a reply (or the connection closing) marks it instead of freeing it. */
	rp->keep_alive = false;
	rp->in_gate = true;
	int refused = srv->gate(req, srv->gate_ud);
	if (!rp->ended && rp->conn && (refused || rp->started)) {
		/* The gate stopped (or started a reply) without ending its reply. */
		if (rp->started)
			http_reply_end(req);
		else
			http_reply_error(req, 500, "internal", "the gate refused without a reply");
	}
	rp->in_gate = false;
	if (rp->ended || !rp->conn) {
		if (conn->req == rp)
			conn->req = NULL;
		http_req_free(rp);
		return -1;
	}
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	struct http_conn *conn = p->data;
	struct http_server *srv = conn->srv;
	struct http_req_priv *rp = conn->req;
	struct http_request *req = &rp->pub;

	snprintf(req->method, sizeof(req->method), "%s", llhttp_method_name(p->method));
	if (req_split_url(rp) < 0) {
		conn->fail_status = 400;
		conn->fail_msg = "bad request target";
		return -1;
	}
	req->headers = calloc(rp->nhoff ? rp->nhoff : 1, sizeof(*req->headers));
	if (!req->headers) {
		conn->fail_status = 503;
		conn->fail_msg = "out of memory";
		return -1;
	}
	for (size_t i = 0; i < rp->nhoff; i++) {
		req->headers[i].name = rp->head + rp->hoff[i].name;
		req->headers[i].value = rp->head + rp->hoff[i].value;
	}
	req->nheaders = rp->nhoff;
	rp->http10 = p->http_major == 1 && p->http_minor == 0;
	req->http_minor = p->http_minor;
	rp->head_only = strcmp(req->method, "HEAD") == 0;

	http_route_find(rp, srv->routes, srv->nroutes);
	rp->body_limit = srv->limits.max_body_bytes;
	if (rp->route_status == 0 && req->route->max_body_bytes)
		rp->body_limit = req->route->max_body_bytes;

	/* The gate first: nothing of the body is read or held for a client it refuses. */
	if (rp->route_status == 0 && srv->gate && req_gate(conn, rp) < 0)
		return -1; /* replied (the connection lingers) or the connection is gone */

	bool has_length = p->flags & F_CONTENT_LENGTH;
	const char *expect = http_header_get(req, "Expect");
	bool send_continue = expect && strcasecmp(expect, "100-continue") == 0 && !rp->http10;
	/* A route that takes the connection over gets a body of known length unread: the handler
	 * runs now, and the body stays on the connection (reading stops once the read buffer is
	 * full) until the handler takes it over. */
	if (rp->route_status == 0 && (req->route->flags & HTTP_ROUTE_TAKE_OVER) &&
	    !(p->flags & F_CHUNKED)) {
		/* body_unread counts it down signed (-1 says "read"): a length past that would
		 * be passed on as another one. */
		if (has_length && p->content_length > INT64_MAX) {
			conn->fail_status = 413;
			conn->fail_msg = "request body too large";
			return -1;
		}
		req->body_unread = has_length ? (int64_t)p->content_length : 0;
		if (send_continue && http_conn_write(conn, "HTTP/1.1 100 Continue\r\n\r\n", 25,
		                                     NULL, 0, NULL, 0) < 0)
			return -1;
		conn->state = CONN_BUSY;
		uv_timer_stop(&conn->timer);
		return HPE_PAUSED;
	}
	/* The body buffer grows as bytes arrive (on_body), whatever the client declared. */
	if (has_length && p->content_length > rp->body_limit) {
		conn->fail_status = 413;
		conn->fail_msg = "request body too large";
		return -1;
	}
	if (send_continue &&
	    http_conn_write(conn, "HTTP/1.1 100 Continue\r\n\r\n", 25, NULL, 0, NULL, 0) < 0)
		return -1; /* the connection is closing; rp is gone */
	conn->state = CONN_BODY;
	conn_timer(conn, srv->limits.body_timeout_ms);
	return 0;
}

static int on_chunk_header(llhttp_t *p)
{
	struct http_conn *conn = p->data;
	struct http_req_priv *rp = conn->req;
	if (p->content_length > rp->body_limit - rp->pub.body_len) {
		conn->fail_status = 413;
		conn->fail_msg = "request body too large";
		return -1;
	}
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct http_conn *conn = p->data;
	struct http_req_priv *rp = conn->req;
	struct http_request *req = &rp->pub;
	if (len > rp->body_limit - req->body_len) {
		conn->fail_status = 413;
		conn->fail_msg = "request body too large";
		return HPE_USER;
	}
	if (rp->route_status) {
		/* Answered with an error without its body: counted (for the limit), not kept. */
		req->body_len += len;
		return 0;
	}
	if (req->body_len + len + 1 > rp->body_cap) {
		size_t cap = rp->body_cap ? rp->body_cap : 4096;
		while (cap < req->body_len + len + 1)
			cap *= 2;
		if (cap > rp->body_limit + 1)
			cap = rp->body_limit + 1;
		size_t max_all = conn->srv->limits.max_bodies_bytes;
		if (max_all && cap - rp->body_cap > max_all - conn->srv->bodies_bytes) {
			conn->fail_status = 503;
			conn->fail_msg =
			    "the server holds too many request bodies; try again shortly";
			return HPE_USER;
		}
		char *b = realloc(req->body, cap);
		if (!b) {
			conn->fail_status = 503;
			conn->fail_msg = "out of memory";
			return HPE_USER;
		}
		conn->srv->bodies_bytes += cap - rp->body_cap;
		rp->body_counted += cap - rp->body_cap;
		req->body = b;
		rp->body_cap = cap;
	}
	memcpy(req->body + req->body_len, at, len);
	req->body_len += len;
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct http_conn *conn = p->data;
	struct http_req_priv *rp = conn->req;
	if (rp->route_status)
		rp->pub.body_len = 0; /* not kept */
	if (!rp->pub.body) {
		rp->pub.body = malloc(1);
		if (!rp->pub.body) {
			conn->fail_status = 503;
			conn->fail_msg = "out of memory";
			return -1;
		}
	}
	rp->pub.body[rp->pub.body_len] = '\0';
	rp->keep_alive = llhttp_should_keep_alive(p);
	conn->state = CONN_BUSY;
	uv_timer_stop(&conn->timer);
	return HPE_PAUSED;
}

/* ---- dispatch ---- */

static void conn_dispatch(struct http_conn *conn)
{
	struct http_req_priv *rp = conn->req;
	struct http_request *req = &rp->pub;
	rp->dispatched = true;
	if (rp->route_status) {
		if (rp->route_status == 405)
			http_reply_header(req, "Allow", rp->allow);
		http_reply_error(req, rp->route_status, http_status_code_name(rp->route_status),
		                 "%s", rp->route_msg);
		return;
	}
	/* The gate let it through when its head was complete (on_headers_complete). */
	req->route->fn(req);
}

void http_conn_request_done(struct http_req_priv *rp, bool close)
{
	struct http_conn *conn = rp->conn;
	close = close || !rp->keep_alive;
	/* Only while the connection lives: a request detached from it may outlive the server. */
	if (conn && !conn->closing && conn->srv->on_done && rp->status)
		conn->srv->on_done(&rp->pub, rp->status, uv_hrtime() - rp->start_ns, conn->srv->ud);
	req_body_uncount(rp);
	if (rp->in_gate)
		rp->ended = true; /* the gate replied: req_gate frees it once the gate returns */
	else
		http_req_free(rp);
	if (!conn)
		return;
	conn->req = NULL;
	if (conn->closing)
		return;
	if (close) {
		conn_close_when_flushed(conn);
		return;
	}
	conn->state = CONN_IDLE;
	conn_timer(conn, conn->srv->limits.idle_timeout_ms);
	conn_process(conn);
}

/* ---- taking a connection over ---- */

static void tcp_freed(uv_handle_t *h)
{
	free(h);
}

void http_tcp_free(uv_tcp_t *tcp)
{
	if (tcp)
		uv_close((uv_handle_t *)tcp, tcp_freed);
}

int http_hijack(struct http_request *req, int status, uv_tcp_t **ret_tcp, char **ret_pending,
                size_t *ret_pending_len)
{
	struct http_req_priv *rp = req->priv_;
	struct http_conn *conn = rp->conn;
	assert(!rp->started && rp->dispatched);
	if (!conn || conn->closing)
		return -EPIPE;
	/* A 100 Continue not fully written yet would be cut by the close below. */
	if (uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp) > 0)
		return -EBUSY;
	uv_os_fd_t fd;
	if (uv_fileno((uv_handle_t *)&conn->tcp, &fd) < 0)
		return -EPIPE;
	_cleanup_free_ char *pending = conn->in_len ? malloc(conn->in_len) : NULL;
	uv_tcp_t *tcp = malloc(sizeof(*tcp));
	if (!tcp || (conn->in_len && !pending)) {
		free(tcp);
		return -ENOMEM;
	}
	/* The socket outlives the connection's handle through a second descriptor: closing the
	 * handle (which takes the first out of the loop's epoll set first) sends nothing. */
	int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (nfd < 0) {
		free(tcp);
		return -errno;
	}
	uv_tcp_init(conn->srv->loop, tcp);
	int r = uv_tcp_open(tcp, nfd);
	if (r < 0) {
		close(nfd);
		http_tcp_free(tcp);
		return r;
	}
	if (conn->in_len)
		memcpy(pending, conn->in + conn->in_off, conn->in_len);
	*ret_pending_len = conn->in_len;
	*ret_pending = TAKE_PTR(pending);
	*ret_tcp = tcp;
	rp->started = true;
	rp->status = status;
	if (conn->srv->on_done)
		conn->srv->on_done(req, status, uv_hrtime() - rp->start_ns, conn->srv->ud);
	conn->req = NULL;
	req_body_uncount(rp);
	http_req_free(rp);
	conn_close(conn);
	return 0;
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct http_conn *conn = h->data;
	if (conn->state == CONN_LINGER) {
		static char sink[4096]; /* dropped input; never read */
		*buf = uv_buf_init(sink, sizeof(sink));
		return;
	}
	if (conn->in_off > 0 && conn->in_len > 0)
		memmove(conn->in, conn->in + conn->in_off, conn->in_len);
	conn->in_off = 0;
	*buf = uv_buf_init(conn->in + conn->in_len, HTTP_READ_BUFFER_BYTES - conn->in_len);
}

static void conn_read_update(struct http_conn *conn)
{
	bool want =
	    !conn->closing && !conn->eof &&
	    (conn->state == CONN_LINGER || conn->in_off + conn->in_len < HTTP_READ_BUFFER_BYTES);
	if (want == conn->reading)
		return;
	if (want && uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read) < 0)
		return;
	if (!want)
		uv_read_stop((uv_stream_t *)&conn->tcp);
	conn->reading = want;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	struct http_conn *conn = s->data;
	if (nread < 0) {
		/* EOF or error: the client is gone, though replies that ended are still written
		 * to a client that only shut down its side. */
		conn->eof = true;
		uv_read_stop(s);
		conn->reading = false;
		struct http_req_priv *rp = conn->req;
		if (nread == UV_EOF && conn->state == CONN_BUSY && rp && rp->dispatched &&
		    rp->pub.route && (rp->pub.route->flags & HTTP_ROUTE_TAKE_OVER)) {
			rp->pub.client_eof = true; /* a half-close: it may still want the answer */
			return;
		}
		if (nread == UV_EOF && conn->write_queued > 0 &&
		    (conn->state == CONN_IDLE || conn->state == CONN_LINGER)) {
			conn_close_when_flushed(conn);
			return;
		}
		conn_close(conn);
		return;
	}
	if (conn->state == CONN_LINGER || nread == 0)
		return;
	conn->in_len += (size_t)nread;
	conn_process(conn);
}

/* Parse what is buffered while no request is with a handler. */
static void conn_process(struct http_conn *conn)
{
	if (conn->processing)
		return;
	conn->processing = true;
	while (!conn->closing && conn->state != CONN_LINGER && conn->state != CONN_BUSY &&
	       conn->in_len > 0 && conn->write_queued <= conn->srv->limits.max_write_buffer) {
		const char *data = conn->in + conn->in_off;
		llhttp_errno_t e = llhttp_execute(&conn->parser, data, conn->in_len);
		size_t used = conn->in_len;
		if (e == HPE_PAUSED) {
			used = (size_t)(llhttp_get_error_pos(&conn->parser) - data);
			llhttp_resume(&conn->parser);
		} else if (e != HPE_OK) {
			int status = conn->fail_status ? conn->fail_status : 400;
			const char *msg = conn->fail_msg ? conn->fail_msg
			                                 : llhttp_get_error_reason(&conn->parser);
			conn_fail(conn, status, msg ? msg : "bad request");
			break;
		}
		conn->in_off += used;
		conn->in_len -= used;
		if (conn->in_len == 0)
			conn->in_off = 0;
		if (conn->state == CONN_BUSY)
			conn_dispatch(conn);
	}
	conn->processing = false;
	conn_read_update(conn);
	/* A reply that ended inside the handler left the connection idle with input to parse. */
	if (!conn->closing && conn->state == CONN_IDLE && conn->in_len > 0 &&
	    conn->write_queued <= conn->srv->limits.max_write_buffer)
		conn_process(conn);
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *l, int status)
{
	struct http_server *srv = l->data;
	if (status < 0 || srv->closing)
		return;
	struct http_conn *conn = calloc(1, sizeof(*conn));
	if (!conn)
		return;
	conn->srv = srv;
	conn->in = malloc(HTTP_READ_BUFFER_BYTES);
	uv_tcp_init(srv->loop, &conn->tcp);
	uv_timer_init(srv->loop, &conn->timer);
	conn->tcp.data = conn;
	conn->timer.data = conn;
	conn->open_handles = 2;
	conn->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = conn;
	srv->conns = conn;
	conn->rejected = srv->nconns >= srv->limits.max_connections;
	if (conn->rejected)
		srv->nrejecting++;
	else
		srv->nconns++;
	if (uv_accept(l, (uv_stream_t *)&conn->tcp) < 0 || !conn->in ||
	    (conn->rejected && srv->nrejecting > HTTP_MAX_REJECTING)) {
		conn_close(conn);
		return;
	}
	uv_tcp_nodelay(&conn->tcp, 1);
	struct sockaddr_storage ss;
	int sl = sizeof(ss);
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
			uv_ip4_name(sin, ip, sizeof(ip));
			port = ntohs(sin->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
			uv_ip6_name(sin6, ip, sizeof(ip));
			port = ntohs(sin6->sin6_port);
		}
	}
	snprintf(conn->remote, sizeof(conn->remote), "%s:%d", ip, port);
	llhttp_init(&conn->parser, HTTP_REQUEST, &srv->settings);
	conn->parser.data = conn;
	conn->state = CONN_IDLE;
	conn_read_update(conn);
	if (conn->rejected) {
		conn_fail(conn, 503, "too many connections");
		return;
	}
	conn_timer(conn, srv->limits.idle_timeout_ms);
}

/* ---- the server ---- */

static void limits_default(struct http_limits *l)
{
	if (!l->max_header_bytes)
		l->max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES;
	if (!l->max_headers)
		l->max_headers = HTTP_DEFAULT_MAX_HEADERS;
	if (!l->max_body_bytes)
		l->max_body_bytes = HTTP_DEFAULT_MAX_BODY_BYTES;
	if (!l->max_connections)
		l->max_connections = HTTP_DEFAULT_MAX_CONNECTIONS;
	if (!l->idle_timeout_ms)
		l->idle_timeout_ms = HTTP_DEFAULT_IDLE_TIMEOUT_MS;
	if (!l->head_timeout_ms)
		l->head_timeout_ms = HTTP_DEFAULT_HEAD_TIMEOUT_MS;
	if (!l->body_timeout_ms)
		l->body_timeout_ms = HTTP_DEFAULT_BODY_TIMEOUT_MS;
	if (!l->max_write_buffer)
		l->max_write_buffer = HTTP_DEFAULT_MAX_WRITE_BUFFER;
}

int http_server_new(uv_loop_t *loop, const struct http_server_config *cfg, struct http_server **ret,
                    struct sk_error *err)
{
	for (size_t i = 0; i < cfg->nroutes; i++) {
		const struct http_route *r = &cfg->routes[i];
		if (!r->method || !r->pattern || !r->fn || r->pattern[0] != '/')
			return sk_error_set(err, -EINVAL,
			                    "http route %zu: bad method, pattern or handler", i);
	}
	struct http_server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return sk_error_errno(err, -ENOMEM, "http server");
	srv->loop = loop;
	srv->limits = cfg->limits;
	limits_default(&srv->limits);
	srv->routes = cfg->routes;
	srv->nroutes = cfg->nroutes;
	srv->gate = cfg->gate;
	srv->gate_ud = cfg->gate_ud;
	srv->ud = cfg->ud;
	srv->on_done = cfg->on_done;
	srv->port = -1;
	llhttp_settings_init(&srv->settings);
	srv->settings.on_message_begin = on_message_begin;
	srv->settings.on_url = on_url;
	srv->settings.on_url_complete = on_url_complete;
	srv->settings.on_header_field = on_header_field;
	srv->settings.on_header_field_complete = on_header_field_complete;
	srv->settings.on_header_value = on_header_value;
	srv->settings.on_header_value_complete = on_header_value_complete;
	srv->settings.on_headers_complete = on_headers_complete;
	srv->settings.on_chunk_header = on_chunk_header;
	srv->settings.on_body = on_body;
	srv->settings.on_message_complete = on_message_complete;
	*ret = srv;
	return 0;
}

int http_server_listen(struct http_server *srv, const char *addr_port, struct sk_error *err)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(addr_port, ':');
	if (!colon || (size_t)(colon - addr_port) >= sizeof(host))
		return sk_error_set(err, -EINVAL, "listen address '%s': want ADDR:PORT", addr_port);
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port < 0 || port > 65535)
		return sk_error_set(err, -EINVAL, "listen address '%s': bad port", addr_port);
	size_t hlen = (size_t)(colon - addr_port);
	memcpy(host, addr_port, hlen);
	host[hlen] = '\0';

	struct sockaddr_storage ss;
	int r;
	if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
		host[hlen - 1] = '\0';
		r = uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)&ss);
	} else {
		r = uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss);
	}
	if (r < 0)
		return sk_error_set(err, -EINVAL, "listen address '%s': bad address", addr_port);

	if (!srv->listener_init) {
		uv_tcp_init(srv->loop, &srv->listener);
		srv->listener.data = srv;
		srv->listener_init = true;
	}
	r = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
	if (r < 0)
		return sk_error_errno(err, r, "listen on %s", addr_port);
	int sl = sizeof(ss);
	if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &sl) == 0)
		srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
		                                           : ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

int http_server_port(const struct http_server *srv)
{
	return srv->port;
}

void *http_server_ud(const struct http_server *srv)
{
	return srv->ud;
}

static void server_maybe_done(struct http_server *srv)
{
	if (!srv->closing || srv->conns || srv->listener_init)
		return;
	void (*done)(void *) = srv->done;
	void *ud = srv->done_ud;
	free(srv);
	if (done)
		done(ud);
}

static void on_listener_closed(uv_handle_t *h)
{
	struct http_server *srv = h->data;
	srv->listener_init = false;
	server_maybe_done(srv);
}

void http_server_close(struct http_server *srv, void (*done)(void *), void *done_ud)
{
	if (srv->closing)
		return;
	srv->closing = true;
	srv->done = done;
	srv->done_ud = done_ud;
	for (struct http_conn *c = srv->conns; c; c = c->next)
		conn_close(c);
	if (srv->listener_init)
		uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
	else {
		/* Never listened: close a fresh handle so that done still runs from the loop. */
		srv->listener_init = true;
		uv_tcp_init(srv->loop, &srv->listener);
		srv->listener.data = srv;
		uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
	}
}
