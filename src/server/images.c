/* Images: every workspace's images in memory (like sandboxes), their rows in the store, their
 * build logs in files (<data>/build-logs/<id>.log, cut at IMAGE_MAX_LOG_BYTES), and the
 * /v1/images routes. Builds themselves are builder.c's. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/clock.h"
#include "../lib/encoding.h"
#include "../lib/fsutil.h"
#include "../lib/macros.h"
#include "server.h"

struct log_follower {
	struct log_follower *next;
	struct http_request *req;
	struct image_rec *im;
};

void image_rec_free(struct image_rec *im)
{
	if (!im)
		return;
	json_decref(im->spec);
	json_decref(im->config);
	json_decref(im->layers);
	store_image_release(&im->row);
	free(im);
}

/* The row's JSON fields from what memory holds (before a persist). */
static int image_row_sync(struct image_rec *im)
{
	free(im->row.spec_json);
	free(im->row.config_json);
	free(im->row.layers_json);
	im->row.spec_json = json_dumps(im->spec, JSON_COMPACT);
	im->row.config_json = json_dumps(im->config, JSON_COMPACT);
	im->row.layers_json = json_dumps(im->layers, JSON_COMPACT);
	return im->row.spec_json && im->row.config_json && im->row.layers_json ? 0 : -ENOMEM;
}

int image_load(const struct store_image *row, void *ud)
{
	struct server *srv = ud;
	struct image_rec *im = calloc(1, sizeof(*im));
	if (!im)
		return -ENOMEM;
	im->row = *row;
	im->row.spec_json = im->row.config_json = im->row.layers_json = NULL;
	im->row.error = row->error ? strdup(row->error) : NULL;
	if (im->row.error) /* a row stored before errors were made UTF-8 */
		utf8_sanitize(im->row.error);
	im->spec = row->spec_json ? json_loads(row->spec_json, 0, NULL) : NULL;
	im->config = row->config_json ? json_loads(row->config_json, 0, NULL) : NULL;
	im->layers = row->layers_json ? json_loads(row->layers_json, 0, NULL) : NULL;
	if (!im->spec)
		im->spec = json_object();
	if (!im->config)
		im->config = json_object();
	if (!im->layers)
		im->layers = json_array();
	/* Its build ended with the server that ran it. */
	if (!strcmp(im->row.state, "building")) {
		snprintf(im->row.state, sizeof(im->row.state), "failed");
		free(im->row.error);
		im->row.error = strdup("interrupted: the server stopped during the build");
		im->interrupted = 1;
	}
	if (image_row_sync(im) < 0) {
		image_rec_free(im);
		return -ENOMEM;
	}
	return map_put(&srv->images, im->row.id, im);
}

json_t *image_json(const struct image_rec *im)
{
	char digest[80];
	snprintf(digest, sizeof(digest), "sha256:%s", im->row.manifest);
	return json_pack("{s:s, s:s, s:o, s:s, s:O, s:o, s:O, s:I, s:I, s:O, s:o, s:o, s:o}", "id",
	                 im->row.id, "workspace", im->row.workspace_id, "name",
	                 im->row.name[0] ? json_string(im->row.name) : json_null(), "state",
	                 im->row.state, "spec", im->spec, "manifest",
	                 im->row.manifest[0] ? json_string(digest) : json_null(), "config",
	                 im->config, "size", (json_int_t)im->row.size_bytes, "files",
	                 (json_int_t)im->row.files, "layers", im->layers, "error",
	                 im->row.error ? json_string(im->row.error) : json_null(), "created_at",
	                 api_time(im->row.created_ms), "ready_at", api_time(im->row.ready_ms));
}

struct image_rec *image_lookup(struct server *srv, const char *ws, const char *id_or_name)
{
	struct image_rec *im = map_get(&srv->images, id_or_name);
	if (im)
		return !strcmp(im->row.workspace_id, ws) && !im->deleting ? im : NULL;
	size_t pos = 0;
	while ((im = map_next(&srv->images, &pos)))
		if (!strcmp(im->row.workspace_id, ws) && !strcmp(im->row.name, id_or_name))
			return im;
	return NULL;
}

struct image_rec *image_find(struct server *srv, const char *ws, const char *id_or_name)
{
	struct image_rec *im = image_lookup(srv, ws, id_or_name);
	return im && !strcmp(im->row.state, "ready") && !im->deleting ? im : NULL;
}

struct image_persist_ctx {
	struct server *srv;
	char id[ID_MAX_BYTES];
	struct store_image row; /* a copy: the record may change meanwhile */
	int remove;
	void (*then)(struct server *srv, struct image_rec *im, int rc);
};

static int image_persist_fn(struct store_tx *tx, void *ud)
{
	struct image_persist_ctx *c = ud;
	return c->remove ? store_image_delete(tx, c->id) : store_image_put(tx, &c->row);
}

static void image_persist_done(void *ud, int rc)
{
	struct image_persist_ctx *c = ud;
	if (c->then)
		c->then(c->srv, map_get(&c->srv->images, c->id), rc);
	store_image_release(&c->row);
	free(c);
}

static int image_submit(struct server *srv, struct image_rec *im, int remove,
                        void (*then)(struct server *srv, struct image_rec *im, int rc))
{
	struct image_persist_ctx *c = calloc(1, sizeof(*c));
	if (!c || image_row_sync(im) < 0) {
		free(c);
		return -ENOMEM;
	}
	c->srv = srv;
	c->then = then;
	c->remove = remove;
	snprintf(c->id, sizeof(c->id), "%s", im->row.id);
	c->row = im->row;
	c->row.spec_json = strdup(im->row.spec_json);
	c->row.config_json = strdup(im->row.config_json);
	c->row.layers_json = strdup(im->row.layers_json);
	c->row.error = im->row.error ? strdup(im->row.error) : NULL;
	int r = server_persist(srv, image_persist_fn, image_persist_done, c);
	if (r < 0) {
		store_image_release(&c->row);
		free(c);
	}
	return r;
}

int image_persist(struct server *srv, struct image_rec *im,
                  void (*then)(struct server *srv, struct image_rec *im, int rc))
{
	return image_submit(srv, im, 0, then);
}

/* ---- build logs ---- */

static void log_path(struct server *srv, const char *id, char *buf, size_t size)
{
	snprintf(buf, size, "%s/build-logs/%s.log", srv->cfg.data_dir, id);
}

void image_log(struct server *srv, struct image_rec *im, const char *data, size_t len)
{
	char path[4200];
	log_path(srv, im->row.id, path, sizeof(path));
	struct stat st;
	if (stat(path, &st) == 0 && (uint64_t)st.st_size >= IMAGE_MAX_LOG_BYTES)
		return;
	if (stat(path, &st) == 0 && (uint64_t)st.st_size + len > IMAGE_MAX_LOG_BYTES)
		len = IMAGE_MAX_LOG_BYTES - (size_t)st.st_size;
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		char dir[4200];
		snprintf(dir, sizeof(dir), "%s/build-logs", srv->cfg.data_dir);
		fs_mkdir_p(dir, 0700);
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	}
	if (fd >= 0) {
		if (write(fd, data, len) < 0)
			server_logf(srv, "level=warn msg=\"write a build log\" image=%s errno=%d",
			            im->row.id, errno);
		close(fd);
	}
	for (struct log_follower *f = im->followers; f; f = f->next)
		http_reply_write(f->req, data, len); /* a slow follower holds at most the log */
}

void image_logf(struct server *srv, struct image_rec *im, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	image_log(srv, im, line, (size_t)n);
}

static void follower_remove(struct log_follower *f)
{
	for (struct log_follower **p = &f->im->followers; *p; p = &(*p)->next)
		if (*p == f) {
			*p = f->next;
			break;
		}
	f->req->data = NULL;
	f->req->on_abort = NULL;
	free(f);
}

void image_log_end(struct server *srv, struct image_rec *im)
{
	(void)srv;
	while (im->followers) {
		struct http_request *req = im->followers->req;
		follower_remove(im->followers);
		http_reply_end(req);
	}
}

static void follower_abort(struct http_request *req)
{
	struct log_follower *f = req->data;
	if (f)
		follower_remove(f);
	http_reply_end(req);
}

/* ---- routes ---- */

static const char *image_id_of(const void *im)
{
	return ((const struct image_rec *)im)->row.id;
}

static const char *image_ws_of(const void *im)
{
	return ((const struct image_rec *)im)->row.workspace_id;
}

static json_t *image_item(const void *im)
{
	return image_json(im);
}

/* The image of the route's first parameter (id, or name in the caller's workspace) if the
 * caller may see it; else replies 404 and returns NULL. */
static struct image_rec *image_of_call(struct api_call *call)
{
	const char *p = call->req->params[0];
	struct image_rec *im = map_get(&call->srv->images, p);
	if (im && !api_can_see(call, im->row.workspace_id))
		im = NULL;
	if (!im)
		im = image_lookup(call->srv, call->who.workspace_id, p);
	if (!im || im->deleting) {
		api_reply_error(call, 404, "not_found", "image %.140s not found", p);
		return NULL;
	}
	return im;
}

static void create_persisted(struct server *srv, struct image_rec *im, int rc)
{
	if (!im)
		return;
	if (rc < 0)
		server_logf(srv, "level=error msg=\"store an image\" image=%s errno=%d", im->row.id,
		            -rc);
}

/* 0, or -1 after a 429: the store or the workspace holds no more images, or the workspace
 * builds as many as it may at once (builds are not sandboxes a create counts, yet each may run
 * one). */
static int images_room(struct api_call *call)
{
	struct server *srv = call->srv;
	if (srv->images.len >= SERVER_MAX_IMAGES) {
		api_reply_error(call, 429, "resource_exhausted", "too many images: delete some");
		return -1;
	}
	size_t pos = 0, building = 0, in_ws = 0;
	struct image_rec *im;
	while ((im = map_next(&srv->images, &pos)))
		if (!strcmp(im->row.workspace_id, call->who.workspace_id)) {
			in_ws++;
			building += !strcmp(im->row.state, "building");
		}
	if (in_ws >= srv->cfg.max_images_per_ws) {
		api_reply_error(call, 429, "resource_exhausted",
		                "too many images in this workspace (at most %zu): delete some",
		                srv->cfg.max_images_per_ws);
		return -1;
	}
	if (building >= SERVER_MAX_BUILDS_PER_WS) {
		api_reply_error(
		    call, 429, "resource_exhausted",
		    "this workspace builds %zu images already (at most %d at once): wait "
		    "for one to end",
		    building, SERVER_MAX_BUILDS_PER_WS);
		return -1;
	}
	return 0;
}

void api_images_create(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	json_t *body = api_body_object(call);
	if (!body)
		return;
	struct sk_error err = {0};
	const char *ws = call->who.workspace_id;
	if (image_spec_check(srv, ws, body, call->who.role == ROLE_ADMIN, &err) < 0) {
		json_decref(body);
		if (err.code == -EPERM)
			api_reply_error(call, 403, "permission_denied", "%s", err.msg);
		else
			api_reply_error(call, 400, "invalid_argument", "%s", err.msg);
		return;
	}
	const char *name = json_string_value(json_object_get(body, "name"));
	struct image_rec *other = name ? image_lookup(srv, ws, name) : NULL;
	if (other) {
		api_reply_error(call, 409, "conflict", "an image named %s exists already (%s)",
		                name, other->row.id);
		json_decref(body); /* name points into it */
		return;
	}
	if (images_room(call) < 0) {
		json_decref(body);
		return;
	}
	struct image_rec *im = calloc(1, sizeof(*im));
	if (!im || id_new("im-", im->row.id, sizeof(im->row.id)) < 0) {
		free(im);
		json_decref(body);
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	snprintf(im->row.workspace_id, sizeof(im->row.workspace_id), "%s", ws);
	snprintf(im->row.name, sizeof(im->row.name), "%s", name ? name : "");
	snprintf(im->row.state, sizeof(im->row.state), "building");
	im->row.created_ms = clock_now_ms();
	im->spec = body;
	im->config = json_pack("{s:{}, s:s, s:[]}", "env", "workdir", "/", "entrypoint");
	im->layers = json_array();
	if (!im->config || !im->layers || map_put(&srv->images, im->row.id, im) < 0) {
		image_rec_free(im);
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	server_logf(srv, "level=info msg=\"image build\" image=%s workspace=%s", im->row.id, ws);
	image_persist(srv, im, create_persisted);
	if (builder_start(srv, im, &err) < 0) {
		api_reply_sk_error(call, &err);
		return;
	}
	api_reply_json(call, 202, json_pack("{s:s, s:s}", "id", im->row.id, "state", "building"));
}

void api_images_list(struct http_request *req)
{
	struct api_call *call = req->data;
	api_reply_map_page(call, &call->srv->images, image_id_of, image_ws_of, image_item);
}

void api_images_get(struct http_request *req)
{
	struct api_call *call = req->data;
	struct image_rec *im = image_of_call(call);
	if (im)
		api_reply_json(call, 200, image_json(im));
}

void api_images_logs(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	int follow;
	if (api_query_bool(call, "follow", &follow) < 0)
		return;
	struct image_rec *im = image_of_call(call);
	if (!im)
		return;
	char path[4200];
	log_path(srv, im->row.id, path, sizeof(path));
	_cleanup_free_ char *text = malloc(IMAGE_MAX_LOG_BYTES);
	if (!text) {
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	ssize_t n = fs_read_at(AT_FDCWD, path, text, IMAGE_MAX_LOG_BYTES);
	if (n < 0)
		n = 0;
	req->data = NULL;
	int building = im->build != NULL;
	api_call_free(call);
	if (!follow || !building) {
		http_reply(req, 200, "text/plain; charset=utf-8", text, (size_t)n);
		return;
	}
	struct log_follower *f = calloc(1, sizeof(*f));
	if (!f || http_reply_start(req, 200, "text/plain; charset=utf-8") < 0) {
		free(f);
		http_reply_end(req);
		return;
	}
	http_reply_write(req, text, (size_t)n);
	f->req = req;
	f->im = im;
	f->next = im->followers;
	im->followers = f;
	req->data = f;
	req->on_abort = follower_abort;
}

static void delete_persisted(struct server *srv, struct image_rec *im, int rc)
{
	(void)im;
	if (rc < 0)
		server_logf(srv, "level=error msg=\"delete an image's row\" errno=%d", -rc);
}

void api_images_delete(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	struct image_rec *im = image_of_call(call);
	if (!im)
		return;
	if (im->build) {
		api_reply_error(call, 409, "conflict", "image %s is building", im->row.id);
		return;
	}
	size_t pos = 0;
	struct sandbox_rec *sb;
	while ((sb = map_next(&srv->sandboxes, &pos)))
		if (!sandbox_ended(sb) && !strcmp(sb->row.image_id, im->row.id)) {
			api_reply_error(call, 409, "conflict",
			                "image %s is used by sandbox %s (%s)", im->row.id,
			                sb->row.id, sb->row.state);
			return;
		}
	json_t *reply = image_json(im);
	json_object_set_new(reply, "state", json_string("deleted"));
	image_submit(srv, im, 1, delete_persisted);
	map_remove(&srv->images, im->row.id);
	char path[4200];
	log_path(srv, im->row.id, path, sizeof(path));
	unlink(path);
	image_rec_free(im);
	images_gc(srv);
	api_reply_json(call, 200, reply);
}

/* ---- snapshots: a running sandbox's changes as a new image ---- */

struct snapshot {
	char name[STORE_IMAGE_NAME_BYTES];
	char sandbox[ID_MAX_BYTES];
	char base[ID_MAX_BYTES]; /* the sandbox's image, "" for busybox */
};

static void snapshot_taken(struct api_call *call, json_t *result, const struct file_bytes *bytes,
                           int status, const char *code, const char *msg)
{
	(void)bytes;
	struct server *srv = call->srv;
	struct snapshot *snap = call->stream;
	call->stream = NULL;
	const char *layer = json_string_value(json_object_get(result, "layer"));
	if (!result || !img_digest_valid(layer)) {
		free(snap);
		if (!result)
			api_reply_error(call, status, code, "snapshot: %s", msg);
		else
			api_reply_error(call, 500, "internal",
			                "snapshot: the worker gave no layer");
		return;
	}
	if (images_room(call) < 0) { /* the worker's layer stays for gc */
		free(snap);
		return;
	}
	/* The name may have been taken while the worker worked. */
	struct image_rec *other =
	    snap->name[0] ? image_lookup(srv, call->who.workspace_id, snap->name) : NULL;
	struct image_rec *im = other ? NULL : calloc(1, sizeof(*im));
	if (other || !im || id_new("im-", im->row.id, sizeof(im->row.id)) < 0) {
		free(im);
		free(snap);
		if (other)
			api_reply_error(call, 409, "conflict", "an image named %s exists already",
			                other->row.name);
		else
			api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	snprintf(im->row.workspace_id, sizeof(im->row.workspace_id), "%s", call->who.workspace_id);
	snprintf(im->row.name, sizeof(im->row.name), "%s", snap->name);
	snprintf(im->row.state, sizeof(im->row.state), "building");
	im->row.created_ms = clock_now_ms();
	im->spec = json_pack("{s:s, s:s}", "base", snap->base[0] ? snap->base : "busybox",
	                     "snapshot", snap->sandbox);
	im->config = json_pack("{s:{}, s:s, s:[]}", "env", "workdir", "/", "entrypoint");
	im->layers = json_array();
	free(snap);
	if (!im->spec || !im->config || !im->layers || map_put(&srv->images, im->row.id, im) < 0) {
		image_rec_free(im);
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	image_persist(srv, im, create_persisted);
	struct sk_error err = {0};
	if (builder_start_snapshot(srv, im, layer, call, &err) < 0)
		api_reply_sk_error(call, &err);
	/* The reply (201 with the id once the image is ready) is the builder's. */
}

void api_sandboxes_snapshot(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	json_t *body = NULL;
	if (req->body_len && !(body = api_body_object(call)))
		return;
	const char *key;
	json_t *v;
	json_object_foreach (body, key, v)
		if (strcmp(key, "name")) {
			json_decref(body);
			api_reply_error(call, 400, "invalid_argument",
			                "unknown field \"%.64s\" (name)", key);
			return;
		}
	json_t *name = json_object_get(body, "name");
	if (name && !json_is_null(name) &&
	    (!json_is_string(name) || !image_name_valid(json_string_value(name)))) {
		json_decref(body);
		api_reply_error(call, 400, "invalid_argument",
		                "name: expected 1 to 128 of [a-z0-9._-], not starting with im-");
		return;
	}
	struct snapshot *snap = calloc(1, sizeof(*snap));
	if (!snap) {
		json_decref(body);
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	if (json_is_string(name))
		snprintf(snap->name, sizeof(snap->name), "%s", json_string_value(name));
	json_decref(body);
	struct image_rec *other =
	    snap->name[0] ? image_lookup(srv, call->who.workspace_id, snap->name) : NULL;
	if (other) {
		api_reply_error(call, 409, "conflict", "an image named %s exists already (%s)",
		                snap->name, other->row.id);
		free(snap);
		return;
	}
	struct sandbox_rec *sb = api_sandbox_running(call, "only a running sandbox is snapshotted");
	if (!sb) {
		free(snap);
		return;
	}
	if (images_room(call) < 0) { /* before the worker does the work */
		free(snap);
		return;
	}
	snprintf(snap->sandbox, sizeof(snap->sandbox), "%s", sb->row.id);
	snprintf(snap->base, sizeof(snap->base), "%s", sb->row.image_id);
	if (snap->base[0] && !image_find(srv, sb->row.workspace_id, snap->base)) {
		api_reply_error(call, 409, "conflict", "the image of %s (%s) is not ready",
		                sb->row.id, snap->base);
		free(snap);
		return;
	}
	call->stream = snap;
	file_call_send(call, sb, "snapshot", json_object(), snapshot_taken);
}
