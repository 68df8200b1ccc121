/* A relay between two connections (http.h): what one side sends is written to the other, read
 * in HTTP_RELAY_READ_BYTES pieces, each buffer handed to the write as it is (no copy) and freed
 * when the write is done. A side is read only while fewer than max_buffer_bytes wait to be
 * written to the other, so memory is bounded per relay whatever the speed of either peer.
 *
 * Side b is the upstream: its EOF ends the relay (an HTTP response delimited by the close),
 * side a's EOF is only passed on (a client that half-closes still gets its response). The relay
 * frees itself from its handles' close callbacks, never while a callback of its own runs. */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "http.h"

enum { SIDE_A = 0, SIDE_B = 1 };

struct relay_side {
	uv_tcp_t *tcp;
	struct http_relay *r;
	size_t queued; /* bytes written to this side whose write is not done */
	bool reading;
	bool eof;      /* read EOF (or an error) from it */
	bool shutdown; /* its write side was shut down (or is being) */
};

struct http_relay {
	uv_loop_t *loop;
	struct relay_side side[2];
	uv_timer_t timer; /* idle timeout, then the linger after the end */
	uv_shutdown_t shut[2];
	struct http_relay_config cfg;
	uint64_t last_ms; /* when a byte last moved */
	/* Read buffers whose write is done, for the next reads: with backpressure there are never
	 * more than the limit's worth, and nothing is allocated per read once the flow is steady.
	 */
	struct relay_write *spare;
	int open_handles;
	bool lingering; /* b is done and a shut down: a's input is dropped until its EOF */
	bool closing;
	bool reset_a; /* b failed: a is reset, so that a cut response never looks whole */
	/* one_request: b's status line so far, until its end is seen (NULL: passed already) */
	char *status_line;
	size_t status_len;
	bool status_done;
};

struct relay_write {
	uv_write_t w;
	struct relay_write *next; /* in the relay's spare buffers */
	struct relay_side *to;
	size_t len;
	char *owned; /* data handed over with the write, freed with it; or NULL */
	char data[]; /* a read's buffer (HTTP_RELAY_READ_BYTES) */
};

static void relay_read_update(struct relay_side *s);
static void relay_end(struct http_relay *r, bool by_itself);

static struct relay_side *other(struct relay_side *s)
{
	return &s->r->side[s == &s->r->side[SIDE_A] ? SIDE_B : SIDE_A];
}

static void on_closed(uv_handle_t *h)
{
	struct http_relay *r = h->data;
	if (h != (uv_handle_t *)&r->timer)
		free(h);
	if (--r->open_handles > 0)
		return;
	while (r->spare) {
		struct relay_write *wr = r->spare;
		r->spare = wr->next;
		free(wr);
	}
	free(r->status_line);
	free(r);
}

/* Close everything now; on_end runs first when the relay ended by itself. */
static void relay_end(struct http_relay *r, bool by_itself)
{
	if (r->closing)
		return;
	r->closing = true;
	for (int i = 0; i < 2; i++) {
		r->side[i].tcp->data = r; /* for on_closed: no read callback comes after this */
		if (i == SIDE_A && r->reset_a &&
		    uv_tcp_close_reset(r->side[i].tcp, (uv_close_cb)on_closed) == 0)
			continue;
		uv_close((uv_handle_t *)r->side[i].tcp, on_closed);
	}
	uv_close((uv_handle_t *)&r->timer, on_closed);
	if (by_itself && r->cfg.on_end)
		r->cfg.on_end(r->cfg.ud);
}

static void on_linger_done(uv_timer_t *t)
{
	relay_end(t->data, true);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct relay_side *s = req->data;
	struct http_relay *r = s->r;
	if (r->closing)
		return;
	if (status < 0) {
		relay_end(r, true);
		return;
	}
	if (s == &r->side[SIDE_A] && r->lingering) {
		/* Everything b said is out: read a to its EOF (for a moment at most) so that our
		 * close does not reset what its peer has not read yet. */
		uv_timer_start(&r->timer, on_linger_done, HTTP_RELAY_LINGER_MS, 0);
		if (r->side[SIDE_A].eof)
			relay_end(r, true);
	}
}

static void side_shutdown(struct relay_side *s)
{
	if (s->shutdown)
		return;
	s->shutdown = true;
	uv_shutdown_t *req = &s->r->shut[s == &s->r->side[SIDE_A] ? SIDE_A : SIDE_B];
	req->data = s;
	if (uv_shutdown(req, (uv_stream_t *)s->tcp, on_shutdown) < 0)
		relay_end(s->r, true);
}

/* A side's input has ended and everything it sent is written to the other: pass the EOF on. */
static void relay_pass_eof(struct relay_side *from)
{
	struct http_relay *r = from->r;
	struct relay_side *to = other(from);
	if (r->closing || !from->eof || to->queued > 0)
		return;
	if (from == &r->side[SIDE_B]) {
		r->lingering = true;
		side_shutdown(&r->side[SIDE_A]);
		relay_read_update(&r->side[SIDE_A]);
	} else if (!r->lingering) {
		side_shutdown(&r->side[SIDE_B]);
	}
}

static void spare_put(struct http_relay *r, struct relay_write *wr)
{
	if (!wr)
		return;
	wr->next = r->spare;
	r->spare = wr;
}

static void on_write(uv_write_t *w, int status)
{
	struct relay_write *wr = (struct relay_write *)w;
	struct relay_side *to = wr->to;
	struct http_relay *r = to->r;
	to->queued -= wr->len;
	if (wr->owned) {
		free(wr->owned);
		free(wr);
	} else {
		spare_put(r, wr);
	}
	if (r->closing)
		return;
	if (status < 0) {
		relay_end(r, true);
		return;
	}
	r->last_ms = uv_now(r->loop);
	relay_read_update(other(to));
	relay_pass_eof(other(to));
}

/* Write len bytes of wr's data to side to; wr is the write's (freed when done). */
static int side_write(struct relay_side *to, struct relay_write *wr, char *data, size_t len)
{
	wr->to = to;
	wr->len = len;
	uv_buf_t buf = uv_buf_init(data, (unsigned)len);
	int e = uv_write(&wr->w, (uv_stream_t *)to->tcp, &buf, 1, on_write);
	if (e < 0) {
		free(wr->owned);
		free(wr);
		return e;
	}
	to->queued += len;
	return 0;
}

/* Write data (malloc'ed, len bytes, taken in every case) to side to. */
static int side_write_owned(struct relay_side *to, char *data, size_t len)
{
	if (!data || len == 0) {
		free(data);
		return 0;
	}
	struct relay_write *wr = malloc(sizeof(*wr));
	if (!wr) {
		free(data);
		return -ENOMEM;
	}
	wr->owned = data;
	return side_write(to, wr, data, len);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct http_relay *r = ((struct relay_side *)h->data)->r;
	/* The buffer is the tail of a write request: the data goes out without a copy. */
	struct relay_write *wr = r->spare;
	if (wr)
		r->spare = wr->next;
	else
		wr = malloc(sizeof(*wr) + HTTP_RELAY_READ_BYTES);
	if (wr)
		wr->owned = NULL;
	*buf = wr ? uv_buf_init(wr->data, HTTP_RELAY_READ_BYTES) : uv_buf_init(NULL, 0);
}

/* Whether the head (len bytes) has a Connection header that holds "close". */
static bool head_says_close(const char *head, size_t len)
{
	static const char NAME[] = "\r\nconnection:";
	for (size_t i = 0; i + sizeof(NAME) - 1 <= len; i++) {
		if (strncasecmp(head + i, NAME, sizeof(NAME) - 1))
			continue;
		const char *v = head + i + sizeof(NAME) - 1;
		const char *end = memmem(v, len - (size_t)(v - head), "\r\n", 2);
		for (const char *p = v; end && p + 5 <= end; p++)
			if (!strncasecmp(p, "close", 5))
				return true;
	}
	return false;
}

/* one_request: b's bytes until its head has ended are held; then they go to a, with
 * "Connection: close" after the status line unless the head says so already. A head longer
 * than the limit ends the relay. */
static int status_line_add(struct http_relay *r, const char *data, size_t n)
{
	static const char CLOSE[] = "Connection: close\r\n";
	char *p = realloc(r->status_line, r->status_len + n + sizeof(CLOSE));
	if (!p)
		return -ENOMEM;
	r->status_line = p;
	memcpy(p + r->status_len, data, n);
	size_t old = r->status_len;
	r->status_len += n;
	size_t from = old > 3 ? old - 3 : 0;
	const char *end = memmem(p + from, r->status_len - from, "\r\n\r\n", 4);
	if (!end)
		return r->status_len > HTTP_RELAY_MAX_HEAD_BYTES ? -EPROTO : 0;
	const char *nl = memmem(p, r->status_len, "\r\n", 2);
	size_t at = (size_t)(nl - p) + 2, len = r->status_len;
	if (!head_says_close(p, (size_t)(end - p) + 2)) {
		memmove(p + at + sizeof(CLOSE) - 1, p + at, r->status_len - at);
		memcpy(p + at, CLOSE, sizeof(CLOSE) - 1);
		len += sizeof(CLOSE) - 1;
	}
	r->status_done = true;
	r->status_line = NULL;
	r->status_len = 0;
	return side_write_owned(&r->side[SIDE_A], p, len);
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
	struct relay_side *s = stream->data;
	struct http_relay *r = s->r;
	struct relay_write *wr =
	    buf->base ? (struct relay_write *)(buf->base - offsetof(struct relay_write, data))
	              : NULL;
	if (n == 0 || r->closing) {
		spare_put(r, wr);
		return;
	}
	if (n < 0) {
		spare_put(r, wr);
		s->eof = true;
		if (r->status_line && !r->status_done) { /* b ended within its first line */
			r->status_done = true;
			if (side_write_owned(&r->side[SIDE_A], TAKE_PTR(r->status_line),
			                     r->status_len) < 0) {
				relay_end(r, true);
				return;
			}
		}
		relay_read_update(s);
		if (n != UV_EOF && s == &r->side[SIDE_B] && !r->lingering) {
			r->reset_a = true; /* a reset or error upstream: the client must not take
			                    * what it got for a whole response */
			relay_end(r, true);
			return;
		}
		if (n == UV_ENOBUFS || (n != UV_EOF && s == &r->side[SIDE_A]) ||
		    (r->lingering && s == &r->side[SIDE_A])) {
			relay_end(r, true);
			return;
		}
		relay_pass_eof(s);
		return;
	}
	r->last_ms = uv_now(r->loop);
	if (r->cfg.one_request && s == &r->side[SIDE_A] && !r->lingering) {
		/* The rest of a's request body goes on; what follows it goes nowhere. */
		size_t pass = (uint64_t)n < r->cfg.a_request_bytes ? (size_t)n
		                                                   : (size_t)r->cfg.a_request_bytes;
		r->cfg.a_request_bytes -= pass;
		n = (ssize_t)pass;
	}
	if (r->lingering || n == 0) {
		spare_put(r, wr); /* b is done, or a's one request went already: goes nowhere */
		return;
	}
	if (r->cfg.one_request && s == &r->side[SIDE_B] && !r->status_done) {
		int e = status_line_add(r, wr->data, (size_t)n);
		spare_put(r, wr);
		if (e < 0)
			relay_end(r, true);
		else
			relay_read_update(s);
		return;
	}
	if (side_write(other(s), wr, wr->data, (size_t)n) < 0) {
		relay_end(r, true);
		return;
	}
	relay_read_update(s);
}

/* Read s while the other side can take more (and s has not ended). */
static void relay_read_update(struct relay_side *s)
{
	struct http_relay *r = s->r;
	if (r->closing)
		return;
	bool want = !s->eof && (r->lingering ? s == &r->side[SIDE_A]
	                                     : other(s)->queued <= r->cfg.max_buffer_bytes);
	if (want == s->reading)
		return;
	if (want && uv_read_start((uv_stream_t *)s->tcp, on_alloc, on_read) < 0) {
		relay_end(r, true);
		return;
	}
	if (!want)
		uv_read_stop((uv_stream_t *)s->tcp);
	s->reading = want;
}

static void on_idle_check(uv_timer_t *t)
{
	struct http_relay *r = t->data;
	uint64_t idle = uv_now(r->loop) - r->last_ms;
	if (idle >= r->cfg.idle_timeout_ms) {
		relay_end(r, true);
		return;
	}
	uv_timer_start(&r->timer, on_idle_check, r->cfg.idle_timeout_ms - idle, 0);
}

int http_relay_new(uv_loop_t *loop, uv_tcp_t *a, uv_tcp_t *b, char *to_a, size_t to_a_len,
                   char *to_b, size_t to_b_len, const struct http_relay_config *cfg,
                   struct http_relay **ret)
{
	struct http_relay *r = calloc(1, sizeof(*r));
	if (!r) {
		http_tcp_free(a);
		http_tcp_free(b);
		free(to_a);
		free(to_b);
		return -ENOMEM;
	}
	r->loop = loop;
	r->cfg = *cfg;
	if (!r->cfg.max_buffer_bytes)
		r->cfg.max_buffer_bytes = HTTP_DEFAULT_MAX_WRITE_BUFFER;
	uv_tcp_t *tcp[2] = {a, b};
	for (int i = 0; i < 2; i++) {
		r->side[i].tcp = tcp[i];
		r->side[i].r = r;
		tcp[i]->data = &r->side[i];
	}
	uv_timer_init(loop, &r->timer);
	r->timer.data = r;
	r->open_handles = 3;
	uv_update_time(loop);
	r->last_ms = uv_now(loop);
	int e = side_write_owned(&r->side[SIDE_A], to_a, to_a_len);
	int eb = side_write_owned(&r->side[SIDE_B], to_b, to_b_len);
	e = e < 0 ? e : eb;
	if (e < 0) {
		relay_end(r, false);
		return e;
	}
	if (r->cfg.idle_timeout_ms)
		uv_timer_start(&r->timer, on_idle_check, r->cfg.idle_timeout_ms, 0);
	r->side[SIDE_A].eof = r->cfg.a_eof;
	relay_read_update(&r->side[SIDE_A]);
	relay_read_update(&r->side[SIDE_B]);
	*ret = r;
	return 0;
}

void http_relay_close(struct http_relay *r)
{
	r->reset_a = true; /* ended from outside (its upstream went away): cut, not complete */
	relay_end(r, false);
}

size_t http_relay_queued(const struct http_relay *r, int side)
{
	return r->side[side ? SIDE_B : SIDE_A].queued;
}
