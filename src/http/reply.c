/* Replies: a whole reply with Content-Length, a streamed (chunked) reply with a cap on what is
 * queued per connection, and the API's error shape. A reply to a request whose connection is gone
 * is dropped; ending it frees the request. */
#include <assert.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define HTTP_REPLY_HEAD_BYTES 1024 /* status line and the library's headers, without the user's */

const char *http_status_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 412: return "Precondition Failed";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
	}
}

const char *http_status_code_name(int status)
{
	switch (status) {
	case 404: return "not_found";
	case 408: return "deadline_exceeded";
	case 413: return "payload_too_large";
	case 503: return "unavailable";
	default: return status < 500 ? "invalid_argument" : "internal";
	}
}

/* {"error":{"code":code,"message":msg}}, malloc'd. A message that is not valid UTF-8 has its
 * bytes outside printable ASCII replaced. */
static char *error_body(const char *code, const char *msg)
{
	json_t *m = json_string(msg);
	if (!m) {
		char clean[1024];
		size_t n = 0;
		for (; msg[n] && n + 1 < sizeof(clean); n++)
			clean[n] = (msg[n] >= 0x20 && msg[n] < 0x7f) ? msg[n] : '?';
		clean[n] = '\0';
		m = json_string(clean);
	}
	json_t *o = json_pack("{s:{s:s,s:o*}}", "error", "code", code, "message", m);
	if (!o)
		return NULL;
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

static bool status_has_body(int status)
{
	return status >= 200 && status != 204 && status != 304;
}

/* The reply's head, malloc'd: status line, Content-Type, the handler's headers, framing
 * ("Content-Length: n" or "Transfer-Encoding: chunked", or nothing) and Connection. */
static char *head_build(struct http_req_priv *rp, int status, const char *content_type,
                        const char *framing, bool close, size_t *ret_len)
{
	if (rp)
		rp->status = status;
	size_t extra = 0;
	for (struct http_reply_hdr *h = rp ? rp->rhdrs : NULL; h; h = h->next)
		extra += h->len;
	size_t cap = HTTP_REPLY_HEAD_BYTES + extra + (content_type ? strlen(content_type) : 0);
	char *head = malloc(cap);
	if (!head)
		return NULL;
	size_t n =
	    (size_t)snprintf(head, cap, "HTTP/1.1 %d %s\r\n", status, http_status_reason(status));
	if (status_has_body(status) && !(rp && rp->has_content_type))
		n += (size_t)snprintf(head + n, cap - n, "Content-Type: %s\r\n",
		                      content_type ? content_type : "application/octet-stream");
	for (struct http_reply_hdr *h = rp ? rp->rhdrs : NULL; h; h = h->next) {
		memcpy(head + n, h->line, h->len);
		n += h->len;
	}
	if (framing)
		n += (size_t)snprintf(head + n, cap - n, "%s\r\n", framing);
	if (close)
		n += (size_t)snprintf(head + n, cap - n, "Connection: close\r\n");
	else if (rp && rp->http10)
		n += (size_t)snprintf(head + n, cap - n, "Connection: keep-alive\r\n");
	n += (size_t)snprintf(head + n, cap - n, "\r\n");
	*ret_len = n;
	return head;
}

static bool token_valid(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", *s))
			return false;
	return true;
}

int http_reply_header(struct http_request *req, const char *name, const char *value)
{
	struct http_req_priv *rp = req->priv_;
	if (rp->started || !token_valid(name) || strpbrk(value, "\r\n"))
		return -EINVAL;
	/* Framing is the library's. */
	if (strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Transfer-Encoding") == 0 ||
	    strcasecmp(name, "Connection") == 0)
		return -EINVAL;
	size_t nlen = strlen(name), vlen = strlen(value);
	struct http_reply_hdr *h = malloc(sizeof(*h) + nlen + vlen + 5);
	if (!h)
		return -ENOMEM;
	h->next = NULL;
	h->len = (size_t)snprintf(h->line, nlen + vlen + 5, "%s: %s\r\n", name, value);
	*rp->rhdrs_tail = h;
	rp->rhdrs_tail = &h->next;
	if (strcasecmp(name, "Content-Type") == 0)
		rp->has_content_type = true;
	return 0;
}

void http_reply(struct http_request *req, int status, const char *content_type, const void *body,
                size_t len)
{
	struct http_req_priv *rp = req->priv_;
	assert(!rp->started);
	rp->started = true;
	if (!rp->conn) {
		http_conn_request_done(rp, true);
		return;
	}
	bool close = !rp->keep_alive;
	char framing[64] = "";
	if (status_has_body(status))
		snprintf(framing, sizeof(framing), "Content-Length: %zu", len);
	else
		len = 0;
	size_t hlen;
	_cleanup_free_ char *head =
	    head_build(rp, status, content_type, framing[0] ? framing : NULL, close, &hlen);
	if (!head) {
		http_conn_request_done(rp, true);
		return;
	}
	if (rp->head_only)
		len = 0;
	rp->in_reply = true;
	http_conn_write(rp->conn, head, hlen, body, len, NULL, 0);
	rp->in_reply = false;
	http_conn_request_done(rp, close);
}

void http_reply_error(struct http_request *req, int status, const char *code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	_cleanup_free_ char *body = error_body(code, msg);
	const char *b = body ? body : "{\"error\":{\"code\":\"internal\",\"message\":\"\"}}";
	http_reply(req, status, "application/json", b, strlen(b));
}

int http_conn_write_error(struct http_conn *conn, int status, const char *code, const char *msg)
{
	_cleanup_free_ char *body = error_body(code, msg);
	if (!body)
		return -ENOMEM;
	size_t blen = strlen(body), hlen;
	char framing[64];
	snprintf(framing, sizeof(framing), "Content-Length: %zu", blen);
	_cleanup_free_ char *head =
	    head_build(NULL, status, "application/json", framing, true, &hlen);
	if (!head)
		return -ENOMEM;
	return http_conn_write(conn, head, hlen, body, blen, NULL, 0);
}

int http_reply_start(struct http_request *req, int status, const char *content_type)
{
	struct http_req_priv *rp = req->priv_;
	assert(!rp->started);
	rp->started = true;
	if (!rp->conn)
		return -EPIPE;
	/* HTTP/1.0 has no chunked coding: the body ends when the connection closes. */
	rp->chunked = !rp->http10 && status_has_body(status) && !rp->head_only;
	if (rp->http10)
		rp->keep_alive = false;
	size_t hlen;
	const char *framing = NULL;
	if (status_has_body(status) && !rp->http10)
		framing = "Transfer-Encoding: chunked";
	_cleanup_free_ char *head =
	    head_build(rp, status, content_type, framing, !rp->keep_alive, &hlen);
	if (!head)
		return -ENOMEM;
	rp->in_reply = true;
	int r = http_conn_write(rp->conn, head, hlen, NULL, 0, NULL, 0);
	rp->in_reply = false;
	return r < 0 ? -EPIPE : 0;
}

int http_reply_write(struct http_request *req, const void *data, size_t len)
{
	struct http_req_priv *rp = req->priv_;
	assert(rp->started);
	if (!rp->conn)
		return -EPIPE;
	if (len == 0 || rp->head_only)
		return 0;
	int r;
	rp->in_reply = true;
	if (rp->chunked) {
		char size[32];
		int n = snprintf(size, sizeof(size), "%zx\r\n", len);
		r = http_conn_write(rp->conn, size, (size_t)n, data, len, "\r\n", 2);
	} else {
		r = http_conn_write(rp->conn, data, len, NULL, 0, NULL, 0);
	}
	rp->in_reply = false;
	if (r < 0)
		return -EPIPE;
	if (http_conn_write_queued(rp->conn) > http_conn_write_limit(rp->conn)) {
		rp->want_drain = true;
		return -EAGAIN;
	}
	return 0;
}

void http_reply_end(struct http_request *req)
{
	struct http_req_priv *rp = req->priv_;
	if (!rp->started) {
		/* Ending a request never answered: only sensible once its client is gone. */
		if (rp->conn) {
			http_reply_error(req, 500, "internal", "the handler ended without a reply");
			return;
		}
		http_conn_request_done(rp, true);
		return;
	}
	rp->in_reply = true;
	if (rp->conn && rp->chunked)
		http_conn_write(rp->conn, "0\r\n\r\n", 5, NULL, 0, NULL, 0);
	rp->in_reply = false;
	http_conn_request_done(rp, false);
}

void http_reply_abort(struct http_request *req)
{
	struct http_req_priv *rp = req->priv_;
	if (!rp->started) {
		http_reply_end(req);
		return;
	}
	/* No last chunk: the client sees the body cut short, and the connection goes. */
	http_conn_request_done(rp, true);
}
