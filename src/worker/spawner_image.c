/* Sandboxes on images: the content store of the data directory (<data_dir>/images), trees
 * materialized for creates that name an image, held while their sandboxes exist, and writable
 * layers stored as layers (a build step's at its end, a snapshot of a running sandbox).
 *
 * Materializing and ingesting read and write whole images: each runs in a short-lived fork of
 * the spawner (a job), never on its loop, which serves other requests meanwhile. A job writes
 * one JSON object to its pipe ({"digest": …} or {"code": -errno, "message": …}) and exits; the
 * loop polls its pipe and pidfd and finishes it once both are done. Forks, not threads: the
 * spawner must stay single-threaded to make user namespaces. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../image/manifest.h"
#include "../lib/fsutil.h"
#include "../lib/hash.h"
#include "../runtime/idmap.h"
#include "spawner_internal.h"

void sp_images_open(struct spawner *sp, int on_disk)
{
	char root[4096], note[SK_ERROR_MSG_BYTES + 256];
	struct sk_error err = {0};
	sp->store.root_fd = -1;
	int r = rt_image_store_place(sp->cfg->data_dir, on_disk, root, sizeof(root),
	                             &sp->store_lock_fd, note, sizeof(note), &err);
	if (r < 0 || img_store_open(&sp->store, root, &err) < 0) {
		sp_log("error", "images: %s: sandboxes on images will fail", err.msg);
		rt_image_store_release(sp->cfg->data_dir, TAKE_FD(sp->store_lock_fd));
		return;
	}
	if (note[0])
		sp_log(r > 0 ? "warn" : "info", "images: %s", note);
	sp->store_ok = 1;
}

static void job_free(struct sp_job *j)
{
	if (j->pidfd >= 0)
		close(j->pidfd);
	if (j->pipe_fd >= 0)
		close(j->pipe_fd);
	json_decref(j->req_id);
	free(j);
}

static void pending_free(struct sp_pending *p)
{
	json_decref(p->req_id);
	spec_release(&p->spec);
	free(p);
}

static void job_kill(struct sp_job *j)
{
	if (!j->reaped && j->pidfd >= 0)
		syscall(SYS_pidfd_send_signal, j->pidfd, SIGKILL, NULL, 0);
}

void sp_jobs_release(struct spawner *sp)
{
	while (sp->jobs) {
		struct sp_job *j = sp->jobs;
		sp->jobs = j->next;
		job_kill(j);
		if (!j->reaped && j->pidfd >= 0)
			waitid((idtype_t)P_PIDFD, (id_t)j->pidfd, &(siginfo_t){0}, WEXITED);
		if (j->s)
			j->s->job = NULL;
		job_free(j);
	}
	sp->njobs = 0;
	while (sp->pending) {
		struct sp_pending *p = sp->pending;
		sp->pending = p->next;
		pending_free(p);
	}
}

void sp_images_close(struct spawner *sp)
{
	sp_jobs_release(sp);
	if (sp->store_ok)
		img_store_close(&sp->store);
	sp->store_ok = 0;
	rt_image_store_release(sp->cfg->data_dir, TAKE_FD(sp->store_lock_fd));
}

void sp_image_holder(const struct spawner *sp, const char *id, char *buf, size_t size)
{
	/* The instance in the name: instances sharing a data directory gc only their own. */
	snprintf(buf, size, "%s_%s", sp->rt.instance, id);
}

/* ---- jobs ---- */

/* The runtime writes the worker's resolvers into an egress sandbox's /etc/resolv.conf: they are
 * the worker's, not the image's. A layer keeps that file only when the sandbox changed it. */
static void layer_drop_resolv_conf(struct spawner *sp, struct img_manifest *m)
{
	char hex[SHA256_HEX_BYTES];
	const struct img_entry *e = img_manifest_find(m, "/etc/resolv.conf");
	if (sp->egress_ok && e && e->type == IMG_REG &&
	    sha256_hex(sp->egress.resolv_conf, strlen(sp->egress.resolv_conf), hex) == 0 &&
	    !strcmp(e->digest, hex))
		img_manifest_remove(m, e);
}

/* max_bytes: the sandbox's disk limit. Its files can't hold more, but a sparse file (made in
 * no time, taking no space) reads back as all its size: without this a small sandbox could have
 * the store write the default limit (tens of GiB) of zeros for each layer. */
static int layer_store(struct spawner *sp, int upper_fd, uid_t base, uint64_t max_bytes,
                       char *digest, struct sk_error *err)
{
	struct img_store *st = &sp->store;
	struct img_limits lim = img_default_limits;
	if (max_bytes && max_bytes < lim.max_bytes)
		lim.max_bytes = max_bytes;
	if (lim.max_file_bytes > lim.max_bytes)
		lim.max_file_bytes = lim.max_bytes;
	struct img_manifest m;
	img_manifest_init(&m);
	int r = img_ingest_dir(st, upper_fd, IMG_INGEST_LAYER, &lim, &m, err);
	if (r == 0) {
		layer_drop_resolv_conf(sp, &m);
		/* Owners as the sandbox saw them (an id outside its range, none should be, is
		 * nobody's). */
		img_manifest_ids_unmap(&m, base, IDMAP_RANGE, SP_LAYER_NOBODY);
		r = img_manifest_save(st, &m, digest, err);
	}
	/* Reported once the server has it all: it makes the next step's image from it. */
	if (r == 0 && sp->cfg->server_url && (r = sp_layer_push(sp->cfg, st, &m, digest, err)) < 0)
		sk_error_prefix(err, "layer sha256:%s stored on this worker", digest);
	img_manifest_free(&m);
	return r;
}

uint64_t sp_image_min_free(const struct spawner_config *cfg, uint64_t fs_bytes)
{
	uint64_t pct = fs_bytes / 100 * cfg->image_min_free_pct;
	return pct > cfg->image_min_free_bytes ? pct : cfg->image_min_free_bytes;
}

static void tree_dropped(const char *digest, void *ud)
{
	(void)ud;
	sp_log("info", "images: dropped the unused tree of sha256:%s to keep space free", digest);
}

static uint64_t store_avail(struct spawner *sp, uint64_t *ret_keep)
{
	struct statvfs sv;
	if (fstatvfs(sp->store.root_fd, &sv) < 0)
		return UINT64_MAX; /* unknown: nothing is dropped */
	*ret_keep = sp_image_min_free(sp->cfg, (uint64_t)sv.f_blocks * sv.f_frsize);
	return (uint64_t)sv.f_bavail * sv.f_frsize;
}

/* The digests of the trees the store has now (n of them; NULL when there are none or memory
 * is short). */
static char (*trees_present(struct spawner *sp, size_t *ret_n))[IMG_DIGEST_HEX]
{
	*ret_n = 0;
	int fd = openat(sp->store.root_fd, "trees", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	char(*v)[IMG_DIGEST_HEX] = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		struct stat st;
		if (!img_digest_valid(de->d_name) ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			void *nv = realloc(v, cap * sizeof(*v));
			if (!nv)
				break;
			v = nv;
		}
		snprintf(v[n++], IMG_DIGEST_HEX, "%s", de->d_name);
	}
	closedir(d);
	*ret_n = n;
	return v;
}

/* Split mode, still short of space once the unused trees are gone: the blobs no tree left
 * uses go too (images whose trees were dropped, layers pushed), all of which the server has
 * and a create fetches again; unless younger than SP_STORE_BLOB_GRACE_S (a fetch or a push
 * under way), or of a tree held (a create waiting for it). Without this a worker's store only
 * grew: every image it ever ran and every layer it captured stayed, until the disk was full
 * and no new image could be fetched. */
static void store_gc_blobs(struct spawner *sp)
{
	size_t n = 0;
	char(*trees)[IMG_DIGEST_HEX] = trees_present(sp, &n);
	const char **live = calloc(n ? n : 1, sizeof(*live));
	struct sk_error err = {0};
	struct img_gc_stats stats = {0};
	for (size_t i = 0; live && i < n; i++)
		live[i] = trees[i];
	if (!live)
		sp_log("warn", "images: out of memory: no blob dropped");
	else if (img_store_gc(&sp->store, live, n, SP_STORE_BLOB_GRACE_S, &stats, &err) < 0)
		sp_log("warn", "images: %s", err.msg);
	else if (stats.blobs_removed)
		sp_log("info",
		       "images: %llu blobs no tree uses dropped (%llu bytes) to keep space free",
		       (unsigned long long)stats.blobs_removed,
		       (unsigned long long)stats.blob_bytes_removed);
	free(live);
	free(trees);
}

/* Before a tree is made: unused trees dropped, least recently used first, while the store's
 * filesystem has less free than the worker keeps free; then, in split mode, blobs no tree
 * uses. A failure here fails nothing. */
static void store_prune(struct spawner *sp)
{
	uint64_t keep = 0, avail = store_avail(sp, &keep);
	if (avail >= keep)
		return;
	struct sk_error err = {0};
	int r = img_trees_prune(&sp->store, keep, tree_dropped, NULL, &err);
	if (r < 0)
		sp_log("warn", "images: %s", err.msg);
	else if (r > 0)
		sp_log("info",
		       "images: %d unused trees dropped: %llu bytes were free, %llu are kept free",
		       r, (unsigned long long)avail, (unsigned long long)keep);
	if (sp->cfg->server_url && store_avail(sp, &keep) < keep)
		store_gc_blobs(sp);
}

/* The tree of digest, made: what the store lacks fetched from the server first (split mode). */
static int tree_make(struct spawner *sp, const char *digest, char *out, size_t size,
                     struct sk_error *err)
{
	const struct spawner_config *cfg = sp->cfg;
	int r = cfg->server_url ? sp_image_fetch_manifest(cfg, &sp->store, digest, err) : 0;
	if (r < 0)
		return r;
	store_prune(sp);
	if (cfg->server_url && (r = sp_image_fetch_files(cfg, &sp->store, digest, err)) < 0)
		return r;
	return img_materialize(&sp->store, digest, out, size, err);
}

/* The job's process: what it needs (its pipe, the store, the layer), nothing else. */
_Noreturn static void job_main(struct spawner *sp, struct sp_job *j, int fd, int upper_fd,
                               uid_t base)
{
	prctl(PR_SET_NAME, SP_JOB_HELPER_NAME);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	fcntl(fd, F_SETFL, 0);
	/* stderr: the daemon's log, for what pruning dropped. */
	int keep[4] = {fd, sp->store.root_fd, STDERR_FILENO, upper_fd};
	struct sk_error err = {0};
	char out[4096];
	int r = fs_close_all_except(keep, upper_fd >= 0 ? 4 : 3);
	if (r < 0)
		sk_error_errno(&err, r, "close fds");
	else if (j->kind == SP_JOB_TREE)
		r = tree_make(sp, j->digest, out, sizeof(out), &err);
	else
		r = layer_store(sp, upper_fd, base, j->max_bytes, out, &err);
	/* The message may name a file of the sandbox's, whose name may be any bytes. */
	json_t *msg = r < 0 ? json_pack("{s:i, s:o}", "code", err.code, "message",
	                                sp_json_lossy(err.msg, strlen(err.msg)))
	                    : json_pack("{s:s}", "result", out);
	sp_child_answer(fd, msg);
}

/* Fork job j (upper_fd: a layer's, taken). */
static int job_start(struct spawner *sp, struct sp_job *j, int upper_fd, uid_t base,
                     struct sk_error *err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
		if (upper_fd >= 0)
			close(upper_fd);
		return sk_error_errno(err, -errno, "pipe");
	}
	int pidfd = -1;
	pid_t pid = (pid_t)syscall(SYS_clone, CLONE_PIDFD | SIGCHLD, NULL, &pidfd, NULL, 0);
	if (pid == 0) {
		close(p[0]);
		job_main(sp, j, p[1], upper_fd, base);
	}
	int r = pid < 0 ? -errno : 0;
	close(p[1]);
	if (upper_fd >= 0)
		close(upper_fd);
	if (r < 0) {
		close(p[0]);
		return sk_error_errno(err, r, "fork");
	}
	j->pid = pid;
	j->pidfd = pidfd;
	j->pipe_fd = p[0];
	j->next = sp->jobs;
	sp->jobs = j;
	sp->njobs++;
	return 0;
}

static struct sp_job *job_new(enum sp_job_kind kind, struct sk_error *err)
{
	struct sp_job *j = calloc(1, sizeof(*j));
	if (!j) {
		sk_error_set(err, -ENOMEM, "out of memory");
		return NULL;
	}
	j->kind = kind;
	j->pidfd = j->pipe_fd = -1;
	return j;
}

void sp_job_read(struct spawner *sp, struct sp_job *j)
{
	(void)sp;
	while (j->pipe_fd >= 0) {
		if (j->len == sizeof(j->buf)) { /* more than an answer: garbled */
			close(TAKE_FD(j->pipe_fd));
			return;
		}
		ssize_t n = read(j->pipe_fd, j->buf + j->len, sizeof(j->buf) - j->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			j->eof = n == 0;
			close(TAKE_FD(j->pipe_fd));
			return;
		}
		j->len += (size_t)n;
	}
}

void sp_job_reap(struct spawner *sp, struct sp_job *j)
{
	(void)sp;
	if (sp_child_reap(&j->pidfd, &j->exit_ok))
		j->reaped = 1;
}

/* The job's answer: 0 and its result (a digest or a path) in buf, or err. */
static int job_result(struct sp_job *j, char *buf, size_t size, struct sk_error *err)
{
	if (!j->eof || !j->exit_ok || j->len == 0)
		return sk_error_set(err, -EIO, "the image job died");
	json_t *msg = json_loadb(j->buf, j->len, 0, NULL);
	const char *res = json_string_value(json_object_get(msg, "result"));
	json_t *code = json_object_get(msg, "code");
	int r = 0;
	if (res && strlen(res) < size) {
		snprintf(buf, size, "%s", res);
	} else if (json_is_integer(code) && json_integer_value(code) < 0) {
		const char *m = json_string_value(json_object_get(msg, "message"));
		r = sk_error_set(err, (int)json_integer_value(code), "%s", m ? m : "failed");
	} else {
		r = sk_error_set(err, -EIO, "the image job's answer is garbled");
	}
	json_decref(msg);
	return r;
}

/* ---- creates on images ---- */

static void hold_release(struct spawner *sp, const char *digest, const char *id)
{
	char holder[64];
	sp_image_holder(sp, id, holder, sizeof(holder));
	img_tree_release(&sp->store, digest, holder);
}

/* Start the sandbox on the tree at path; on failure its hold goes. */
static int image_start(struct spawner *sp, const char *id, const struct spec *spec,
                       const char *path, json_t *reply, struct sk_error *err)
{
	int r = sp_sandbox_create(sp, id, spec, path, reply, err);
	if (r < 0) {
		hold_release(sp, spec->image_digest, id);
		return r;
	}
	struct sp_sandbox *s = sp_sandbox_find(sp, id);
	snprintf(s->image, sizeof(s->image), "%s", spec->image_digest);
	return 0;
}

static struct sp_job *tree_job_find(struct spawner *sp, const char *digest)
{
	for (struct sp_job *j = sp->jobs; j; j = j->next)
		if (j->kind == SP_JOB_TREE && !strcmp(j->digest, digest))
			return j;
	return NULL;
}

int sp_image_create(struct spawner *sp, const char *id, json_t *req, struct spec *spec,
                    json_t *reply, struct sk_error *err)
{
	const char *digest = spec->image_digest;
	if (!sp->store_ok)
		return sk_error_set(
		    err, -EIO, "image sha256:%s: this worker's image store is unavailable", digest);
	/* Without a server to fetch it from (the store is the server's), a missing image is. */
	if (!sp->cfg->server_url && !img_blob_exists(&sp->store, digest))
		return sk_error_set(err, -ENOENT, "image sha256:%s is not in this worker's store",
		                    digest);
	char holder[64];
	sp_image_holder(sp, id, holder, sizeof(holder));
	/* Held first: gc and pruning leave the tree from now on, made or not. */
	int r = img_tree_hold(&sp->store, digest, holder, err);
	if (r < 0)
		return r;
	char path[4096];
	struct stat st;
	snprintf(path, sizeof(path), "%s/trees/%s", sp->store.root, digest);
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return image_start(sp, id, spec, path, reply, err);
	struct sp_pending *p = calloc(1, sizeof(*p));
	if (!p) {
		hold_release(sp, digest, id);
		return sk_error_set(err, -ENOMEM, "out of memory");
	}
	if (!tree_job_find(sp, digest)) {
		struct sp_job *j = sp->njobs < SP_JOBS_MAX ? job_new(SP_JOB_TREE, err) : NULL;
		if (!j && sp->njobs >= SP_JOBS_MAX)
			sk_error_set(err, -EAGAIN, "too many images being prepared at once (%d)",
			             SP_JOBS_MAX);
		if (j)
			snprintf(j->digest, sizeof(j->digest), "%s", digest);
		if (!j || job_start(sp, j, -1, 0, err) < 0) {
			free(j);
			free(p);
			hold_release(sp, digest, id);
			return err->code;
		}
	}
	snprintf(p->id, sizeof(p->id), "%s", id);
	snprintf(p->digest, sizeof(p->digest), "%s", digest);
	p->req_id = json_incref(json_object_get(req, "req"));
	p->spec = *spec; /* taken */
	spec_init(spec);
	p->next = sp->pending;
	sp->pending = p;
	return 1;
}

/* The tree of j is made (path) or failed (err): start or fail the creates waiting for it. */
static void tree_done(struct spawner *sp, struct sp_job *j, const char *path,
                      const struct sk_error *jerr)
{
	for (struct sp_pending **pp = &sp->pending; *pp;) {
		struct sp_pending *p = *pp;
		if (strcmp(p->digest, j->digest) != 0) {
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		struct sk_error err = {0};
		json_t *reply = json_object();
		int r = -1;
		if (jerr) {
			hold_release(sp, p->digest, p->id);
			sk_error_set(&err, jerr->code, "image sha256:%s: %s", p->digest, jerr->msg);
		} else if (sp_sandbox_find(sp, p->id)) {
			hold_release(sp, p->digest, p->id);
			sk_error_set(&err, -EEXIST, "sandbox %s exists", p->id);
		} else if ((r = image_start(sp, p->id, &p->spec, path, reply, &err)) < 0) {
			sk_error_prefix(&err, "create %s", p->id);
		}
		if (r == 0)
			sp_answer(sp, p->req_id, TAKE_PTR(reply), NULL);
		else
			sp_answer(sp, p->req_id, NULL, &err);
		json_decref(reply);
		pending_free(p);
	}
}

int sp_pending_cancel(struct spawner *sp, const char *id, const char *why)
{
	for (struct sp_pending **pp = &sp->pending; *pp; pp = &(*pp)->next) {
		struct sp_pending *p = *pp;
		if (strcmp(p->id, id) != 0)
			continue;
		*pp = p->next;
		hold_release(sp, p->digest, p->id);
		struct sk_error err;
		sk_error_set(&err, -EBUSY, "create %s: the sandbox %s while its image was prepared",
		             p->id, why);
		sp_answer(sp, p->req_id, NULL, &err);
		pending_free(p);
		return 1; /* its tree's job goes on: the tree is kept for the next create */
	}
	return 0;
}

/* ---- layers ---- */

static int layer_job_start(struct spawner *sp, struct sp_sandbox *s, json_t *req_id,
                           struct sk_error *err)
{
	if (!sp->store_ok)
		return sk_error_set(err, -EIO, "this worker's image store is unavailable");
	if (s->job)
		return sk_error_set(err, -EBUSY, "sandbox %s: its layer is being stored already",
		                    s->id);
	if (sp->njobs >= SP_JOBS_MAX)
		return sk_error_set(err, -EAGAIN, "too many layers being stored at once (%d)",
		                    SP_JOBS_MAX);
	int fd;
	uid_t base;
	int r = rt_sandbox_upper_open(s->sb, &fd, &base, err);
	if (r < 0)
		return r;
	struct sp_job *j = job_new(SP_JOB_LAYER, err);
	if (!j) {
		close(fd);
		return err->code;
	}
	j->s = s;
	j->req_id = json_incref(req_id);
	j->max_bytes = s->disk_mib * 1024 * 1024;
	if ((r = job_start(sp, j, fd, base, err)) < 0) {
		job_free(j);
		return r;
	}
	s->job = j;
	return 0;
}

int sp_layer_capture(struct spawner *sp, struct sp_sandbox *s)
{
	struct sk_error err = {0};
	if (layer_job_start(sp, s, NULL, &err) == 0)
		return 1;
	free(s->layer_error);
	s->layer_error = strdup(err.msg);
	return 0;
}

static void layer_done(struct spawner *sp, struct sp_job *j, const char *digest,
                       const struct sk_error *err)
{
	struct sp_sandbox *s = j->s;
	if (s)
		s->job = NULL;
	if (j->req_id) { /* a snapshot */
		sp_answer(sp, j->req_id, err ? NULL : json_pack("{s:s}", "layer", digest), err);
		return;
	}
	if (!s)
		return;
	if (err) {
		free(s->layer_error);
		s->layer_error = strdup(err->msg);
	} else {
		snprintf(s->layer, sizeof(s->layer), "%s", digest);
	}
	sp_sandbox_end_done(sp, s);
}

void sp_job_cancel(struct spawner *sp, struct sp_sandbox *s, const char *why)
{
	struct sp_job *j = s->job;
	if (!j)
		return;
	job_kill(j);
	j->s = NULL;
	s->job = NULL;
	struct sk_error err;
	sk_error_set(&err, -EBUSY, "sandbox %s %s", s->id, why);
	if (j->req_id) {
		sp_answer(sp, j->req_id, NULL, &err);
		json_decref(TAKE_PTR(j->req_id));
	} else {
		free(s->layer_error);
		s->layer_error = strdup(err.msg);
	}
}

int sp_op_snapshot(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply;
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0)
		return r;
	if (s->state != SP_RUNNING || s->end_reason != SP_RUNNING)
		return sk_error_set(err, -EBUSY,
		                    "sandbox %s is %s: only a running sandbox has a "
		                    "snapshot",
		                    s->id,
		                    s->state != SP_RUNNING ? sp_state_name(s->state) : "ending");
	r = layer_job_start(sp, s, json_object_get(req, "req"), err);
	return r < 0 ? r : 1;
}

void sp_jobs_run(struct spawner *sp)
{
	for (struct sp_job **jp = &sp->jobs; *jp;) {
		struct sp_job *j = *jp;
		if (j->pipe_fd >= 0 && j->reaped)
			sp_job_read(sp, j); /* what it wrote before it exited */
		if (!j->reaped || j->pipe_fd >= 0) {
			jp = &j->next;
			continue;
		}
		*jp = j->next;
		sp->njobs--;
		char out[4096];
		struct sk_error err = {0};
		int r = job_result(j, out, sizeof(out), &err);
		if (j->kind == SP_JOB_TREE)
			tree_done(sp, j, out, r < 0 ? &err : NULL);
		else if (j->s || j->req_id)
			layer_done(sp, j, out, r < 0 ? &err : NULL);
		job_free(j);
	}
}

/* ---- holds ---- */

static int holder_known(struct spawner *sp, const char *holder)
{
	char mine[64];
	for (struct sp_sandbox *s = sp->sandboxes; s; s = s->next) {
		sp_image_holder(sp, s->id, mine, sizeof(mine));
		if (!strcmp(mine, holder))
			return 1;
	}
	for (struct sp_pending *p = sp->pending; p; p = p->next) {
		sp_image_holder(sp, p->id, mine, sizeof(mine));
		if (!strcmp(mine, holder))
			return 1;
	}
	return 0;
}

/* Holds are files (trees/<digest>.holds/<holder>): those of this instance's sandboxes that are
 * gone (removed while no spawner ran, or by a crash between remove and release) go. */
void sp_holds_gc(struct spawner *sp)
{
	if (!sp->store_ok)
		return;
	char prefix[16];
	snprintf(prefix, sizeof(prefix), "%s_", sp->rt.instance);
	_cleanup_close_ int trees =
	    openat(sp->store.root_fd, "trees", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = trees >= 0 ? fdopendir(fcntl(trees, F_DUPFD_CLOEXEC, 3)) : NULL;
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *dot = strchr(de->d_name, '.');
		if (!dot || strcmp(dot, ".holds") != 0 || dot - de->d_name != IMG_DIGEST_HEX - 1)
			continue;
		char digest[IMG_DIGEST_HEX];
		snprintf(digest, sizeof(digest), "%.*s", (int)(dot - de->d_name), de->d_name);
		int hfd = openat(trees, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *h = hfd >= 0 ? fdopendir(hfd) : NULL;
		if (!h) {
			if (hfd >= 0)
				close(hfd);
			continue;
		}
		struct dirent *he;
		while ((he = readdir(h))) {
			if (strncmp(he->d_name, prefix, strlen(prefix)) != 0 ||
			    holder_known(sp, he->d_name))
				continue;
			sp_log("info", "image %s: released the hold of %s, which is gone", digest,
			       he->d_name);
			img_tree_release(&sp->store, digest, he->d_name);
		}
		closedir(h);
	}
	closedir(d);
}
