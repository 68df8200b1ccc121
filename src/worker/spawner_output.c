/* Output files: read for the output op, and kept to their last SPAWNER_OUTPUT_KEEP_BYTES by
 * punching out what is older (offsets stay valid: the file keeps its size, its start becomes a
 * hole). Where the kept part starts is found again from the file (SEEK_DATA), so a restarted
 * spawner reports it too. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/encoding.h"
#include "spawner_internal.h"

#define PUNCH_ALIGN_BYTES 4096 /* whole pages: a partly punched page would read as zeros */

void sp_output_init(struct sp_output *o, const char *dir, const char *name)
{
	snprintf(o->path, sizeof(o->path), "%s/%s", dir, name);
	o->dropped = 0;
}

/* Where fd's data starts: after the holes punched at its start. */
static uint64_t data_start(int fd, uint64_t size)
{
	off_t d = lseek(fd, 0, SEEK_DATA);
	if (d < 0)
		return errno == ENXIO ? size : 0;
	return (uint64_t)d;
}

void sp_output_trim(struct sp_output *o)
{
	_cleanup_close_ int fd = open(o->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size <= SPAWNER_OUTPUT_KEEP_BYTES)
		return;
	uint64_t cut =
	    ((uint64_t)st.st_size - SPAWNER_OUTPUT_KEEP_BYTES) & ~(uint64_t)(PUNCH_ALIGN_BYTES - 1);
	if (cut <= o->dropped)
		return;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)cut) < 0) {
		sp_log("error", "trim %s: %s", o->path, strerror(errno));
		return;
	}
	o->dropped = cut;
}

void sp_outputs_trim(struct spawner *sp)
{
	for (struct sp_sandbox *s = sp->sandboxes; s; s = s->next) {
		for (int i = 0; i < 2 && s->state == SP_RUNNING; i++)
			sp_output_trim(&s->out[i]);
		for (struct sp_exec *e = s->execs; e; e = e->next)
			for (int i = 0; i < 2 && e->running; i++)
				sp_output_trim(&e->out[i]);
	}
}

/* Where the output of one stream is: the exec's (or the main command's) file and whether its
 * writer still runs. found is filled for an exec started before this spawner did. */
static int output_locate(struct sp_sandbox *s, const char *exid, int si, struct sp_output *found,
                         struct sp_output **ret, int *ret_writing, struct sk_error *err)
{
	static const char *const NAMES[] = {"stdout", "stderr"};
	if (!exid) {
		*ret = &s->out[si];
		*ret_writing = s->state == SP_RUNNING;
		return 0;
	}
	struct sp_exec *e = sp_exec_find(s, exid);
	if (e) {
		*ret = &e->out[si];
		*ret_writing = e->running;
		return 0;
	}
	if (!id_is_valid("ex-", exid))
		return sk_error_set(err, -ENOENT, "no exec %.64s in %s", exid, s->id);
	/* Files without a record (a spawner that died between the start and the record): they
	 * are all there is. */
	char name[64];
	snprintf(name, sizeof(name), "execs/%s.%s", exid, NAMES[si]);
	sp_output_init(found, rt_sandbox_dir(s->sb), name);
	*ret = found;
	*ret_writing = 0; /* no record of it was found: nothing is known to write it */
	return 0;
}

/* What of o can be read from offset (at most max bytes), into {"offset","size","eof"} and,
 * inline, "data_b64" with the bytes; else "path" and "length" for the caller to read them
 * itself (the worker: it sends them on without JSON). Returns that many bytes, or a negative
 * code in err. */
static long output_read(const struct sp_output *o, int writing, int is_exec, uint64_t offset,
                        size_t max, int inline_data, json_t *into, struct sk_error *err)
{
	_cleanup_close_ int fd = open(o->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0 && errno == ENOENT && is_exec)
		return sk_error_set(err, -ENOENT, "no such exec");
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return sk_error_errno(err, -errno, "open %s", o->path);
	uint64_t size = (uint64_t)st.st_size, start = offset;
	uint64_t kept = data_start(fd, size);
	if (kept < o->dropped)
		kept = o->dropped;
	if (start < kept)
		start = kept;
	size_t want = start < size ? (size_t)(size - start) : 0;
	if (want > max)
		want = max;
	ssize_t n = (ssize_t)want;
	if (inline_data) {
		_cleanup_free_ unsigned char *buf = malloc(want ? want : 1);
		if (!buf)
			return sk_error_set(err, -ENOMEM, "out of memory");
		n = want ? pread(fd, buf, want, (off_t)start) : 0;
		if (n < 0)
			return sk_error_errno(err, -errno, "read %s", o->path);
		_cleanup_free_ char *b64 = malloc(base64_encoded_size((size_t)n));
		if (!b64)
			return sk_error_set(err, -ENOMEM, "out of memory");
		base64_encode(buf, (size_t)n, b64);
		json_object_set_new(into, "data_b64", json_string(b64));
	} else {
		json_object_set_new(into, "path", json_string(o->path));
		json_object_set_new(into, "length", json_integer((json_int_t)want));
	}
	json_object_set_new(into, "offset", json_integer((json_int_t)start));
	json_object_set_new(into, "size", json_integer((json_int_t)size));
	json_object_set_new(into, "eof", json_boolean(!writing && start + (uint64_t)n >= size));
	return (long)n;
}

json_t *sp_exec_output_inline(const struct sp_exec *e)
{
	static const char *const STREAMS[] = {"stdout", "stderr"};
	json_t *all = json_object();
	for (int i = 0; all && i < 2; i++) {
		struct stat st;
		/* Only what fits whole: a larger output is read by the worker, up to its own cap.
		 */
		if (stat(e->out[i].path, &st) < 0 || st.st_size > SP_EXEC_INLINE_OUTPUT_BYTES)
			goto none;
		struct sk_error err = {0};
		json_t *o = json_object();
		if (!o ||
		    output_read(&e->out[i], 0, 1, 0, SP_EXEC_INLINE_OUTPUT_BYTES, 1, o, &err) < 0 ||
		    !json_is_true(json_object_get(o, "eof"))) {
			json_decref(o);
			goto none;
		}
		json_object_set_new(all, STREAMS[i], o);
	}
	return all;
none:
	json_decref(all);
	return NULL;
}

/* The output op, once: fills reply; returns 1 when it read nothing and a writer runs (a
 * follower may wait), 0 otherwise, or a negative code in err. The paths it read are put in
 * ret_paths (two at most, when not NULL) for a waiter to watch. */
static int output_answer(struct spawner *sp, json_t *req, json_t *reply,
                         char (*ret_paths)[SP_OUTPUT_PATH_BYTES], struct sk_error *err)
{
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0)
		return r;
	const char *stream, *exid = NULL;
	r = sp_json_string(req, "stream", &stream, err);
	if (r == -ENOENT || (r == 0 && strcmp(stream, "stdout") && strcmp(stream, "stderr") &&
	                     strcmp(stream, "both")))
		return sk_error_set(err, -EINVAL,
		                    "stream: expected \"stdout\", \"stderr\" or \"both\"");
	if (r < 0)
		return r;
	int both = !strcmp(stream, "both");
	json_int_t max = SP_OUTPUT_MAX_READ_BYTES;
	if ((r = sp_json_int(req, "max", 1, INT64_MAX, &max, err)) < 0 && r != -ENOENT)
		return r;
	if (max > SP_OUTPUT_MAX_READ_BYTES)
		max = SP_OUTPUT_MAX_READ_BYTES;
	r = sp_json_string(req, "exec", &exid, err);
	if (r < 0 && r != -ENOENT)
		return r;
	json_t *inl = json_object_get(req, "inline");
	int inline_data = !inl || json_is_true(inl);
	static const char *const OFFSET_KEYS[] = {"stdout_offset", "stderr_offset"};
	static const char *const NAMES[] = {"stdout", "stderr"};
	int first = both ? 0 : !strcmp(stream, "stderr"), last = both ? 1 : first;
	long total = 0;
	int eof = 1;
	for (int si = first; si <= last; si++) {
		json_int_t offset = 0;
		r = sp_json_int(req, both ? OFFSET_KEYS[si] : "offset", 0, INT64_MAX, &offset, err);
		if (r < 0 && r != -ENOENT)
			return r;
		struct sp_output found, *o = NULL;
		int writing = 0;
		if ((r = output_locate(s, exid, si, &found, &o, &writing, err)) < 0)
			return r;
		json_t *into = both ? json_object() : json_incref(reply);
		/* Inline, both streams share one frame; else each may have max. */
		size_t per = (size_t)(both && inline_data ? max / 2 : max);
		long n = into ? output_read(o, writing, exid != NULL, (uint64_t)offset, per,
		                            inline_data, into, err)
		              : sk_error_set(err, -ENOMEM, "out of memory");
		if (n == -ENOENT)
			sk_error_set(err, -ENOENT, "no exec %.64s in %s", exid, s->id);
		if (n >= 0 && both)
			json_object_set(reply, NAMES[si], into);
		eof &= json_is_true(json_object_get(into, "eof"));
		json_decref(into);
		if (n < 0)
			return (int)n;
		total += n;
		if (ret_paths)
			snprintf(ret_paths[si - first], SP_OUTPUT_PATH_BYTES, "%s", o->path);
	}
	if (both)
		json_object_set_new(reply, "eof", json_boolean(eof));
	return total == 0 && !eof;
}

/* ---- reads that wait for output (followers) ---- */

struct sp_oread {
	struct sp_oread *next;
	json_t *req;
	int64_t deadline_mono; /* answered then, even with nothing */
	int64_t check_mono;    /* looked at again then, whatever inotify says */
	int wd[2];             /* inotify watches on its files; -1: none */
	int due;               /* its files changed, or it was cancelled: look at it now */
};

static void oread_unwatch(struct spawner *sp, struct sp_oread *o)
{
	for (int i = 0; i < 2; i++) {
		if (o->wd[i] < 0)
			continue;
		int shared = 0;
		for (struct sp_oread *x = sp->oreads; x && !shared; x = x->next)
			shared = x != o && (x->wd[0] == o->wd[i] || x->wd[1] == o->wd[i]);
		if (!shared)
			inotify_rm_watch(sp->ino_fd, o->wd[i]); /* EINVAL once the file is gone */
		o->wd[i] = -1;
	}
}

static void oread_free(struct spawner *sp, struct sp_oread *o)
{
	oread_unwatch(sp, o);
	json_decref(o->req);
	free(o);
	sp->noreads--;
}

/* Keep req until output comes, its writer ends, or wait_ms pass. */
static int oread_park(struct spawner *sp, json_t *req, char paths[2][SP_OUTPUT_PATH_BYTES],
                      json_int_t wait_ms)
{
	if (sp->ino_fd < 0)
		sp->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	struct sp_oread *o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	int64_t now = sp_now_mono();
	o->req = json_incref(req);
	o->deadline_mono = now + wait_ms;
	o->check_mono = now + SP_OUTPUT_RECHECK_MS;
	for (int i = 0; i < 2; i++)
		o->wd[i] = sp->ino_fd >= 0 && paths[i][0]
		               ? inotify_add_watch(sp->ino_fd, paths[i], IN_MODIFY)
		               : -1;
	o->next = sp->oreads;
	sp->oreads = o;
	sp->noreads++;
	return 0;
}

int sp_op_output(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	char paths[2][SP_OUTPUT_PATH_BYTES] = {{0}};
	json_int_t wait_ms = 0;
	int r = sp_json_int(req, "wait_ms", 0, SP_OUTPUT_MAX_WAIT_MS, &wait_ms, err);
	if (r < 0 && r != -ENOENT)
		return r;
	r = output_answer(sp, req, reply, paths, err);
	if (r <= 0 || wait_ms == 0 || sp->noreads >= SP_OUTPUT_MAX_WAITING)
		return r < 0 ? r : 0;
	return oread_park(sp, req, paths, wait_ms) < 0 ? 0 : 1;
}

int64_t sp_oreads_next(const struct spawner *sp)
{
	int64_t next = 0;
	for (const struct sp_oread *o = sp->oreads; o; o = o->next) {
		int64_t t = o->check_mono < o->deadline_mono ? o->check_mono : o->deadline_mono;
		if (!next || t < next)
			next = t;
	}
	return next;
}

/* Only the reads whose files changed are looked at again (a noisy writer wakes its own
 * readers, not every waiting one); an overflowed queue wakes them all. */
void sp_oreads_inotify(struct spawner *sp)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	while ((n = read(sp->ino_fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= n;) {
			const struct inotify_event *ev = (const void *)(buf + off);
			for (struct sp_oread *o = sp->oreads; o; o = o->next)
				if (ev->wd < 0 || o->wd[0] == ev->wd || o->wd[1] == ev->wd)
					o->due = 1;
			off += (ssize_t)sizeof(*ev) + ev->len;
		}
	}
	sp->oreads_some = 1;
}

int sp_op_output_cancel(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply;
	json_int_t id;
	int r = sp_json_int(req, "read", 0, INT64_MAX, &id, err);
	if (r == -ENOENT)
		return sk_error_set(err, -EINVAL, "read: missing");
	if (r < 0)
		return r;
	for (struct sp_oread *o = sp->oreads; o; o = o->next) {
		if (json_integer_value(json_object_get(o->req, "req")) != id)
			continue;
		o->deadline_mono = 0; /* answered now, with what there is */
		o->due = 1;
		sp->oreads_some = 1;
	}
	return 0;
}

void sp_oreads_run(struct spawner *sp, int64_t now)
{
	if (!sp->oreads_due && !sp->oreads_some && (!sp->oreads || sp_oreads_next(sp) > now))
		return;
	int all = sp->oreads_due;
	sp->oreads_due = sp->oreads_some = 0;
	for (struct sp_oread **p = &sp->oreads; *p;) {
		struct sp_oread *o = *p;
		if (!all && !o->due && now < o->check_mono && now < o->deadline_mono) {
			p = &o->next;
			continue;
		}
		o->due = 0;
		json_t *reply = json_object();
		struct sk_error err = {0};
		int r = reply ? output_answer(sp, o->req, reply, NULL, &err)
		              : sk_error_set(&err, -ENOMEM, "out of memory");
		if (r == 1 && now < o->deadline_mono) {
			json_decref(reply);
			o->check_mono = now + SP_OUTPUT_RECHECK_MS;
			p = &o->next;
			continue;
		}
		sp_answer(sp, json_object_get(o->req, "req"), reply, r < 0 ? &err : NULL);
		*p = o->next;
		oread_free(sp, o);
	}
}

void sp_oreads_release(struct spawner *sp)
{
	while (sp->oreads) {
		struct sp_oread *o = sp->oreads;
		sp->oreads = o->next;
		oread_free(sp, o);
	}
	if (sp->ino_fd >= 0)
		close(sp->ino_fd);
	sp->ino_fd = -1;
}
