/* Images across hosts: a worker whose data directory is not the server's (skiffd worker) fetches
 * what its store lacks of an image from the server before it makes the image's tree, and pushes
 * a layer it stored (a build step's, a snapshot) to the server before it reports it. Routes:
 * GET, HEAD and PUT /internal/v1/blobs/sha256:{hex}, with the worker secret (docs/WORKER.md).
 *
 * Blocking HTTP (libcurl): these run only in the spawner's jobs, forks that do one thing and
 * exit, never on a loop. Every blob fetched is hashed as it is written (img_blob_writer) and
 * stored only if it hashes to its name and is no larger than the manifest says. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "../image/manifest.h"
#include "spawner_internal.h"

struct remote {
	CURL *h;
	const struct spawner_config *cfg;
	struct curl_slist *headers;
	char errbuf[CURL_ERROR_SIZE];
};

static void remote_close(struct remote *rm)
{
	if (rm->h)
		curl_easy_cleanup(rm->h);
	curl_slist_free_all(rm->headers);
	explicit_bzero(rm, sizeof(*rm));
}

static int remote_open(struct remote *rm, const struct spawner_config *cfg, struct sk_error *err)
{
	*rm = (struct remote){.cfg = cfg};
	char auth[SP_FETCH_SECRET_MAX + 32];
	if (strlen(cfg->server_secret) > SP_FETCH_SECRET_MAX)
		return sk_error_set(err, -EINVAL, "the worker secret is too long");
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", cfg->server_secret);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(rm->h = curl_easy_init()) ||
	    !(rm->headers = curl_slist_append(NULL, auth))) {
		explicit_bzero(auth, sizeof(auth));
		remote_close(rm);
		return sk_error_set(err, -ENOMEM, "cannot start libcurl");
	}
	explicit_bzero(auth, sizeof(auth));
	return 0;
}

/* One request's options: the blob's URL, the secret, and the limits every request has (a
 * connect timeout, and a transfer that moves almost nothing for a while is given up). */
static void remote_request(struct remote *rm, const char *digest)
{
	char url[4096];
	snprintf(url, sizeof(url), "%s/internal/v1/blobs/sha256:%s", rm->cfg->server_url, digest);
	CURL *h = rm->h;
	curl_easy_reset(h); /* keeps the connection for the next blob */
	rm->errbuf[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	/* The server itself, as the worker's link reaches it: never a proxy named by the
	 * environment (http_proxy, ALL_PROXY, which libcurl honours by default), which would get
	 * the worker secret and could answer for the server. */
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, rm->headers);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "skiffd-worker");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, rm->errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)SP_FETCH_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, (long)SP_FETCH_STALL_BYTES_PER_S);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)SP_FETCH_STALL_S);
}

/* A failed transfer as an error: curl's reason, or the server's status and message. A server
 * that answered with an error status is the reason, whatever curl says of the rest: the
 * transfer is cut once the start of its body is kept (sink_keep). */
static int remote_failed(struct remote *rm, CURLcode c, long status, const char *body,
                         size_t body_len, struct sk_error *err)
{
	if (c != CURLE_OK && status < 300)
		return sk_error_set(err, c == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO,
		                    "the server %s: %s", rm->cfg->server_url,
		                    rm->errbuf[0] ? rm->errbuf : curl_easy_strerror(c));
	/* The server's own message when it sent one ({"error":{"message":…}}). A blob the server
	 * lacks is its store's fault, not the caller's: -EIO whatever the status. */
	json_t *doc = json_loadb(body, body_len, 0, NULL);
	const char *msg =
	    json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
	int r = msg ? sk_error_set(err, -EIO, "the server answered %ld: %s", status, msg)
	            : sk_error_set(err, -EIO, "the server answered %ld: %.*s", status,
	                           (int)body_len, body);
	json_decref(doc);
	return r;
}

/* ---- fetch ---- */

struct fetch_sink {
	CURL *h;
	struct img_blob_writer *w;
	long status;
	char body[512]; /* an error's body, cut */
	size_t body_len;
	int write_failed;
	struct sk_error *err;
};

/* The start of an answer that is not the blob (an error's JSON), for the message; what a
 * callback returns: len, or 0 (the transfer ends) once more comes than is kept, so that a server
 * sending an endless error body does not hold the job. */
static size_t sink_keep(struct fetch_sink *f, const char *p, size_t len)
{
	size_t room = sizeof(f->body) - f->body_len;
	size_t take = len < room ? len : room;
	memcpy(f->body + f->body_len, p, take);
	f->body_len += take;
	return take == len ? len : 0;
}

static size_t fetch_on_data(char *p, size_t size, size_t n, void *ud)
{
	struct fetch_sink *f = ud;
	size_t len = size * n;
	if (!f->status)
		curl_easy_getinfo(f->h, CURLINFO_RESPONSE_CODE, &f->status);
	if (f->status != 200)
		return sink_keep(f, p, len);
	if (img_blob_write(f->w, p, len, f->err) < 0) {
		f->write_failed = 1;
		return 0; /* ends the transfer */
	}
	return len;
}

/* Fetch blob digest into st: at most max bytes, which must hash to its name. */
static int blob_fetch(struct remote *rm, struct img_store *st, const char *digest, uint64_t max,
                      uint64_t *ret_size, struct sk_error *err)
{
	struct fetch_sink f = {.h = rm->h, .err = err};
	int r = img_blob_begin(st, max, &f.w, err);
	if (r < 0)
		return r;
	remote_request(rm, digest);
	curl_easy_setopt(rm->h, CURLOPT_WRITEFUNCTION, fetch_on_data);
	curl_easy_setopt(rm->h, CURLOPT_WRITEDATA, &f);
	/* A declared length past max is refused before any byte comes. */
	curl_easy_setopt(rm->h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max);
	CURLcode c = curl_easy_perform(rm->h);
	if (!f.status)
		curl_easy_getinfo(rm->h, CURLINFO_RESPONSE_CODE, &f.status);
	if (f.write_failed || c == CURLE_FILESIZE_EXCEEDED) {
		img_blob_abort(f.w);
		if (c == CURLE_FILESIZE_EXCEEDED || err->code == -EFBIG)
			return sk_error_set(err, -EIO,
			                    "the server sent more than the %llu bytes expected",
			                    (unsigned long long)max);
		return err->code;
	}
	if (c != CURLE_OK || f.status != 200) {
		img_blob_abort(f.w);
		return remote_failed(rm, c, f.status, f.body, f.body_len, err);
	}
	char got[IMG_DIGEST_HEX];
	r = img_blob_finish(f.w, digest, got, ret_size, err);
	if (r == -EBADMSG) {
		sk_error_prefix(err, "the server's bytes are not what their name says");
		err->code = r = -EIO; /* the server's store is at fault, not the request */
	}
	return r;
}

/* Bytes the store's filesystem has free. */
static int store_room(struct img_store *st, uint64_t *ret, struct sk_error *err)
{
	struct statvfs sv;
	if (fstatvfs(st->root_fd, &sv) < 0)
		return sk_error_errno(err, -errno, "statvfs %s", st->root);
	*ret = (uint64_t)sv.f_bavail * sv.f_frsize;
	return 0;
}

int sp_image_fetch_manifest(const struct spawner_config *cfg, struct img_store *st,
                            const char *digest, struct sk_error *err)
{
	if (img_blob_exists(st, digest))
		return 0;
	struct remote rm;
	int r = remote_open(&rm, cfg, err);
	if (r == 0 && (r = blob_fetch(&rm, st, digest, SP_FETCH_MANIFEST_MAX_BYTES, NULL, err)) < 0)
		sk_error_prefix(err, "fetch its manifest");
	remote_close(&rm);
	return r;
}

/* The files of m whose blobs st lacks (each digest once): how many bytes, and whether there
 * are any. */
static uint64_t missing_bytes(struct img_store *st, const struct img_manifest *m)
{
	uint64_t total = 0;
	for (size_t i = 0; i < m->n; i++)
		if (m->e[i].type == IMG_REG && !img_blob_exists(st, m->e[i].digest))
			total += m->e[i].size; /* a digest twice counts twice: an upper bound */
	return total;
}

int sp_image_fetch_files(const struct spawner_config *cfg, struct img_store *st, const char *digest,
                         struct sk_error *err)
{
	struct img_manifest m;
	img_manifest_init(&m);
	int r = img_manifest_load(st, digest, &img_default_limits, &m, err);
	if (r == 0)
		r = img_manifest_check(&m, 0, &img_default_limits, err);
	uint64_t need = r == 0 ? missing_bytes(st, &m) : 0, room = 0;
	if (r == 0 && need && (r = store_room(st, &room, err)) == 0 && need > room)
		r = sk_error_set(
		    err, -ENOSPC,
		    "its files this worker lacks take %llu bytes; the store's filesystem "
		    "has %llu free",
		    (unsigned long long)need, (unsigned long long)room);
	struct remote rm = {0};
	if (r == 0 && need)
		r = remote_open(&rm, cfg, err);
	for (size_t i = 0; r == 0 && need && i < m.n; i++) {
		const struct img_entry *e = &m.e[i];
		if (e->type != IMG_REG || img_blob_exists(st, e->digest))
			continue;
		uint64_t size = 0;
		r = blob_fetch(&rm, st, e->digest, e->size, &size, err);
		if (r == 0 && size != e->size)
			r = sk_error_set(err, -EIO, "%llu bytes, the manifest says %llu",
			                 (unsigned long long)size, (unsigned long long)e->size);
		if (r < 0)
			sk_error_prefix(err, "fetch %s (blob sha256:%s)", e->path, e->digest);
	}
	if (rm.h)
		remote_close(&rm);
	img_manifest_free(&m);
	return r;
}

/* ---- push ---- */

static size_t push_on_read(char *buf, size_t size, size_t n, void *ud)
{
	int fd = *(int *)ud;
	for (;;) {
		ssize_t got = read(fd, buf, size * n);
		if (got >= 0)
			return (size_t)got;
		if (errno != EINTR)
			return CURL_READFUNC_ABORT;
	}
}

static size_t push_on_data(char *p, size_t size, size_t n, void *ud)
{
	return sink_keep(ud, p, size * n); /* the server's answer */
}

/* Upload blob digest of st unless the server has it. */
static int blob_push(struct remote *rm, struct img_store *st, const char *digest,
                     struct sk_error *err)
{
	struct fetch_sink f = {.h = rm->h};
	remote_request(rm, digest);
	curl_easy_setopt(rm->h, CURLOPT_NOBODY, 1L);
	CURLcode c = curl_easy_perform(rm->h);
	curl_easy_getinfo(rm->h, CURLINFO_RESPONSE_CODE, &f.status);
	if (c == CURLE_OK && f.status == 200)
		return 0;
	if (c != CURLE_OK || f.status != 404)
		return remote_failed(rm, c, f.status, "", 0, err);
	int fd = -1;
	uint64_t size = 0;
	int r = img_blob_open(st, digest, &fd, &size, err);
	if (r < 0)
		return r;
	remote_request(rm, digest);
	curl_easy_setopt(rm->h, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(rm->h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)size);
	curl_easy_setopt(rm->h, CURLOPT_READFUNCTION, push_on_read);
	curl_easy_setopt(rm->h, CURLOPT_READDATA, &fd);
	curl_easy_setopt(rm->h, CURLOPT_WRITEFUNCTION, push_on_data);
	curl_easy_setopt(rm->h, CURLOPT_WRITEDATA, &f);
	f.status = 0;
	c = curl_easy_perform(rm->h);
	close(fd);
	curl_easy_getinfo(rm->h, CURLINFO_RESPONSE_CODE, &f.status);
	if (c == CURLE_OK && (f.status == 200 || f.status == 201))
		return 0;
	return remote_failed(rm, c, f.status, f.body, f.body_len, err);
}

int sp_layer_push(const struct spawner_config *cfg, struct img_store *st,
                  const struct img_manifest *m, const char *digest, struct sk_error *err)
{
	struct remote rm;
	int r = remote_open(&rm, cfg, err);
	/* The files first, the manifest last: once the server has the manifest, it has all. */
	for (size_t i = 0; r == 0 && i < m->n; i++) {
		const struct img_entry *e = &m->e[i];
		if (e->type == IMG_REG && (r = blob_push(&rm, st, e->digest, err)) < 0)
			sk_error_prefix(err, "push %s (blob sha256:%s)", e->path, e->digest);
	}
	if (r == 0 && (r = blob_push(&rm, st, digest, err)) < 0)
		sk_error_prefix(err, "push the layer's manifest sha256:%s", digest);
	if (rm.h)
		remote_close(&rm);
	return r;
}
