/* skiffd: the daemon. `skiffd dev` runs a server and a worker in one process on the embedded
 * defaults (SQLite in the data directory, a local worker); the two talk over the worker link on
 * loopback, as they would across machines. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "../lib/error.h"
#include "../lib/fsutil.h"
#include "../lib/hash.h"
#include "../runtime/runtime.h"
#include "../server/server.h"
#include "../store/store.h"
#include "../worker/spawner.h"
#include "../worker/worker.h"

#define DEFAULT_DATA_DIR "/var/lib/skiff"
#define DEFAULT_LISTEN   "127.0.0.1:7457"
#define DEFAULT_INSTANCE "d0"
#define SKIFF_VERSION    "0.1.0"

struct daemon {
	uv_loop_t loop;
	struct store *store;
	struct server *srv;
	struct worker *worker;
	struct spawner_proc spawner;
	uv_signal_t sigterm, sigint;
	int stopping;
};

static void usage(FILE *f)
{
	fputs(
	    "usage: skiffd dev [--data DIR] [--listen ADDR:PORT] [--instance ID] [--pool N]\n"
	    "\n"
	    "  dev      a server and a worker in one process, state in SQLite under DIR\n"
	    "\n"
	    "  --data DIR          where state, images and the admin token live (" DEFAULT_DATA_DIR
	    ")\n"
	    "  --listen ADDR:PORT  the API's address (" DEFAULT_LISTEN ")\n"
	    "  --instance ID       the runtime instance: 1-4 of [a-z0-9] (" DEFAULT_INSTANCE ")\n"
	    "  --pool N            sandboxes kept ready for the default image (2)\n"
	    "\n"
	    "`skiffd routes` prints the API's routes.\n"
	      "`skiffd server` and `skiffd worker` (several machines) are not available yet.\n",
	    f);
}

static void log_line(const char *line)
{
	fprintf(stderr, "%s\n", line);
}

static void on_closed(uv_handle_t *h)
{
	(void)h;
}

static void server_closed(void *ud)
{
	struct daemon *d = ud;
	d->srv = NULL;
}

static void worker_closed(void *ud)
{
	struct daemon *d = ud;
	d->worker = NULL;
	/* The worker's end of the spawner's socket is closed: the spawner exits at EOF and leaves
	 * the sandboxes running. */
	server_shutdown(d->srv);
	store_close(d->store);
	d->store = NULL;
	d->srv->store_closed = 1;
	server_close(d->srv, server_closed, d);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;
	if (d->stopping)
		return;
	d->stopping = 1;
	server_logf(NULL, "level=info msg=\"stopping\" signal=%d sandboxes=\"left running\"",
	            signum);
	uv_close((uv_handle_t *)&d->sigterm, on_closed);
	uv_close((uv_handle_t *)&d->sigint, on_closed);
	worker_close(d->worker, worker_closed, d);
}

static int cmd_dev(int argc, char **argv)
{
	const char *data = getenv("SKIFF_DATA") ? getenv("SKIFF_DATA") : DEFAULT_DATA_DIR;
	const char *listen = DEFAULT_LISTEN, *instance = DEFAULT_INSTANCE;
	int pool = SPAWNER_DEFAULT_POOL;
	static const struct option opts[] = {
	    {"data", required_argument, NULL, 'd'},     {"listen", required_argument, NULL, 'l'},
	    {"instance", required_argument, NULL, 'i'}, {"pool", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},           {0},
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'l': listen = optarg; break;
		case 'i': instance = optarg; break;
		case 'p': {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (!optarg[0] || *end || v < 0 || v > 64) {
				fprintf(stderr, "skiffd: --pool: expected 0 to 64\n");
				return 2;
			}
			pool = (int)v;
			break;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "skiffd dev: unexpected argument %s\n", argv[optind]);
		return 2;
	}
	if (!rt_instance_valid(instance)) {
		fprintf(stderr, "skiffd: --instance: 1-%d characters of [a-z0-9]\n",
		        RT_INSTANCE_MAX_CHARS);
		return 2;
	}
	if (data[0] != '/') {
		fprintf(stderr, "skiffd: --data: an absolute path is needed\n");
		return 2;
	}
	if (mkdir(data, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "skiffd: create %s: %s\n", data, strerror(errno));
		return 1;
	}

	struct sk_error err = {0};
	struct daemon d = {0};
	/* The spawner first: it must be forked before this process has any thread. */
	struct spawner_config sc = {.instance = instance, .data_dir = data, .pool_size = pool};
	if (spawner_start(&sc, &d.spawner, &err) < 0) {
		fprintf(stderr, "skiffd: start the spawner: %s\n", err.msg);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&d.loop);

	char dbpath[4096];
	snprintf(dbpath, sizeof(dbpath), "%s/skiff.db", data);
	if (store_open(dbpath, &d.store, &err) < 0) {
		fprintf(stderr, "skiffd: %s\n", err.msg);
		spawner_stop(&d.spawner);
		return 1;
	}
	char secret[65];
	random_hex(32, secret, sizeof(secret));
	struct server_config cfg = {.data_dir = data, .listen = listen, .worker_secret = secret};
	if (server_new(&d.loop, d.store, &cfg, &d.srv, &err) < 0) {
		fprintf(stderr, "skiffd: %s\n", err.msg);
		store_close(d.store);
		uv_run(&d.loop, UV_RUN_DEFAULT);
		uv_loop_close(&d.loop);
		spawner_stop(&d.spawner);
		return 1;
	}
	char host[64] = "127.0.0.1";
	if (!strncmp(listen, "[::1]", 5))
		snprintf(host, sizeof(host), "::1");
	struct worker_config wc = {.server_host = host,
	                           .server_port = server_port(d.srv),
	                           .secret = secret,
	                           .name = "local",
	                           .spawner_fd = d.spawner.fd,
	                           .log = log_line};
	if (worker_new(&d.loop, &wc, &d.worker, &err) < 0) {
		fprintf(stderr, "skiffd: %s\n", err.msg);
		return 1;
	}
	d.spawner.fd = -1; /* the worker owns it now */
	explicit_bzero(secret, sizeof(secret));

	uv_signal_init(&d.loop, &d.sigterm);
	uv_signal_init(&d.loop, &d.sigint);
	d.sigterm.data = d.sigint.data = &d;
	uv_signal_start(&d.sigterm, on_signal, SIGTERM);
	uv_signal_start(&d.sigint, on_signal, SIGINT);

	server_logf(NULL,
	            "level=info msg=\"skiffd dev ready\" url=http://%s:%d data=%s "
	            "admin_token_file=%s/admin.token instance=%s",
	            host, server_port(d.srv), data, data, instance);
	uv_run(&d.loop, UV_RUN_DEFAULT);
	int r = uv_loop_close(&d.loop);
	if (r < 0)
		server_logf(NULL, "level=warn msg=\"handles left open at exit\"");
	spawner_stop(&d.spawner);
	server_logf(NULL, "level=info msg=\"stopped\"");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("skiffd %s\n", SKIFF_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "dev"))
		return cmd_dev(argc - 1, argv + 1);
	if (!strcmp(argv[1], "routes")) {
		/* The API's routes, one "METHOD PATTERN" a line ("{}" is one path segment). */
		size_t n;
		const struct http_route *r = server_routes(&n);
		for (size_t i = 0; i < n; i++)
			printf("%s %s\n", r[i].method, r[i].pattern);
		return 0;
	}
	if (!strcmp(argv[1], "server") || !strcmp(argv[1], "worker")) {
		fprintf(stderr, "skiffd %s: not available yet; use `skiffd dev`\n", argv[1]);
		return 2;
	}
	fprintf(stderr, "skiffd: unknown command %s\n", argv[1]);
	usage(stderr);
	return 2;
}
