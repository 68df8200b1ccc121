/* The HTTP client of the worker link: one keep-alive connection, requests queued and sent one at
 * a time, responses parsed with llhttp. A connection the server closed is replaced on the next
 * request; a request sent on a reused connection that the server closed before answering a
 * single byte is sent once more on a fresh one (the server closed an idle connection as we
 * wrote to it, so it never saw the request). */
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct creq {
	struct creq *next;
	char *data; /* the serialized request */
	size_t len;
	bool head; /* HEAD: the response has no body */
	bool retried;
	uint64_t deadline; /* loop time in ms; 0: none */
	http_client_cb cb;
	void *ud;
};

struct cconn {
	uv_tcp_t tcp;
	uv_connect_t connect;
	uv_write_t write;
	struct http_client *c;
	llhttp_t parser;
	char *wbuf;
	char *body;
	size_t body_len, body_cap;
	unsigned nrequests; /* sent on this connection */
	int err;            /* set by a parser callback */
	bool connected;
	bool closing;
	bool got_bytes; /* of the response in flight */
	bool complete;
};

struct http_client {
	uv_loop_t *loop;
	struct sockaddr_storage addr;
	char hostport[300];
	uv_timer_t timer;
	struct creq *head, *tail; /* head is in flight when inflight */
	bool inflight;
	struct cconn *conn;
	int open_handles;
	bool closing;
	llhttp_settings_t settings;
};

static void client_pump(struct http_client *c);
static void on_timer(uv_timer_t *t);

static void client_maybe_free(struct http_client *c)
{
	if (c->closing && c->open_handles == 0)
		free(c);
}

static void on_conn_closed(uv_handle_t *h)
{
	struct cconn *k = h->data;
	struct http_client *c = k->c;
	free(k->wbuf);
	free(k->body);
	free(k);
	c->open_handles--;
	client_maybe_free(c);
}

static void conn_drop(struct http_client *c)
{
	struct cconn *k = c->conn;
	if (!k)
		return;
	c->conn = NULL;
	k->closing = true;
	uv_close((uv_handle_t *)&k->tcp, on_conn_closed);
}

static void timer_arm(struct http_client *c)
{
	if (c->closing)
		return;
	uint64_t min = 0;
	for (struct creq *r = c->head; r; r = r->next)
		if (r->deadline && (!min || r->deadline < min))
			min = r->deadline;
	if (!min) {
		uv_timer_stop(&c->timer);
		return;
	}
	uint64_t now = uv_now(c->loop);
	uv_timer_start(&c->timer, on_timer, min > now ? min - now : 0, 0);
}

/* Take r out of the queue, run its callback, free it. */
static void creq_finish(struct http_client *c, struct creq *r, int err, int status,
                        const char *body, size_t len)
{
	struct creq **pp = &c->head;
	struct creq *prev = NULL;
	while (*pp && *pp != r) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (*pp) {
		*pp = r->next;
		if (c->tail == r)
			c->tail = prev;
	}
	r->cb(r->ud, err, status, body, len);
	free(r->data);
	free(r);
}

/* The request in flight ends (the connection is kept when keep is set and it may be reused). */
static void inflight_finish(struct http_client *c, int err, int status, const char *body,
                            size_t len, bool keep)
{
	struct creq *r = c->head;
	c->inflight = false;
	if (!keep)
		conn_drop(c);
	creq_finish(c, r, err, status, body, len);
	timer_arm(c);
	client_pump(c);
}

static void on_timer(uv_timer_t *t)
{
	struct http_client *c = t->data;
	uint64_t now = uv_now(c->loop);
	if (c->inflight && c->head->deadline && c->head->deadline <= now) {
		/* Its response may still come: that connection cannot be reused. */
		inflight_finish(c, -ETIMEDOUT, 0, NULL, 0, false);
		return; /* inflight_finish re-armed the timer for the others */
	}
	for (struct creq *r = c->head, *next; r; r = next) {
		next = r->next;
		if (c->inflight && r == c->head)
			continue;
		if (r->deadline && r->deadline <= now) {
			creq_finish(c, r, -ETIMEDOUT, 0, NULL, 0);
			if (c->closing)
				return;
			next = c->head; /* the callback may have queued or finished others */
		}
	}
	timer_arm(c);
}

/* ---- response parsing ---- */

static int on_headers_complete(llhttp_t *p)
{
	struct cconn *k = p->data;
	/* A response to HEAD has no body whatever its headers say. */
	return k->c->head && k->c->head->head ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct cconn *k = p->data;
	if (len > HTTP_CLIENT_MAX_BODY_BYTES - k->body_len) {
		k->err = -EFBIG;
		return HPE_USER;
	}
	if (k->body_len + len + 1 > k->body_cap) {
		size_t cap = k->body_cap ? k->body_cap : 4096;
		while (cap < k->body_len + len + 1)
			cap *= 2;
		char *b = realloc(k->body, cap);
		if (!b) {
			k->err = -ENOMEM;
			return HPE_USER;
		}
		k->body = b;
		k->body_cap = cap;
	}
	memcpy(k->body + k->body_len, at, len);
	k->body_len += len;
	return 0;
}

static int on_message_begin(llhttp_t *p)
{
	struct cconn *k = p->data;
	k->body_len = 0;
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct cconn *k = p->data;
	/* 1xx responses (100 Continue) come before the real one. */
	if (p->status_code >= 100 && p->status_code < 200)
		return 0;
	k->complete = true;
	return HPE_PAUSED;
}

static void conn_response_done(struct cconn *k)
{
	struct http_client *c = k->c;
	bool keep = llhttp_should_keep_alive(&k->parser);
	int status = k->parser.status_code;
	char *body = k->body;
	size_t len = k->body_len;
	if (body)
		body[len] = '\0';
	/* The body stays the connection's until the callback returns (the connection is freed
	 * only from its close callback, on a later loop turn). */
	inflight_finish(c, 0, status, body ? body : "", len, keep);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	(void)suggested;
	static char rbuf[64 * 1024]; /* parsed at once: the loop is single-threaded */
	*buf = uv_buf_init(rbuf, sizeof(rbuf));
}

/* The connection failed with the request in flight: send it once more on a fresh connection
 * when the server closed a reused connection before a byte of the answer, else fail it. */
static void conn_failed(struct cconn *k, int err)
{
	struct http_client *c = k->c;
	if (!k->got_bytes && k->nrequests > 1 && !c->head->retried) {
		c->head->retried = true;
		c->inflight = false;
		conn_drop(c);
		client_pump(c);
		return;
	}
	inflight_finish(c, err, 0, NULL, 0, false);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct cconn *k = s->data;
	struct http_client *c = k->c;
	if (k->closing)
		return;
	if (nread < 0) {
		if (!c->inflight || c->conn != k) {
			conn_drop(c); /* the server closed an idle connection */
			return;
		}
		if (nread == UV_EOF && k->got_bytes && llhttp_finish(&k->parser) == HPE_OK &&
		    k->complete) {
			conn_response_done(k);
			return;
		}
		conn_failed(k, nread == UV_EOF ? -ECONNRESET : (int)nread);
		return;
	}
	if (nread == 0)
		return;
	if (!c->inflight) {
		conn_drop(c); /* bytes nobody asked for */
		return;
	}
	k->got_bytes = true;
	llhttp_errno_t e = llhttp_execute(&k->parser, buf->base, (size_t)nread);
	if (e == HPE_PAUSED && k->complete) {
		conn_response_done(k);
		return;
	}
	if (e != HPE_OK)
		inflight_finish(c, k->err ? k->err : -EPROTO, 0, NULL, 0, false);
}

/* ---- sending ---- */

static void on_write(uv_write_t *w, int status)
{
	struct cconn *k = w->data;
	free(k->wbuf);
	k->wbuf = NULL;
	if (status < 0 && !k->closing && k->c->conn == k && k->c->inflight)
		conn_failed(k, status);
}

static void conn_send(struct cconn *k)
{
	struct http_client *c = k->c;
	struct creq *r = c->head;
	llhttp_init(&k->parser, HTTP_RESPONSE, &c->settings);
	k->parser.data = k;
	k->body_len = 0;
	k->got_bytes = false;
	k->complete = false;
	k->err = 0;
	k->nrequests++;
	free(k->wbuf);
	k->wbuf = malloc(r->len);
	if (!k->wbuf) {
		inflight_finish(c, -ENOMEM, 0, NULL, 0, false);
		return;
	}
	memcpy(k->wbuf, r->data, r->len);
	uv_buf_t b = uv_buf_init(k->wbuf, (unsigned)r->len);
	k->write.data = k;
	int e = uv_write(&k->write, (uv_stream_t *)&k->tcp, &b, 1, on_write);
	if (e < 0)
		inflight_finish(c, e, 0, NULL, 0, false);
}

static void on_connect(uv_connect_t *req, int status)
{
	struct cconn *k = req->data;
	struct http_client *c = k->c;
	if (k->closing)
		return;
	if (status < 0) {
		inflight_finish(c, status, 0, NULL, 0, false);
		return;
	}
	k->connected = true;
	uv_tcp_nodelay(&k->tcp, 1);
	int e = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
	if (e < 0) {
		inflight_finish(c, e, 0, NULL, 0, false);
		return;
	}
	conn_send(k);
}

static void client_pump(struct http_client *c)
{
	if (c->closing || c->inflight || !c->head)
		return;
	c->inflight = true;
	if (c->conn && c->conn->connected) {
		conn_send(c->conn);
		return;
	}
	struct cconn *k = calloc(1, sizeof(*k));
	if (!k) {
		inflight_finish(c, -ENOMEM, 0, NULL, 0, false);
		return;
	}
	k->c = c;
	uv_tcp_init(c->loop, &k->tcp);
	k->tcp.data = k;
	k->connect.data = k;
	c->open_handles++;
	c->conn = k;
	int e = uv_tcp_connect(&k->connect, &k->tcp, (struct sockaddr *)&c->addr, on_connect);
	if (e < 0)
		inflight_finish(c, e, 0, NULL, 0, false);
}

/* ---- the client ---- */

int http_client_new(uv_loop_t *loop, const char *host, int port, struct http_client **ret,
                    struct sk_error *err)
{
	if (port <= 0 || port > 65535)
		return sk_error_set(err, -EINVAL, "http client: bad port %d", port);
	struct sockaddr_storage ss;
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
		/* A name: resolved once, here (blocking; the client is made at startup). */
		struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
		char ps[16];
		snprintf(ps, sizeof(ps), "%d", port);
		int r = getaddrinfo(host, ps, &hints, &ai);
		if (r != 0 || !ai)
			return sk_error_set(err, -EHOSTUNREACH, "http client: resolve %s: %s", host,
			                    gai_strerror(r));
		memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
		freeaddrinfo(ai);
	}
	struct http_client *c = calloc(1, sizeof(*c));
	if (!c)
		return sk_error_errno(err, -ENOMEM, "http client");
	c->loop = loop;
	c->addr = ss;
	snprintf(c->hostport, sizeof(c->hostport), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
	         port);
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	c->open_handles = 1;
	llhttp_settings_init(&c->settings);
	c->settings.on_message_begin = on_message_begin;
	c->settings.on_headers_complete = on_headers_complete;
	c->settings.on_body = on_body;
	c->settings.on_message_complete = on_message_complete;
	*ret = c;
	return 0;
}

int http_client_request(struct http_client *c, const char *method, const char *path,
                        const char *const *headers, const void *body, size_t len,
                        unsigned timeout_ms, http_client_cb cb, void *ud)
{
	if (c->closing)
		return -ECANCELED;
	if (!method || !path || path[0] != '/' || strpbrk(method, " \r\n") ||
	    strpbrk(path, " \r\n"))
		return -EINVAL;
	size_t hlen = 0;
	for (size_t i = 0; headers && headers[i]; i++) {
		if (strpbrk(headers[i], "\r\n") || !strchr(headers[i], ':'))
			return -EINVAL;
		hlen += strlen(headers[i]) + 2;
	}
	size_t cap = strlen(method) + strlen(path) + strlen(c->hostport) + hlen + len + 128;
	struct creq *r = calloc(1, sizeof(*r));
	char *d = malloc(cap);
	if (!r || !d) {
		free(r);
		free(d);
		return -ENOMEM;
	}
	size_t n =
	    (size_t)snprintf(d, cap, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, c->hostport);
	bool has_body = len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
	                strcmp(method, "PATCH") == 0;
	if (has_body)
		n += (size_t)snprintf(d + n, cap - n, "Content-Length: %zu\r\n", len);
	for (size_t i = 0; headers && headers[i]; i++)
		n += (size_t)snprintf(d + n, cap - n, "%s\r\n", headers[i]);
	memcpy(d + n, "\r\n", 2);
	n += 2;
	if (len)
		memcpy(d + n, body, len);
	r->data = d;
	r->len = n + len;
	r->head = strcmp(method, "HEAD") == 0;
	r->deadline = timeout_ms ? uv_now(c->loop) + timeout_ms : 0;
	r->cb = cb;
	r->ud = ud;
	if (c->tail)
		c->tail->next = r;
	else
		c->head = r;
	c->tail = r;
	timer_arm(c);
	client_pump(c);
	return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
	struct http_client *c = h->data;
	c->open_handles--;
	client_maybe_free(c);
}

const struct sockaddr *http_client_addr(const struct http_client *c)
{
	return (const struct sockaddr *)&c->addr;
}

void http_client_close(struct http_client *c)
{
	if (!c || c->closing)
		return;
	c->closing = true;
	c->inflight = false;
	conn_drop(c);
	/* Callbacks may not queue more: http_client_request refuses once closing. */
	while (c->head)
		creq_finish(c, c->head, -ECANCELED, 0, NULL, 0);
	uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}
