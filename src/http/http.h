/* HTTP/1.1 on the event loop (libuv + llhttp): a server with a routing table and limits on
 * everything a client controls, and a small keep-alive client for the worker link.
 *
 * Server model: one struct http_request per request. The server's gate (if any) runs as soon as
 * a routed request's head is complete, before any of its body is read; the request's whole body
 * is then read (chunked bodies decoded, into a buffer that grows as bytes arrive, never sized
 * from the declared Content-Length) before the route's handler runs. The handler replies at once or
 * later (from any loop callback): exactly one reply per request, either http_reply() or a
 * streamed http_reply_start()/http_reply_write()/http_reply_end(). Requests on one connection
 * are answered in order (pipelined requests wait). If the connection dies before the reply
 * ends, the request's on_abort runs once, and the request stays valid until the handler
 * replies (the reply is then dropped): a handler never sees a freed request. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../lib/error.h"

/* Defaults for struct http_limits (0 in a field means its default). */
#define HTTP_DEFAULT_MAX_HEADER_BYTES (16 * 1024) /* request line + headers */
#define HTTP_DEFAULT_MAX_HEADERS      100
#define HTTP_DEFAULT_MAX_BODY_BYTES   (1024 * 1024) /* per route, overridable */
#define HTTP_DEFAULT_MAX_CONNECTIONS  1024
#define HTTP_DEFAULT_IDLE_TIMEOUT_MS  60000 /* keep-alive connection with no request */
#define HTTP_DEFAULT_HEAD_TIMEOUT_MS  10000 /* a request's head must arrive within (slowloris) */
#define HTTP_DEFAULT_BODY_TIMEOUT_MS  60000 /* its body must arrive within */
#define HTTP_DEFAULT_MAX_WRITE_BUFFER (1024 * 1024) /* reply bytes queued per connection */
#define HTTP_MAX_PARAMS               4             /* "{}" segments in a route pattern */
#define HTTP_MAX_PATH_BYTES           4096

struct http_limits {
	size_t max_header_bytes;
	size_t max_headers;
	size_t max_body_bytes;
	unsigned max_connections;
	unsigned idle_timeout_ms;
	unsigned head_timeout_ms;
	unsigned body_timeout_ms;
	size_t max_write_buffer;
	/* Request bodies held at once, all connections together (0: no limit): a body that would
	 * pass it is refused with 503, so many large bodies at once can't exhaust memory. */
	size_t max_bodies_bytes;
};

struct http_header {
	char *name; /* as sent; compare case-insensitively */
	char *value;
};

struct http_server;
struct http_route;

struct http_request {
	struct http_server *server;
	const struct http_route *route; /* the matched route */
	char method[16];
	int http_minor; /* HTTP/1.x */
	char *path;     /* the raw path, without the query (NUL-terminated) */
	char *query;    /* the raw query without '?', "" when none */
	struct http_header *headers;
	size_t nheaders;
	/* The whole body, NUL-terminated for convenience (body_len excludes it). Not available to
	 * the gate (NULL, body_len 0): it runs before the body is read. */
	char *body;
	size_t body_len;
	/* Route parameters: the "{}" segments of the pattern, percent-decoded, and its "{*}" rest,
	 * raw; NUL-terminated. */
	char *params[HTTP_MAX_PARAMS];
	size_t nparams;
	char remote[64]; /* "ip:port" of the client */
	void *data;      /* the application's (the gate's and the handler's) */
	/* Set by the handler, optional: called once if the client goes away before the reply has
	 * ended (after it, nothing more is sent; the handler must still reply or end, which then
	 * frees the request). */
	void (*on_abort)(struct http_request *req);
	/* Set by a streaming handler, optional: called when http_reply_write's buffer has drained
	 * below half the limit after it returned -EAGAIN. */
	void (*on_drain)(struct http_request *req);
	/* Set by the gate, optional: called exactly once if the library frees the request without
	 * its handler having run (the client went away or was too slow while sending the body, the
	 * body was too large or malformed, the server closed, or the gate itself replied), so that
	 * the application can free what it attached (data). Never called once the handler has run
	 * (from then on, on_abort and the one reply apply). It must not reply; the request is freed
	 * when it returns. */
	void (*on_free)(struct http_request *req);
	/* Routes with take_over: the declared length of a body that was left unread (body is then
	 * NULL: it follows the head on the connection, see http_hijack); -1 when the body was read
	 * as for other routes (a chunked one, whose end only parsing finds). */
	int64_t body_unread;
	/* Routes with take_over: the client shut down its sending side while the request was with
	 * its handler (a half-close after its request; it may still read the answer). */
	bool client_eof;
	void *priv_; /* the library's */
};

typedef void (*http_handler_fn)(struct http_request *req);

struct http_route {
	const char *method; /* "GET", "POST", ...; "*" any */
	/* "/v1/sandboxes/{}/execs/{}": "{}" matches one non-empty segment (percent-decoded into a
	 * parameter); a pattern may end in "{*}", which matches the rest of the path, empty or
	 * not, slashes included, as it came (not decoded). */
	const char *pattern;
	http_handler_fn fn;
	void *ud;              /* handler's data for this route (req->route->ud) */
	size_t max_body_bytes; /* 0: the server's limit */
	/* The application's (e.g. which permission the route needs), but for HTTP_ROUTE_TAKE_OVER
	 */
	unsigned flags;
};
/* In a route's flags: the handler takes the connection over (http_hijack, a proxy). A body of
 * declared length is not read before it runs (req->body_unread), so that it can be streamed on
 * with backpressure rather than held whole; and a client that shuts down its sending side while
 * the request waits is not taken as gone (req->client_eof), since a request and then a
 * half-close is how some clients say they are done sending. */
#define HTTP_ROUTE_TAKE_OVER (1u << 31)

/* Called for every routed request as soon as its head is complete (method, path, query,
 * headers, route and params are set; body is not: it has not been read yet, and none of it is
 * read or held before the gate lets the request through). Returns 0 to let the request go on:
 * its body is read, then route->fn runs (req->data and on_free may be set for it). Or replies
 * (e.g. 401; with http_reply or http_reply_error, ended before the gate returns) and returns
 * nonzero to stop: that reply carries Connection: close, the rest of the request is read and
 * dropped, and the connection closes (a gate that returns nonzero without a reply gets a 500 sent
 * for it). No 100 Continue is sent before the gate lets the request through. NULL: every
 * routed request goes on. */
typedef int (*http_gate_fn)(struct http_request *req, void *gate_ud);

struct http_server_config {
	struct http_limits limits;
	const struct http_route *routes; /* matched in order; kept by reference */
	size_t nroutes;
	http_gate_fn gate;
	void *gate_ud;
	void *ud; /* http_server_ud() */
	/* Optional: called once a request's reply has ended (its status, and the time from the
	 * request's first byte), while its connection lives (for metrics). req->route is NULL for a
	 * request no route matched. */
	void (*on_done)(const struct http_request *req, int status, uint64_t duration_ns, void *ud);
};

/* Make a server on loop; nothing listens yet. */
int http_server_new(uv_loop_t *loop, const struct http_server_config *cfg, struct http_server **ret,
                    struct sk_error *err);
/* Listen on "ADDR:PORT" (IPv4 or "[v6]:PORT"); port 0 picks one (http_server_port). */
int http_server_listen(struct http_server *srv, const char *addr_port, struct sk_error *err);
int http_server_port(const struct http_server *srv);
void *http_server_ud(const struct http_server *srv);
/* Stop listening, close every connection (aborting requests in flight), then call done (may be
 * NULL) from the loop once every handle is closed; the server is freed then. */
void http_server_close(struct http_server *srv, void (*done)(void *), void *done_ud);

/* The request's header value (first match, case-insensitive), or NULL. */
const char *http_header_get(const struct http_request *req, const char *name);
/* Query parameter: the n-th (from 0) value of key, percent-decoded ('+' is a space) into buf.
 * Returns its length, -ENOENT when absent, -E2BIG when it does not fit, -EINVAL when badly
 * encoded. */
int http_query_get(const struct http_request *req, const char *key, unsigned n, char *buf,
                   size_t size);

/* Add a header to the reply (before http_reply/http_reply_start). Copies name and value;
 * values with CR or LF are refused (-EINVAL). */
int http_reply_header(struct http_request *req, const char *name, const char *value);
/* The whole reply with Content-Length. Ends the request (frees it once written). */
void http_reply(struct http_request *req, int status, const char *content_type, const void *body,
                size_t len);
/* The API's error shape: {"error":{"code":code,"message":message}} with status. */
void http_reply_error(struct http_request *req, int status, const char *code, const char *fmt, ...)
    _printf_(4, 5);
/* A streamed reply (chunked). write returns 0, -EAGAIN when more than the write-buffer limit
 * is queued (the data was still taken; wait for on_drain before writing more), or -EPIPE when
 * the client is gone. end sends the last chunk and ends the request. */
int http_reply_start(struct http_request *req, int status, const char *content_type);
int http_reply_write(struct http_request *req, const void *data, size_t len);
void http_reply_end(struct http_request *req);
/* End a streamed reply as failed: what was written is sent, then the connection is closed
 * without the last chunk, so that the client sees the body cut short rather than complete. */
void http_reply_abort(struct http_request *req);

/* Take the request's connection over instead of replying (a proxy or an upgrade): the request
 * ends (on_done sees status; it is freed) and the server lets go of the connection. The caller
 * gets *ret_tcp, a new handle on the same socket (malloc'ed, open, not reading; the caller closes
 * it and frees it), and *ret_pending (malloc'ed, *ret_pending_len bytes, NULL when none): what the
 * client sent after the request, already read. Nothing is written to the client. Fails without
 * changing anything (the handler then replies as usual): -EPIPE when the client is gone, -EBUSY
 * while an earlier write to it is still queued, -ENOMEM. */
#define HTTP_MAX_PENDING_BYTES (16 * 1024) /* *ret_pending_len is at most this */
int http_hijack(struct http_request *req, int status, uv_tcp_t **ret_tcp, char **ret_pending,
                size_t *ret_pending_len);

/* A relay: bytes both ways between two connections, a and b (e.g. a client taken over with
 * http_hijack and an upstream), with backpressure: a side is not read while more than
 * max_buffer_bytes wait to be written to the other. EOF from a is passed on to b (its write side
 * is shut down) and the relay goes on; EOF from b (or an error reading it) ends the relay once
 * what b sent is written to a: a is shut down and read (and dropped) for a moment so that its
 * peer gets every byte, then both are closed. A write error, an error reading a, or nothing
 * moving either way for idle_timeout_ms ends it at once. on_end runs once when the relay ends by
 * itself, never after http_relay_close; either way the relay frees itself once its handles are
 * closed. */
#define HTTP_RELAY_READ_BYTES     (64 * 1024) /* one read */
#define HTTP_RELAY_LINGER_MS      2000        /* a's draining after the end */
#define HTTP_RELAY_MAX_HEAD_BYTES (16 * 1024) /* one_request: b's head must end within */
struct http_relay;
struct http_relay_config {
	size_t max_buffer_bytes;  /* per direction; 0: HTTP_DEFAULT_MAX_WRITE_BUFFER */
	unsigned idle_timeout_ms; /* 0: none */
	/* One request and its response: what a sends past its request is dropped (its request
	 * went with to_b, or its body's rest is counted by a_request_bytes; a keep-alive client's
	 * next request must never reach b), and "Connection: close" is put
	 * after the status line of b's response unless it says so, so that the client ends the
	 * connection. */
	bool one_request;
	/* With one_request: how many of a's bytes still belong to its request (the rest of a body
	 * not read before the relay began) and go to b; what follows them is dropped. */
	uint64_t a_request_bytes;
	/* a has shut down its sending side already: its EOF goes to b once to_b (which must not
	 * be empty then) is written. */
	bool a_eof;
	void (*on_end)(void *ud);
	void *ud;
};
/* Start relaying between a and b, which it takes in every case (malloc'ed uv_tcp_t, open and
 * connected, not reading; closed and freed by the relay). to_a and to_b (malloc'ed or NULL,
 * taken in every case too) are written first: e.g. what was already read from the other side.
 * Returns 0, or a negative errno (everything given is closed or freed then, *ret is not set). */
int http_relay_new(uv_loop_t *loop, uv_tcp_t *a, uv_tcp_t *b, char *to_a, size_t to_a_len,
                   char *to_b, size_t to_b_len, const struct http_relay_config *cfg,
                   struct http_relay **ret);
/* End the relay now (both connections closed, a with a reset so that its peer doesn't take
 * what it got for complete; on_end not called). */
void http_relay_close(struct http_relay *r);
/* Bytes waiting to be written to a (side 0) or b (side 1). */
size_t http_relay_queued(const struct http_relay *r, int side);
/* Close and free a handle given by http_hijack (or one meant for http_relay_new that never got
 * there). Accepts NULL. */
void http_tcp_free(uv_tcp_t *tcp);

/* Client: one keep-alive connection to host:port; requests are queued and sent one at a time
 * (reconnecting when the server closed the connection). The callback runs exactly once per
 * request: err 0 with the status and body, or a negative errno (-ETIMEDOUT after timeout_ms,
 * -ECANCELED when the client is closed). body is valid during the callback only. */
#define HTTP_CLIENT_MAX_BODY_BYTES (16 * 1024 * 1024)
struct http_client;
typedef void (*http_client_cb)(void *ud, int err, int status, const char *body, size_t len);
int http_client_new(uv_loop_t *loop, const char *host, int port, struct http_client **ret,
                    struct sk_error *err);
/* headers: "Name: value" strings, NULL-terminated (may be NULL). */
int http_client_request(struct http_client *c, const char *method, const char *path,
                        const char *const *headers, const void *body, size_t len,
                        unsigned timeout_ms, http_client_cb cb, void *ud);
/* The server's address the client connects to. */
const struct sockaddr *http_client_addr(const struct http_client *c);
/* Cancel queued requests (their callbacks run with -ECANCELED) and free the client once its
 * handles are closed. */
void http_client_close(struct http_client *c);
