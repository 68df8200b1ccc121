/* skiffd: the daemon. `skiffd dev` runs a server and a worker in one process on the embedded
 * defaults (SQLite in the data directory, a local worker); the two talk over the worker link on
 * loopback, as they would across machines. `skiffd server` and `skiffd worker` are the same two
 * halves as separate processes. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "../image/busybox.h"
#include "../lib/error.h"
#include "../lib/fsutil.h"
#include "../lib/hash.h"
#include "../lib/macros.h"
#include "../net/net.h"
#include "../runtime/runtime.h"
#include "../server/server.h"
#include "../store/store.h"
#include "../worker/spawner.h"
#include "../worker/worker.h"

#define DEFAULT_DATA_DIR  "/var/lib/skiff"
#define DEFAULT_LISTEN    "127.0.0.1:7457"
#define DEFAULT_INSTANCE  "d0"
#define SKIFF_VERSION     "0.1.0"
#define WORKER_TOKEN_FILE "worker.token"
#define SECRET_MAX_BYTES  256

/* The process's command line, to blank in the spawner (spawner_config.in_child). */
static char **main_argv;
static int main_argc;

static void cmdline_blank(void)
{
	if (!main_argv || main_argc < 1)
		return;
	char *start = main_argv[0];
	char *end = main_argv[main_argc - 1] + strlen(main_argv[main_argc - 1]) + 1;
	memset(start, 0, (size_t)(end - start));
	snprintf(start, (size_t)(end - start), "skiffd-spawner");
}

struct daemon {
	uv_loop_t loop;
	struct store *store;
	struct server *srv;
	struct worker *worker;
	struct spawner_proc spawner;
	uv_signal_t sigterm, sigint;
	int stopping;
	/* The spawner's copies of options (argv is blanked in it): instance, data directory, and
	 * for a worker the server's URL and the worker secret. */
	char *spawner_strings[4];
	/* The image store's hold on the disk (rt_image_store_place), released once the spawner is
	 * gone: the last one out unmounts an idle disk. */
	const char *data;
	int store_lock_fd;
};

struct options {
	const char *data, *listen, *instance, *server_url, *token_file, *name;
	int pool;
	int worker_lost_s;
	unsigned image_min_free_pct; /* --image-min-free */
	uint64_t image_min_free_bytes;
	struct egress_config egress; /* --egress-subnet, --dns */
	int dns_given;
	const char *apt_sources[SERVER_APT_SOURCES_MAX]; /* --apt-source */
	size_t napt_sources;
	const char *debian_mirror; /* --debian-mirror, SKIFF_DEBIAN_MIRROR */
};

static void usage(FILE *f)
{
	fputs("usage: skiffd dev    [--data DIR] [--listen ADDR:PORT] [--instance ID] [--pool N]\n"
	      "                     [--apt-source LINE]... [--debian-mirror URL]\n"
	      "       skiffd server [--data DIR] [--listen ADDR:PORT] [--worker-lost-s S]\n"
	      "                     [--apt-source LINE]... [--debian-mirror URL]\n"
	      "       skiffd worker --server URL --token-file FILE\n"
	      "                     [--data DIR] [--instance ID] [--pool N] [--name NAME]\n"
	      "       skiffd routes\n"
	      "\n"
	      "  dev      a server and a worker in one process, state in SQLite under DIR\n"
	      "  server   the control plane alone: the API, the store; workers connect to it\n"
	      "  worker   runs sandboxes for a server; the secret is in the server's\n"
	      "           DIR/" WORKER_TOKEN_FILE "\n"
	      "  routes   print the API's routes\n"
	      "\n"
	      "  --data DIR          state, images, tokens (" DEFAULT_DATA_DIR ")\n"
	      "  --listen ADDR:PORT  the API's address (" DEFAULT_LISTEN ")\n"
	      "  --instance ID       the runtime instance: 1-4 of [a-z0-9] (" DEFAULT_INSTANCE ")\n"
	      "  --pool N            sandboxes kept ready for the default image (2)\n"
	      "  --name NAME         the worker's name, stable across restarts (host-instance)\n"
	      "  --worker-lost-s S   a worker silent this long is lost (15)\n"
	      "  --image-min-free P%|N[MG]  before an image's tree is made, unused trees are\n"
	      "                      dropped until this much of the image store's\n"
	      "                      filesystem (the btrfs disk on a data directory that is\n"
	      "                      not btrfs) is free: a percentage or MiB/GiB (10%)\n"
	      "  --egress-subnet CIDR  addresses of network-egress sandboxes, a private range\n"
	      "                      of /"
	      "17 or more (" EGRESS_DEFAULT_SUBNET ")\n"
	      "  --dns ADDR          a resolver egress sandboxes may use, named in their\n"
	      "                      resolv.conf (repeatable; default: the host's nameservers\n"
	      "                      from " EGRESS_RESOLV_CONF_FILE ", loopback ones left out)\n"
	      "  --apt-source LINE   a sources.list line that image builds' apt steps use instead\n"
	      "                      of the image's own sources, e.g. \"deb [trusted=yes]\n"
	      "                      http://198.51.100.7/ ./\" (repeatable, at most 8)\n"
	      "  --debian-mirror URL the mirror the Debian bases' tarballs are made from when\n"
	      "                      missing ($SKIFF_DEBIAN_MIRROR, as for scripts/install-deps;\n"
	      "                      else deb.debian.org)\n",
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

static void server_stop(struct daemon *d)
{
	if (!d->srv)
		return;
	server_shutdown(d->srv);
	store_close(d->store);
	d->store = NULL;
	d->srv->store_closed = 1;
	server_close(d->srv, server_closed, d);
}

static void worker_closed(void *ud)
{
	struct daemon *d = ud;
	d->worker = NULL;
	/* The worker's end of the spawner's socket is closed: the spawner exits at EOF and leaves
	 * the sandboxes running. */
	server_stop(d);
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
	if (d->worker)
		worker_close(d->worker, worker_closed, d);
	else
		server_stop(d);
}

/* The host's resolvers for egress sandboxes; said plainly when there is none they can use. */
static void dns_default(struct egress_config *cfg)
{
	char text[4096];
	int skipped = 0;
	if (fs_read_at(AT_FDCWD, EGRESS_RESOLV_CONF_FILE, text, sizeof(text)) < 0)
		text[0] = '\0';
	if (egress_config_dns_from_resolv_conf(cfg, text, &skipped) > 0)
		return;
	fprintf(stderr,
	        "level=warn msg=\"egress sandboxes get no DNS: %s (give one with --dns ADDR)\"\n",
	        skipped ? "the host's only nameservers are on loopback, which a sandbox can't "
	                  "reach"
	                : "no IPv4 nameserver in " EGRESS_RESOLV_CONF_FILE);
}

/* --image-min-free: "10%", or "512M" / "20G" (MiB, GiB; a bare number is MiB). */
static int parse_min_free(const char *s, struct options *o)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (!isdigit((unsigned char)s[0]) || errno)
		return -1;
	if (!strcmp(end, "%")) {
		if (v > 100)
			return -1;
		o->image_min_free_pct = (unsigned)v;
		o->image_min_free_bytes = 0;
		return 0;
	}
	unsigned shift = !strcmp(end, "G") || !strcmp(end, "GiB")            ? 30
	                 : !*end || !strcmp(end, "M") || !strcmp(end, "MiB") ? 20
	                                                                     : 0;
	if (!shift || v > (1ULL << 40))
		return -1;
	o->image_min_free_bytes = v << shift;
	o->image_min_free_pct = 0;
	return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option opts[] = {
	    {"data", required_argument, NULL, 'd'},
	    {"listen", required_argument, NULL, 'l'},
	    {"instance", required_argument, NULL, 'i'},
	    {"pool", required_argument, NULL, 'p'},
	    {"server", required_argument, NULL, 's'},

	    {"token-file", required_argument, NULL, 'T'},
	    {"name", required_argument, NULL, 'n'},
	    {"worker-lost-s", required_argument, NULL, 'L'},
	    {"egress-subnet", required_argument, NULL, 'E'},
	    {"dns", required_argument, NULL, 'D'},
	    {"apt-source", required_argument, NULL, 'A'},
	    {"debian-mirror", required_argument, NULL, 'M'},
	    {"image-min-free", required_argument, NULL, 'F'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		char *end;
		long v;
		switch (c) {
		case 'd': o->data = optarg; break;
		case 'l': o->listen = optarg; break;
		case 'i': o->instance = optarg; break;
		case 's': o->server_url = optarg; break;

		case 'T': o->token_file = optarg; break;
		case 'n': o->name = optarg; break;
		case 'p':
			v = strtol(optarg, &end, 10);
			if (!optarg[0] || *end || v < 0 || v > 64) {
				fprintf(stderr, "skiffd: --pool: expected 0 to 64\n");
				return 2;
			}
			o->pool = (int)v;
			break;
		case 'L':
			v = strtol(optarg, &end, 10);
			if (!optarg[0] || *end || v < 1 || v > 3600) {
				fprintf(stderr, "skiffd: --worker-lost-s: expected 1 to 3600\n");
				return 2;
			}
			o->worker_lost_s = (int)v;
			break;
		case 'E':
		case 'D': {
			struct sk_error err = {0};
			if ((c == 'E' ? egress_config_set_subnet(&o->egress, optarg, &err)
			              : egress_config_add_dns(&o->egress, optarg, &err)) < 0) {
				fprintf(stderr, "skiffd: %s\n", err.msg);
				return 2;
			}
			o->dns_given |= c == 'D';
			break;
		}
		case 'A': {
			struct sk_error err = {0};
			if (o->napt_sources == SERVER_APT_SOURCES_MAX) {
				fprintf(stderr, "skiffd: --apt-source: at most %d\n",
				        SERVER_APT_SOURCES_MAX);
				return 2;
			}
			if (builder_apt_source_check(optarg, &err) < 0) {
				fprintf(stderr, "skiffd: --apt-source %.100s: %s\n", optarg,
				        err.msg);
				return 2;
			}
			o->apt_sources[o->napt_sources++] = optarg;
			break;
		}
		case 'M': o->debian_mirror = optarg; break;
		case 'F':
			if (parse_min_free(optarg, o) < 0) {
				fprintf(stderr,
				        "skiffd: --image-min-free: expected a percentage (0%% to "
				        "100%%) or a size in MiB or GiB (512M, 20G)\n");
				return 2;
			}
			break;
		case 'h': usage(stdout); return -1;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "skiffd: unexpected argument %s\n", argv[optind]);
		return 2;
	}
	struct sk_error err = {0};
	if (o->debian_mirror && builder_debian_mirror_check(o->debian_mirror, &err) < 0) {
		fprintf(stderr, "skiffd: --debian-mirror%s %.100s: %s\n",
		        getenv("SKIFF_DEBIAN_MIRROR") == o->debian_mirror ? " (SKIFF_DEBIAN_MIRROR)"
		                                                          : "",
		        o->debian_mirror, err.msg);
		return 2;
	}
	if (!rt_instance_valid(o->instance)) {
		fprintf(stderr, "skiffd: --instance: 1-%d characters of [a-z0-9]\n",
		        RT_INSTANCE_MAX_CHARS);
		return 2;
	}
	if (o->data[0] != '/') {
		fprintf(stderr, "skiffd: --data: an absolute path is needed\n");
		return 2;
	}
	if (!o->dns_given)
		dns_default(&o->egress);
	if (mkdir(o->data, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "skiffd: create %s: %s\n", o->data, strerror(errno));
		return 1;
	}
	/* The store and the tokens' files are root's alone, whatever the directory was made with.
	 */
	struct stat st;
	if (stat(o->data, &st) == 0 && (st.st_mode & 077) && chmod(o->data, 0700) == 0)
		server_logf(NULL,
		            "level=warn msg=\"made the data directory private (0700)\" dir=%s",
		            o->data);
	return 0;
}

/* The secret of a line file (a token file), without its newline. */
static int read_secret(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	return buf[0] ? 0 : -EINVAL;
}

/* The server's worker secret: <data>/worker.token, made on first start (mode 0600). */
static int worker_secret(const char *data, char *buf, size_t size)
{
	char path[4096], tmp[4200];
	snprintf(path, sizeof(path), "%s/" WORKER_TOKEN_FILE, data);
	if (read_secret(path, buf, size) == 0)
		return 0;
	char hex[65];
	int r = random_hex(32, hex, sizeof(hex));
	if (r < 0)
		return r;
	snprintf(buf, size, "skw_%s", hex);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	dprintf(fd, "%s\n", buf);
	if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0)
		return -errno;
	server_logf(NULL, "level=info msg=\"made the worker token\" file=%s", path);
	return 0;
}

/* A limit lowered through the environment (0 when unset: the server's default), so that tests
 * reach limits that would take too long to reach for real. -1 when the value is not a number
 * from 1 to max. */
static long long env_limit(const char *name, unsigned long long max)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return 0;
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno || *end || n == 0 || n > max || v[0] == '-') {
		fprintf(stderr, "skiffd: %s: expected a number from 1 to %llu\n", name, max);
		return -1;
	}
	return (long long)n;
}

/* Where the server's image store is. In dev it is the spawner's, which places it the same way
 * (and says where); a server alone keeps blobs only, which gain nothing on the disk, and uses it
 * only where an earlier start put the store there. */
static int store_place(struct daemon *d, const struct options *o, char *root, size_t size)
{
	int dev = d->spawner.pid > 0;
	enum rt_disk_backend backend = RT_DISK_AUTO;
	const char *want = getenv("SKIFF_DISK_BACKEND");
	if (want)
		rt_disk_backend_parse(want, &backend); /* the spawner refuses a bad one */
	char note[SK_ERROR_MSG_BYTES + 256];
	struct sk_error err = {0};
	d->data = o->data;
	int r = rt_image_store_place(o->data, dev && backend != RT_DISK_TMPFS, root, size,
	                             &d->store_lock_fd, note, sizeof(note), &err);
	if (r < 0) {
		fprintf(stderr, "skiffd: images: %s\n", err.msg);
		return -1;
	}
	for (char *p = note; *p; p++)
		if (*p == '"')
			*p = '\'';
	/* In dev the spawner says where the store is; a store made anew is said by whichever of
	 * the two made it. */
	if (note[0] && (!dev || r > 0))
		server_logf(NULL, "level=%s msg=\"images: %s\"", r > 0 ? "warn" : "info", note);
	return 0;
}

static void store_release(struct daemon *d)
{
	if (d->data)
		rt_image_store_release(d->data, TAKE_FD(d->store_lock_fd));
}

static int start_server(struct daemon *d, const struct options *o, const char *secret)
{
	long long tunnels = env_limit("SKIFF_MAX_TUNNELS_PER_WORKSPACE", SERVER_MAX_TUNNELS);
	long long stdin_bytes =
	    env_limit("SKIFF_MAX_STDIN_INFLIGHT_BYTES", SERVER_MAX_STDIN_INFLIGHT_BYTES);
	long long bodies = env_limit("SKIFF_MAX_BODIES_BYTES", SERVER_MAX_BODIES_BYTES);
	long long blob = env_limit("SKIFF_MAX_BLOB_BYTES", SERVER_MAX_BLOB_BYTES);
	long long ws_blobs = env_limit("SKIFF_WORKSPACE_BLOB_BYTES", 1ULL << 50);
	long long ws_images = env_limit("SKIFF_WORKSPACE_MAX_IMAGES", SERVER_MAX_IMAGES_PER_WS);
	long long cache_ttl = env_limit("SKIFF_BUILD_CACHE_TTL_S", 10ULL * 365 * 24 * 3600);
	long long cache_max =
	    env_limit("SKIFF_BUILD_CACHE_MAX_PER_WORKSPACE", SERVER_BUILD_CACHE_MAX_PER_WS);
	if (tunnels < 0 || stdin_bytes < 0 || bodies < 0 || blob < 0 || ws_blobs < 0 ||
	    ws_images < 0 || cache_ttl < 0 || cache_max < 0)
		return -1;
	struct sk_error err = {0};
	char dbpath[4096];
	snprintf(dbpath, sizeof(dbpath), "%s/skiff.db", o->data);
	if (store_open(dbpath, &d->store, &err) < 0) {
		fprintf(stderr, "skiffd: %s\n", err.msg);
		return -1;
	}
	struct server_config cfg = {.data_dir = o->data,
	                            .listen = o->listen,
	                            .worker_secret = secret,
	                            .worker_lost_ms = o->worker_lost_s * 1000,
	                            .max_tunnels_per_ws = (size_t)tunnels,
	                            .max_stdin_inflight_bytes = (size_t)stdin_bytes,
	                            .max_bodies_bytes = (size_t)bodies,
	                            .max_blob_bytes = (uint64_t)blob,
	                            .ws_blob_bytes = (uint64_t)ws_blobs,
	                            .max_images_per_ws = (size_t)ws_images,
	                            .build_cache_ttl_s = cache_ttl,
	                            .build_cache_max_per_ws = (size_t)cache_max,
	                            .napt_sources = o->napt_sources,
	                            .debian_mirror = o->debian_mirror};
	memcpy(cfg.apt_sources, o->apt_sources, sizeof(cfg.apt_sources));
	char images[4096];
	if (store_place(d, o, images, sizeof(images)) < 0) {
		store_close(d->store);
		d->store = NULL;
		return -1;
	}
	cfg.images_root = images;
	if (server_new(&d->loop, d->store, &cfg, &d->srv, &err) < 0) {
		fprintf(stderr, "skiffd: %s\n", err.msg);
		store_close(d->store);
		d->store = NULL;
		uv_run(&d->loop, UV_RUN_DEFAULT);
		return -1;
	}
	return 0;
}

static int start_worker(struct daemon *d, const char *host, int port, const char *secret,
                        const char *name)
{
	struct sk_error err = {0};
	struct worker_config wc = {.server_host = host,
	                           .server_port = port,
	                           .secret = secret,
	                           .name = name,
	                           .spawner_fd = d->spawner.fd,
	                           .log = log_line};
	if (worker_new(&d->loop, &wc, &d->worker, &err) < 0) {
		fprintf(stderr, "skiffd: %s\n", err.msg);
		return -1;
	}
	d->spawner.fd = -1; /* the worker owns it now */
	return 0;
}

static void spawner_strings_free(struct daemon *d)
{
	if (d->spawner_strings[3])
		explicit_bzero(d->spawner_strings[3], strlen(d->spawner_strings[3]));
	for (size_t i = 0; i < ARRAY_SIZE(d->spawner_strings); i++)
		free(TAKE_PTR(d->spawner_strings[i]));
}

/* The spawner first: it must be forked before this process has any thread. secret: a
 * worker's, whose data directory is its own (its spawner fetches images from the
 * server); NULL in dev, whose store is the server's. */
static int start_spawner(struct daemon *d, const struct options *o, const char *secret)
{
	struct sk_error err = {0};
	/* The options point into argv, which the spawner blanks: it gets copies. */
	d->spawner_strings[0] = strdup(o->instance);
	d->spawner_strings[1] = strdup(o->data);
	if (secret) {
		d->spawner_strings[2] = strdup(o->server_url);
		d->spawner_strings[3] = strdup(secret);
		if (!d->spawner_strings[2] || !d->spawner_strings[3]) {
			fprintf(stderr, "skiffd: out of memory\n");
			return -1;
		}
		/* No trailing '/': the spawner appends the route. */
		size_t n = strlen(d->spawner_strings[2]);
		while (n > 0 && d->spawner_strings[2][n - 1] == '/')
			d->spawner_strings[2][--n] = '\0';
	}
	struct spawner_config sc = {.instance = d->spawner_strings[0],
	                            .data_dir = d->spawner_strings[1],
	                            .server_url = d->spawner_strings[2],
	                            .server_secret = d->spawner_strings[3],
	                            .image_min_free_pct = o->image_min_free_pct,
	                            .image_min_free_bytes = o->image_min_free_bytes,
	                            .busybox = getenv(BUSYBOX_PATH_ENV),
	                            .pool_size = o->pool,
	                            .egress = &o->egress,
	                            .in_child = cmdline_blank};
	if (!sc.instance || !sc.data_dir) {
		fprintf(stderr, "skiffd: out of memory\n");
		return -1;
	}
	if (spawner_start(&sc, &d->spawner, &err) < 0) {
		fprintf(stderr, "skiffd: start the spawner: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int run(struct daemon *d)
{
	uv_signal_init(&d->loop, &d->sigterm);
	uv_signal_init(&d->loop, &d->sigint);
	d->sigterm.data = d->sigint.data = d;
	uv_signal_start(&d->sigterm, on_signal, SIGTERM);
	uv_signal_start(&d->sigint, on_signal, SIGINT);
	uv_run(&d->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&d->loop) < 0)
		server_logf(NULL, "level=warn msg=\"handles left open at exit\"");
	if (d->spawner.pid > 0)
		spawner_stop(&d->spawner);
	store_release(d);
	spawner_strings_free(d);
	server_logf(NULL, "level=info msg=\"stopped\"");
	return 0;
}

static void options_init(struct options *o)
{
	*o =
	    (struct options){.data = getenv("SKIFF_DATA") ? getenv("SKIFF_DATA") : DEFAULT_DATA_DIR,
	                     .listen = DEFAULT_LISTEN,
	                     .instance = DEFAULT_INSTANCE,
	                     .pool = SPAWNER_DEFAULT_POOL,
	                     .debian_mirror = getenv("SKIFF_DEBIAN_MIRROR"),
	                     .image_min_free_pct = SPAWNER_DEFAULT_IMAGE_MIN_FREE_PCT};
	if (o->debian_mirror && !o->debian_mirror[0])
		o->debian_mirror = NULL; /* set but empty: unset */
	egress_config_init(&o->egress);
}

static int cmd_dev(int argc, char **argv)
{
	struct options o;
	options_init(&o);
	int r = parse_options(argc, argv, &o);
	if (r)
		return r < 0 ? 0 : r;
	struct daemon d = {.store_lock_fd = -1};
	if (start_spawner(&d, &o, NULL) < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&d.loop);
	char secret[65];
	random_hex(32, secret, sizeof(secret)); /* dev's link never leaves the process */
	if (start_server(&d, &o, secret) < 0) {
		uv_loop_close(&d.loop);
		spawner_stop(&d.spawner);
		store_release(&d);
		spawner_strings_free(&d);
		return 1;
	}
	const char *host = !strncmp(o.listen, "[::1]", 5) ? "::1" : "127.0.0.1";
	if (start_worker(&d, host, server_port(d.srv), secret, "local") < 0)
		return 1;
	explicit_bzero(secret, sizeof(secret));
	server_logf(NULL,
	            "level=info msg=\"skiffd dev ready\" url=http://%s:%d data=%s "
	            "admin_token_file=%s/admin.token instance=%s",
	            host, server_port(d.srv), o.data, o.data, o.instance);
	return run(&d);
}

static int cmd_server(int argc, char **argv)
{
	struct options o;
	options_init(&o);
	int r = parse_options(argc, argv, &o);
	if (r)
		return r < 0 ? 0 : r;
	char secret[SECRET_MAX_BYTES];
	if ((r = worker_secret(o.data, secret, sizeof(secret))) < 0) {
		fprintf(stderr, "skiffd: the worker token in %s: %s\n", o.data, strerror(-r));
		return 1;
	}
	struct daemon d = {.store_lock_fd = -1};
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&d.loop);
	if (start_server(&d, &o, secret) < 0) {
		uv_loop_close(&d.loop);
		store_release(&d);
		return 1;
	}
	explicit_bzero(secret, sizeof(secret));
	server_logf(NULL,
	            "level=info msg=\"skiffd server ready\" listen=%s port=%d data=%s "
	            "admin_token_file=%s/admin.token worker_token_file=%s/" WORKER_TOKEN_FILE,
	            o.listen, server_port(d.srv), o.data, o.data, o.data);
	return run(&d);
}

/* "http://HOST:PORT[/]" → host and port. */
static int parse_url(const char *url, char *host, size_t size, int *port)
{
	if (strncmp(url, "http://", 7))
		return -EINVAL;
	const char *h = url + 7;
	const char *colon = strrchr(h, ':');
	if (!colon || colon == h || (size_t)(colon - h) >= size)
		return -EINVAL;
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (p < 1 || p > 65535 || (*end && strcmp(end, "/")))
		return -EINVAL;
	memcpy(host, h, (size_t)(colon - h));
	host[colon - h] = '\0';
	if (host[0] == '[') { /* [v6] */
		size_t n = strlen(host);
		if (n < 3 || host[n - 1] != ']')
			return -EINVAL;
		memmove(host, host + 1, n - 2);
		host[n - 2] = '\0';
	}
	*port = (int)p;
	return 0;
}

static int cmd_worker(int argc, char **argv)
{
	struct options o;
	options_init(&o);
	/* The mirror is the server's: a worker's environment may name one it would refuse (one
	 * install-deps takes), and the worker must start all the same. */
	o.debian_mirror = NULL;
	int r = parse_options(argc, argv, &o);
	if (r)
		return r < 0 ? 0 : r;
	char host[256], secret[SECRET_MAX_BYTES], name[STORE_NAME_BYTES];
	int port;
	if (!o.server_url || parse_url(o.server_url, host, sizeof(host), &port) < 0) {
		fprintf(stderr, "skiffd worker: --server http://HOST:PORT is required\n");
		return 2;
	}
	if (o.napt_sources || o.debian_mirror) {
		fprintf(stderr, "skiffd worker: --apt-source and --debian-mirror are the server's "
		                "(skiffd server or dev)\n");
		return 2;
	}
	/* The control plane, when it is not on this host (whose addresses egress blocks anyway). */
	struct in_addr cp;
	if (inet_pton(AF_INET, host, &cp) == 1)
		o.egress.control_plane = ntohl(cp.s_addr);
	/* The secret comes from a file only: a command line is readable by every user of the host,
	 * and sandboxes' processes descend from this one. */
	if (!o.token_file) {
		fprintf(stderr, "skiffd worker: --token-file FILE is required (the server's "
		                "DATA/" WORKER_TOKEN_FILE ")\n");
		return 2;
	}
	if ((r = read_secret(o.token_file, secret, sizeof(secret))) < 0) {
		fprintf(stderr, "skiffd worker: read %s: %s\n", o.token_file, strerror(-r));
		return 1;
	}
	/* A core dump would hold the secret; the spawner, a fork of this process, inherits it. */
	prctl(PR_SET_DUMPABLE, 0);
	if (o.name) {
		if (!o.name[0] || strlen(o.name) >= sizeof(name)) {
			fprintf(stderr, "skiffd worker: --name: 1-%zu characters\n",
			        sizeof(name) - 1);
			return 2;
		}
		snprintf(name, sizeof(name), "%s", o.name);
	} else {
		char hn[64] = "host";
		gethostname(hn, sizeof(hn) - 1);
		snprintf(name, sizeof(name), "%.40s-%s", hn, o.instance);
	}
	struct daemon d = {.store_lock_fd = -1};
	if (start_spawner(&d, &o, secret) < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&d.loop);
	if (start_worker(&d, host, port, secret, name) < 0) {
		spawner_stop(&d.spawner);
		spawner_strings_free(&d);
		return 1;
	}
	explicit_bzero(secret, sizeof(secret));
	server_logf(NULL, "level=info msg=\"skiffd worker started\" server=%s name=%s instance=%s",
	            o.server_url, name, o.instance);
	return run(&d);
}

int main(int argc, char **argv)
{
	main_argv = argv;
	main_argc = argc;
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
	/* Up to 1,024 connections and 1,024 tunnels (two sockets each on the server, two more on
	 * the worker in dev): more than a default soft limit of 1,024 descriptors. */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}
	if (!strcmp(argv[1], "dev"))
		return cmd_dev(argc - 1, argv + 1);
	if (!strcmp(argv[1], "server"))
		return cmd_server(argc - 1, argv + 1);
	if (!strcmp(argv[1], "worker"))
		return cmd_worker(argc - 1, argv + 1);
	if (!strcmp(argv[1], "routes")) {
		/* The API's routes, one "METHOD PATTERN" a line ("{}" is one path segment, "{*}"
		 * the rest of the path; method "*" is any). */
		size_t n;
		const struct http_route *r = server_routes(&n);
		for (size_t i = 0; i < n; i++)
			printf("%s %s\n", r[i].method, r[i].pattern);
		return 0;
	}
	fprintf(stderr, "skiffd: unknown command %s\n", argv[1]);
	usage(stderr);
	return 2;
}
