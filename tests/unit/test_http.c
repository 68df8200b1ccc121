/* Unit tests for src/http: the router and query decoding alone, then a real server on 127.0.0.1
 * (port 0) in a libuv loop, driven by raw sockets from a thread (byte-exact cases, limits,
 * disconnects) and by http_client from the loop itself. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "../../src/http/http.h"
#include "../../src/http/internal.h"

#define STREAM_CHUNK_BYTES (64 * 1024)
#define STREAM_TOTAL_BYTES (4 * 1024 * 1024)
#define RAW_BYTES          (64 * 1024)
#define BIG_LIMIT          (16 * 1024 * 1024) /* /big's body limit (like the internal routes) */
#define BIG_DECLARED       (10 * 1024 * 1024) /* what a client declares and never sends */

/* ---- the server under test ---- */

struct ctx {
	uv_loop_t loop;
	struct http_server *srv;
	int port;
	uv_async_t wake;
	uv_timer_t defer_timer;
	uv_timer_t guard;
	bool guard_fired;
	bool srv_closed;
	/* Server side. */
	struct http_request *deferred; /* /defer: answered by defer_timer */
	struct http_request *hung;     /* /hang: answered by the test */
	int aborts;
	int handled;
	char remotes[8][64];
	size_t stream_sent;
	int stream_eagain, stream_drains;
	/* The gate and on_free. */
	int gate_calls;
	bool gate_saw_body;   /* a body (or a buffer for one) existed when the gate ran */
	int frees;            /* on_free calls */
	size_t free_body_cap; /* the largest body buffer a freed request had */
	size_t last_body_cap; /* /big's body buffer when its handler ran */
	/* /hijack: the client's connection relayed to a socket pair's end (upstream[0]); the
	 * client thread plays the upstream on upstream[1]. */
	int upstream[2];
	int hijack_err;
	struct http_relay *relay;
	atomic_bool relay_ended;
	/* Client thread. */
	pthread_t thread;
	void (*client)(struct ctx *);
	atomic_bool thread_done;
	void *arg;
};

static int g_frees; /* on_free calls, across servers (for a server closed with a request) */

static struct ctx *ctx_of(struct http_request *req)
{
	return http_server_ud(req->server);
}

/* Every handler but h_params: the handler owns what the gate attached. */
static void note(struct http_request *req)
{
	struct ctx *c = ctx_of(req);
	if (c->handled < 8)
		memcpy(c->remotes[c->handled], req->remote, sizeof(req->remote));
	c->handled++;
	free(req->data);
	req->data = NULL;
}

static void h_hello(struct http_request *req)
{
	note(req);
	http_reply(req, 200, "text/plain", "hello", 5);
}

static void h_echo(struct http_request *req)
{
	note(req);
	const char *x = http_header_get(req, "x-a");
	if (x && strcmp(x, "1") != 0) {
		http_reply_error(req, 500, "internal", "header X-A is '%s'", x);
		return;
	}
	http_reply(req, 200, "text/plain", req->body, req->body_len);
}

static void h_big(struct http_request *req)
{
	ctx_of(req)->last_body_cap = ((struct http_req_priv *)req->priv_)->body_cap;
	h_echo(req);
}

static void h_params(struct http_request *req)
{
	char out[256];
	int n = snprintf(out, sizeof(out), "%zu|%s|%s", req->nparams, req->params[0],
	                 req->nparams > 1 ? req->params[1] : "");
	http_reply(req, 200, "text/plain", out, (size_t)n);
}

static void on_defer_timer(uv_timer_t *t)
{
	struct ctx *c = t->data;
	struct http_request *req = TAKE_PTR(c->deferred);
	if (req)
		http_reply(req, 200, "text/plain", "late", 4);
}

static void h_defer(struct http_request *req)
{
	note(req);
	struct ctx *c = ctx_of(req);
	c->deferred = req;
	uv_timer_start(&c->defer_timer, on_defer_timer, 50, 0);
}

static void on_hang_abort(struct http_request *req)
{
	ctx_of(req)->aborts++;
}

static void h_hang(struct http_request *req)
{
	note(req);
	struct ctx *c = ctx_of(req);
	req->on_abort = on_hang_abort;
	c->hung = req;
}

static void stream_pump(struct http_request *req)
{
	struct ctx *c = ctx_of(req);
	static char chunk[STREAM_CHUNK_BYTES];
	while (c->stream_sent < STREAM_TOTAL_BYTES) {
		memset(chunk, 'a' + (int)((c->stream_sent / STREAM_CHUNK_BYTES) % 26),
		       sizeof(chunk));
		int r = http_reply_write(req, chunk, sizeof(chunk));
		c->stream_sent += sizeof(chunk);
		if (r == -EAGAIN) {
			c->stream_eagain++;
			return; /* on_drain goes on */
		}
		assert_int_equal(r, 0);
	}
	http_reply_end(req);
}

static void on_stream_drain(struct http_request *req)
{
	ctx_of(req)->stream_drains++;
	stream_pump(req);
}

static void h_stream(struct http_request *req)
{
	note(req);
	req->on_drain = on_stream_drain;
	assert_int_equal(http_reply_header(req, "X-Stream", "yes"), 0);
	assert_int_equal(http_reply_header(req, "X-Bad", "a\r\nb"), -EINVAL);
	assert_int_equal(http_reply_start(req, 200, "application/octet-stream"), 0);
	stream_pump(req);
}

static void on_relay_end(void *ud)
{
	struct ctx *c = ud;
	c->relay = NULL;
	atomic_store(&c->relay_ended, true);
}

/* Take the connection over and relay it to upstream[0], after "HELLO\n" to the client and what
 * the client sent after its request to the upstream. */
static void h_hijack(struct http_request *req)
{
	note(req);
	struct ctx *c = ctx_of(req);
	uv_tcp_t *tcp, *up = malloc(sizeof(*up));
	char *pending;
	size_t pending_len;
	assert_non_null(up);
	c->hijack_err = http_hijack(req, 101, &tcp, &pending, &pending_len);
	if (c->hijack_err < 0) {
		free(up);
		http_reply(req, 500, "text/plain", "", 0);
		return;
	}
	uv_tcp_init(&c->loop, up);
	assert_int_equal(uv_tcp_open(up, c->upstream[0]), 0);
	struct http_relay_config rc = {.max_buffer_bytes = 64 * 1024,
	                               .idle_timeout_ms = 5000,
	                               .on_end = on_relay_end,
	                               .ud = c};
	char *hello = strdup("HELLO\n");
	assert_int_equal(
	    http_relay_new(&c->loop, tcp, up, hello, 6, pending, pending_len, &rc, &c->relay), 0);
}

static void on_req_free(struct http_request *req)
{
	struct ctx *c = ctx_of(req);
	struct http_req_priv *rp = req->priv_;
	c->frees++;
	g_frees++;
	if (rp->body_cap > c->free_body_cap)
		c->free_body_cap = rp->body_cap;
	assert_non_null(req->data);
	free(req->data);
	req->data = NULL;
}

/* X-Track: attach data (freed by the handler or on_free). X-Deny: refuse with a 401.
 * X-Mute: refuse without a reply (the library answers 500). */
static int gate(struct http_request *req, void *ud)
{
	(void)ud;
	struct ctx *c = ctx_of(req);
	struct http_req_priv *rp = req->priv_;
	c->gate_calls++;
	if (req->body || req->body_len || rp->body_cap)
		c->gate_saw_body = true;
	if (http_header_get(req, "X-Track")) {
		req->data = malloc(16);
		assert_non_null(req->data);
		req->on_free = on_req_free;
	}
	if (http_header_get(req, "X-Deny")) {
		http_reply_error(req, 401, "unauthenticated", "denied by the gate");
		return 1;
	}
	if (http_header_get(req, "X-Mute"))
		return 1;
	return 0;
}

static const struct http_route routes[] = {
    {.method = "GET", .pattern = "/hello", .fn = h_hello},
    {.method = "POST", .pattern = "/echo", .fn = h_echo},
    {.method = "POST", .pattern = "/small", .fn = h_echo, .max_body_bytes = 10},
    {.method = "GET", .pattern = "/items/{}/sub/{}", .fn = h_params},
    {.method = "DELETE", .pattern = "/items/{}/sub/{}", .fn = h_params},
    {.method = "GET", .pattern = "/defer", .fn = h_defer},
    {.method = "GET", .pattern = "/hang", .fn = h_hang},
    {.method = "GET", .pattern = "/stream", .fn = h_stream},
    {.method = "POST", .pattern = "/big", .fn = h_big, .max_body_bytes = BIG_LIMIT},
    {.method = "GET", .pattern = "/hijack", .fn = h_hijack},
    {.method = "*", .pattern = "/tail/{}/{*}", .fn = h_params},
};

static void on_wake(uv_async_t *a)
{
	(void)a; /* run_until checks its flag */
}

static void on_guard(uv_timer_t *t)
{
	((struct ctx *)t->data)->guard_fired = true;
}

/* Run the loop until *flag (or 10 s pass: a failure). */
static void run_until(struct ctx *c, atomic_bool *flag)
{
	uv_timer_start(&c->guard, on_guard, 10000, 0);
	while (!atomic_load(flag) && !c->guard_fired)
		uv_run(&c->loop, UV_RUN_ONCE);
	uv_timer_stop(&c->guard);
	assert_false(c->guard_fired);
}

static struct ctx *ctx_new(const struct http_limits *limits)
{
	struct ctx *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	assert_int_equal(uv_loop_init(&c->loop), 0);
	struct http_server_config cfg = {
	    .routes = routes, .nroutes = ARRAY_SIZE(routes), .gate = gate, .ud = c};
	if (limits)
		cfg.limits = *limits;
	struct sk_error err = {0};
	assert_int_equal(http_server_new(&c->loop, &cfg, &c->srv, &err), 0);
	assert_int_equal(http_server_listen(c->srv, "127.0.0.1:0", &err), 0);
	c->port = http_server_port(c->srv);
	assert_true(c->port > 0);
	uv_async_init(&c->loop, &c->wake, on_wake);
	uv_timer_init(&c->loop, &c->defer_timer);
	uv_timer_init(&c->loop, &c->guard);
	c->defer_timer.data = c;
	c->guard.data = c;
	return c;
}

static void on_srv_closed(void *ud)
{
	((struct ctx *)ud)->srv_closed = true;
}

static void ctx_free(struct ctx *c)
{
	http_server_close(c->srv, on_srv_closed, c);
	uv_close((uv_handle_t *)&c->wake, NULL);
	uv_close((uv_handle_t *)&c->defer_timer, NULL);
	uv_close((uv_handle_t *)&c->guard, NULL);
	if (c->deferred)
		http_reply(TAKE_PTR(c->deferred), 200, NULL, "", 0);
	uv_run(&c->loop, UV_RUN_DEFAULT);
	assert_true(c->srv_closed);
	assert_int_equal(uv_loop_close(&c->loop), 0);
	free(c);
}

static void *client_main(void *arg)
{
	struct ctx *c = arg;
	c->client(c);
	atomic_store(&c->thread_done, true);
	uv_async_send(&c->wake);
	return NULL;
}

/* Run fn in a thread against the server while the loop serves it. */
static void run_client(struct ctx *c, void (*fn)(struct ctx *))
{
	c->client = fn;
	atomic_store(&c->thread_done, false);
	assert_int_equal(pthread_create(&c->thread, NULL, client_main, c), 0);
	run_until(c, &c->thread_done);
	pthread_join(c->thread, NULL);
}

/* ---- raw sockets (client thread: no cmocka asserts there) ---- */

struct raw {
	int fd;
	char buf[RAW_BYTES]; /* what was received (truncated past RAW_BYTES) */
	size_t len;
	size_t body_total;
	bool body_ok; /* streamed body bytes follow the server's pattern */
	int ncomplete;
	bool eof;
	llhttp_t p;
	llhttp_settings_t s;
};

static int raw_on_body(llhttp_t *p, const char *at, size_t len)
{
	struct raw *r = p->data;
	for (size_t i = 0; i < len; i++) {
		size_t off = r->body_total + i;
		char want = (char)('a' + (int)((off / STREAM_CHUNK_BYTES) % 26));
		if (at[i] != want)
			r->body_ok = false;
	}
	r->body_total += len;
	return 0;
}

static int raw_on_complete(llhttp_t *p)
{
	((struct raw *)p->data)->ncomplete++;
	return 0;
}

static struct raw *raw_connect(int port)
{
	struct raw *r = calloc(1, sizeof(*r));
	r->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = {.tv_sec = 5};
	setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(r->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		close(r->fd);
		r->fd = -1;
	}
	r->body_ok = true;
	llhttp_settings_init(&r->s);
	r->s.on_body = raw_on_body;
	r->s.on_message_complete = raw_on_complete;
	llhttp_init(&r->p, HTTP_RESPONSE, &r->s);
	r->p.data = r;
	return r;
}

static void raw_send(struct raw *r, const char *s)
{
	size_t len = strlen(s), off = 0;
	while (off < len) {
		ssize_t n = send(r->fd, s + off, len - off, MSG_NOSIGNAL);
		if (n <= 0)
			return;
		off += (size_t)n;
	}
}

/* Read until n responses are complete, EOF, or 5 s pass. */
static void raw_read(struct raw *r, int n)
{
	char tmp[16384];
	while (r->ncomplete < n && !r->eof) {
		ssize_t got = recv(r->fd, tmp, sizeof(tmp), 0);
		if (got <= 0) {
			r->eof = got == 0 || errno == ECONNRESET;
			if (!r->eof)
				return; /* timeout */
			break;
		}
		size_t keep = (size_t)got < sizeof(r->buf) - 1 - r->len
		                  ? (size_t)got
		                  : sizeof(r->buf) - 1 - r->len;
		memcpy(r->buf + r->len, tmp, keep);
		r->len += keep;
		r->buf[r->len] = '\0';
		llhttp_execute(&r->p, tmp, (size_t)got);
	}
}

/* Read to EOF (within 5 s). */
static void raw_read_eof(struct raw *r)
{
	raw_read(r, 1 << 30);
}

static void raw_free(struct raw *r)
{
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}

/* ---- router ---- */

static void test_route_match(void **state)
{
	(void)state;
	char buf[256], *params[HTTP_MAX_PARAMS];
	size_t n = 99;
	assert_int_equal(http_route_match("/v1/x", "/v1/x", buf, params, &n), 1);
	assert_int_equal(n, 0);
	assert_int_equal(http_route_match("/v1/x", "/v1/x/", buf, params, &n), 0);
	assert_int_equal(http_route_match("/v1/x", "/v1", buf, params, &n), 0);
	assert_int_equal(http_route_match("/a/{}/b/{}", "/a/one/b/t%20wo", buf, params, &n), 1);
	assert_int_equal(n, 2);
	assert_string_equal(params[0], "one");
	assert_string_equal(params[1], "t wo");
	assert_int_equal(http_route_match("/a/{}", "/a/", buf, params, &n), 0);
	assert_int_equal(http_route_match("/a/{}", "/a/x/y", buf, params, &n), 0);
	assert_int_equal(http_route_match("/a/{}", "/a/x%2Fy", buf, params, &n), -EINVAL);
	assert_int_equal(http_route_match("/a/{}", "/a/x%00y", buf, params, &n), -EINVAL);
	assert_int_equal(http_route_match("/a/{}", "/a/x%zz", buf, params, &n), -EINVAL);
	assert_int_equal(http_route_match("/a/{}", "/a/x%4", buf, params, &n), -EINVAL);
	assert_int_equal(http_route_match("/a/{}/c", "/a/b%2Fx/d", buf, params, &n), 0);
	/* A final {*} takes the rest as it came, empty or not. */
	assert_int_equal(http_route_match("/a/{}/{*}", "/a/x/r/e%20st?", buf, params, &n), 1);
	assert_int_equal(n, 2);
	assert_string_equal(params[0], "x");
	assert_string_equal(params[1], "r/e%20st?");
	assert_int_equal(http_route_match("/a/{}/{*}", "/a/x/", buf, params, &n), 1);
	assert_string_equal(params[1], "");
	assert_int_equal(http_route_match("/a/{}/{*}", "/a/x", buf, params, &n), 0);
	assert_int_equal(http_route_match("/a/{*}", "/a//x/%zz", buf, params, &n), 1);
	assert_string_equal(params[0], "/x/%zz");
	assert_int_equal(http_route_match("/a/{*}", "/b/x", buf, params, &n), 0);
}

static void test_route_find(void **state)
{
	(void)state;
	struct http_req_priv rp = {0};
	char path[64];
	snprintf(path, sizeof(path), "/items/a%%2Bb/sub/c");
	rp.pub.path = path;
	snprintf(rp.pub.method, sizeof(rp.pub.method), "GET");
	http_route_find(&rp, routes, ARRAY_SIZE(routes));
	assert_int_equal(rp.route_status, 0);
	assert_ptr_equal(rp.pub.route, &routes[3]);
	assert_string_equal(rp.pub.params[0], "a+b");
	assert_string_equal(rp.pub.params[1], "c");

	snprintf(rp.pub.method, sizeof(rp.pub.method), "PUT");
	rp.pub.route = NULL;
	http_route_find(&rp, routes, ARRAY_SIZE(routes));
	assert_int_equal(rp.route_status, 405);
	assert_string_equal(rp.allow, "GET, DELETE");

	snprintf(path, sizeof(path), "/nope");
	http_route_find(&rp, routes, ARRAY_SIZE(routes));
	assert_int_equal(rp.route_status, 404);

	/* "*" takes any method. */
	snprintf(path, sizeof(path), "/tail/p/q/r");
	snprintf(rp.pub.method, sizeof(rp.pub.method), "PATCH");
	http_route_find(&rp, routes, ARRAY_SIZE(routes));
	assert_int_equal(rp.route_status, 0);
	assert_string_equal(rp.pub.params[1], "q/r");
	free(rp.params_buf);
}

static void test_query_get(void **state)
{
	(void)state;
	struct http_request req = {0};
	char q[] = "a=1&b=x%20y+z&a=2&flag&c=%zz&long=0123456789";
	req.query = q;
	char buf[8];
	assert_int_equal(http_query_get(&req, "a", 0, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "1");
	assert_int_equal(http_query_get(&req, "a", 1, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "2");
	assert_int_equal(http_query_get(&req, "a", 2, buf, sizeof(buf)), -ENOENT);
	assert_int_equal(http_query_get(&req, "b", 0, buf, sizeof(buf)), 5);
	assert_string_equal(buf, "x y z");
	assert_int_equal(http_query_get(&req, "flag", 0, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	assert_int_equal(http_query_get(&req, "c", 0, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(http_query_get(&req, "long", 0, buf, sizeof(buf)), -E2BIG);
	assert_int_equal(http_query_get(&req, "zzz", 0, buf, sizeof(buf)), -ENOENT);
	req.query = "";
	assert_int_equal(http_query_get(&req, "a", 0, buf, sizeof(buf)), -ENOENT);
}

/* ---- the server, byte by byte ---- */

static struct raw *cl_out[4];

static void cl_keepalive(struct ctx *c)
{
	struct raw *r = raw_connect(c->port);
	raw_send(r, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	raw_read(r, 1);
	raw_send(r, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
	raw_read(r, 2);
	cl_out[0] = r;
}

static void test_keepalive(void **state)
{
	(void)state;
	struct ctx *c = ctx_new(NULL);
	run_client(c, cl_keepalive);
	struct raw *r = cl_out[0];
	assert_int_equal(r->ncomplete, 2);
	assert_false(r->eof);
	assert_string_equal(r->buf,
	                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
	                    "5\r\n\r\nhello"
	                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
	                    "3\r\n\r\nabc");
	assert_int_equal(c->handled, 2);
	assert_string_equal(c->remotes[0], c->remotes[1]); /* one connection */
	raw_free(r);
	ctx_free(c);
}

static void cl_pipeline(struct ctx *c)
{
	struct raw *r = raw_connect(c->port);
	raw_send(r, "GET /defer HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n"
	            "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
	raw_read_eof(r);
	cl_out[0] = r;
}

static void test_pipelining(void **state)
{
	(void)state;
	struct ctx *c = ctx_new(NULL);
	run_client(c, cl_pipeline);
	struct raw *r = cl_out[0];
	assert_int_equal(r->ncomplete, 3);
	assert_true(r->eof);
	const char *late = strstr(r->buf, "\r\n\r\nlate");
	const char *hello = strstr(r->buf, "\r\n\r\nhello");
	assert_non_null(late);
	assert_non_null(hello);
	assert_true(late < hello); /* the deferred first request is answered first */
	assert_non_null(strstr(r->buf, "Connection: close\r\n"));
	raw_free(r);
	ctx_free(c);
}

static void cl_chunked_body(struct ctx *c)
{
	struct raw *r = raw_connect(c->port);
	raw_send(r, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	            "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n");
	raw_read(r, 1);
	/* Trailers are read and dropped (and the headers seen by the handler stay intact). */
	raw_send(r, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
	            "3\r\nabc\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n");
	raw_read(r, 2);
	cl_out[0] = r;
}

static void test_chunked_request(void **state)
{
	(void)state;
	struct ctx *c = ctx_new(NULL);
	run_client(c, cl_chunked_body);
	struct raw *r = cl_out[0];
	assert_int_equal(r->ncomplete, 2);
	assert_non_null(strstr(r->buf, "Content-Length: 11\r\n\r\nhello world"));
	assert_non_null(strstr(r->buf, "Content-Length: 3\r\n\r\nabc"));
	raw_free(r);
	ctx_free(c);
}

static void cl_stream(struct ctx *c)
{
	struct raw *r = raw_connect(c->port);
	raw_send(r, "GET /stream HTTP/1.1\r\n\r\n");
	usleep(200 * 1000); /* let the server hit its write-buffer cap */
	raw_read(r, 1);
	cl_out[0] = r;
}

static void test_stream_backpressure(void **state)
{
	(void)state;
	struct http_limits l = {.max_write_buffer = 128 * 1024};
	struct ctx *c = ctx_new(&l);
	run_client(c, cl_stream);
	struct raw *r = cl_out[0];
	assert_int_equal(r->ncomplete, 1);
	assert_non_null(strstr(r->buf,
	                       "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
	                       "X-Stream: yes\r\nTransfer-Encoding: chunked\r\n\r\n"));
	assert_int_equal(r->body_total, STREAM_TOTAL_BYTES);
	assert_true(r->body_ok);
	assert_true(c->stream_eagain > 0);
	assert_int_equal(c->stream_drains, c->stream_eagain);
	raw_free(r);
	ctx_free(c);
}

static void cl_abort(struct ctx *c)
{
	struct raw *r = raw_connect(c->port);
	raw_send(r, "GET /hang HTTP/1.1\r\n\r\n");
	usleep(100 * 1000);
	raw_free(r);
	usleep(100 * 1000);
}

static void test_abort(void **state)
{
	(void)state;
	struct ctx *c = ctx_new(NULL);
	run_client(c, cl_abort);
	assert_int_equal(c->handled, 1);
	assert_int_equal(c->aborts, 1);
	/* The request stays valid after the abort; the (dropped) reply frees it. */
	assert_non_null(c->hung);
	http_reply(TAKE_PTR(c->hung), 200, "text/plain", "too late", 8);
	ctx_free(c);
}

/* One request on a fresh connection; read to EOF (or 2 responses). */
static const char *one_req;
static int one_nresp;

static void cl_one(struct ctx *c)
{
	struct raw *r = raw_connect(c->port);
	raw_send(r, one_req);
	raw_read(r, one_nresp);
	/* Then see whether the server closes (within 300 ms). */
	struct timeval tv = {.tv_usec = 300 * 1000};
	setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	raw_read_eof(r);
	cl_out[0] = r;
}

/* Send req; expect one response with status (and its body to contain want), then EOF when
 * closes is set. */
static void expect_reply(struct ctx *c, const char *req, int status, const char *want, bool closes)
{
	/* One response per request sent, but a refused request is the last one answered. */
	int nreq = 0;
	for (const char *p = req; (p = strstr(p, " HTTP/1.")); p++)
		nreq++;
	one_req = req;
	one_nresp = status >= 400 && status != 404 ? 1 : (nreq ? nreq : 1);
	run_client(c, cl_one);
	struct raw *r = cl_out[0];
	char line[64];
	snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
	if (strncmp(r->buf, line, strlen(line)) != 0)
		print_error("request %s\ngot: %s\n", req, r->buf);
	assert_int_equal(strncmp(r->buf, line, strlen(line)), 0);
	/* (Our response parser does not know a reply to HEAD has no body.) */
	assert_int_equal(r->ncomplete, strncmp(req, "HEAD ", 5) == 0 ? 0 : one_nresp);
	if (want)
		assert_non_null(strstr(r->buf, want));
	if (r->eof != closes)
		print_error("request %s: eof %d, want %d\n", req, r->eof, closes);
	assert_true(r->eof == closes);
	raw_free(r);
}

static void test_errors(void **state)
{
	(void)state;
	struct ctx *c = ctx_new(NULL);
	expect_reply(
	    c, "GET /nope HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\nConnection: close\r\n\r\n", 404,
	    "{\"error\":{\"code\":\"not_found\",\"message\":\"no such path\"}}"
	    "HTTP/1.1 200 OK\r\n",
	    true); /* a 404 keeps the connection: the second request is answered */
	one_req = "PUT /items/a/sub/b HTTP/1.1\r\nConnection: close\r\n\r\n";
	expect_reply(c, one_req, 405, "Allow: GET, DELETE\r\n", true);
	expect_reply(c, "GET /items/a%2Fb/sub/c HTTP/1.1\r\nConnection: close\r\n\r\n", 400,
	             "\"code\":\"invalid_argument\"", true);
	expect_reply(c, "GET /items/a%20b/sub/c HTTP/1.1\r\nConnection: close\r\n\r\n", 200,
	             "\r\n\r\n2|a b|c", true);
	expect_reply(c, "GARBAGE\r\n\r\n", 400, "\"code\":\"invalid_argument\"", true);
	expect_reply(c, "GET /hello HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	             400, NULL, true);
	expect_reply(c, "GET /hello HTTP/1.0\r\n\r\n", 200, "hello", true);
	expect_reply(c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200,
	             "Connection: keep-alive\r\n", false);
	expect_reply(c, "GET /hello HTTP/1.1\r\nX-Deny: 1\r\nConnection: close\r\n\r\n", 401,
	             "\"code\":\"unauthenticated\"", true);
	expect_reply(c, "HEAD /hello HTTP/1.1\r\nConnection: close\r\n\r\n", 200,
	             "Content-Length: 5\r\nConnection: close\r\n\r\n", true);
	ctx_free(c);
}

static void test_limits(void **state)
{
	(void)state;
	struct http_limits l = {.max_header_bytes = 1024, .max_headers = 8};
	struct ctx *c = ctx_new(&l);
	char big[2048];
	snprintf(big, sizeof(big), "GET /hello HTTP/1.1\r\nX-Big: %01500d\r\n\r\n", 0);
	expect_reply(c, big, 431, "\"code\":\"invalid_argument\"", true);
	expect_reply(
	    c,
	    "GET /hello HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\nf: 1\r\ng: 1\r\n"
	    "h: 1\r\ni: 1\r\n\r\n",
	    431, "too many headers", true);
	/* 413 from Content-Length alone, before any of the body is sent. */
	expect_reply(c, "POST /small HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 413,
	             "\"code\":\"payload_too_large\"", true);
	expect_reply(c,
	             "POST /small HTTP/1.1\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
	             "0123456789",
	             200, "0123456789", true);
	expect_reply(c,
	             "POST /small HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	             "5\r\n01234\r\n6\r\n",
	             413, "payload_too_large", true);
	ctx_free(c);
}

static void cl_timeouts(struct ctx *c)
{
	struct raw *head = raw_connect(c->port);
	struct raw *body = raw_connect(c->port);
	struct raw *idle = raw_connect(c->port);
	raw_send(head, "GET /hello HTTP/1.1\r\nX-Slow: ");
	raw_send(body, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234");
	raw_read(head, 2);
	raw_read(body, 2);
	raw_read(idle, 2);
	cl_out[0] = head;
	cl_out[1] = body;
	cl_out[2] = idle;
}

static void test_timeouts(void **state)
{
	(void)state;
	struct http_limits l = {
	    .head_timeout_ms = 150, .body_timeout_ms = 150, .idle_timeout_ms = 150};
	struct ctx *c = ctx_new(&l);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	run_client(c, cl_timeouts);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(t1.tv_sec - t0.tv_sec < 3);
	assert_int_equal(strncmp(cl_out[0]->buf, "HTTP/1.1 408 ", 13), 0);
	assert_non_null(strstr(cl_out[0]->buf, "deadline_exceeded"));
	assert_true(cl_out[0]->eof);
	assert_int_equal(strncmp(cl_out[1]->buf, "HTTP/1.1 408 ", 13), 0);
	assert_true(cl_out[1]->eof);
	assert_int_equal(cl_out[2]->len, 0); /* an idle connection is closed without a word */
	assert_true(cl_out[2]->eof);
	for (int i = 0; i < 3; i++)
		raw_free(cl_out[i]);
	ctx_free(c);
}

static void cl_max_conns(struct ctx *c)
{
	struct raw *a = raw_connect(c->port);
	raw_send(a, "GET /hello HTTP/1.1\r\n\r\n");
	raw_read(a, 1); /* a is in */
	struct raw *b = raw_connect(c->port);
	raw_read(b, 2);
	cl_out[0] = a;
	cl_out[1] = b;
}

static void test_max_connections(void **state)
{
	(void)state;
	struct http_limits l = {.max_connections = 1};
	struct ctx *c = ctx_new(&l);
	run_client(c, cl_max_conns);
	assert_int_equal(strncmp(cl_out[0]->buf, "HTTP/1.1 200 ", 13), 0);
	assert_false(cl_out[0]->eof);
	assert_int_equal(strncmp(cl_out[1]->buf, "HTTP/1.1 503 ", 13), 0);
	assert_non_null(strstr(cl_out[1]->buf, "\"code\":\"unavailable\""));
	assert_true(cl_out[1]->eof);
	raw_free(cl_out[0]);
	raw_free(cl_out[1]);
	ctx_free(c);
}

/* ---- the gate runs on the head; on_free ---- */

static void test_gate_before_body(void **state)
{
	(void)state;
	struct ctx *c = ctx_new(NULL); /* the body timeout is 60 s: a reply now is the gate's */
	char req[256];
	snprintf(req, sizeof(req),
	         "POST /big HTTP/1.1\r\nX-Deny: 1\r\nX-Track: 1\r\nContent-Length: %d\r\n\r\n",
	         BIG_DECLARED);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	expect_reply(c, req, 401, "Connection: close\r\n", true);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 2000);
	assert_int_equal(c->gate_calls, 1);
	assert_false(c->gate_saw_body);
	assert_int_equal(c->handled, 0);
	/* The refused request was freed without its handler (once), with no body buffer. */
	assert_int_equal(c->frees, 1);
	assert_int_equal(c->free_body_cap, 0);

	/* Expect: 100-continue gets the refusal, not 100 Continue. */
	snprintf(req, sizeof(req),
	         "POST /big HTTP/1.1\r\nX-Deny: 1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n"
	         "\r\n",
	         BIG_DECLARED);
	expect_reply(c, req, 401, "\"code\":\"unauthenticated\"", true);
	assert_int_equal(c->gate_calls, 2);

	/* A refused request's body, sent anyway, is dropped; the next request is not served. */
	expect_reply(c,
	             "POST /echo HTTP/1.1\r\nX-Deny: 1\r\nContent-Length: 5\r\n\r\nabcde"
	             "GET /hello HTTP/1.1\r\n\r\n",
	             401, NULL, true);
	assert_int_equal(c->handled, 0);

	/* A gate that refuses without a reply: the library answers for it. */
	expect_reply(c, "GET /hello HTTP/1.1\r\nX-Mute: 1\r\n\r\n", 500,
	             "the gate refused without a reply", true);
	assert_int_equal(c->handled, 0);

	/* The gate does not see requests without a route; their body is not kept. */
	int calls = c->gate_calls;
	expect_reply(c,
	             "POST /nope HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde"
	             "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n",
	             404, "HTTP/1.1 200 OK\r\n", true);
	assert_int_equal(c->gate_calls, calls + 1); /* /hello only */
	assert_false(c->gate_saw_body);
	ctx_free(c);
}

static void cl_continue(struct ctx *c)
{
	struct raw *r = raw_connect(c->port);
	raw_send(r, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
	raw_read(r, 1); /* 100 Continue (a message of its own to the parser) */
	raw_send(r, "abc");
	raw_read(r, 2);
	cl_out[0] = r;
}

static void test_gate_continue(void **state)
{
	(void)state;
	struct ctx *c = ctx_new(NULL);
	run_client(c, cl_continue);
	struct raw *r = cl_out[0];
	assert_int_equal(strncmp(r->buf, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", 42),
	                 0);
	assert_non_null(strstr(r->buf, "\r\n\r\nabc"));
	assert_int_equal(c->gate_calls, 1);
	assert_int_equal(c->handled, 1);
	raw_free(r);
	ctx_free(c);
}

/* A body of n bytes in the stream pattern, sent with Content-Length to /big. */
static size_t big_len;

static void cl_big(struct ctx *c)
{
	struct raw *r = raw_connect(c->port);
	char head[128];
	snprintf(head, sizeof(head),
	         "POST /big HTTP/1.1\r\nX-Track: 1\r\nContent-Length: %zu\r\n\r\n", big_len);
	raw_send(r, head);
	char *body = malloc(big_len + 1);
	for (size_t i = 0; i < big_len; i++)
		body[i] = (char)('a' + (int)((i / STREAM_CHUNK_BYTES) % 26));
	body[big_len] = '\0';
	raw_send(r, body);
	free(body);
	raw_read(r, 1);
	cl_out[0] = r;
}

static void test_body_grows(void **state)
{
	(void)state;
	struct ctx *c = ctx_new(NULL);
	big_len = 3 * 1024 * 1024 + 7;
	run_client(c, cl_big);
	struct raw *r = cl_out[0];
	assert_int_equal(r->ncomplete, 1);
	assert_int_equal(r->body_total, big_len);
	assert_true(r->body_ok);
	assert_int_equal(c->handled, 1);
	assert_int_equal(c->frees, 0); /* the handler ran (and freed data) */
	assert_true(c->last_body_cap >= big_len + 1);
	assert_true(c->last_body_cap <= 2 * (big_len + 1));
	raw_free(r);
	ctx_free(c);
}

static void cl_gone_mid_body(struct ctx *c)
{
	struct raw *r = raw_connect(c->port);
	char buf[256];
	snprintf(buf, sizeof(buf),
	         "POST /big HTTP/1.1\r\nX-Track: 1\r\nContent-Length: %d\r\n\r\n0123456789",
	         BIG_DECLARED);
	raw_send(r, buf);
	usleep(100 * 1000);
	raw_free(r);
	usleep(100 * 1000);
}

static void cl_hang_tracked(struct ctx *c)
{
	struct raw *r = raw_connect(c->port);
	raw_send(r, "GET /hang HTTP/1.1\r\nX-Track: 1\r\n\r\n");
	usleep(100 * 1000);
	raw_free(r);
	usleep(100 * 1000);
}

static void test_on_free(void **state)
{
	(void)state;
	struct http_limits l = {.body_timeout_ms = 150};
	struct ctx *c = ctx_new(&l);

	/* Accepted, then the client goes away mid-body: on_free once, never the handler. */
	run_client(c, cl_gone_mid_body);
	assert_int_equal(c->gate_calls, 1);
	assert_int_equal(c->handled, 0);
	assert_int_equal(c->frees, 1);
	assert_true(c->free_body_cap > 0 && c->free_body_cap <= 4096); /* not 10 MiB */

	/* The body does not arrive in time. */
	expect_reply(c, "POST /big HTTP/1.1\r\nX-Track: 1\r\nContent-Length: 10\r\n\r\n01234", 408,
	             "deadline_exceeded", true);
	assert_int_equal(c->frees, 2);
	/* The body is too large (chunked: found while reading it). */
	expect_reply(c,
	             "POST /small HTTP/1.1\r\nX-Track: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
	             "5\r\n01234\r\n6\r\n",
	             413, "payload_too_large", true);
	assert_int_equal(c->frees, 3);
	/* Declared too large. */
	expect_reply(c, "POST /small HTTP/1.1\r\nX-Track: 1\r\nContent-Length: 11\r\n\r\n", 413,
	             "payload_too_large", true);
	assert_int_equal(c->frees, 4);
	/* Malformed body. */
	expect_reply(
	    c, "POST /echo HTTP/1.1\r\nX-Track: 1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
	    NULL, true);
	assert_int_equal(c->frees, 5);
	assert_int_equal(c->handled, 0);

	/* Once the handler has ran, on_free is not called: a reply, or an abort then a reply. */
	expect_reply(c, "POST /echo HTTP/1.1\r\nX-Track: 1\r\nContent-Length: 2\r\n\r\nok", 200,
	             "\r\n\r\nok", false);
	assert_int_equal(c->handled, 1);
	run_client(c, cl_hang_tracked);
	assert_int_equal(c->handled, 2);
	assert_int_equal(c->aborts, 1);
	assert_non_null(c->hung);
	http_reply(TAKE_PTR(c->hung), 200, "text/plain", "too late", 8);
	assert_int_equal(c->frees, 5);
	ctx_free(c);
}

static void cl_partial(struct ctx *c)
{
	struct raw *r = raw_connect(c->port);
	raw_send(r, "POST /big HTTP/1.1\r\nX-Track: 1\r\nContent-Length: 1000\r\n\r\n0123");
	usleep(100 * 1000);
	cl_out[0] = r; /* still connected */
}

static void test_on_free_server_close(void **state)
{
	(void)state;
	struct ctx *c = ctx_new(NULL);
	run_client(c, cl_partial);
	assert_int_equal(c->gate_calls, 1);
	assert_int_equal(c->frees, 0);
	int before = g_frees;
	ctx_free(c); /* closes the connection with the request mid-body */
	assert_int_equal(g_frees, before + 1);
	raw_free(cl_out[0]);
}

/* ---- http_client against the server, both on the loop ---- */

struct result {
	atomic_bool done;
	int err, status;
	char body[64];
	size_t len;
};

static void on_result(void *ud, int err, int status, const char *body, size_t len)
{
	struct result *r = ud;
	r->err = err;
	r->status = status;
	r->len = len;
	if (body)
		snprintf(r->body, sizeof(r->body), "%.*s", (int)len, body);
	atomic_store(&r->done, true);
}

static void test_client(void **state)
{
	(void)state;
	struct http_limits l = {.idle_timeout_ms = 300};
	struct ctx *c = ctx_new(&l);
	struct http_client *cl;
	struct sk_error err = {0};
	assert_int_equal(http_client_new(&c->loop, "127.0.0.1", c->port, &cl, &err), 0);

	struct result a = {0}, b = {0}, d = {0};
	assert_int_equal(
	    http_client_request(cl, "GET", "/hello", NULL, NULL, 0, 2000, on_result, &a), 0);
	const char *hdrs[] = {"Content-Type: text/plain", NULL};
	assert_int_equal(
	    http_client_request(cl, "POST", "/echo", hdrs, "payload", 7, 2000, on_result, &b), 0);
	assert_int_equal(
	    http_client_request(cl, "GET", "/defer", NULL, NULL, 0, 2000, on_result, &d), 0);
	run_until(c, &d.done);
	assert_true(a.done && b.done);
	assert_int_equal(a.err, 0);
	assert_int_equal(a.status, 200);
	assert_string_equal(a.body, "hello");
	assert_int_equal(b.status, 200);
	assert_string_equal(b.body, "payload");
	assert_int_equal(d.status, 200);
	assert_string_equal(d.body, "late");
	assert_string_equal(c->remotes[0], c->remotes[2]); /* one keep-alive connection */

	/* A chunked reply, and an error reply. */
	struct result s = {0}, e = {0};
	http_client_request(cl, "GET", "/stream", NULL, NULL, 0, 5000, on_result, &s);
	http_client_request(cl, "GET", "/nope", NULL, NULL, 0, 2000, on_result, &e);
	run_until(c, &e.done);
	assert_int_equal(s.err, 0);
	assert_int_equal(s.len, STREAM_TOTAL_BYTES);
	assert_int_equal(e.status, 404);
	assert_non_null(strstr(e.body, "not_found"));

	/* The server closes the idle connection (300 ms); the next request reconnects. */
	struct result r2 = {0};
	usleep(600 * 1000);
	uv_run(&c->loop, UV_RUN_NOWAIT); /* let the idle timer fire and the EOF arrive */
	usleep(50 * 1000);
	uv_run(&c->loop, UV_RUN_NOWAIT);
	http_client_request(cl, "GET", "/hello", NULL, NULL, 0, 2000, on_result, &r2);
	run_until(c, &r2.done);
	assert_int_equal(r2.err, 0);
	assert_int_equal(r2.status, 200);
	assert_string_not_equal(c->remotes[0], c->remotes[4]); /* a new connection */

	/* Timeout, then -ECANCELED for what is queued when the client closes. */
	struct result h = {0}, q1 = {0}, q2 = {0};
	http_client_request(cl, "GET", "/hang", NULL, NULL, 0, 100, on_result, &h);
	run_until(c, &h.done);
	assert_int_equal(h.err, -ETIMEDOUT);
	assert_non_null(c->hung);
	http_client_request(cl, "GET", "/hang", NULL, NULL, 0, 0, on_result, &q1);
	http_client_request(cl, "GET", "/hello", NULL, NULL, 0, 0, on_result, &q2);
	http_client_close(cl);
	assert_true(q1.done && q2.done);
	assert_int_equal(q1.err, -ECANCELED);
	assert_int_equal(q2.err, -ECANCELED);
	/* The timed-out /hang's connection was dropped: the server aborted that request. */
	for (int i = 0; i < 20 && c->aborts == 0; i++) {
		uv_run(&c->loop, UV_RUN_NOWAIT);
		usleep(10 * 1000);
	}
	assert_true(c->aborts >= 1);
	if (c->hung)
		http_reply(TAKE_PTR(c->hung), 200, NULL, "", 0);
	ctx_free(c);
}

/* ---- taking a connection over, and relaying it ---- */

#define RELAY_TOTAL_BYTES (4 * 1024 * 1024)

struct upstream_run {
	int fd;
	char got[64];
	size_t len;
	bool ok;
};

/* The upstream: what the client sent after its request, then RELAY_TOTAL_BYTES, then EOF. */
static void *upstream_main(void *arg)
{
	struct upstream_run *u = arg;
	while (u->len < 10) {
		ssize_t n = recv(u->fd, u->got + u->len, sizeof(u->got) - 1 - u->len, 0);
		if (n <= 0)
			return NULL;
		u->len += (size_t)n;
	}
	static char chunk[STREAM_CHUNK_BYTES];
	for (size_t off = 0; off < RELAY_TOTAL_BYTES; off += sizeof(chunk)) {
		memset(chunk, 'a' + (int)((off / STREAM_CHUNK_BYTES) % 26), sizeof(chunk));
		for (size_t done = 0; done < sizeof(chunk);) {
			ssize_t n = send(u->fd, chunk + done, sizeof(chunk) - done, MSG_NOSIGNAL);
			if (n <= 0)
				return NULL;
			done += (size_t)n;
		}
	}
	close(u->fd);
	u->ok = true;
	return NULL;
}

static struct raw *hj_client;
static struct upstream_run hj_up;

static void cl_hijack(struct ctx *c)
{
	hj_up.fd = c->upstream[1];
	pthread_t t;
	pthread_create(&t, NULL, upstream_main, &hj_up);
	hj_client = raw_connect(c->port);
	raw_send(hj_client, "GET /hijack HTTP/1.1\r\nHost: x\r\n\r\nEXTRA");
	usleep(20 * 1000);
	raw_send(hj_client, "MORE!");
	/* Read slowly at first: the relay must hold back, not buffer everything. */
	char tmp[16384];
	size_t total = 0;
	bool pattern_ok = true;
	for (;;) {
		ssize_t n = recv(hj_client->fd, tmp, sizeof(tmp), 0);
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			size_t off = total + (size_t)i;
			char want =
			    off < 6 ? "HELLO\n"[off]
			            : (char)('a' + (int)(((off - 6) / STREAM_CHUNK_BYTES) % 26));
			if (tmp[i] != want)
				pattern_ok = false;
		}
		total += (size_t)n;
		if (total < 512 * 1024)
			usleep(1000);
	}
	hj_client->body_total = total;
	hj_client->body_ok = pattern_ok;
	pthread_join(t, NULL);
}

static void test_hijack_relay(void **state)
{
	(void)state;
	struct ctx *c = ctx_new(NULL);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c->upstream), 0);
	run_client(c, cl_hijack);
	assert_int_equal(c->hijack_err, 0);
	assert_true(hj_up.ok);
	hj_up.got[hj_up.len] = '\0';
	assert_string_equal(hj_up.got, "EXTRAMORE!"); /* pending bytes, then the live ones */
	assert_int_equal(hj_client->body_total, 6 + RELAY_TOTAL_BYTES);
	assert_true(hj_client->body_ok);
	run_until(c, &c->relay_ended); /* the upstream's EOF ended it by itself */
	raw_free(hj_client);
	ctx_free(c); /* every handle closed: the relay freed itself */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_route_match),
	    cmocka_unit_test(test_route_find),
	    cmocka_unit_test(test_query_get),
	    cmocka_unit_test(test_keepalive),
	    cmocka_unit_test(test_pipelining),
	    cmocka_unit_test(test_chunked_request),
	    cmocka_unit_test(test_stream_backpressure),
	    cmocka_unit_test(test_abort),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_timeouts),
	    cmocka_unit_test(test_max_connections),
	    cmocka_unit_test(test_gate_before_body),
	    cmocka_unit_test(test_gate_continue),
	    cmocka_unit_test(test_body_grows),
	    cmocka_unit_test(test_on_free),
	    cmocka_unit_test(test_on_free_server_close),
	    cmocka_unit_test(test_client),
	    cmocka_unit_test(test_hijack_relay),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
