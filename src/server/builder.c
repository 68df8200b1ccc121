/* Image builds: the base resolved to a manifest, then each step in turn, every step keyed by
 * SHA-256(its parent's key, the step's canonical JSON, the digests of its inputs), so that a
 * key already in the build cache costs nothing. env, workdir and entrypoint change the config
 * only; copy makes a layer from a stored tar; run and apt run in a build sandbox on the parent
 * image whose upper layer the worker captures. Two builds that reach the same key at once: the
 * second waits for the first's result instead of doing the work again.
 *
 * Everything slow (ingesting a directory, importing an archive, loading and applying
 * manifests) runs on libuv's thread pool; the loop only moves a build from step to step. A
 * build's thread work touches nothing but its own struct task. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../image/archive.h"
#include "../image/busybox.h"
#include "../image/manifest.h"
#include "../lib/clock.h"
#include "../lib/encoding.h"
#include "../lib/macros.h"
#include "../runtime/spec.h"
#include "server.h"

#define BUILD_SANDBOX_TIMEOUT_S 3600.0
#define DEBIAN_TAR_DIR          "/var/cache/skiff"
#define DEBIAN_TAR_TIMEOUT_S    1800          /* mmdebstrap on a slow or unreachable mirror */
#define BUILD_OUTPUT_MAX_BYTES  (1024 * 1024) /* of a step's stdout and of its stderr, logged */

enum task_kind {
	TASK_BUSYBOX, /* ingest <data>/rootfs/busybox */
	TASK_DIR,     /* ingest arg */
	TASK_OCI,     /* import the OCI archive blob arg */
	TASK_TAR,     /* the root file system tar at arg (made with mmdebstrap when missing) */
	TASK_COPY,    /* the tar blob arg at dest onto manifest */
	TASK_LAYER,   /* the layer manifest arg onto manifest */
	TASK_STATS,   /* size and files of manifest */
	TASK_GC,      /* every unreferenced blob */
};

struct task {
	uv_work_t work;
	uv_after_work_cb after;
	struct server *srv;
	struct build *b; /* NULL for gc */
	enum task_kind kind;
	struct img_store *store;
	char data_dir[4096];
	char arg[4096];
	char dest[IMG_PATH_MAX + 1];
	char manifest[IMG_DIGEST_HEX]; /* in */
	/* out */
	char out_manifest[IMG_DIGEST_HEX];
	char out_layer[IMG_DIGEST_HEX];
	struct img_config cfg; /* TASK_OCI */
	int has_cfg;
	uint64_t size, files;
	char **live; /* TASK_GC */
	struct img_gc_stats stats;
	size_t nlive;
	size_t cache_expired; /* TASK_GC: build cache entries evicted for it */
	int rc;
	struct sk_error err;
};

struct build {
	struct build *next;
	struct server *srv;
	struct image_rec *im;
	json_t *steps; /* borrowed from im->spec */
	size_t nsteps;
	size_t step;                   /* the step being made */
	char key[IMG_DIGEST_HEX];      /* the key of what is built so far */
	char step_key[IMG_DIGEST_HEX]; /* the key of the step being made; "" between steps */
	char manifest[IMG_DIGEST_HEX];
	json_t *config;
	int64_t step_start_ms;
	int busy;                 /* step_key's work is under way (others wait for it) */
	struct build *waiting_on; /* a build making the same step */
	struct sandbox_rec *sb;   /* a run step's sandbox */
	int output_stream;        /* reading its stdout (0), then stderr (1) */
	struct task *task;        /* thread work in flight */
	/* A snapshot: the layer to apply onto the base, and the call to answer. */
	char snap_layer[IMG_DIGEST_HEX];
	struct api_call *call;
	int deferred; /* it came while a gc ran: it starts once that is done */
};

static void build_step(struct build *b);
static void build_fail(struct build *b, const char *fmt, ...) _printf_(2, 3);

/* ---- keys and the cache ---- */

static void key_of(const char *parts[], size_t n, char out[IMG_DIGEST_HEX])
{
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += strlen(parts[i]) + 1;
	char *buf = malloc(len + 1), *p = buf;
	if (!buf) {
		out[0] = '\0';
		return;
	}
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(parts[i]);
		memcpy(p, parts[i], l);
		p += l;
		*p++ = '\n';
	}
	sha256_hex(buf, len, out);
	free(buf);
}

static char *canonical(json_t *v)
{
	return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
}

/* An entry of the build cache in memory: its row, the last use the store holds, and its place
 * in its workspace's list, least recently used first (eviction takes from the front without
 * looking at the rest). */
struct cache_entry {
	struct store_cache row;
	int64_t stored_used_ms;
	struct cache_entry *older, *newer;
};

/* A workspace's entries (srv->build_cache_ws; "" for the shared bases and rows of before). */
struct cache_ws {
	char id[ID_MAX_BYTES];
	struct cache_entry *oldest, *newest;
	size_t n;
};

/* A hit is persisted only once the stored last use is this old: eviction works in days, and a
 * commit per hit would put the store's disk on every cached step. A clean stop persists the
 * rest (builder_shutdown); a crash may forget up to this much of an entry's last use. */
#define CACHE_TOUCH_MS (3600 * 1000)

static struct cache_entry *cache_find(struct server *srv, const char *key)
{
	return map_get(&srv->build_cache, key);
}

static void cache_entry_free(struct cache_entry *e)
{
	store_cache_release(&e->row);
	free(e);
}

static struct cache_ws *cache_ws_of(struct server *srv, const char *workspace)
{
	return map_get(&srv->build_cache_ws, workspace);
}

/* e as its workspace's most recently used (its list made if need be). */
static int cache_link(struct server *srv, struct cache_entry *e)
{
	struct cache_ws *ws = cache_ws_of(srv, e->row.workspace_id);
	if (!ws) {
		ws = calloc(1, sizeof(*ws));
		if (!ws)
			return -ENOMEM;
		snprintf(ws->id, sizeof(ws->id), "%s", e->row.workspace_id);
		if (map_put(&srv->build_cache_ws, ws->id, ws) < 0) {
			free(ws);
			return -ENOMEM;
		}
	}
	e->older = ws->newest;
	e->newer = NULL;
	if (ws->newest)
		ws->newest->newer = e;
	else
		ws->oldest = e;
	ws->newest = e;
	ws->n++;
	return 0;
}

static void cache_unlink(struct server *srv, struct cache_entry *e)
{
	struct cache_ws *ws = cache_ws_of(srv, e->row.workspace_id);
	if (!ws)
		return;
	if (e->older)
		e->older->newer = e->newer;
	else
		ws->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		ws->newest = e->older;
	e->older = e->newer = NULL;
	if (--ws->n == 0) {
		map_remove(&srv->build_cache_ws, ws->id);
		free(ws);
	}
}

static void cache_to_newest(struct server *srv, struct cache_entry *e)
{
	struct cache_ws *ws = cache_ws_of(srv, e->row.workspace_id);
	if (!ws || ws->newest == e)
		return;
	if (e->older) /* e->newer is not NULL: e is not the newest */
		e->older->newer = e->newer;
	else
		ws->oldest = e->newer;
	e->newer->older = e->older;
	e->older = ws->newest;
	e->newer = NULL;
	ws->newest->newer = e;
	ws->newest = e;
}

/* Rows come least recently used first (store_cache_load), so appending keeps the lists in
 * order. */
int build_cache_load(const struct store_cache *c, void *ud)
{
	struct server *srv = ud;
	struct cache_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->row = *c;
	/* Without its config a hit would take the step as made with no layer: a wrong image. */
	e->row.config_json = c->config_json ? strdup(c->config_json) : NULL;
	if (c->config_json && !e->row.config_json) {
		free(e);
		return -ENOMEM;
	}
	e->stored_used_ms = c->used_ms;
	int r = map_put(&srv->build_cache, e->row.key, e);
	if (r < 0) {
		cache_entry_free(e);
		return r;
	}
	r = cache_link(srv, e);
	if (r < 0) {
		map_remove(&srv->build_cache, e->row.key);
		cache_entry_free(e);
	}
	return r;
}

void build_cache_free(struct server *srv)
{
	size_t pos = 0;
	struct cache_entry *e;
	while ((e = map_next(&srv->build_cache, &pos)))
		cache_entry_free(e);
	map_release(&srv->build_cache);
	struct cache_ws *ws;
	pos = 0;
	while ((ws = map_next(&srv->build_cache_ws, &pos)))
		free(ws);
	map_release(&srv->build_cache_ws);
}

/* What the store is told: a whole row (put), or a key and a time (touch, delete). */
struct cache_write {
	struct store_cache row;
	int (*fn)(struct store_tx *tx, struct cache_write *w);
};

static int cache_put_write(struct store_tx *tx, struct cache_write *w)
{
	return store_cache_put(tx, &w->row);
}

static int cache_touch_write(struct store_tx *tx, struct cache_write *w)
{
	return store_cache_touch(tx, w->row.key, w->row.used_ms);
}

/* Deleted already is as good (an entry replaced, then evicted, is deleted once). */
static int cache_delete_write(struct store_tx *tx, struct cache_write *w)
{
	int r = store_cache_delete(tx, w->row.key);
	return r == -ENOENT ? 0 : r;
}

static int cache_write_fn(struct store_tx *tx, void *ud)
{
	struct cache_write *w = ud;
	return w->fn(tx, w);
}

static void cache_write_done(void *ud, int rc)
{
	(void)rc;
	struct cache_write *w = ud;
	store_cache_release(&w->row);
	free(w);
}

/* Persist what happened to e (best effort: the memory is what builds use, and a write lost
 * costs a step made again, or an entry evicted at the next start's gc). */
static void cache_persist(struct server *srv, const struct cache_entry *e,
                          int (*fn)(struct store_tx *tx, struct cache_write *w))
{
	struct cache_write *w = calloc(1, sizeof(*w));
	if (!w)
		return;
	w->row = e->row;
	w->row.config_json = NULL;
	w->fn = fn;
	if (fn == cache_put_write && e->row.config_json &&
	    !(w->row.config_json = strdup(e->row.config_json))) {
		free(w);
		return;
	}
	if (server_persist(srv, cache_write_fn, cache_write_done, w) < 0)
		cache_write_done(w, 0);
}

/* A build took e's result. */
static void cache_used(struct server *srv, struct cache_entry *e)
{
	cache_to_newest(srv, e);
	e->row.used_ms = clock_now_ms();
	if (e->row.used_ms - e->stored_used_ms >= CACHE_TOUCH_MS) {
		e->stored_used_ms = e->row.used_ms;
		cache_persist(srv, e, cache_touch_write);
	}
}

/* key is what a build in flight is making, or waits for another to make (the same step_key),
 * or what it stands on (its key: the step it took last). */
static int cache_in_use(struct server *srv, const char *key)
{
	for (struct build *b = srv->builds; b; b = b->next)
		if (!strcmp(b->key, key) || !strcmp(b->step_key, key))
			return 1;
	return 0;
}

static void cache_evict(struct server *srv, struct cache_entry *e)
{
	cache_unlink(srv, e);
	map_remove(&srv->build_cache, e->row.key);
	cache_persist(srv, e, cache_delete_write);
	cache_entry_free(e);
}

/* Keep workspace's entries to the limit, evicting its least recently used (never another
 * workspace's, never one a build in flight needs: those are passed over). */
static void cache_trim(struct server *srv, const char *workspace)
{
	struct cache_ws *ws = cache_ws_of(srv, workspace);
	/* The limit is at least 1: evicting never empties (and frees) ws here. */
	struct cache_entry *e = ws ? ws->oldest : NULL;
	while (e && ws->n > srv->cfg.build_cache_max_per_ws) {
		struct cache_entry *next = e->newer;
		if (!cache_in_use(srv, e->row.key))
			cache_evict(srv, e);
		e = next;
	}
}

/* Entries no build used for the TTL, at a gc (no build in flight then: gc waits for them). */
static size_t cache_expire(struct server *srv)
{
	int64_t before = clock_now_ms() - srv->cfg.build_cache_ttl_s * 1000;
	size_t pos = 0, n = 0;
	struct cache_entry *e;
	while ((e = map_next(&srv->build_cache, &pos)))
		if (e->row.used_ms < before && !cache_in_use(srv, e->row.key)) {
			cache_evict(srv, e);
			n++;
		}
	return n;
}

/* Remember what key made (for workspace's builds; "" for all): in memory now, in the store
 * soon. An entry there already with another manifest is replaced: its own was gone from the
 * store, or the build would have taken it. */
static void cache_add(struct server *srv, const char *key, const char *workspace,
                      const char *manifest, json_t *config, const char *layer)
{
	struct cache_entry *old = cache_find(srv, key);
	if (old && !strcmp(old->row.manifest, manifest)) {
		cache_used(srv, old);
		return;
	}
	json_t *v = json_pack("{s:O, s:o}", "config", config, "layer",
	                      layer && layer[0] ? json_string(layer) : json_null());
	struct cache_entry *e = calloc(1, sizeof(*e));
	char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
	json_decref(v);
	if (!e || !text) {
		free(e);
		free(text);
		return;
	}
	snprintf(e->row.key, sizeof(e->row.key), "%s", key);
	snprintf(e->row.manifest, sizeof(e->row.manifest), "%s", manifest);
	snprintf(e->row.workspace_id, sizeof(e->row.workspace_id), "%s", workspace);
	e->row.created_ms = e->row.used_ms = e->stored_used_ms = clock_now_ms();
	e->row.config_json = text;
	if (old)
		cache_unlink(srv, old);
	int r = map_put(&srv->build_cache, e->row.key, e);
	if (r < 0 || (r = cache_link(srv, e)) < 0)
		map_remove(&srv->build_cache, key); /* as if never made: old's manifest is gone */
	if (old)
		cache_entry_free(old);
	if (r < 0) {
		cache_entry_free(e);
		return;
	}
	cache_persist(srv, e, cache_put_write);
	cache_trim(srv, workspace);
}

/* The entry of key whose manifest is in the store, else NULL (a miss: the step is made again,
 * and its entry replaced). A manifest goes only with its entry, unless removed by hand or lost
 * to trouble on the disk; a build must not fail for that. Only the manifest is looked at (one
 * stat): the blobs it names are the store's to keep. */
static struct cache_entry *cache_lookup(struct build *b, const char *key)
{
	struct cache_entry *e = cache_find(b->srv, key);
	if (!e)
		return NULL;
	if (!img_blob_exists(&b->srv->imgs, e->row.manifest)) {
		image_logf(b->srv, b->im,
		           "cache entry %s: its manifest sha256:%s is gone from the "
		           "store, made again",
		           key, e->row.manifest);
		return NULL;
	}
	cache_used(b->srv, e);
	return e;
}

/* ---- thread work ---- */

static void root_entry(struct img_manifest *m, struct sk_error *err, int *rc)
{
	struct img_entry root = {.path = "/", .type = IMG_DIR, .mode = 0755};
	*rc = img_manifest_add(m, &root, err);
}

static int save(struct task *t, struct img_manifest *m)
{
	return img_manifest_save(t->store, m, t->out_manifest, &t->err);
}

static int run_busybox(struct task *t)
{
	char root[4096];
	int r = image_busybox_ensure(t->data_dir, getenv(BUSYBOX_PATH_ENV), root, sizeof(root),
	                             &t->err);
	if (r < 0)
		return r;
	snprintf(t->arg, sizeof(t->arg), "%s", root);
	return -ENOTDIR; /* go on as a directory */
}

static int run_dir(struct task *t)
{
	_cleanup_close_ int fd = open(t->arg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sk_error_errno(&t->err, -errno, "open %s", t->arg);
	struct img_manifest m;
	img_manifest_init(&m);
	int r = img_ingest_dir(t->store, fd, 0, &img_default_limits, &m, &t->err);
	if (r >= 0)
		r = save(t, &m);
	img_manifest_free(&m);
	return r;
}

static int run_oci(struct task *t)
{
	_cleanup_close_ int fd = -1;
	uint64_t size;
	int r = img_blob_open(t->store, t->arg, &fd, &size, &t->err);
	if (r < 0)
		return r;
	struct img_manifest m;
	img_manifest_init(&m);
	r = img_oci_import(t->store, fd, &img_default_limits, &m, &t->cfg, &t->err);
	if (r >= 0) {
		t->has_cfg = 1;
		r = save(t, &m);
	}
	img_manifest_free(&m);
	return r;
}

/* A tar of a whole root file system: one layer onto an empty image. */
static int tar_import(struct task *t, int fd)
{
	struct img_manifest base, layer;
	img_manifest_init(&base);
	img_manifest_init(&layer);
	int r;
	root_entry(&base, &t->err, &r);
	if (r >= 0)
		r = img_layer_from_tar(t->store, fd, "/", IMG_TAR_WHITEOUTS, &img_default_limits,
		                       &layer, &t->err);
	if (r >= 0)
		r = img_manifest_apply(&base, &layer, &t->err);
	if (r >= 0)
		r = save(t, &base);
	img_manifest_free(&base);
	img_manifest_free(&layer);
	return r;
}

int builder_debian_mirror_check(const char *url, struct sk_error *err)
{
	size_t len = strlen(url);
	if (!len || len > SERVER_APT_SOURCE_MAX_BYTES)
		return sk_error_set(err, -EINVAL, "1 to %d bytes", SERVER_APT_SOURCE_MAX_BYTES);
	if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8) &&
	    strncmp(url, "file:///", 8))
		return sk_error_set(err, -EINVAL,
		                    "an http://, https:// or file:/// URL is expected");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)url[i];
		/* It goes into mmdebstrap's command line in single quotes. */
		if (c <= 0x20 || c > 0x7e || c == '\'' || c == '\\')
			return sk_error_set(
			    err, -EINVAL,
			    "byte %zu: a space, quote, backslash, control or non-ASCII "
			    "character",
			    i + 1);
	}
	return 0;
}

/* Where the Debian base tarballs are: DEBIAN_TAR_DIR, or SKIFF_DEBIAN_TAR_DIR (tests). */
static const char *debian_tar_dir(void)
{
	const char *dir = getenv("SKIFF_DEBIAN_TAR_DIR");
	return dir && dir[0] == '/' ? dir : DEBIAN_TAR_DIR;
}

/* Make the tar with mmdebstrap when it is missing (this needs the network: minutes). */
static int debian_tar(struct task *t)
{
	if (access(t->arg, R_OK) == 0)
		return 0;
	int python = strstr(t->arg, "python3") != NULL;
	const char *mirror = t->srv->cfg.debian_mirror;
	char tmp[4200], cmd[9400];
	snprintf(tmp, sizeof(tmp), "%s.tmp", t->arg);
	mkdir(debian_tar_dir(), 0755);
	snprintf(cmd, sizeof(cmd),
	         "timeout %d mmdebstrap --quiet --variant=minbase %s bookworm '%s' %s%s%s "
	         "</dev/null >/dev/null 2>&1",
	         DEBIAN_TAR_TIMEOUT_S, python ? "--include=python3" : "", tmp, mirror ? "'" : "",
	         mirror ? mirror : "", mirror ? "'" : "");
	int st = system(cmd);
	if (st != 0 || rename(tmp, t->arg) < 0) {
		unlink(tmp);
		return sk_error_set(&t->err, -EHOSTUNREACH,
		                    "%s is missing and mmdebstrap could not make it (exit status "
		                    "%d): the Debian mirror (%s) must be reachable, or run "
		                    "scripts/install-deps",
		                    t->arg, st, mirror ? mirror : "deb.debian.org");
	}
	return 0;
}

static int run_tar(struct task *t)
{
	int r = debian_tar(t);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = open(t->arg, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return sk_error_errno(&t->err, -errno, "open %s", t->arg);
	return tar_import(t, fd);
}

/* t->manifest with layer applied, saved as t->out_manifest. */
static int apply_save(struct task *t, const struct img_manifest *layer)
{
	struct img_manifest base;
	img_manifest_init(&base);
	int r = img_manifest_load(t->store, t->manifest, &img_default_limits, &base, &t->err);
	if (r >= 0)
		r = img_manifest_apply(&base, layer, &t->err);
	if (r >= 0)
		r = save(t, &base);
	img_manifest_free(&base);
	return r;
}

static int run_copy(struct task *t)
{
	_cleanup_close_ int fd = -1;
	uint64_t size;
	int r = img_blob_open(t->store, t->arg, &fd, &size, &t->err);
	if (r < 0)
		return r;
	struct img_manifest layer;
	img_manifest_init(&layer);
	r = img_layer_from_tar(t->store, fd, t->dest, 0, &img_default_limits, &layer, &t->err);
	if (r >= 0)
		r = img_manifest_save(t->store, &layer, t->out_layer, &t->err);
	if (r >= 0)
		r = apply_save(t, &layer);
	img_manifest_free(&layer);
	return r;
}

/* The layer manifest t->arg (a build step's or a snapshot's, from the worker). */
static int run_layer(struct task *t)
{
	struct img_manifest layer;
	img_manifest_init(&layer);
	char *text = NULL;
	size_t len = 0;
	int r = img_blob_read(t->store, t->arg, 256u << 20, &text, &len, &t->err);
	if (r >= 0)
		r = img_manifest_decode(text, len, 1, &img_default_limits, &layer, &t->err);
	free(text);
	if (r >= 0)
		r = apply_save(t, &layer);
	img_manifest_free(&layer);
	return r;
}

static int run_stats(struct task *t)
{
	struct img_manifest m;
	img_manifest_init(&m);
	int r = img_manifest_load(t->store, t->manifest, &img_default_limits, &m, &t->err);
	t->files = m.n;
	t->size = 0;
	for (size_t i = 0; i < m.n; i++)
		if (m.e[i].type == IMG_REG)
			t->size += m.e[i].size;
	img_manifest_free(&m);
	return r;
}

static int run_gc(struct task *t)
{
	return img_store_gc(t->store, (const char *const *)t->live, t->nlive, IMAGE_BLOB_GRACE_S,
	                    &t->stats, &t->err);
}

static void task_run(uv_work_t *w)
{
	struct task *t = w->data;
	switch (t->kind) {
	case TASK_BUSYBOX:
		t->rc = run_busybox(t);
		if (t->rc == -ENOTDIR)
			t->rc = run_dir(t);
		break;
	case TASK_DIR: t->rc = run_dir(t); break;
	case TASK_OCI: t->rc = run_oci(t); break;
	case TASK_TAR: t->rc = run_tar(t); break;
	case TASK_COPY: t->rc = run_copy(t); break;
	case TASK_LAYER: t->rc = run_layer(t); break;
	case TASK_STATS: t->rc = run_stats(t); break;
	case TASK_GC: t->rc = run_gc(t); break;
	}
	if (t->rc < 0 && !t->err.msg[0])
		sk_error_set(&t->err, t->rc, "%s", strerror(-t->rc));
}

static void task_free(struct task *t)
{
	img_config_free(&t->cfg);
	for (size_t i = 0; i < t->nlive; i++)
		free(t->live[i]);
	free(t->live);
	free(t);
}

static struct task *task_new(struct server *srv, struct build *b, enum task_kind kind)
{
	struct task *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->srv = srv;
	t->b = b;
	t->kind = kind;
	t->store = &srv->imgs;
	t->work.data = t;
	snprintf(t->data_dir, sizeof(t->data_dir), "%s", srv->cfg.data_dir);
	if (b)
		snprintf(t->manifest, sizeof(t->manifest), "%s", b->manifest);
	return t;
}

/* Every task ends here: the server waits for them before it is freed (server_close), and
 * once it stops, what a build would do next is not done. */
static void task_after(uv_work_t *w, int status)
{
	struct task *t = w->data;
	struct server *srv = t->srv;
	if (srv->stopping && t->b) {
		t->b->task = NULL;
		task_free(t);
	} else {
		t->after(w, status);
	}
	server_task_done(srv);
}

static void task_submit(struct task *t, uv_after_work_cb after)
{
	if (t->b)
		t->b->task = t;
	t->after = after;
	t->srv->tasks_inflight++;
	int r = uv_queue_work(t->srv->loop, &t->work, task_run, task_after);
	if (r < 0) {
		t->rc = r;
		sk_error_set(&t->err, r, "queue the work: %s", uv_strerror(r));
		task_after(&t->work, r);
	}
}

/* ---- the build ---- */

/* The builds that waited for b's step look again: in the cache (b made it), or they make it
 * themselves (b failed). Looking may end a build there and then (its next step fails at once,
 * or each is cached up to a failure) and free it: the list is looked at from its start again
 * after each. */
static void waiters_go(struct server *srv, struct build *b)
{
	for (int found = 1; found;) {
		found = 0;
		for (struct build *o = srv->builds; o; o = o->next)
			if (o->waiting_on == b) {
				o->waiting_on = NULL;
				build_step(o);
				found = 1;
				break;
			}
	}
}

static void build_free(struct build *b)
{
	struct server *srv = b->srv;
	for (struct build **p = &srv->builds; *p; p = &(*p)->next)
		if (*p == b) {
			*p = b->next;
			break;
		}
	waiters_go(srv, b);
	if (b->sb)
		b->sb->build = NULL;
	if (b->im)
		b->im->build = NULL;
	json_decref(b->config);
	free(b);
}

static void build_end(struct build *b)
{
	struct server *srv = b->srv;
	struct image_rec *im = b->im;
	struct api_call *call = TAKE_PTR(b->call);
	if (call && !strcmp(im->row.state, "ready"))
		api_reply_json(call, 201, json_pack("{s:s}", "id", im->row.id));
	else if (call)
		api_reply_error(call, 500, "internal", "snapshot: %s",
		                im->row.error ? im->row.error : "failed");
	image_persist(srv, im, NULL);
	image_log_end(srv, im);
	build_free(b);
	/* Only a gc asked for while builds ran (a delete): a build's end frees nothing by itself
	 * (what a failed one stored is young, spared by the grace), and a gc walks the whole
	 * store (seconds for a few GiB), holding the next build back while it runs. */
	if (srv->gc_again && !srv->gc_running) {
		srv->gc_again = 0;
		images_gc(srv);
	}
}

static void build_fail(struct build *b, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* File names and commands are bytes, and truncation may cut a character: the error goes
	 * into the image's JSON, which must be UTF-8. */
	utf8_sanitize(msg);
	struct image_rec *im = b->im;
	snprintf(im->row.state, sizeof(im->row.state), "failed");
	free(im->row.error);
	im->row.error = strdup(msg);
	image_logf(b->srv, im, "build failed: %s", msg);
	char safe[256];
	server_logf(b->srv, "level=warn msg=\"image build failed\" image=%s error=\"%s\"",
	            im->row.id, log_safe(msg, safe, sizeof(safe)));
	build_end(b);
}

/* The step being made is done: manifest and config are its result. */
static void step_done(struct build *b, const char *layer, int cached)
{
	struct server *srv = b->srv;
	if (!cached)
		cache_add(srv, b->step_key, b->im->row.workspace_id, b->manifest, b->config, layer);
	if (b->step < b->nsteps) {
		double secs = cached ? 0 : (clock_now_ms() - b->step_start_ms) / 1000.0;
		json_array_append_new(
		    b->im->layers,
		    json_pack("{s:I, s:s, s:b, s:o, s:f}", "step", (json_int_t)b->step, "key",
		              b->step_key, "cached", cached, "layer",
		              layer && layer[0] ? json_sprintf("sha256:%s", layer) : json_null(),
		              "seconds", secs));
		image_logf(srv, b->im, "step %zu: %s", b->step + 1, cached ? "cached" : "done");
	}
	snprintf(b->key, sizeof(b->key), "%s", b->step_key);
	b->step_key[0] = '\0';
	b->busy = 0;
	b->step++;
	/* Builds that waited for this key find it in the cache now. */
	waiters_go(srv, b);
	build_step(b);
}

static void stats_done(uv_work_t *w, int status)
{
	(void)status;
	struct task *t = w->data;
	struct build *b = t->b;
	b->task = NULL;
	if (t->rc < 0) {
		build_fail(b, "read the image's manifest: %s", t->err.msg);
	} else {
		struct image_rec *im = b->im;
		snprintf(im->row.state, sizeof(im->row.state), "ready");
		snprintf(im->row.manifest, sizeof(im->row.manifest), "%s", b->manifest);
		im->row.size_bytes = (int64_t)t->size;
		im->row.files = (int64_t)t->files;
		im->row.ready_ms = clock_now_ms();
		json_decref(im->config);
		im->config = json_incref(b->config);
		image_logf(b->srv, im, "ready: sha256:%s, %llu files, %llu bytes", b->manifest,
		           (unsigned long long)t->files, (unsigned long long)t->size);
		server_logf(b->srv, "level=info msg=\"image ready\" image=%s", im->row.id);
		build_end(b);
	}
	task_free(t);
}

/* The config an OCI image gives: env, workdir, entrypoint, and cmd when it has one (the
 * arguments a create's empty command stands for; a command given replaces them, as Docker's
 * CMD is replaced by the arguments of `docker run`). */
static json_t *oci_config(const struct img_config *c)
{
	json_t *env = json_object(), *ep = json_array(), *cmd = json_array();
	for (size_t i = 0; i < c->nenv; i++) {
		const char *eq = strchr(c->env[i], '=');
		if (eq && eq != c->env[i]) {
			char key[256];
			snprintf(key, sizeof(key), "%.*s", (int)(eq - c->env[i]), c->env[i]);
			json_object_set_new(env, key, json_string(eq + 1));
		}
	}
	for (size_t i = 0; i < c->nentrypoint; i++)
		json_array_append_new(ep, json_string(c->entrypoint[i]));
	for (size_t i = 0; i < c->ncmd; i++)
		json_array_append_new(cmd, json_string(c->cmd[i]));
	json_t *cfg =
	    json_pack("{s:o, s:s, s:o}", "env", env, "workdir",
	              c->workdir && c->workdir[0] == '/' ? c->workdir : "/", "entrypoint", ep);
	if (cfg && c->ncmd)
		json_object_set_new(cfg, "cmd", cmd);
	else
		json_decref(cmd);
	return cfg;
}

static void snap_applied(uv_work_t *w, int status)
{
	(void)status;
	struct task *t = w->data;
	struct build *b = t->b;
	b->task = NULL;
	if (t->rc < 0) {
		build_fail(b, "apply the snapshot's layer: %s", t->err.msg);
	} else {
		snprintf(b->manifest, sizeof(b->manifest), "%s", t->out_manifest);
		json_array_append_new(b->im->layers,
		                      json_pack("{s:i, s:s, s:b, s:s++, s:f}", "step", 0, "key", "",
		                                "cached", 0, "layer", "sha256:", t->arg, "seconds",
		                                0.0));
		build_step(b); /* no steps: the stats, then ready */
	}
	task_free(t);
}

/* The base is a manifest now: its key, then the steps. */
static void base_ready(struct build *b)
{
	char *cfg = canonical(b->config);
	/* The workspace is part of every step's key: a cache shared across workspaces would tell
	 * one that another ran the very same step ("cached", or "waiting for" its build), which
	 * confirms a guess at a secret in a step's text, and would hand it the other's output
	 * of a step whose result is not a function of its text (a download). The blobs
	 * themselves are still stored once. */
	const char *parts[] = {"base", b->im->row.workspace_id, b->manifest, cfg ? cfg : ""};
	key_of(parts, ARRAY_SIZE(parts), b->key);
	free(cfg);
	image_logf(b->srv, b->im, "base: sha256:%s", b->manifest);
	b->step = 0;
	if (b->snap_layer[0]) {
		struct task *t = task_new(b->srv, b, TASK_LAYER);
		if (!t) {
			build_fail(b, "out of memory");
			return;
		}
		snprintf(t->arg, sizeof(t->arg), "%s", b->snap_layer);
		task_submit(t, snap_applied);
		return;
	}
	build_step(b);
}

static void base_done(uv_work_t *w, int status)
{
	(void)status;
	struct task *t = w->data;
	struct build *b = t->b;
	b->task = NULL;
	if (t->rc < 0) {
		build_fail(b, "base: %s", t->err.msg);
	} else {
		snprintf(b->manifest, sizeof(b->manifest), "%s", t->out_manifest);
		if (t->has_cfg) {
			json_decref(b->config);
			b->config = oci_config(&t->cfg);
		}
		/* Bases that are the same whatever the build (not dir:) are made once. */
		if (b->step_key[0])
			cache_add(b->srv, b->step_key, "", b->manifest, b->config, NULL);
		b->step_key[0] = '\0';
		base_ready(b);
	}
	task_free(t);
}

static void base_start(struct build *b)
{
	struct server *srv = b->srv;
	const char *base = json_string_value(json_object_get(b->im->spec, "base"));
	struct task *t = NULL;
	/* An OCI base's key names its config's form: before "cmd" was kept apart, it was folded
	 * into the entrypoint, and a cached base of that form must not be taken. */
	const char *once[] = {strncmp(base, "oci-archive:", 12) ? "base-source" : "base-source/cmd",
	                      base, NULL};
	char tar_id[128]; /* a Debian tarball made again (another mirror, a later day) is new */
	if (!strcmp(base, "busybox")) {
		t = task_new(srv, b, TASK_BUSYBOX);
	} else if (!strncmp(base, "dir:", 4)) {
		t = task_new(srv, b, TASK_DIR);
		if (t)
			snprintf(t->arg, sizeof(t->arg), "%s", base + 4);
	} else if (!strncmp(base, "oci-archive:sha256:", 19)) {
		t = task_new(srv, b, TASK_OCI);
		if (t)
			snprintf(t->arg, sizeof(t->arg), "%s", base + 19);
	} else if (!strcmp(base, "debian:bookworm") || !strcmp(base, "debian-slim")) {
		t = task_new(srv, b, TASK_TAR);
		if (t)
			snprintf(t->arg, sizeof(t->arg), "%s/debian-bookworm%s.tar",
			         debian_tar_dir(), strcmp(base, "debian-slim") ? "" : "-python3");
		image_logf(srv, b->im, "base %s from %s", base, t ? t->arg : "?");
		struct stat st;
		if (t && stat(t->arg, &st) == 0) {
			snprintf(tar_id, sizeof(tar_id), "%ju:%ju:%jd:%jd.%09ld",
			         (uintmax_t)st.st_dev, (uintmax_t)st.st_ino, (intmax_t)st.st_size,
			         (intmax_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
			once[2] = tar_id;
		}
	} else {
		struct image_rec *from = image_find(srv, b->im->row.workspace_id, base);
		if (!from) {
			build_fail(b, "base: image %s is gone or not ready", base);
			return;
		}
		snprintf(b->manifest, sizeof(b->manifest), "%s", from->row.manifest);
		json_decref(b->config);
		b->config = json_deep_copy(from->config);
		base_ready(b);
		return;
	}
	if (!t) {
		build_fail(b, "out of memory");
		return;
	}
	/* busybox (made once per data directory), an OCI archive (named by its digest) and a
	 * tarball (known by its inode, size and mtime) are made once. */
	if (t->kind != TASK_DIR) {
		key_of(once, ARRAY_SIZE(once) - !once[2], b->step_key);
		struct cache_entry *e = cache_lookup(b, b->step_key);
		if (e) {
			const struct store_cache *c = &e->row;
			json_t *v = c->config_json ? json_loads(c->config_json, 0, NULL) : NULL;
			json_t *cfg = json_object_get(v, "config");
			if (json_is_object(cfg)) {
				json_decref(b->config);
				b->config = json_incref(cfg);
			}
			json_decref(v);
			snprintf(b->manifest, sizeof(b->manifest), "%s", c->manifest);
			b->step_key[0] = '\0';
			task_free(t);
			base_ready(b);
			return;
		}
	}
	task_submit(t, base_done);
}

static void work_done(uv_work_t *w, int status)
{
	(void)status;
	struct task *t = w->data;
	struct build *b = t->b;
	b->task = NULL;
	if (t->rc < 0) {
		const char *text = b->step < b->nsteps
		                       ? json_dumps(json_array_get(b->steps, b->step), JSON_COMPACT)
		                       : NULL;
		build_fail(b, "step %zu (%.200s): %s", b->step + 1, text ? text : "", t->err.msg);
		free((char *)text);
	} else {
		snprintf(b->manifest, sizeof(b->manifest), "%s", t->out_manifest);
		char layer[IMG_DIGEST_HEX];
		snprintf(layer, sizeof(layer), "%s", t->kind == TASK_COPY ? t->out_layer : t->arg);
		step_done(b, layer, 0);
	}
	task_free(t);
}

/* ---- run and apt steps: a build sandbox ---- */

static void output_read(struct build *b);

static void step_sandbox_done(struct build *b)
{
	struct sandbox_rec *sb = b->sb;
	b->sb = NULL;
	sb->build = NULL;
	/* Its output is read: the worker may remove it. */
	if (sb->worker && sb->worker->connected && !sb->removed) {
		json_t *cmd = json_pack("{s:s}", "sandbox", sb->row.id);
		if (cmd && link_command(b->srv, sb->worker, "remove", cmd) == 0)
			sb->removed = 1;
	}
	char *text = json_dumps(json_array_get(b->steps, b->step), JSON_COMPACT);
	if (strcmp(sb->row.state, "exited") || sb->row.exit_code != 0) {
		if (sb->fail_message[0])
			build_fail(b, "step %zu (%.200s): its sandbox failed to start: %s",
			           b->step + 1, text ? text : "", sb->fail_message);
		else
			build_fail(b,
			           "step %zu (%.200s) failed: %s, exit code %d (its output is in "
			           "the build log)",
			           b->step + 1, text ? text : "", sb->row.state, sb->row.exit_code);
	} else if (!sb->layer[0]) {
		build_fail(b, "step %zu (%.200s): the worker captured no layer%s%s", b->step + 1,
		           text ? text : "", sb->layer_error[0] ? ": " : "", sb->layer_error);
	} else {
		struct task *t = task_new(b->srv, b, TASK_LAYER);
		if (!t) {
			build_fail(b, "out of memory");
		} else {
			snprintf(t->arg, sizeof(t->arg), "%s", sb->layer);
			task_submit(t, work_done);
		}
	}
	free(text);
}

/* The file calls that read a step's output are the server's own: a call that no client
 * waits on (its request is a placeholder that nothing replies to). */
struct output_call {
	struct api_call call; /* first: api_call_free frees the whole */
	struct http_request req;
	struct build *b;
};

static void output_done(struct api_call *call, json_t *result, const struct file_bytes *bytes,
                        int status, const char *code, const char *msg)
{
	(void)status;
	(void)code;
	struct build *b = ((struct output_call *)call)->b;
	api_call_free(call);
	if (!b || !b->sb) /* the server is stopping */
		return;
	const char *data = NULL;
	size_t len = 0;
	char *owned = NULL;
	if (result && file_result_bytes(result, bytes, 0, &data, &len, &owned) == 0 && len)
		image_log(b->srv, b->im, data, len);
	else if (!result)
		image_logf(b->srv, b->im, "(its output could not be read: %s)", msg);
	free(owned);
	if (++b->output_stream < 2)
		output_read(b);
	else
		step_sandbox_done(b);
}

static void output_read(struct build *b)
{
	struct sandbox_rec *sb = b->sb;
	if (!sb->worker || !sb->worker->connected || sb->fail_message[0]) {
		step_sandbox_done(b);
		return;
	}
	struct output_call *oc = calloc(1, sizeof(*oc));
	json_t *args =
	    json_pack("{s:s, s:I, s:I}", "stream", b->output_stream ? "stderr" : "stdout", "offset",
	              (json_int_t)0, "max", (json_int_t)BUILD_OUTPUT_MAX_BYTES);
	if (!oc || !args) {
		free(oc);
		json_decref(args);
		step_sandbox_done(b);
		return;
	}
	oc->call.srv = b->srv;
	oc->call.req = &oc->req;
	oc->b = b;
	file_call_send(&oc->call, sb, "output", args, output_done);
}

void builder_sandbox_ended(struct server *srv, struct sandbox_rec *sb)
{
	(void)srv;
	struct build *b = sb->build;
	if (!b || b->sb != sb)
		return;
	b->output_stream = 0;
	output_read(b);
}

static void step_sandbox(struct build *b, const char *script)
{
	struct server *srv = b->srv;
	struct worker_rec *w = link_pick_worker(srv);
	if (!w) {
		build_fail(b, "step %zu: no worker is connected to run it", b->step + 1);
		return;
	}
	struct spec defaults;
	spec_init(&defaults);
	struct sandbox_rec *sb = calloc(1, sizeof(*sb));
	json_t *env = json_deep_copy(json_object_get(b->config, "env"));
	if (!sb || id_new("sb-", sb->row.id, sizeof(sb->row.id)) < 0) {
		free(sb);
		json_decref(env);
		spec_release(&defaults);
		build_fail(b, "out of memory");
		return;
	}
	map_init(&sb->execs);
	snprintf(sb->row.workspace_id, sizeof(sb->row.workspace_id), "%s", b->im->row.workspace_id);
	snprintf(sb->row.state, sizeof(sb->row.state), "pending");
	snprintf(sb->row.worker_id, sizeof(sb->row.worker_id), "%s", w->row.id);
	snprintf(sb->row.image_id, sizeof(sb->row.image_id), "%s", b->im->row.id);
	sb->row.exit_code = -1;
	sb->row.created_ms = clock_now_ms();
	sb->worker = w;
	const char *workdir = json_string_value(json_object_get(b->config, "workdir"));
	sb->spec = json_pack(
	    "{s:s, s:[s,s,s], s:o, s:s, s:f, s:I, s:I, s:I, s:f, s:n, s:s, s:s, s:b}", "image",
	    "busybox", "command", "/bin/sh", "-c", script, "env", env ? env : json_object(),
	    "workdir", workdir ? workdir : "/", "cpu", defaults.cpu, "memory_mib",
	    (json_int_t)defaults.memory_mib, "disk_mib", (json_int_t)defaults.disk_mib, "pids",
	    (json_int_t)defaults.pids, "timeout_s", BUILD_SANDBOX_TIMEOUT_S, "idle_timeout_s",
	    "network", "egress", "image_digest", b->manifest, "capture_layer", 1);
	spec_release(&defaults);
	/* Listed with the workspace's sandboxes, marked as the build's. */
	sb->tags = json_pack("{s:s}", "skiff.build", b->im->row.id);
	if (!sb->spec || !sb->tags || map_put(&srv->sandboxes, sb->row.id, sb) < 0) {
		sandbox_rec_free(sb);
		build_fail(b, "out of memory");
		return;
	}
	if (sb->spec)
		json_object_set_new(sb->spec, "image", json_string(b->im->row.id));
	sb->build = b;
	b->sb = sb;
	image_logf(srv, b->im, "step %zu: in sandbox %s", b->step + 1, sb->row.id);
	sandbox_create_command(srv, sb);
}

/* ---- apt steps ---- */

/* Where an apt step with the server's sources keeps its sources.list: the sandbox's /dev/shm is
 * a tmpfs of its own, outside the layer the worker captures. */
#define APT_SOURCES_DIR "/dev/shm/skiff-apt"

static int apt_source_word(const char **p, const char **ret_word, size_t *ret_len)
{
	*p += strspn(*p, " \t");
	size_t n = strcspn(*p, " \t");
	if (!n)
		return 0;
	*ret_word = *p;
	*ret_len = n;
	*p += n;
	return 1;
}

int builder_apt_source_check(const char *line, struct sk_error *err)
{
	size_t len = strlen(line), n;
	if (!len || len > SERVER_APT_SOURCE_MAX_BYTES)
		return sk_error_set(err, -EINVAL, "1 to %d bytes, one sources.list line",
		                    SERVER_APT_SOURCE_MAX_BYTES);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c > 0x7e)
			return sk_error_set(err, -EINVAL,
			                    "byte %zu is a control or non-ASCII character: one "
			                    "sources.list line of printable ASCII is expected",
			                    i + 1);
	}
	const char *p = line, *w;
	if (!apt_source_word(&p, &w, &n) ||
	    !((n == 3 && !memcmp(w, "deb", 3)) || (n == 7 && !memcmp(w, "deb-src", 7))))
		return sk_error_set(err, -EINVAL,
		                    "expected \"deb [OPTIONS] URI SUITE [COMPONENT...]\"");
	const char *save = p;
	if (apt_source_word(&p, &w, &n) && w[0] == '[') {
		while (w[n - 1] != ']')
			if (!apt_source_word(&p, &w, &n))
				return sk_error_set(err, -EINVAL,
				                    "its [options] have no closing ]");
	} else {
		p = save;
	}
	if (!apt_source_word(&p, &w, &n) || !memchr(w, ':', n))
		return sk_error_set(err, -EINVAL, "no URI (http://HOST/PATH) after \"deb\"");
	/* The lines are no secret: they are in the build sandbox's command and /dev/shm, which
	 * the workspace that builds can read. */
	const char *host = memmem(w, n, "://", 3);
	if (host && memchr(host + 3, '@', strcspn(host + 3, "/ \t")))
		return sk_error_set(err, -EINVAL,
		                    "a URI with user:password@ in it: every workspace's builds "
		                    "can read the lines");
	if (!apt_source_word(&p, &w, &n))
		return sk_error_set(err, -EINVAL,
		                    "no suite after the URI (\"./\" for a flat repository)");
	return 0;
}

/* The server's apt sources, one a line (NULL when there are none, or out of memory). */
static char *apt_sources_text(const struct server *srv)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = srv->cfg.napt_sources ? open_memstream(&text, &len) : NULL;
	if (!f)
		return NULL;
	for (size_t i = 0; i < srv->cfg.napt_sources; i++)
		fprintf(f, "%s\n", srv->cfg.apt_sources[i]);
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	return text;
}

/* s in single quotes for sh. */
static void sh_quote(FILE *f, const char *s)
{
	fputc('\'', f);
	for (; *s; s++)
		if (*s == '\'')
			fputs("'\\''", f);
		else
			fputc(*s, f);
	fputc('\'', f);
}

/* The step's script: apt-get update and install with the image's sources, or with only the
 * server's when it has some (written where the layer does not see them, and named with apt's
 * Dir::Etc::SourceList and SourceParts, so the image's /etc/apt stays as it was). The package
 * lists go too: they are stale at once. */
static char *apt_script(const struct server *srv, json_t *pkgs)
{
	char *s = NULL;
	size_t len = 0, i;
	_cleanup_free_ char *sources = NULL;
	if (srv->cfg.napt_sources && !(sources = apt_sources_text(srv)))
		return NULL;
	FILE *f = open_memstream(&s, &len);
	if (!f)
		return NULL;
	const char *opts = "";
	if (sources) {
		fputs("mkdir -p " APT_SOURCES_DIR "/parts && printf %s ", f);
		sh_quote(f, sources);
		fputs(" >" APT_SOURCES_DIR "/sources.list && ", f);
		opts = " -o Dir::Etc::SourceList=" APT_SOURCES_DIR "/sources.list"
		       " -o Dir::Etc::SourceParts=" APT_SOURCES_DIR "/parts";
	}
	fprintf(f,
	        "apt-get%s update && DEBIAN_FRONTEND=noninteractive apt-get%s install -y "
	        "--no-install-recommends",
	        opts, opts);
	json_t *p;
	json_array_foreach (pkgs, i, p) /* checked: [a-z0-9][a-z0-9+.-]*, nothing to quote */
		fprintf(f, " %s", json_string_value(p));
	/* apt's caches (pkgcache.bin, srcpkgcache.bin: megabytes, and they hold the sources'
	 * URIs) and the downloaded .debs would be part of the layer too. */
	fputs(" && apt-get clean && rm -rf /var/lib/apt/lists/*", f);
	if (fclose(f) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

/* Make step b->step (its key is known and not in the cache). */
static void step_work(struct build *b, json_t *step)
{
	const char *kind = json_object_iter_key(json_object_iter(step));
	json_t *v = json_object_iter_value(json_object_iter(step));
	b->busy = 1;
	b->step_start_ms = clock_now_ms();
	char *text = json_dumps(step, JSON_COMPACT);
	image_logf(b->srv, b->im, "step %zu: %.300s", b->step + 1, text ? text : "");
	free(text);
	if (!strcmp(kind, "env") || !strcmp(kind, "workdir") || !strcmp(kind, "entrypoint")) {
		json_t *cfg = json_deep_copy(b->config);
		if (!strcmp(kind, "env"))
			json_object_update(json_object_get(cfg, "env"), v);
		else
			json_object_set(cfg, kind, v);
		/* A new entrypoint drops the base's cmd, its arguments (as Docker's ENTRYPOINT
		 * resets CMD). */
		if (!strcmp(kind, "entrypoint"))
			json_object_del(cfg, "cmd");
		json_decref(b->config);
		b->config = cfg;
		step_done(b, NULL, 0);
		return;
	}
	if (!strcmp(kind, "copy")) {
		struct task *t = task_new(b->srv, b, TASK_COPY);
		if (!t) {
			build_fail(b, "out of memory");
			return;
		}
		snprintf(t->arg, sizeof(t->arg), "%s",
		         json_string_value(json_object_get(v, "blob")) + 7);
		snprintf(t->dest, sizeof(t->dest), "%s",
		         json_string_value(json_object_get(v, "dest")));
		task_submit(t, work_done);
		return;
	}
	char *script = !strcmp(kind, "apt") ? apt_script(b->srv, v) : strdup(json_string_value(v));
	if (!script) {
		build_fail(b, "out of memory");
		return;
	}
	step_sandbox(b, script);
	free(script);
}

static void build_step(struct build *b)
{
	struct server *srv = b->srv;
	if (srv->stopping)
		return;
	if (b->step >= b->nsteps) {
		struct task *t = task_new(srv, b, TASK_STATS);
		if (!t) {
			build_fail(b, "out of memory");
			return;
		}
		task_submit(t, stats_done);
		return;
	}
	json_t *step = json_array_get(b->steps, b->step);
	_cleanup_free_ char *text = canonical(step);
	json_t *copy = json_object_get(step, "copy");
	const char *input = copy ? json_string_value(json_object_get(copy, "blob")) : "";
	/* Another apt source may give other packages: an apt step's key has the server's sources
	 * (none: the key is as it was before there were any). */
	_cleanup_free_ char *sources = json_object_get(step, "apt") ? apt_sources_text(srv) : NULL;
	if (json_object_get(step, "apt") && srv->cfg.napt_sources && !sources) {
		build_fail(b, "out of memory");
		return;
	}
	const char *parts[] = {b->key, text ? text : "", input, sources};
	key_of(parts, ARRAY_SIZE(parts) - !sources, b->step_key);
	struct cache_entry *e = cache_lookup(b, b->step_key);
	if (e) {
		const struct store_cache *c = &e->row;
		json_t *v = c->config_json ? json_loads(c->config_json, 0, NULL) : NULL;
		json_t *cfg = json_object_get(v, "config");
		if (json_is_object(cfg)) {
			json_decref(b->config);
			b->config = json_incref(cfg);
		}
		char layer[IMG_DIGEST_HEX] = "";
		const char *l = json_string_value(json_object_get(v, "layer"));
		if (l)
			snprintf(layer, sizeof(layer), "%s", l);
		json_decref(v);
		snprintf(b->manifest, sizeof(b->manifest), "%s", c->manifest);
		step_done(b, layer, 1);
		return;
	}
	for (struct build *o = srv->builds; o; o = o->next)
		if (o != b && o->busy && !strcmp(o->step_key, b->step_key)) {
			image_logf(srv, b->im,
			           "step %zu: waiting for %s, which makes the same step",
			           b->step + 1, o->im->row.id);
			b->waiting_on = o;
			return;
		}
	step_work(b, step);
}

static int build_begin(struct server *srv, struct image_rec *im, const char *layer,
                       struct api_call *call, struct sk_error *err)
{
	struct build *b = calloc(1, sizeof(*b));
	if (!b)
		return sk_error_set(err, -ENOMEM, "out of memory");
	b->srv = srv;
	b->im = im;
	b->steps = json_object_get(im->spec, "steps");
	b->nsteps = json_is_array(b->steps) ? json_array_size(b->steps) : 0;
	b->config = json_deep_copy(im->config);
	if (layer)
		snprintf(b->snap_layer, sizeof(b->snap_layer), "%s", layer);
	b->call = call;
	im->build = b;
	b->next = srv->builds;
	srv->builds = b;
	image_logf(srv, im, "build %s", im->row.id);
	/* A gc running now decided what is live without this build, which may take up blobs
	 * that gc is about to remove: it waits. */
	if (srv->gc_running)
		b->deferred = 1;
	else
		base_start(b);
	return 0;
}

int builder_start(struct server *srv, struct image_rec *im, struct sk_error *err)
{
	return build_begin(srv, im, NULL, NULL, err);
}

int builder_start_snapshot(struct server *srv, struct image_rec *im, const char *layer,
                           struct api_call *call, struct sk_error *err)
{
	return build_begin(srv, im, layer, call, err);
}

void builder_shutdown(struct server *srv)
{
	/* The last uses not persisted yet (a hit persists at most hourly): a clean stop keeps
	 * the order of eviction whole. */
	size_t pos = 0;
	struct cache_entry *e;
	while ((e = map_next(&srv->build_cache, &pos)))
		if (e->row.used_ms > e->stored_used_ms) {
			e->stored_used_ms = e->row.used_ms;
			cache_persist(srv, e, cache_touch_write);
		}
	for (struct build *b = srv->builds; b; b = b->next) {
		struct api_call *call = TAKE_PTR(b->call);
		if (call)
			api_reply_error(call, 503, "unavailable", "the server is stopping");
	}
}

void builder_free_all(struct server *srv)
{
	/* What was building stays "building" in the store: the next start marks it failed. */
	while (srv->builds) {
		struct build *b = srv->builds;
		srv->builds = b->next;
		if (b->sb)
			b->sb->build = NULL;
		if (b->im)
			b->im->build = NULL;
		json_decref(b->config);
		free(b);
	}
}

/* ---- gc ---- */

static void gc_done(uv_work_t *w, int status)
{
	(void)status;
	struct task *t = w->data;
	struct server *srv = t->srv;
	srv->gc_running--;
	int again = srv->gc_again;
	srv->gc_again = 0;
	if (t->rc < 0)
		server_logf(srv, "level=warn msg=\"image gc\" err=\"%s\"", t->err.msg);
	else
		server_logf(srv,
		            "level=info msg=\"image gc\" live=%zu cache_expired=%zu "
		            "blobs_removed=%llu bytes=%llu trees_removed=%llu",
		            t->nlive, t->cache_expired, (unsigned long long)t->stats.blobs_removed,
		            (unsigned long long)t->stats.blob_bytes_removed,
		            (unsigned long long)t->stats.trees_removed);
	if (t->stats.blobs_removed)
		blobs_removed(srv);
	task_free(t);
	if (srv->stopping)
		return;
	/* base_start may end a build (and unlink it) at once: look from the start each time. */
	for (int found = 1; found;) {
		found = 0;
		for (struct build *b = srv->builds; b; b = b->next)
			if (b->deferred) {
				b->deferred = 0;
				base_start(b);
				found = 1;
				break;
			}
	}
	if (again) /* asked for while this one ran: what it saw may be stale */
		images_gc(srv);
}

void images_gc(struct server *srv)
{
	/* While a build runs, what it made so far is referenced by nothing yet: the last build's
	 * end runs it. */
	if (srv->stopping)
		return;
	if (srv->builds) {
		srv->gc_again = 1;
		return;
	}
	if (srv->gc_running) {
		srv->gc_again = 1;
		return;
	}
	struct task *t = task_new(srv, NULL, TASK_GC);
	if (!t)
		return;
	/* What the cache lets go of now is garbage for this very gc (unless an image holds it). */
	t->cache_expired = cache_expire(srv);
	t->live = calloc(srv->images.len + srv->build_cache.len + 1, sizeof(char *));
	if (!t->live) {
		task_free(t);
		return;
	}
	size_t pos = 0;
	struct image_rec *im;
	while ((im = map_next(&srv->images, &pos)))
		if (im->row.manifest[0])
			t->live[t->nlive++] = strdup(im->row.manifest);
	pos = 0;
	struct cache_entry *e;
	while ((e = map_next(&srv->build_cache, &pos)))
		t->live[t->nlive++] = strdup(e->row.manifest);
	for (size_t i = 0; i < t->nlive; i++)
		if (!t->live[i]) {
			task_free(t);
			return;
		}
	srv->gc_running++;
	task_submit(t, gc_done);
}
