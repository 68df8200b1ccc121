/* Internal to src/http: the server's structures, shared by server.c (connections, parsing,
 * limits), reply.c (writing replies) and router.c (routes, parameters, queries). */
#pragma once

#include <llhttp.h>
#include <stdbool.h>

#include "http.h"

#define HTTP_READ_BUFFER_BYTES HTTP_MAX_PENDING_BYTES /* per connection: read, not yet parsed */
#define HTTP_LINGER_MS         2000 /* after an error reply: read and drop, then close */
#define HTTP_MAX_REJECTING     64   /* connections being answered 503 at once; more are cut */

struct http_conn;

/* A reply header line "Name: value\r\n" added by http_reply_header. */
struct http_reply_hdr {
	struct http_reply_hdr *next;
	size_t len;
	char line[];
};

struct http_hdr_off {
	size_t name, value; /* offsets into req_priv.head */
};

struct http_req_priv {
	struct http_request pub;
	struct http_conn *conn; /* NULL once the connection is gone (the request is detached) */

	/* The head as parsed: URL and header strings, NUL-separated, at most max_header_bytes. */
	char *head;
	size_t head_len, head_cap;
	size_t url_off, url_len;
	struct http_hdr_off *hoff;
	size_t nhoff, hoff_cap;
	size_t trailer_bytes; /* of a chunked body's trailers (not kept) */
	bool in_value;        /* the last head callback was a header value */
	bool url_done;

	size_t body_cap;     /* allocated, including the NUL: grows as the body arrives */
	size_t body_limit;   /* the route's (or the server's) limit */
	size_t body_counted; /* of body_cap, counted in the server's bodies_bytes */
	char *params_buf;    /* decoded route parameters, NUL-separated */

	int route_status;  /* 0: routed; 400, 404, 405 or 414: answer that */
	int status;        /* of the reply, once its head is built */
	uint64_t start_ns; /* uv_hrtime() when its first byte came */
	char route_msg[128];
	char allow[96]; /* methods for 405's Allow header */

	struct http_reply_hdr *rhdrs, **rhdrs_tail;
	bool has_content_type; /* a Content-Type came through http_reply_header */
	bool head_only;        /* HEAD: no body in the reply */
	bool http10;
	bool keep_alive; /* what the client asked for */
	bool dispatched; /* handed to the handler (or answered with a routing error) */
	bool in_gate;    /* the gate is running on it: a reply or a close does not free it */
	bool ended;      /* the gate's reply ended it (freed once the gate returns) */
	bool started;    /* http_reply_start was called */
	bool chunked;    /* the streamed reply uses chunked coding */
	bool aborted;    /* on_abort ran (or the connection died) */
	bool want_drain;
	bool in_reply; /* inside a reply call: a failed write reports -EPIPE, not on_abort */
};

/* From server.c, for reply.c. */
/* Queue bytes (copied) on the connection; 0 or a negative errno (the connection is then closing).
 */
int http_conn_write(struct http_conn *conn, const void *a, size_t alen, const void *b, size_t blen,
                    const void *c, size_t clen);
/* Bytes handed to the socket and not yet written. */
size_t http_conn_write_queued(const struct http_conn *conn);
size_t http_conn_write_limit(const struct http_conn *conn);
/* The request's reply has ended: free it and go on with the connection (next request, or close
 * when close is set or the client asked for it). */
void http_conn_request_done(struct http_req_priv *rp, bool close);
/* Free a request (its connection must no longer point at it). */
void http_req_free(struct http_req_priv *rp);

/* From reply.c, for server.c: an error reply on a connection that has no request to answer
 * (parse error, limit, 503): written with Connection: close. */
int http_conn_write_error(struct http_conn *conn, int status, const char *code, const char *msg);
/* The reason phrase of a status. */
const char *http_status_reason(int status);
/* The API error code of an HTTP status. */
const char *http_status_code_name(int status);

/* From router.c. */
/* Match path (NUL-terminated) against pattern; on success fill params_buf (a buffer of at least
 * strlen(path) + HTTP_MAX_PARAMS bytes) and params. Returns 1 on a match, 0 on no match, -EINVAL
 * when a parameter is badly encoded or decodes to '/' or NUL. */
int http_route_match(const char *pattern, const char *path, char *params_buf,
                     char *params[HTTP_MAX_PARAMS], size_t *ret_nparams);
/* Find req's route among the server's: sets pub.route and params, or route_status 404/405/400
 * (with allow for 405). */
void http_route_find(struct http_req_priv *rp, const struct http_route *routes, size_t nroutes);
/* Percent-decode src[0..len) into dst (NUL-terminated); plus_space turns '+' into ' '. Returns the
 * decoded length, -EINVAL when badly encoded, -E2BIG when it does not fit. */
int http_pct_decode(const char *src, size_t len, char *dst, size_t size, bool plus_space);
