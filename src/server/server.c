/* The server's life: routes, loading what the store holds, the first start, the periodic tick,
 * logging. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../lib/clock.h"
#include "../lib/fsutil.h"
#include "../lib/hash.h"
#include "../lib/logfmt.h"
#include "server.h"

#define TICK_MS           1000
#define IMAGE_GC_TICKS    (3600 * 1000 / TICK_MS) /* hourly */
#define IDEM_EXPIRE_TICKS 60 /* expired idempotency keys are dropped every minute */
/* An exec's output (1 MiB per stream) may grow six-fold as JSON text (\u00XX): one event then
 * takes up to ~13 MiB, and the worker batches events to 4 MiB otherwise. */
#define LINK_MAX_BODY_BYTES (16 * 1024 * 1024)

static const struct http_route ROUTES[] = {
    {"GET", "/healthz", api_healthz, NULL, 0, PERM_PUBLIC},
    {"GET", "/metrics", api_metrics, NULL, 0, PERM_ADMIN}, /* counts across workspaces */
    {"GET", "/v1/whoami", api_whoami, NULL, 0, PERM_ANY},
    {"POST", "/v1/workspaces", api_workspaces_create, NULL, SERVER_MAX_JSON_BODY_BYTES, PERM_ADMIN},
    {"GET", "/v1/workspaces", api_workspaces_list, NULL, 0, PERM_READ},
    {"POST", "/v1/tokens", api_tokens_create, NULL, SERVER_MAX_JSON_BODY_BYTES, PERM_OWNER},
    {"GET", "/v1/tokens", api_tokens_list, NULL, 0, PERM_OWNER},
    {"DELETE", "/v1/tokens/{}", api_tokens_delete, NULL, 0, PERM_OWNER},
    {"POST", "/v1/sandboxes", api_sandboxes_create, NULL, SERVER_MAX_JSON_BODY_BYTES,
     PERM_WRITE | PERM_SANDBOX},
    {"GET", "/v1/sandboxes", api_sandboxes_list, NULL, 0, PERM_READ | PERM_SANDBOX},
    {"GET", "/v1/sandboxes/{}", api_sandboxes_get, NULL, 0, PERM_READ | PERM_SANDBOX},
    {"PATCH", "/v1/sandboxes/{}", api_sandboxes_patch, NULL, SERVER_MAX_JSON_BODY_BYTES,
     PERM_WRITE | PERM_SANDBOX},
    {"DELETE", "/v1/sandboxes/{}", api_sandboxes_delete, NULL, 0, PERM_WRITE | PERM_SANDBOX},
    {"POST", "/v1/sandboxes/{}/wait", api_sandboxes_wait, NULL, 0, PERM_READ | PERM_SANDBOX},
    {"POST", "/v1/sandboxes/{}/exec", api_sandboxes_exec, NULL, SERVER_MAX_JSON_BODY_BYTES,
     PERM_WRITE | PERM_SANDBOX},
    {"GET", "/v1/sandboxes/{}/execs/{}", api_execs_get, NULL, 0, PERM_READ | PERM_SANDBOX},
    {"GET", "/v1/sandboxes/{}/execs/{}/output", api_exec_output, NULL, 0, PERM_READ | PERM_SANDBOX},
    {"POST", "/v1/sandboxes/{}/execs/{}/stdin", api_exec_stdin, NULL, EXEC_STDIN_MAX_WRITE_BYTES,
     PERM_WRITE | PERM_SANDBOX},
    {"POST", "/v1/sandboxes/{}/execs/{}/signal", api_exec_signal, NULL, SERVER_MAX_JSON_BODY_BYTES,
     PERM_WRITE | PERM_SANDBOX},
    {"POST", "/v1/sandboxes/{}/execs/{}/resize", api_exec_resize, NULL, SERVER_MAX_JSON_BODY_BYTES,
     PERM_WRITE | PERM_SANDBOX},
    {"GET", "/v1/sandboxes/{}/logs", api_sandbox_logs, NULL, 0, PERM_READ | PERM_SANDBOX},
    {"GET", "/v1/sandboxes/{}/files", api_files_get, NULL, 0, PERM_READ | PERM_SANDBOX},
    {"PUT", "/v1/sandboxes/{}/files", api_files_put, NULL, SERVER_MAX_FILE_BYTES,
     PERM_WRITE | PERM_SANDBOX},
    {"GET", "/v1/sandboxes/{}/fs/list", api_fs_list, NULL, 0, PERM_READ | PERM_SANDBOX},
    {"GET", "/v1/sandboxes/{}/fs/stat", api_fs_stat, NULL, 0, PERM_READ | PERM_SANDBOX},
    {"POST", "/v1/sandboxes/{}/fs/mkdir", api_fs_mkdir, NULL, SERVER_MAX_JSON_BODY_BYTES,
     PERM_WRITE | PERM_SANDBOX},
    {"POST", "/v1/sandboxes/{}/fs/remove", api_fs_remove, NULL, SERVER_MAX_JSON_BODY_BYTES,
     PERM_WRITE | PERM_SANDBOX},
    {"POST", "/v1/sandboxes/{}/fs/move", api_fs_move, NULL, SERVER_MAX_JSON_BODY_BYTES,
     PERM_WRITE | PERM_SANDBOX},
    {"GET", "/v1/sandboxes/{}/ports", api_ports_list, NULL, 0, PERM_READ | PERM_SANDBOX},
    {"POST", "/v1/sandboxes/{}/snapshot", api_sandboxes_snapshot, NULL, SERVER_MAX_JSON_BODY_BYTES,
     PERM_WRITE},
    /* Any method: the request goes to the sandbox as it came. */
    {"*", "/v1/sandboxes/{}/ports/{}", api_ports_proxy, NULL, SERVER_PORT_MAX_BODY_BYTES,
     PERM_WRITE | PERM_SANDBOX | HTTP_ROUTE_TAKE_OVER},
    {"*", "/v1/sandboxes/{}/ports/{}/{*}", api_ports_proxy, NULL, SERVER_PORT_MAX_BODY_BYTES,
     PERM_WRITE | PERM_SANDBOX | HTTP_ROUTE_TAKE_OVER},
    /* A declared body is streamed into the store (a chunked one is held whole first). */
    {"PUT", "/v1/blobs/{}", api_blobs_put, NULL, SERVER_MAX_CHUNKED_BLOB_BYTES,
     PERM_WRITE | HTTP_ROUTE_TAKE_OVER},
    {"GET", "/v1/blobs/{}", api_blobs_get, NULL, 0, PERM_READ},
    {"POST", "/v1/images", api_images_create, NULL, SERVER_MAX_IMAGE_BODY_BYTES, PERM_WRITE},
    {"GET", "/v1/images", api_images_list, NULL, 0, PERM_READ},
    {"GET", "/v1/images/{}", api_images_get, NULL, 0, PERM_READ},
    {"GET", "/v1/images/{}/logs", api_images_logs, NULL, 0, PERM_READ},
    {"DELETE", "/v1/images/{}", api_images_delete, NULL, 0, PERM_WRITE},
    {"GET", "/v1/workers", api_workers_list, NULL, 0, PERM_ADMIN},
    {"POST", "/internal/v1/workers/register", link_register, NULL, LINK_MAX_BODY_BYTES,
     PERM_WORKER},
    {"POST", "/internal/v1/workers/{}/poll", link_poll, NULL, LINK_MAX_BODY_BYTES, PERM_WORKER},
    {"POST", "/internal/v1/workers/{}/events", link_events, NULL, LINK_MAX_BODY_BYTES, PERM_WORKER},
    {"POST", "/internal/v1/workers/{}/output", link_output, NULL, LINK_MAX_BODY_BYTES, PERM_WORKER},
    {"POST", "/internal/v1/workers/{}/tunnels/{}", link_tunnel, NULL, 0, PERM_WORKER},
    /* Workers with a data directory of their own: images fetched, layers pushed. */
    {"GET", "/internal/v1/blobs/{}", api_blobs_get, NULL, 0, PERM_WORKER},
    {"PUT", "/internal/v1/blobs/{}", api_blobs_put, NULL, SERVER_MAX_CHUNKED_BLOB_BYTES,
     PERM_WORKER | HTTP_ROUTE_TAKE_OVER},
};

_Static_assert(ARRAY_SIZE(ROUTES) <= METRICS_MAX_ROUTES, "metrics count routes one by one");

const struct http_route *server_routes(size_t *ret_n)
{
	*ret_n = ARRAY_SIZE(ROUTES);
	return ROUTES;
}

void server_logf(struct server *srv, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	logfmt_vline(srv ? srv->log : NULL, "", fmt, ap);
	va_end(ap);
}

const char *log_safe(const char *s, char *buf, size_t size)
{
	size_t i = 0;
	for (; s && s[i] && i + 1 < size; i++)
		buf[i] = (s[i] == '"' || s[i] == '\\' || (unsigned char)s[i] < 0x20 || s[i] == 0x7f)
		             ? '_'
		             : s[i];
	buf[i] = '\0';
	return buf;
}

static void timer_freed(uv_handle_t *h)
{
	free(h);
}

uv_timer_t *server_timer_new(struct server *srv, uv_timer_cb cb, uint64_t ms, void *data)
{
	uv_timer_t *t = malloc(sizeof(*t));
	if (!t)
		return NULL;
	uv_timer_init(srv->loop, t);
	t->data = data;
	uv_timer_start(t, cb, ms, 0);
	return t;
}

void server_timer_free(uv_timer_t *t)
{
	if (t)
		uv_close((uv_handle_t *)t, timer_freed);
}

struct close_ctx {
	struct server *srv;
	void (*done)(void *);
	void *ud;
	int pending;
};

struct persist_ctx {
	struct server *srv;
	store_fn fn;
	store_done_fn done;
	void *ud;
};

static int persist_run(struct store_tx *tx, void *ud)
{
	struct persist_ctx *p = ud;
	return p->fn(tx, p->ud);
}

static void close_step(struct close_ctx *c);

static void persist_done(void *ud, int rc)
{
	struct persist_ctx *p = ud;
	struct server *srv = p->srv;
	if (rc < 0)
		server_logf(srv, "level=error msg=\"store write failed\" errno=%d", -rc);
	if (p->done)
		p->done(p->ud, rc);
	free(p);
	/* A closing server is freed only once the store has answered everything it was given. */
	if (--srv->persists_inflight == 0 && srv->closing)
		close_step(srv->closing);
}

void server_task_done(struct server *srv)
{
	/* ... and once the thread pool has finished its image work. */
	if (--srv->tasks_inflight == 0 && srv->closing_tasks)
		close_step(srv->closing_tasks);
}

int server_persist(struct server *srv, store_fn fn, store_done_fn done, void *ud)
{
	if (srv->store_closed)
		return -ESHUTDOWN;
	struct persist_ctx *p = malloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	*p = (struct persist_ctx){srv, fn, done, ud};
	int r = store_submit(srv->store, srv->loop, persist_run, persist_done, p);
	if (r < 0)
		free(p);
	else
		srv->persists_inflight++;
	return r;
}

/* Loading: every row into memory. */
static int load_workspace(const struct store_workspace *w, void *ud)
{
	struct server *srv = ud;
	struct workspace_rec *rec = calloc(1, sizeof(*rec));
	if (!rec)
		return -ENOMEM;
	rec->row = *w;
	return map_put(&srv->workspaces, rec->row.id, rec);
}

static int load_token(const struct store_token *t, void *ud)
{
	return auth_token_add(ud, t);
}

static int load_exec(const struct store_exec *e, void *ud)
{
	struct server *srv = ud;
	struct sandbox_rec *sb = map_get(&srv->sandboxes, e->sandbox_id);
	if (!sb)
		return 0;
	struct exec_rec *ex = calloc(1, sizeof(*ex));
	if (!ex)
		return -ENOMEM;
	ex->row = *e;
	ex->row.command_json = e->command_json ? strdup(e->command_json) : NULL;
	ex->sb = sb;
	sb->execs_live += !strcmp(ex->row.state, "pending") || !strcmp(ex->row.state, "running");
	return map_put(&sb->execs, ex->row.id, ex);
}

static int load_sandbox(const struct store_sandbox *s, void *ud)
{
	struct server *srv = ud;
	struct sandbox_rec *sb = calloc(1, sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	sb->row = *s;
	sb->row.spec_json = NULL;
	sb->row.tags_json = NULL;
	sb->spec = s->spec_json ? json_loads(s->spec_json, 0, NULL) : NULL;
	sb->tags = s->tags_json ? json_loads(s->tags_json, 0, NULL) : NULL;
	if (!sb->spec)
		sb->spec = json_object();
	if (!sb->tags)
		sb->tags = json_object();
	map_init(&sb->execs);
	return map_put(&srv->sandboxes, sb->row.id, sb);
}

static int load_worker(const struct store_worker *w, void *ud)
{
	struct server *srv = ud;
	struct worker_rec *rec = calloc(1, sizeof(*rec));
	if (!rec)
		return -ENOMEM;
	rec->row = *w;
	rec->row.info_json = w->info_json ? strdup(w->info_json) : NULL;
	rec->queue_tail = &rec->queue;
	/* Commands queued before this start are gone: every worker must register again (its next
	 * poll gets 409), so that the reconcile sees what it runs. */
	rec->row.epoch++;
	return map_put(&srv->workers, rec->row.id, rec);
}

static int load_all(struct store_tx *tx, void *ud)
{
	int r;
	if ((r = store_workspaces_load(tx, load_workspace, ud)) < 0 ||
	    (r = store_tokens_load(tx, load_token, ud)) < 0 ||
	    (r = store_workers_load(tx, load_worker, ud)) < 0 ||
	    (r = store_sandboxes_load(tx, load_sandbox, ud)) < 0 ||
	    (r = store_execs_load(tx, NULL, load_exec, ud)) < 0 ||
	    (r = store_images_load(tx, image_load, ud)) < 0 ||
	    (r = store_cache_load(tx, build_cache_load, ud)) < 0 ||
	    (r = store_blob_owners_load(tx, blob_owner_load, ud)) < 0)
		return r;
	return 0;
}

static int store_interrupted(struct store_tx *tx, void *ud)
{
	struct server *srv = ud;
	size_t pos = 0;
	struct image_rec *im;
	while ((im = map_next(&srv->images, &pos)))
		if (im->interrupted) {
			int r = store_image_put(tx, &im->row);
			if (r < 0)
				return r;
			im->interrupted = 0;
		}
	return 0;
}

/* First start: the default workspace and an admin token written to <data>/admin.token. */
struct bootstrap {
	struct store_workspace ws;
	struct store_token tok;
};

static int bootstrap_write(struct store_tx *tx, void *ud)
{
	struct bootstrap *b = ud;
	int r = store_workspace_put(tx, &b->ws);
	return r < 0 ? r : store_token_put(tx, &b->tok);
}

static int bootstrap(struct server *srv, struct sk_error *err)
{
	struct bootstrap b = {0};
	char secret[80], hex[65];
	int64_t now = clock_now_ms();
	if (id_new("ws-", b.ws.id, sizeof(b.ws.id)) < 0 ||
	    id_new("tk-", b.tok.id, sizeof(b.tok.id)) < 0 || random_hex(32, hex, sizeof(hex)) < 0)
		return sk_error_set(err, -EIO, "make the first workspace's ids");
	snprintf(b.ws.name, sizeof(b.ws.name), "default");
	b.ws.created_ms = now;
	snprintf(secret, sizeof(secret), "sk_%s", hex);
	snprintf(b.tok.workspace_id, sizeof(b.tok.workspace_id), "%s", b.ws.id);
	snprintf(b.tok.name, sizeof(b.tok.name), "admin");
	snprintf(b.tok.role, sizeof(b.tok.role), "admin");
	sha256_hex(secret, strlen(secret), b.tok.secret_hash);
	b.tok.created_ms = now;

	char path[4096], tmp[4200];
	snprintf(path, sizeof(path), "%s/admin.token", srv->cfg.data_dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return sk_error_errno(err, -errno, "create %s", tmp);
	char line[100];
	int n = snprintf(line, sizeof(line), "%s\n", secret);
	if (write(fd, line, (size_t)n) != n || fsync(fd) < 0) {
		int e = -errno;
		close(fd);
		unlink(tmp);
		return sk_error_errno(err, e ? e : -EIO, "write %s", tmp);
	}
	close(fd);
	int r = store_run_sync(srv->store, bootstrap_write, &b);
	if (r < 0) {
		unlink(tmp);
		return sk_error_errno(err, r, "store the first workspace");
	}
	if (rename(tmp, path) < 0)
		return sk_error_errno(err, -errno, "rename %s", tmp);
	load_workspace(&b.ws, srv);
	auth_token_add(srv, &b.tok);
	server_logf(srv,
	            "level=info msg=\"first start: workspace default and an admin token\" "
	            "token_file=%s",
	            path);
	return 0;
}

static int idem_expire_fn(struct store_tx *tx, void *ud)
{
	(void)ud;
	int r = store_idem_expire(tx, clock_now_ms());
	return r < 0 ? r : 0;
}

static void request_done(const struct http_request *req, int status, uint64_t duration_ns, void *ud)
{
	size_t route =
	    req->route && req->route >= ROUTES && req->route < ROUTES + ARRAY_SIZE(ROUTES)
	        ? (size_t)(req->route - ROUTES)
	        : METRICS_MAX_ROUTES;
	metrics_request(ud, route, status, duration_ns);
}

static void tick(uv_timer_t *t)
{
	struct server *srv = t->data;
	link_check_workers(srv);
	tunnels_close_token(srv, NULL, clock_now_ms());
	if (++srv->ticks % IDEM_EXPIRE_TICKS == 0 && !srv->stopping)
		server_persist(srv, idem_expire_fn, NULL, NULL);
	/* Uploads no build used and what failed builds stored are dropped once past their grace:
	 * nothing else would ask for a gc on a server where no image is ever deleted. */
	if (srv->ticks % IMAGE_GC_TICKS == 0)
		images_gc(srv);
}

/* A build's sandbox found at start: its build ended with the server that ran it (the image is
 * failed, interrupted), so it ends here too, and the worker's reconcile terminates and removes it
 * there. Left alone it ran on for up to an hour, egress and all, and kept the failed image from
 * being deleted. */
static void build_sandboxes_end(struct server *srv)
{
	size_t pos = 0;
	struct sandbox_rec *sb;
	while ((sb = map_next(&srv->sandboxes, &pos)))
		if (!sandbox_ended(sb) &&
		    json_is_true(json_object_get(sb->spec, "capture_layer"))) {
			sb->removed = 1; /* the reconcile sends terminate with remove */
			sandbox_set_ended(srv, sb, "terminated", -1, 0);
		}
}

int server_new(uv_loop_t *loop, struct store *store, const struct server_config *cfg,
               struct server **ret, struct sk_error *err)
{
	if (cfg->napt_sources > SERVER_APT_SOURCES_MAX)
		return sk_error_set(err, -EINVAL, "at most %d apt sources", SERVER_APT_SOURCES_MAX);
	for (size_t i = 0; i < cfg->napt_sources; i++)
		if (builder_apt_source_check(cfg->apt_sources[i], err) < 0)
			return sk_error_prefix(err, "apt source %.100s", cfg->apt_sources[i]);
	if (cfg->debian_mirror && builder_debian_mirror_check(cfg->debian_mirror, err) < 0)
		return sk_error_prefix(err, "Debian mirror");
	struct server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return sk_error_set(err, -ENOMEM, "out of memory");
	srv->loop = loop;
	srv->store = store;
	srv->cfg = *cfg;
	if (!srv->cfg.max_tunnels_per_ws)
		srv->cfg.max_tunnels_per_ws = SERVER_MAX_TUNNELS_PER_WS;
	if (!srv->cfg.max_stdin_inflight_bytes)
		srv->cfg.max_stdin_inflight_bytes = SERVER_MAX_STDIN_INFLIGHT_BYTES;
	if (!srv->cfg.max_bodies_bytes)
		srv->cfg.max_bodies_bytes = SERVER_MAX_BODIES_BYTES;
	if (!srv->cfg.max_blob_bytes)
		srv->cfg.max_blob_bytes = SERVER_MAX_BLOB_BYTES;
	if (!srv->cfg.max_images_per_ws)
		srv->cfg.max_images_per_ws = SERVER_MAX_IMAGES_PER_WS;
	if (!srv->cfg.ws_blob_bytes)
		srv->cfg.ws_blob_bytes = SERVER_WS_BLOB_BYTES;
	if (!srv->cfg.build_cache_ttl_s)
		srv->cfg.build_cache_ttl_s = SERVER_BUILD_CACHE_TTL_S;
	if (!srv->cfg.build_cache_max_per_ws)
		srv->cfg.build_cache_max_per_ws = SERVER_BUILD_CACHE_MAX_PER_WS;
	map_init(&srv->workspaces);
	map_init(&srv->tokens);
	map_init(&srv->sandboxes);
	map_init(&srv->workers);
	map_init(&srv->idem_inflight);
	map_init(&srv->file_calls);
	map_init(&srv->tunnels);
	map_init(&srv->images);
	map_init(&srv->build_cache);
	map_init(&srv->build_cache_ws);
	map_init(&srv->blob_owners);
	map_init(&srv->blob_usage);
	srv->imgs.root_fd = -1;
	sha256_hex(cfg->worker_secret, strlen(cfg->worker_secret), srv->worker_secret_hash);

	char root[4200];
	if (cfg->images_root)
		snprintf(root, sizeof(root), "%s", cfg->images_root);
	else
		snprintf(root, sizeof(root), "%s/images", cfg->data_dir);
	int r = img_store_open(&srv->imgs, root, err);
	if (r < 0)
		goto fail;
	srv->imgs_open = 1;
	r = store_run_sync(store, load_all, srv);
	if (r < 0) {
		sk_error_errno(err, r, "load the state store");
		goto fail;
	}
	if (srv->workspaces.len == 0 && (r = bootstrap(srv, err)) < 0)
		goto fail;
	if ((r = store_run_sync(store, store_interrupted, srv)) < 0) {
		sk_error_errno(err, r, "mark interrupted builds failed");
		goto fail;
	}

	struct http_server_config hc = {
	    .routes = ROUTES,
	    .nroutes = ARRAY_SIZE(ROUTES),
	    .gate = auth_gate,
	    .gate_ud = srv,
	    .ud = srv,
	    .on_done = request_done,
	};
	hc.limits.max_body_bytes = SERVER_MAX_JSON_BODY_BYTES;
	hc.limits.max_bodies_bytes = srv->cfg.max_bodies_bytes;
	if ((r = http_server_new(loop, &hc, &srv->http, err)) < 0)
		goto fail;
	if ((r = http_server_listen(srv->http, cfg->listen, err)) < 0) {
		http_server_close(srv->http, NULL, NULL);
		srv->http = NULL;
		goto fail;
	}
	uv_timer_init(loop, &srv->tick);
	srv->tick.data = srv;
	uv_timer_start(&srv->tick, tick, TICK_MS, TICK_MS);
	timeouts_start(srv);
	build_sandboxes_end(srv);
	*ret = srv;
	return 0;
fail:
	srv->http = NULL;
	server_close(srv, NULL, NULL);
	return r;
}

int server_port(const struct server *srv)
{
	return http_server_port(srv->http);
}

static void free_all(struct server *srv)
{
	prioq_release(&srv->timeouts); /* it points into the sandboxes */
	builder_free_all(srv);         /* ... and so do builds */
	size_t pos = 0;
	void *v;
	while ((v = map_next(&srv->workspaces, &pos)))
		free(v);
	pos = 0;
	while ((v = map_next(&srv->tokens, &pos)))
		free(v);
	pos = 0;
	struct sandbox_rec *sb;
	while ((sb = map_next(&srv->sandboxes, &pos)))
		sandbox_rec_free(sb);
	pos = 0;
	struct worker_rec *w;
	while ((w = map_next(&srv->workers, &pos))) {
		while (w->queue) {
			struct command *c = w->queue;
			w->queue = c->next;
			json_decref(c->body);
			free(c);
		}
		json_decref(w->capacity);
		store_worker_release(&w->row);
		free(w);
	}
	pos = 0;
	while ((v = map_next(&srv->idem_inflight, &pos)))
		free(v);
	map_release(&srv->workspaces);
	map_release(&srv->tokens);
	map_release(&srv->sandboxes);
	map_release(&srv->workers);
	map_release(&srv->idem_inflight);
	map_release(&srv->file_calls);
	map_release(&srv->tunnels);
	pos = 0;
	struct image_rec *im;
	while ((im = map_next(&srv->images, &pos)))
		image_rec_free(im);
	map_release(&srv->images);
	build_cache_free(srv);
	blob_owners_free(srv);
	if (srv->imgs_open)
		img_store_close(&srv->imgs);
}

void server_shutdown(struct server *srv)
{
	srv->stopping = 1;
	timeouts_stop(srv);
	waiters_cancel_all(srv);
	file_calls_cancel_all(srv);
	builder_shutdown(srv);
	blobs_shutdown(srv);
	tunnels_close(srv, NULL, NULL, 503, "the server is stopping");
	link_release_polls(srv);
}

static void close_step(struct close_ctx *c)
{
	if (--c->pending > 0)
		return;
	free_all(c->srv);
	free(c->srv);
	if (c->done)
		c->done(c->ud);
	free(c);
}

static void http_closed(void *ud)
{
	close_step(ud);
}

static void timer_closed(uv_handle_t *h)
{
	close_step(h->data);
}

void server_close(struct server *srv, void (*done)(void *), void *ud)
{
	struct close_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		abort(); /* nothing sane to do while shutting down */
	*c = (struct close_ctx){srv, done, ud, 1};
	if (!srv->stopping)
		server_shutdown(srv);
	if (srv->persists_inflight > 0) {
		c->pending++;
		srv->closing = c;
	}
	if (srv->tasks_inflight > 0) {
		c->pending++;
		srv->closing_tasks = c;
	}
	if (srv->http) {
		c->pending++;
		http_server_close(srv->http, http_closed, c);
	}
	if (srv->tick.loop) {
		c->pending++;
		srv->tick.data = c;
		uv_close((uv_handle_t *)&srv->tick, timer_closed);
	}
	if (srv->timeouts_timer.loop) {
		c->pending++;
		srv->timeouts_timer.data = c;
		uv_close((uv_handle_t *)&srv->timeouts_timer, timer_closed);
	}
	close_step(c);
}
