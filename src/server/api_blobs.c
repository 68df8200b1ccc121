/* /v1/blobs/sha256:{hex}: raw bytes in the image store, named by their SHA-256 (tars for copy
 * steps, OCI archives for bases). Blobs are stored once for all, but a digest is not a secret
 * (image JSON, logs and manifests show them): a workspace reads a blob, or names it in a build,
 * only if it uploaded it (blob_owners) or it is one of its images' manifests.
 *
 * An upload can be as large as SKIFF_MAX_BLOB_BYTES (4 GiB by default), far past what a request
 * body may hold in memory, so PUT takes the connection over: a body of declared length is read
 * from the socket as it comes, written into a blob writer (which hashes it) and never held
 * whole; the reply is written by hand once the last byte is in. A chunked body is read whole by
 * the HTTP layer, so it is held to SERVER_MAX_CHUNKED_BLOB_BYTES. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/clock.h"
#include "../lib/macros.h"
#include "server.h"

#define BLOB_READ_BYTES (64 * 1024)

void blob_touch(struct server *srv, const char *digest)
{
	/* gc spares blobs younger than its grace, by mtime: one uploaded (or named by a build)
	 * again is as new as then, though its file was stored long ago. */
	int fd = -1;
	uint64_t size;
	struct sk_error err = {0};
	if (img_blob_open(&srv->imgs, digest, &fd, &size, &err) == 0) {
		futimens(fd, NULL);
		close(fd);
	}
}

/* ---- who may read a blob ---- */

struct blob_owner {
	char key[ID_MAX_BYTES + IMG_DIGEST_HEX + 1]; /* "<ws>/<hex>" */
};

static struct blob_owner *owner_new(const char *ws, const char *digest)
{
	struct blob_owner *o = calloc(1, sizeof(*o));
	if (o)
		snprintf(o->key, sizeof(o->key), "%s/%s", ws, digest);
	return o;
}

int blob_owner_load(const struct store_blob_owner *row, void *ud)
{
	struct server *srv = ud;
	struct blob_owner *o = owner_new(row->workspace_id, row->digest);
	if (!o)
		return -ENOMEM;
	if (map_get(&srv->blob_owners, o->key)) {
		free(o);
		return 0;
	}
	int r = map_put(&srv->blob_owners, o->key, o);
	if (r < 0)
		free(o);
	return r;
}

/* The bytes of the blobs a workspace uploaded that the store holds, as counted when blobs_gen
 * was gen: kept up to date by each upload, counted again (a stat of every blob the workspace
 * uploaded) only at its first upload after blobs left the store. Counting at every upload
 * stalled the server's loop for as long as opening all of a workspace's blobs takes. */
struct blob_usage {
	char ws[ID_MAX_BYTES];
	uint64_t bytes;
	unsigned gen;
};

void blob_owners_free(struct server *srv)
{
	size_t pos = 0;
	struct blob_owner *o;
	while ((o = map_next(&srv->blob_owners, &pos)))
		free(o);
	map_release(&srv->blob_owners);
	pos = 0;
	struct blob_usage *u;
	while ((u = map_next(&srv->blob_usage, &pos)))
		free(u);
	map_release(&srv->blob_usage);
}

void blobs_removed(struct server *srv)
{
	srv->blobs_gen++;
}

static int owned(struct server *srv, const char *ws, const char *digest)
{
	char key[ID_MAX_BYTES + IMG_DIGEST_HEX + 1];
	snprintf(key, sizeof(key), "%s/%s", ws, digest);
	return map_get(&srv->blob_owners, key) != NULL;
}

int blob_readable_by(struct server *srv, const char *ws, int admin, const char *digest)
{
	if (admin || owned(srv, ws, digest))
		return 1;
	size_t pos = 0;
	struct image_rec *im;
	while ((im = map_next(&srv->images, &pos)))
		if (!strcmp(im->row.manifest, digest) && !strcmp(im->row.workspace_id, ws))
			return 1;
	return 0;
}

/* The call came with the worker secret (/internal/v1/blobs): a worker reads any blob, which
 * it needs for the images it runs, and its uploads (layers) belong to no workspace. */
static int by_worker(const struct api_call *call)
{
	return call->who.token == NULL;
}

int blob_readable(struct api_call *call, const char *digest)
{
	if (by_worker(call))
		return 1;
	return blob_readable_by(call->srv, call->who.workspace_id, call->who.role == ROLE_ADMIN,
	                        digest);
}

static int owner_put_fn(struct store_tx *tx, void *ud)
{
	return store_blob_owner_put(tx, ud);
}

static void owner_put_done(void *ud, int rc)
{
	(void)rc;
	free(ud);
}

/* ws uploaded digest: remembered now, stored soon. 0, or -ENOMEM. */
static int blob_own(struct server *srv, const char *ws, const char *digest)
{
	if (owned(srv, ws, digest))
		return 0;
	struct blob_owner *o = owner_new(ws, digest);
	struct store_blob_owner *row = calloc(1, sizeof(*row));
	if (!o || !row || map_put(&srv->blob_owners, o->key, o) < 0) {
		free(o);
		free(row);
		return -ENOMEM;
	}
	snprintf(row->workspace_id, sizeof(row->workspace_id), "%s", ws);
	snprintf(row->digest, sizeof(row->digest), "%s", digest);
	row->created_ms = clock_now_ms();
	if (server_persist(srv, owner_put_fn, owner_put_done, row) < 0) {
		free(row); /* kept in memory: readable until the server restarts */
		server_logf(srv, "level=error msg=\"store a blob owner\" workspace=%s", ws);
	}
	return 0;
}

/* Bytes of the blobs ws uploaded that the store holds, counted from the files: every owner of
 * every workspace looked at, and each of ws's blobs stat'ed. */
static uint64_t ws_stored_bytes(struct server *srv, const char *ws)
{
	size_t n = strlen(ws), pos = 0;
	uint64_t total = 0;
	struct blob_owner *o;
	while ((o = map_next(&srv->blob_owners, &pos))) {
		if (strncmp(o->key, ws, n) || o->key[n] != '/')
			continue;
		uint64_t size = 0;
		if (img_blob_size(&srv->imgs, o->key + n + 1, &size) == 0)
			total += size;
	}
	return total;
}

/* ws's count, counted again if blobs left the store since; NULL when out of memory. */
static struct blob_usage *ws_usage(struct server *srv, const char *ws)
{
	struct blob_usage *u = map_get(&srv->blob_usage, ws);
	if (!u) {
		if (!(u = calloc(1, sizeof(*u))))
			return NULL;
		snprintf(u->ws, sizeof(u->ws), "%s", ws);
		if (map_put(&srv->blob_usage, u->ws, u) < 0) {
			free(u);
			return NULL;
		}
		u->gen = srv->blobs_gen - 1;
	}
	if (u->gen != srv->blobs_gen) {
		u->bytes = ws_stored_bytes(srv, ws);
		u->gen = srv->blobs_gen;
	}
	return u;
}

/* size bytes of digest were just stored, by an upload of ws ("" and worker: a worker's push)
 * which may not have owned it before (owned: it did); present: the store held it already. The
 * counts up to date with them: a blob new to the store counts for every workspace that owns it,
 * a blob the store held only for the workspace that owns it now and did not before. */
static void usage_stored(struct server *srv, const char *ws, int worker, const char *digest,
                         uint64_t size, int owned_before, int present)
{
	size_t pos = 0;
	struct blob_usage *u;
	while ((u = map_next(&srv->blob_usage, &pos))) {
		if (u->gen != srv->blobs_gen)
			continue; /* counted again when next asked */
		int mine = !worker && !strcmp(u->ws, ws);
		if (present ? mine && !owned_before : owned(srv, u->ws, digest))
			u->bytes += size;
	}
}

/* The digest in the route's first parameter ("sha256:<64 hex>"), or NULL after a 400. */
static const char *blob_digest_of_call(struct api_call *call)
{
	const char *p = call->req->params[0];
	if (strncmp(p, "sha256:", 7) || !img_digest_valid(p + 7)) {
		api_reply_error(call, 400, "invalid_argument",
		                "blob name: expected sha256:<64 lowercase hex digits>, got %.80s",
		                p);
		return NULL;
	}
	return p + 7;
}

/* ---- PUT: the body streamed into the store ---- */

struct blob_upload {
	struct blob_upload *next, **prevp; /* srv->uploads */
	struct server *srv;
	char workspace_id[ID_MAX_BYTES]; /* "": a worker's */
	int worker;
	uv_tcp_t *tcp;
	uv_timer_t *timer; /* nothing arrived for HTTP_DEFAULT_BODY_TIMEOUT_MS: given up */
	struct img_blob_writer *w;
	char expect[IMG_DIGEST_HEX];
	uint64_t declared;   /* the body's length */
	uint64_t left;       /* body bytes still to come */
	int existed;         /* in the store already */
	int owned;           /* uploaded by this workspace before: 200 rather than 201 */
	struct sk_error err; /* the first failure; the rest of the body is still read (dropped),
	                      * so that the client gets the answer rather than a reset */
	int failed_status;
	char *buf;
	char *reply;
	uv_write_t wr;
};

static void upload_free(struct blob_upload *u)
{
	if (u->prevp) {
		*u->prevp = u->next;
		if (u->next)
			u->next->prevp = u->prevp;
	}
	img_blob_abort(u->w);
	server_timer_free(u->timer);
	http_tcp_free(u->tcp);
	free(u->buf);
	free(u->reply);
	free(u);
}

static void upload_written(uv_write_t *wr, int status)
{
	(void)status;
	upload_free(wr->data);
}

/* Write the whole HTTP reply on the taken-over connection, then close it. */
static void upload_reply(struct blob_upload *u, int status, json_t *body)
{
	uv_read_stop((uv_stream_t *)u->tcp);
	uv_timer_stop(u->timer);
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	const char *reason = status == 200   ? "OK"
	                     : status == 201 ? "Created"
	                     : status == 400 ? "Bad Request"
	                     : status == 408 ? "Request Timeout"
	                     : status == 413 ? "Payload Too Large"
	                                     : "Internal Server Error";
	if (!text ||
	    asprintf(&u->reply,
	             "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
	             "Connection: close\r\n\r\n%s",
	             status, reason, strlen(text), text) < 0) {
		free(text);
		upload_free(u);
		return;
	}
	free(text);
	uv_buf_t b = uv_buf_init(u->reply, (unsigned)strlen(u->reply));
	u->wr.data = u;
	if (uv_write(&u->wr, (uv_stream_t *)u->tcp, &b, 1, upload_written) < 0)
		upload_free(u);
}

static json_t *error_body(const char *code, const char *msg)
{
	return json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
}

static void upload_fail(struct blob_upload *u, int status, const char *code, const char *msg)
{
	upload_reply(u, status, error_body(code, msg));
}

static void upload_finish(struct blob_upload *u)
{
	if (u->failed_status) {
		upload_fail(u, u->failed_status,
		            u->failed_status == 413 ? "payload_too_large" : "internal", u->err.msg);
		return;
	}
	char digest[IMG_DIGEST_HEX];
	uint64_t size = 0;
	struct img_blob_writer *w = TAKE_PTR(u->w);
	/* Looked at now, not when the upload began: another may have stored it since. */
	int present = img_blob_exists(&u->srv->imgs, u->expect);
	int r = img_blob_finish(w, u->expect, digest, &size, &u->err);
	if (r == -EBADMSG) {
		char msg[256];
		snprintf(msg, sizeof(msg),
		         "the bytes do not hash to the name sha256:%s (%s): nothing stored",
		         u->expect, u->err.msg);
		upload_fail(u, 400, "invalid_argument", msg);
		return;
	}
	if (r < 0) {
		server_logf(u->srv, "level=error msg=\"store a blob\" err=\"%s\"", u->err.msg);
		upload_fail(u, 500, "internal", u->err.msg);
		return;
	}
	if (u->existed)
		blob_touch(u->srv, digest);
	int owned_before = owned(u->srv, u->workspace_id, digest);
	if (!u->worker && blob_own(u->srv, u->workspace_id, digest) < 0) {
		upload_fail(u, 503, "unavailable", "out of memory");
		return;
	}
	usage_stored(u->srv, u->workspace_id, u->worker, digest, size, owned_before, present);
	char name[80];
	snprintf(name, sizeof(name), "sha256:%s", digest);
	upload_reply(u, u->owned ? 200 : 201,
	             json_pack("{s:s, s:I}", "digest", name, "size", (json_int_t)size));
}

/* Bytes of the body: into the writer, unless it failed already. */
static void upload_take(struct blob_upload *u, const char *data, size_t len)
{
	if (len > u->left)
		len = (size_t)u->left; /* what follows the body is not ours: dropped */
	u->left -= len;
	if (!u->failed_status && len) {
		int r = img_blob_write(u->w, data, len, &u->err);
		if (r < 0)
			u->failed_status = r == -EFBIG ? 413 : 500;
	}
}

static void upload_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct blob_upload *u = h->data;
	*buf = uv_buf_init(u->buf, BLOB_READ_BYTES);
}

static void upload_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct blob_upload *u = s->data;
	if (nread < 0) {
		/* The client went away (or shut its side) before the whole body: nothing is
		 * stored, and no one is left to answer. */
		upload_free(u);
		return;
	}
	uv_timer_again(u->timer);
	upload_take(u, buf->base, (size_t)nread);
	if (u->left == 0)
		upload_finish(u);
}

static void upload_timeout(uv_timer_t *t)
{
	struct blob_upload *u = t->data;
	upload_fail(u, 408, "deadline_exceeded", "the upload stalled: nothing arrived in time");
}

/* Bytes of the blobs ws uploaded that the store still holds (gc drops those no image uses), and
 * of its uploads under way. */
static uint64_t ws_blob_bytes(struct server *srv, const char *ws)
{
	struct blob_usage *usage = ws_usage(srv, ws);
	uint64_t total = usage ? usage->bytes : ws_stored_bytes(srv, ws);
	for (struct blob_upload *u = srv->uploads; u; u = u->next)
		if (!strcmp(u->workspace_id, ws))
			total += u->declared;
	return total;
}

/* 0, or -1 after a 413: len more bytes, of a blob the caller's workspace does not hold in the
 * store already, would take its uploads past their share of the store. */
static int ws_room(struct api_call *call, const char *digest, uint64_t len)
{
	struct server *srv = call->srv;
	const char *ws = call->who.workspace_id;
	/* A worker's push (a layer it stored) is no workspace's upload: the layer is bounded by
	 * its sandbox's disk limit, and the image it makes counts against its workspace's. */
	if (by_worker(call))
		return 0;
	/* A blob it uploaded that the store still holds is counted already: sent again, it costs
	 * nothing. One that gc dropped is new bytes again: else a workspace would upload, let gc
	 * drop it, fill its share with others, then send the first back past the share. */
	if (owned(srv, ws, digest) && img_blob_exists(&srv->imgs, digest))
		return 0;
	uint64_t used = ws_blob_bytes(srv, ws), max = srv->cfg.ws_blob_bytes;
	if (used <= max && len <= max - used)
		return 0;
	api_reply_error(call, 413, "payload_too_large",
	                "this workspace's uploads hold %llu bytes of the store, at most %llu: "
	                "%llu more do not fit (delete images that use them; blobs no image "
	                "uses are dropped by the store's garbage collection)",
	                (unsigned long long)used, (unsigned long long)max, (unsigned long long)len);
	return -1;
}

/* A body the HTTP layer read whole (chunked): stored at once. */
static void put_whole(struct api_call *call, const char *expect, uint64_t max)
{
	struct server *srv = call->srv;
	struct http_request *req = call->req;
	if (req->body_len > max) {
		api_reply_error(call, 413, "payload_too_large", "a blob is at most %llu bytes",
		                (unsigned long long)max);
		return;
	}
	if (ws_room(call, expect, req->body_len) < 0)
		return;
	int existed = img_blob_exists(&srv->imgs, expect);
	struct img_blob_writer *w = NULL;
	struct sk_error err = {0};
	char digest[IMG_DIGEST_HEX];
	uint64_t size = 0;
	int r = img_blob_begin(&srv->imgs, max, &w, &err);
	if (r == 0 && (r = img_blob_write(w, req->body ? req->body : "", req->body_len, &err)) < 0)
		img_blob_abort(w);
	else if (r == 0)
		r = img_blob_finish(w, expect, digest, &size, &err);
	if (r == -EBADMSG) {
		api_reply_error(call, 400, "invalid_argument",
		                "the bytes do not hash to the name sha256:%s (%s): nothing stored",
		                expect, err.msg);
		return;
	}
	if (r < 0) {
		api_reply_error(call, 500, "internal", "store the blob: %s", err.msg);
		return;
	}
	if (existed)
		blob_touch(srv, digest);
	/* 200 only to a workspace that uploaded it before: whether another did is not said. */
	int was_owned = owned(srv, call->who.workspace_id, digest);
	if (!by_worker(call) && blob_own(srv, call->who.workspace_id, digest) < 0) {
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	usage_stored(srv, call->who.workspace_id, by_worker(call), digest, size, was_owned,
	             existed);
	char name[80];
	snprintf(name, sizeof(name), "sha256:%s", digest);
	api_reply_json(call, was_owned ? 200 : 201,
	               json_pack("{s:s, s:I}", "digest", name, "size", (json_int_t)size));
}

/* 0, or -1 after a 429: too many streamed uploads under way. Workers' pushes (layers) have a
 * share of their own: counted with a workspace's, or with the clients' all together, a busy
 * cluster's 17th push at once, or clients holding every upload slot, failed builds and
 * snapshots. */
static int uploads_full(struct api_call *call)
{
	size_t all = 0, in_ws = 0, pushes = 0;
	for (struct blob_upload *o = call->srv->uploads; o; o = o->next) {
		pushes += o->worker;
		all += !o->worker;
		in_ws += !o->worker && !strcmp(o->workspace_id, call->who.workspace_id);
	}
	if (by_worker(call)) {
		if (pushes < SERVER_MAX_WORKER_UPLOADS)
			return 0;
		api_reply_error(call, 429, "resource_exhausted",
		                "too many pushes from workers at once (at most %d): try again when "
		                "one has ended",
		                SERVER_MAX_WORKER_UPLOADS);
		return -1;
	}
	if (all < SERVER_MAX_UPLOADS && in_ws < SERVER_MAX_UPLOADS_PER_WS)
		return 0;
	api_reply_error(call, 429, "resource_exhausted",
	                "too many uploads at once (%zu in this workspace, at most %d; %zu in "
	                "all, at most %d): try again when one has ended",
	                in_ws, SERVER_MAX_UPLOADS_PER_WS, all, SERVER_MAX_UPLOADS);
	return -1;
}

void api_blobs_put(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	const char *expect = blob_digest_of_call(call);
	if (!expect)
		return;
	uint64_t max = srv->cfg.max_blob_bytes;
	if (req->body_unread < 0) {
		put_whole(call, expect, max);
		return;
	}
	if ((uint64_t)req->body_unread > max) {
		api_reply_error(call, 413, "payload_too_large", "a blob is at most %llu bytes",
		                (unsigned long long)max);
		return;
	}
	if (uploads_full(call) < 0)
		return;
	if (ws_room(call, expect, (uint64_t)req->body_unread) < 0)
		return;
	struct blob_upload *u = calloc(1, sizeof(*u));
	struct sk_error err = {0};
	if (!u || !(u->buf = malloc(BLOB_READ_BYTES))) {
		free(u);
		api_reply_error(call, 503, "unavailable", "out of memory");
		return;
	}
	u->srv = srv;
	u->worker = by_worker(call);
	snprintf(u->workspace_id, sizeof(u->workspace_id), "%s", call->who.workspace_id);
	u->declared = u->left = (uint64_t)req->body_unread;
	snprintf(u->expect, sizeof(u->expect), "%s", expect);
	u->existed = img_blob_exists(&srv->imgs, expect);
	u->owned = owned(srv, u->workspace_id, expect);
	if (img_blob_begin(&srv->imgs, max, &u->w, &err) < 0) {
		upload_free(u);
		api_reply_error(call, 500, "internal", "store the blob: %s", err.msg);
		return;
	}
	char *pending = NULL;
	size_t pending_len = 0;
	int r = http_hijack(req, u->owned ? 200 : 201, &u->tcp, &pending, &pending_len);
	if (r < 0) {
		upload_free(u);
		api_reply_error(call, 503, "unavailable", "take the upload over: %s", strerror(-r));
		return;
	}
	api_call_free(call); /* req is gone with the hijack */
	u->tcp->data = u;
	/* The HTTP server no longer knows this connection: the server ends it when it stops. */
	u->next = srv->uploads;
	if (u->next)
		u->next->prevp = &u->next;
	u->prevp = &srv->uploads;
	srv->uploads = u;
	upload_take(u, pending, pending_len);
	free(pending);
	u->timer = server_timer_new(srv, upload_timeout, HTTP_DEFAULT_BODY_TIMEOUT_MS, u);
	if (!u->timer) {
		upload_free(u);
		return;
	}
	uv_timer_set_repeat(u->timer, HTTP_DEFAULT_BODY_TIMEOUT_MS);
	if (u->left == 0) {
		upload_finish(u);
		return;
	}
	if (uv_read_start((uv_stream_t *)u->tcp, upload_alloc, upload_read) < 0)
		upload_free(u);
}

/* ---- HEAD and GET ---- */

struct blob_download {
	int fd;
	char *buf;
};

static void download_free(struct http_request *req)
{
	struct blob_download *d = req->data;
	req->data = NULL;
	req->on_drain = NULL;
	req->on_abort = NULL;
	if (d) {
		close(d->fd);
		free(d->buf);
		free(d);
	}
}

/* Write until the connection's buffer is full (on_drain comes back), the end, or an error. */
static void download_pump(struct http_request *req)
{
	struct blob_download *d = req->data;
	for (;;) {
		ssize_t n = read(d->fd, d->buf, BLOB_READ_BYTES);
		if (n < 0) {
			download_free(req);
			http_reply_abort(req);
			return;
		}
		if (n == 0) {
			download_free(req);
			http_reply_end(req);
			return;
		}
		int r = http_reply_write(req, d->buf, (size_t)n);
		if (r == -EAGAIN)
			return;
		if (r < 0) {
			download_free(req);
			http_reply_end(req);
			return;
		}
	}
}

static void download_abort(struct http_request *req)
{
	download_free(req);
	http_reply_end(req);
}

void api_blobs_get(struct http_request *req)
{
	struct api_call *call = req->data;
	struct server *srv = call->srv;
	const char *digest = blob_digest_of_call(call);
	if (!digest)
		return;
	int fd = -1;
	uint64_t size = 0;
	struct sk_error err = {0};
	int r = blob_readable(call, digest) ? img_blob_open(&srv->imgs, digest, &fd, &size, &err)
	                                    : -ENOENT; /* another's: as if missing */
	if (r == -ENOENT) {
		api_reply_error(call, 404, "not_found", "blob sha256:%s not found", digest);
		return;
	}
	if (r < 0) {
		api_reply_error(call, 500, "internal", "%s", err.msg);
		return;
	}
	char len[32];
	snprintf(len, sizeof(len), "%llu", (unsigned long long)size);
	/* The size for clients of a chunked reply (Content-Length is the library's). */
	http_reply_header(req, "X-Skiff-Size", len);
	req->data = NULL;
	api_call_free(call);
	if (!strcmp(req->method, "HEAD")) {
		close(fd);
		http_reply(req, 200, "application/octet-stream", NULL, (size_t)size);
		return;
	}
	struct blob_download *d = calloc(1, sizeof(*d));
	if (!d || !(d->buf = malloc(BLOB_READ_BYTES))) {
		free(d);
		close(fd);
		http_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	d->fd = fd;
	req->data = d;
	req->on_drain = download_pump;
	req->on_abort = download_abort;
	if (http_reply_start(req, 200, "application/octet-stream") < 0) {
		download_free(req);
		http_reply_end(req);
		return;
	}
	download_pump(req);
}

void blobs_shutdown(struct server *srv)
{
	while (srv->uploads)
		upload_free(
		    srv->uploads); /* nothing stored; the client sees the connection close */
}
