/* GET /metrics: Prometheus text format. Requests by route and status, request latency by route,
 * sandboxes by state, sandbox start latency, workers connected. Counters live in memory and
 * start from zero with the process, as Prometheus expects. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

/* 101: a request handed to a tunnel (its status is the sandbox's). */
static const int STATUSES[METRICS_NSTATUS - 1] = {101, 200, 201, 204, 400, 401, 403, 404, 405,
                                                  408, 409, 413, 429, 431, 500, 502, 503, 504};
static const double BUCKETS_S[METRICS_NBUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

static int status_index(int status)
{
	for (int i = 0; i < METRICS_NSTATUS - 1; i++)
		if (STATUSES[i] == status)
			return i;
	return METRICS_NSTATUS - 1; /* "other" */
}

static void histogram_observe(struct metrics_histogram *h, double v)
{
	for (int i = 0; i < METRICS_NBUCKETS; i++)
		if (v <= BUCKETS_S[i])
			h->buckets[i]++;
	h->count++;
	h->sum += v;
}

void metrics_request(struct server *srv, size_t route, int status, uint64_t duration_ns)
{
	struct metrics *m = &srv->metrics;
	if (route > METRICS_MAX_ROUTES)
		route = METRICS_MAX_ROUTES;
	m->requests[route][status_index(status)]++;
	histogram_observe(&m->latency[route], (double)duration_ns / 1e9);
}

void metrics_sandbox_started(struct server *srv, double seconds)
{
	histogram_observe(&srv->metrics.start, seconds);
}

struct buf {
	char *p;
	size_t len, cap;
	int failed;
};

static void bprintf(struct buf *b, const char *fmt, ...) _printf_(2, 3);
static void bprintf(struct buf *b, const char *fmt, ...)
{
	for (int tries = 0; tries < 2 && !b->failed; tries++) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = 1;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = (b->cap + (size_t)n) * 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->failed = 1;
			return;
		}
		b->p = p, b->cap = cap;
	}
}

static void histogram_write(struct buf *b, const char *name, const char *labels,
                            const struct metrics_histogram *h)
{
	const char *sep = labels[0] ? "," : "";
	for (int i = 0; i < METRICS_NBUCKETS; i++)
		bprintf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, BUCKETS_S[i],
		        (unsigned long long)h->buckets[i]);
	bprintf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
	        (unsigned long long)h->count);
	bprintf(b, "%s_sum{%s} %.6f\n", name, labels, h->sum);
	bprintf(b, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->count);
}

void api_metrics(struct http_request *req)
{
	struct server *srv = http_server_ud(req->server);
	/* The gate made a call for it (admin only); this reply is plain text, not through it. */
	api_call_free(req->data);
	req->data = NULL;
	struct metrics *m = &srv->metrics;
	size_t nroutes;
	const struct http_route *routes = server_routes(&nroutes);
	struct buf b = {.p = malloc(16384), .cap = 16384};
	if (!b.p) {
		http_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	b.p[0] = '\0';
	bprintf(&b,
	        "# HELP skiff_http_requests_total HTTP requests answered, by route and status.\n"
	        "# TYPE skiff_http_requests_total counter\n");
	for (size_t r = 0; r <= METRICS_MAX_ROUTES; r++) {
		if (r >= nroutes && r < METRICS_MAX_ROUTES)
			continue; /* the last slot counts requests no route matched */
		char route[160];
		if (r < nroutes)
			snprintf(route, sizeof(route), "%s %s", routes[r].method,
			         routes[r].pattern);
		else
			snprintf(route, sizeof(route), "unmatched");
		for (int s = 0; s < METRICS_NSTATUS; s++) {
			if (!m->requests[r][s])
				continue;
			char status[8];
			if (s < METRICS_NSTATUS - 1)
				snprintf(status, sizeof(status), "%d", STATUSES[s]);
			else
				snprintf(status, sizeof(status), "other");
			bprintf(&b, "skiff_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n",
			        route, status, (unsigned long long)m->requests[r][s]);
		}
	}
	bprintf(&b,
	        "# HELP skiff_http_request_duration_seconds Time from a request's first byte to "
	        "the end of its reply.\n"
	        "# TYPE skiff_http_request_duration_seconds histogram\n");
	for (size_t r = 0; r <= METRICS_MAX_ROUTES; r++) {
		if (!m->latency[r].count || (r >= nroutes && r < METRICS_MAX_ROUTES))
			continue;
		char labels[200];
		if (r < nroutes)
			snprintf(labels, sizeof(labels), "route=\"%s %s\"", routes[r].method,
			         routes[r].pattern);
		else
			snprintf(labels, sizeof(labels), "route=\"unmatched\"");
		histogram_write(&b, "skiff_http_request_duration_seconds", labels, &m->latency[r]);
	}
	static const char *const STATES[] = {"pending", "running", "exited", "terminated",
	                                     "timeout", "oom",     "lost",   "failed"};
	size_t counts[ARRAY_SIZE(STATES)] = {0};
	size_t pos = 0;
	struct sandbox_rec *sb;
	while ((sb = map_next(&srv->sandboxes, &pos)))
		for (size_t i = 0; i < ARRAY_SIZE(STATES); i++)
			if (!strcmp(sb->row.state, STATES[i]))
				counts[i]++;
	bprintf(&b, "# HELP skiff_sandboxes Sandboxes the server holds, by state.\n"
	            "# TYPE skiff_sandboxes gauge\n");
	for (size_t i = 0; i < ARRAY_SIZE(STATES); i++)
		bprintf(&b, "skiff_sandboxes{state=\"%s\"} %zu\n", STATES[i], counts[i]);
	bprintf(&b,
	        "# HELP skiff_sandbox_start_seconds Time from a create's arrival to its sandbox "
	        "running.\n"
	        "# TYPE skiff_sandbox_start_seconds histogram\n");
	histogram_write(&b, "skiff_sandbox_start_seconds", "", &m->start);
	size_t connected = 0;
	pos = 0;
	struct worker_rec *w;
	while ((w = map_next(&srv->workers, &pos)))
		connected += w->connected;
	bprintf(&b,
	        "# HELP skiff_workers_connected Workers registered and heard from.\n"
	        "# TYPE skiff_workers_connected gauge\n"
	        "skiff_workers_connected %zu\n",
	        connected);
	bprintf(&b,
	        "# HELP skiff_tunnels_open Tunnels to sandbox ports, waiting for their worker or "
	        "relaying.\n"
	        "# TYPE skiff_tunnels_open gauge\n"
	        "skiff_tunnels_open %zu\n",
	        srv->tunnels.len);
	if (b.failed)
		http_reply_error(req, 503, "unavailable", "out of memory");
	else
		http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len);
	free(b.p);
}
