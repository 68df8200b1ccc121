/* skiff sandbox logs: the output of a sandbox's main command, or of one exec, read by offset
 * (GET /v1/sandboxes/{id}/logs, …/execs/{ex}/output) until what was written so far is printed.
 * With --follow, reads on until the writer ends. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define LOGS_USAGE     "[--stderr] [--exec EX] [--follow] ID"
#define LOGS_FOLLOW_MS 200 /* between reads when nothing new came */

int cli_sandbox_logs(struct cli *c, int argc, char **argv)
{
	static const struct option options[] = {
	    {"stderr", no_argument, NULL, 'e'},
	    {"exec", required_argument, NULL, 'x'},
	    {"follow", no_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *exec = NULL, *stream = "stdout";
	bool follow = false;
	int opt;
	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, ":f", options, NULL)) != -1) {
		switch (opt) {
		case 'e': stream = "stderr"; break;
		case 'x': exec = optarg; break;
		case 'f': follow = true; break;
		case 'h': printf("usage: skiff sandbox logs %s\n", LOGS_USAGE); return 0;
		default: return cli_option_error("sandbox logs", LOGS_USAGE, opt, argv);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("sandbox logs", LOGS_USAGE, "expected one sandbox ID");
	_cleanup_free_ char *eid = cli_escape(argv[optind]), *eex = exec ? cli_escape(exec) : NULL;
	struct sk_error err = {0};
	if (!eid || (exec && !eex)) {
		sk_error_errno(&err, -ENOMEM, "logs");
		return cli_fail(&err);
	}
	cli_signals_install();
	c->abort_after_signals = 1;
	long long offset = 0;
	for (;;) {
		_cleanup_free_ char *path = NULL, *data = NULL;
		int n =
		    exec ? asprintf(&path, "/v1/sandboxes/%s/execs/%s/output?stream=%s&offset=%lld",
		                    eid, eex, stream, offset)
		         : asprintf(&path, "/v1/sandboxes/%s/logs?stream=%s&offset=%lld", eid,
		                    stream, offset);
		if (n < 0) {
			sk_error_errno(&err, -ENOMEM, "logs");
			return cli_fail(&err);
		}
		size_t len = 0;
		struct cli_output_meta meta;
		if (cli_http_raw(c, "GET", path, NULL, 0, CLI_REQUEST_TIMEOUT_S, &data, &len, &meta,
		                 &err) < 0)
			return cli_signal_count() ? 130 : cli_fail(&err);
		if (meta.offset > offset) /* older bytes were dropped: say so once, then go on */
			fprintf(stderr, "skiff: %lld bytes dropped before offset %lld\n",
			        meta.offset - offset, meta.offset);
		if (len && fwrite(data, 1, len, stdout) != len)
			return 1;
		fflush(stdout);
		offset = (meta.offset >= 0 ? meta.offset : offset) + (long long)len;
		if (len)
			continue;
		if (!follow || meta.eof == 1)
			return 0;
		if (cli_signal_count())
			return 130;
		struct timespec ts = {0, LOGS_FOLLOW_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
}
