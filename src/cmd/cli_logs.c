/* skiff sandbox logs, and the streamed output of `skiff sandbox exec` and `run`: the output of
 * a sandbox's main command or of one exec, read as ndjson events ({"stream","offset",
 * "data_b64"}, then {"exit_code"}) from GET /v1/sandboxes/{id}/logs or …/execs/{ex}/output.
 * With follow, the server streams until the writer ends; a stream cut short (the connection
 * dropped, the server restarted) is resumed from the offsets printed so far. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/encoding.h"
#include "cli.h"

#define LOGS_USAGE            "[--stdout | --stderr] [--exec EX] [--follow] ID"
#define STREAM_MAX_LINE_BYTES (4u << 20) /* one event; the server sends under 1.5 MiB */
#define STREAM_RETRY_MS       500        /* before resuming a stream that was cut */
#define STREAM_MAX_RETRIES    120        /* cuts in a row: a minute of a server that's away */

struct out_reader {
	unsigned mask; /* CLI_OUT_STDOUT | CLI_OUT_STDERR: what to print */
	long long offset[2];
	int ended; /* the exit_code event came */
	int exit_code;
	char *line;
	size_t len, cap;
	struct sk_error err; /* why the reader stopped the request */
};

static int event_handle(struct out_reader *o, const char *line, size_t len)
{
	json_error_t jerr;
	_cleanup_json_ json_t *ev = json_loadb(line, len, 0, &jerr);
	if (!json_is_object(ev))
		return sk_error_set(&o->err, -EPROTO, "the server sent a bad event: %s", jerr.text);
	json_t *code = json_object_get(ev, "exit_code");
	if (code) {
		o->ended = 1;
		o->exit_code = json_is_integer(code) ? (int)json_integer_value(code) : -1;
		return 0;
	}
	const char *stream = cli_json_str(ev, "stream"), *b64 = cli_json_str(ev, "data_b64");
	json_t *off = json_object_get(ev, "offset");
	int si = stream && !strcmp(stream, "stderr") ? 1 : 0;
	if (!stream || !b64 || !json_is_integer(off) || (si == 0 && strcmp(stream, "stdout")))
		return sk_error_set(&o->err, -EPROTO, "the server sent an event without output");
	size_t blen = strlen(b64);
	_cleanup_free_ unsigned char *data = malloc(blen / 4 * 3 + 1);
	long n = data ? base64_decode(b64, blen, data) : -ENOMEM;
	if (n < 0)
		return sk_error_set(&o->err, -EPROTO, "the server sent bad base64");
	long long start = json_integer_value(off);
	if (start > o->offset[si] && (o->mask & (1u << si)))
		fprintf(stderr, "skiff: %lld bytes of %s dropped before offset %lld\n",
		        start - o->offset[si], stream, start);
	if (o->mask & (1u << si)) {
		FILE *f = si ? stderr : stdout;
		if (fwrite(data, 1, (size_t)n, f) != (size_t)n || fflush(f) != 0)
			return sk_error_errno(&o->err, -EPIPE, "write %s", stream);
	}
	o->offset[si] = start + n;
	return 0;
}

static int on_data(const char *p, size_t n, void *ud)
{
	struct out_reader *o = ud;
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) : n;
		if (o->len + take > STREAM_MAX_LINE_BYTES)
			return sk_error_set(&o->err, -EPROTO,
			                    "the server sent an event over %u MiB",
			                    STREAM_MAX_LINE_BYTES >> 20);
		if (o->len + take + 1 > o->cap) {
			size_t cap = o->cap ? o->cap * 2 : 64 * 1024;
			while (cap < o->len + take + 1)
				cap *= 2;
			char *l = realloc(o->line, cap);
			if (!l)
				return sk_error_errno(&o->err, -ENOMEM, "output");
			o->line = l;
			o->cap = cap;
		}
		memcpy(o->line + o->len, p, take);
		o->len += take;
		if (!nl)
			break;
		int r = o->len ? event_handle(o, o->line, o->len) : 0;
		o->len = 0;
		if (r < 0)
			return r;
		p = nl + 1;
		n -= take + 1;
	}
	return 0;
}

int cli_output_stream(struct cli *c, const char *base, unsigned mask, bool follow,
                      int *ret_exit_code, struct sk_error *err)
{
	struct out_reader o = {.mask = mask};
	int r = 0;
	for (unsigned tries = 0;; tries++) {
		long long before = o.offset[0] + o.offset[1];
		_cleanup_free_ char *path = NULL;
		if (asprintf(&path, "%s?format=ndjson&stdout_offset=%lld&stderr_offset=%lld%s",
		             base, o.offset[0], o.offset[1], follow ? "&follow=true" : "") < 0) {
			r = sk_error_errno(err, -ENOMEM, "output");
			break;
		}
		o.len = 0;
		struct cli_sink sink = {on_data, &o};
		r = cli_http_stream(c, path, &sink, err);
		if (r == -ECANCELED && o.err.code) {
			*err = o.err;
			break;
		}
		if (o.offset[0] + o.offset[1] > before)
			tries = 0; /* it moved on: only cuts in a row count */
		/* Without follow one read returns up to 1 MiB a stream: read on until one brings
		 * nothing new. */
		if (r == 0 && !follow && !o.ended && o.offset[0] + o.offset[1] > before)
			continue;
		if ((r == 0 && (o.ended || !follow)) || r == -EINTR || cli_signal_count())
			break;
		/* Cut short (a dropped connection, a restarting server or worker): resume from
		 * what was printed. Errors the server meant (4xx) end it. */
		if (r < 0 && r != -EAGAIN && r != -EIO && r != -ECONNREFUSED && r != -ETIMEDOUT)
			break;
		if (tries >= STREAM_MAX_RETRIES) {
			if (r == 0)
				r = sk_error_set(err, -EIO, "the output stream kept ending early");
			break;
		}
		struct timespec ts = {0, STREAM_RETRY_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
	free(o.line);
	if (r < 0)
		return cli_signal_count() ? -EINTR : r;
	*ret_exit_code = o.ended ? o.exit_code : -1;
	return 0;
}

int cli_sandbox_logs(struct cli *c, int argc, char **argv)
{
	static const struct option options[] = {
	    {"stdout", no_argument, NULL, 'o'},     {"stderr", no_argument, NULL, 'e'},
	    {"exec", required_argument, NULL, 'x'}, {"follow", no_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
	};
	const char *exec = NULL;
	unsigned mask = CLI_OUT_STDOUT | CLI_OUT_STDERR;
	bool follow = false;
	int opt;
	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, ":f", options, NULL)) != -1) {
		switch (opt) {
		case 'o': mask = CLI_OUT_STDOUT; break;
		case 'e': mask = CLI_OUT_STDERR; break;
		case 'x': exec = optarg; break;
		case 'f': follow = true; break;
		case 'h': printf("usage: skiff sandbox logs %s\n", LOGS_USAGE); return 0;
		default: return cli_option_error("sandbox logs", LOGS_USAGE, opt, argv);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("sandbox logs", LOGS_USAGE, "expected one sandbox ID");
	_cleanup_free_ char *eid = cli_escape(argv[optind]), *eex = exec ? cli_escape(exec) : NULL;
	_cleanup_free_ char *base = NULL;
	struct sk_error err = {0};
	if (!eid || (exec && !eex) ||
	    (exec ? asprintf(&base, "/v1/sandboxes/%s/execs/%s/output", eid, eex)
	          : asprintf(&base, "/v1/sandboxes/%s/logs", eid)) < 0) {
		sk_error_errno(&err, -ENOMEM, "logs");
		return cli_fail(&err);
	}
	cli_signals_install();
	c->abort_after_signals = 1;
	int code;
	if (cli_output_stream(c, base, mask, follow, &code, &err) < 0)
		return cli_signal_count() ? 130 : cli_fail(&err);
	return 0;
}
