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

int sp_op_output(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0)
		return r;
	const char *stream, *exid = NULL;
	r = sp_json_string(req, "stream", &stream, err);
	if (r == -ENOENT || (r == 0 && strcmp(stream, "stdout") && strcmp(stream, "stderr")))
		return sk_error_set(err, -EINVAL, "stream: expected \"stdout\" or \"stderr\"");
	if (r < 0)
		return r;
	int si = !strcmp(stream, "stderr");
	json_int_t offset = 0, max = SP_OUTPUT_MAX_READ_BYTES;
	if ((r = sp_json_int(req, "offset", 0, INT64_MAX, &offset, err)) < 0 && r != -ENOENT)
		return r;
	if ((r = sp_json_int(req, "max", 0, INT64_MAX, &max, err)) < 0 && r != -ENOENT)
		return r;
	if (max > SP_OUTPUT_MAX_READ_BYTES)
		max = SP_OUTPUT_MAX_READ_BYTES;
	r = sp_json_string(req, "exec", &exid, err);
	if (r < 0 && r != -ENOENT)
		return r;
	struct sp_output *o, found;
	int writing;
	if (r == 0) {
		struct sp_exec *e = sp_exec_find(s, exid);
		if (e) {
			o = &e->out[si];
			writing = e->running;
		} else if (id_is_valid("ex-", exid)) {
			/* Started before this spawner did: its files are all there is. */
			char name[64];
			snprintf(name, sizeof(name), "execs/%s.%s", exid, stream);
			sp_output_init(&found, rt_sandbox_dir(s->sb), name);
			o = &found;
			writing = s->state == SP_RUNNING;
		} else {
			return sk_error_set(err, -ENOENT, "no exec %.64s in %s", exid, s->id);
		}
	} else {
		o = &s->out[si];
		writing = s->state == SP_RUNNING;
	}
	_cleanup_close_ int fd = open(o->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0 && errno == ENOENT && exid)
		return sk_error_set(err, -ENOENT, "no exec %.64s in %s", exid, s->id);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return sk_error_errno(err, -errno, "open %s", o->path);
	uint64_t size = (uint64_t)st.st_size, start = (uint64_t)offset;
	uint64_t kept = data_start(fd, size);
	if (kept < o->dropped)
		kept = o->dropped;
	if (start < kept)
		start = kept;
	size_t want = start < size ? (size_t)(size - start) : 0;
	if (want > (size_t)max)
		want = (size_t)max;
	_cleanup_free_ unsigned char *buf = malloc(want ? want : 1);
	if (!buf)
		return sk_error_set(err, -ENOMEM, "out of memory");
	ssize_t n = want ? pread(fd, buf, want, (off_t)start) : 0;
	if (n < 0)
		return sk_error_errno(err, -errno, "read %s", o->path);
	_cleanup_free_ char *b64 = malloc(base64_encoded_size((size_t)n));
	if (!b64)
		return sk_error_set(err, -ENOMEM, "out of memory");
	base64_encode(buf, (size_t)n, b64);
	json_object_set_new(reply, "data_b64", json_string(b64));
	json_object_set_new(reply, "offset", json_integer((json_int_t)start));
	json_object_set_new(reply, "size", json_integer((json_int_t)size));
	json_object_set_new(reply, "eof", json_boolean(!writing && start + (uint64_t)n >= size));
	return 0;
}
