/* File operations inside a running sandbox's root (docs/WORKER.md, "File operations").
 *
 * Each op runs in a short-lived fork of the spawner that joins the sandbox's cgroups and
 * namespaces and becomes its root (rt_sandbox_enter), then works on its / with openat2 and
 * RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS: ".." and symlinks, absolute ones too, resolve inside the
 * root, and magic links (/proc/<pid>/root, /proc/self/fd/…) are refused. Its permission checks
 * are the sandbox root's, what it makes belongs to the sandbox's root, and its writes are charged
 * to the sandbox, as if the sandbox had done them. Working from here on /proc/<init>/root instead
 * would bring host root's capabilities to whatever the sandbox planted there, and new files would
 * need their owner fixed by hand.
 *
 * The helper holds no more than the sandbox's own processes: before it enters, every fd of the
 * spawner but what entering needs is closed and it is made non-dumpable (nothing in the sandbox
 * may trace it); once in, it keeps the sandbox's capability set, no_new_privs and seccomp profile.
 *
 * Nothing here blocks the spawner's loop: a request is validated and queued (1 running per
 * sandbox, SP_FILES_MAX_QUEUED waiting, SP_FILES_MAX_RUNNING helpers in all); its helper's pipe
 * and pidfd join the loop's poll; the answer, one JSON object ({"reply":{…}} or
 * {"code":-errno,"message":"…"}), is read without blocking, and the reply sent once the helper
 * is reaped. An op not answered SP_FILES_TIMEOUT_MS after it arrived is answered with an error
 * at once, its helper killed and reaped later (a helper in a sandbox throttled to a sliver of
 * CPU can take a while to die). Every walk is bounded (entries, depth, reply bytes). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/clock.h"
#include "../lib/encoding.h"
#include "../lib/fsutil.h"
#include "../runtime/caps.h"
#include "spawner_internal.h"

#ifndef P_PIDFD
#define P_PIDFD 3 /* linux/wait.h, which clashes with sys/wait.h */
#endif

#define RESOLVE_FLAGS       (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
#define OPENAT2_RETRIES     8   /* -EAGAIN: a rename raced the resolution */
#define MSG_PATH_MAX_BYTES  200 /* of a path quoted in an error message */
#define ENTRY_JSON_OVERHEAD 136 /* an entry's JSON beside its name, path and target */
#define COLLECT_CHUNK_BYTES (64 * 1024)

/* ---- text ---- */

/* Copy path into buf (MSG_PATH_MAX_BYTES + 4), cut on a character boundary, for messages. */
static const char *msg_path(const char *path, char *buf)
{
	size_t n = strlen(path);
	if (n <= MSG_PATH_MAX_BYTES) {
		memcpy(buf, path, n + 1);
		return buf;
	}
	n = MSG_PATH_MAX_BYTES;
	while (n > 0 && ((unsigned char)path[n] & 0xC0) == 0x80)
		n--;
	memcpy(buf, path, n);
	memcpy(buf + n, "…", sizeof("…"));
	return buf;
}

/* Bytes s takes in JSON output: what jansson escapes grows. */
static size_t json_escaped_bytes(const char *s, size_t n)
{
	size_t b = 2;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		b += c < 0x20 ? 6 : c == '"' || c == '\\' ? 2 : c >= 0x80 ? 3 : 1;
	}
	return b;
}

/* The path as reported: repeated and trailing slashes and "." components gone. */
static void path_clean(const char *path, char *out, size_t size)
{
	size_t o = 0;
	for (const char *p = path; *p;) {
		while (*p == '/')
			p++;
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n && !(n == 1 && *p == '.') && o + n + 2 <= size) {
			out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p = e;
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = '\0';
}

/* Split path into its parent directory (into dir, as given: the kernel resolves it) and its
 * last name (into name, NAME_MAX + 1). -EINVAL for "/" and for a last name of "." or "..": no
 * single entry to act on. */
static int path_split(const char *path, char *dir, size_t size, char *name)
{
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	size_t i = n;
	while (i > 0 && path[i - 1] != '/')
		i--;
	size_t k = n - i;
	if (k == 0 || k > NAME_MAX || (k == 1 && path[i] == '.') ||
	    (k == 2 && path[i] == '.' && path[i + 1] == '.') || i >= size)
		return -EINVAL;
	memcpy(name, path + i, k);
	name[k] = '\0';
	memcpy(dir, path, i);
	dir[i] = '\0';
	return 0;
}

/* ---- errors ---- */

/* The protocol's codes: sp_error_json names them from these. */
static int code_of(int r)
{
	switch (r) {
	case -ENOENT: return -ENOENT;
	case -EEXIST:
	case -ENOTEMPTY:
	case -EBUSY:
	case -ETXTBSY: return -EEXIST;
	case -ENOSPC:
	case -EDQUOT:
	case -ENOMEM:
	case -EMFILE:
	case -ENFILE:
	case -EAGAIN: return r;
	case -ENOTDIR:
	case -EISDIR:
	case -ELOOP:
	case -EXDEV:
	case -ENAMETOOLONG:
	case -EACCES:
	case -EPERM:
	case -EROFS:
	case -ENXIO:
	case -EFBIG:
	case -EOVERFLOW:
	case -EINVAL: return -EINVAL;
	default: return r;
	}
}

static int fail(struct sk_error *err, int r, const char *what, const char *path)
{
	char p[MSG_PATH_MAX_BYTES + 4];
	const char *why = r == -ELOOP ? "a magic link or too many symlinks" : strerror(-r);
	return sk_error_set(err, code_of(r), "%s %s: %s", what, msg_path(path, p), why);
}

/* Only regular files are read and written: a FIFO would block, a device is not data. */
static int not_file(struct sk_error *err, const char *what, const char *path, mode_t mode)
{
	char p[MSG_PATH_MAX_BYTES + 4];
	return sk_error_set(err, -EINVAL, "%s %s: %s", what, msg_path(path, p),
	                    S_ISDIR(mode) ? "a directory" : "not a regular file");
}

/* ---- in the child: paths in the root ---- */

static int root_open(int rootfd, const char *path, int flags, mode_t mode)
{
	struct open_how how = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    .mode = flags & O_CREAT ? mode : 0,
	    .resolve = RESOLVE_FLAGS,
	};
	for (int i = 0; i < OPENAT2_RETRIES; i++) {
		long fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		if (errno != EAGAIN)
			break;
	}
	return -errno;
}

/* Make dir (absolute, in the root) a directory if it is not one; -EEXIST when something else
 * is there. dir is changed and restored. */
static int dir_ensure(int rootfd, char *dir)
{
	_cleanup_close_ int fd = root_open(rootfd, dir, O_PATH, 0);
	struct stat st;
	if (fd >= 0)
		return fstat(fd, &st) < 0 ? -errno : S_ISDIR(st.st_mode) ? 0 : -EEXIST;
	if (fd != -ENOENT)
		return fd;
	char *slash = strrchr(dir, '/');
	*slash = '\0';
	_cleanup_close_ int pfd =
	    root_open(rootfd, slash == dir ? "/" : dir, O_PATH | O_DIRECTORY, 0);
	*slash = '/';
	if (pfd < 0)
		return pfd;
	if (mkdirat(pfd, slash + 1, SP_FILES_DIR_MODE) < 0 && errno != EEXIST)
		return -errno;
	/* It may be a dangling symlink, or have been replaced meanwhile. */
	_cleanup_close_ int again = root_open(rootfd, dir, O_PATH | O_DIRECTORY, 0);
	return again < 0 ? (again == -ENOTDIR ? -EEXIST : again) : 0;
}

/* mkdir -p of path (absolute, in the root): each missing directory SP_FILES_DIR_MODE. */
static int dirs_make(int rootfd, const char *path, struct sk_error *err)
{
	char buf[SP_FILES_MAX_PATH_BYTES + 2];
	path_clean(path, buf, sizeof(buf));
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		int r = p > buf + 1 ? dir_ensure(rootfd, buf) : 0;
		if (r < 0)
			return fail(err, r, "mkdir", buf);
		*p = c;
		if (!c)
			return 0;
	}
}

/* The parent directory of path, opened (O_PATH), and its last name. */
static int parent_open(int rootfd, const char *path, char *name, int *ret_fd, struct sk_error *err)
{
	char dir[SP_FILES_MAX_PATH_BYTES + 2];
	char p[MSG_PATH_MAX_BYTES + 4];
	if (path_split(path, dir, sizeof(dir), name) < 0)
		return sk_error_set(err, -EINVAL,
		                    "%s: expected a path to one entry (not /, . or ..)",
		                    msg_path(path, p));
	int fd = root_open(rootfd, dir, O_PATH | O_DIRECTORY, 0);
	if (fd < 0)
		return fail(err, fd, "open", dir);
	*ret_fd = fd;
	return 0;
}

static const char *type_name(mode_t m)
{
	return S_ISREG(m) ? "file" : S_ISDIR(m) ? "dir" : S_ISLNK(m) ? "symlink" : "other";
}

/* An entry for st; a symlink's target read from (dirfd, name). *ret_bytes: its JSON's size. */
static json_t *entry_json(const char *name, const char *path, const struct stat *st, int dirfd,
                          const char *at, size_t *ret_bytes)
{
	char target[SP_FILES_MAX_PATH_BYTES + 1];
	ssize_t tn = -1;
	if (S_ISLNK(st->st_mode))
		tn = readlinkat(dirfd, at, target, sizeof(target) - 1);
	int64_t ms = (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
	char mtime[RFC3339_BYTES];
	clock_format_rfc3339(ms > 0 ? ms : 0, mtime, sizeof(mtime));
	json_t *e = json_pack(
	    "{s:o?, s:o?, s:s, s:I, s:i, s:s, s:o?}", "name", sp_json_lossy(name, strlen(name)),
	    "path", sp_json_lossy(path, strlen(path)), "type", type_name(st->st_mode), "size",
	    (json_int_t)st->st_size, "mode", (int)(st->st_mode & 07777), "mtime", mtime,
	    "link_target", tn >= 0 ? sp_json_lossy(target, (size_t)tn) : json_null());
	if (ret_bytes)
		*ret_bytes = ENTRY_JSON_OVERHEAD + json_escaped_bytes(name, strlen(name)) +
		             json_escaped_bytes(path, strlen(path)) +
		             (tn > 0 ? json_escaped_bytes(target, (size_t)tn) : 0);
	return e;
}

/* ---- in the child: the ops ---- */

static int do_read(int rootfd, const struct sp_files_req *fr, json_t *out, struct sk_error *err)
{
	/* Look before opening: a FIFO or a device is not opened at all. */
	_cleanup_close_ int pfd = root_open(rootfd, fr->path, O_PATH, 0);
	struct stat st;
	if (pfd < 0)
		return fail(err, pfd, "open", fr->path);
	if (fstat(pfd, &st) < 0)
		return fail(err, -errno, "stat", fr->path);
	if (!S_ISREG(st.st_mode))
		return not_file(err, "read", fr->path, st.st_mode);
	_cleanup_close_ int fd = root_open(rootfd, fr->path, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0);
	if (fd < 0)
		return fail(err, fd, "open", fr->path);
	if (fstat(fd, &st) < 0)
		return fail(err, -errno, "stat", fr->path);
	if (!S_ISREG(st.st_mode))
		return not_file(err, "read", fr->path, st.st_mode);
	_cleanup_free_ unsigned char *buf = malloc(fr->max ? fr->max : 1);
	if (!buf)
		return sk_error_set(err, -ENOMEM, "out of memory");
	size_t n = 0;
	while (n < fr->max) {
		ssize_t k = pread(fd, buf + n, fr->max - n, (off_t)(fr->offset + (int64_t)n));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return fail(err, -errno, "read", fr->path);
		if (k == 0)
			break;
		n += (size_t)k;
	}
	if (fstat(fd, &st) < 0)
		return fail(err, -errno, "stat", fr->path);
	_cleanup_free_ char *b64 = malloc(base64_encoded_size(n));
	if (!b64)
		return sk_error_set(err, -ENOMEM, "out of memory");
	base64_encode(buf, n, b64);
	json_object_set_new(out, "data_b64", json_string(b64));
	json_object_set_new(out, "size", json_integer((json_int_t)st.st_size));
	json_object_set_new(out, "eof", json_boolean(fr->offset + (int64_t)n >= st.st_size));
	return 0;
}

/* Remove a file this write made, when the write failed: nothing changes. */
static void unmake(int rootfd, const char *path)
{
	char name[NAME_MAX + 1];
	struct sk_error ignored;
	_cleanup_close_ int pfd = -1;
	if (parent_open(rootfd, path, name, &pfd, &ignored) == 0)
		unlinkat(pfd, name, 0);
}

static int do_write(int rootfd, const struct sp_files_req *fr, json_t *out, struct sk_error *err)
{
	char dir[SP_FILES_MAX_PATH_BYTES + 2], name[NAME_MAX + 1];
	if (path_split(fr->path, dir, sizeof(dir), name) < 0)
		return fail(err, -EISDIR, "write", fr->path);
	if (fr->parents) {
		int r = dirs_make(rootfd, dir, err);
		if (r < 0)
			return r;
	}
	struct stat st;
	_cleanup_close_ int pfd = root_open(rootfd, fr->path, O_PATH, 0);
	if (pfd >= 0 && fstat(pfd, &st) == 0 && !S_ISREG(st.st_mode))
		return not_file(err, "write", fr->path, st.st_mode);
	if (pfd < 0 && pfd != -ENOENT)
		return fail(err, pfd, "open", fr->path);
	int flags = O_WRONLY | O_NOCTTY | O_NONBLOCK | (fr->truncate ? O_TRUNC : 0);
	int made = 0;
	_cleanup_close_ int fd = pfd >= 0 ? root_open(rootfd, fr->path, flags, 0) : -ENOENT;
	if (fd == -ENOENT) {
		fd = root_open(rootfd, fr->path, flags | O_CREAT | O_EXCL, fr->mode);
		made = fd >= 0;
		/* A dangling symlink: O_EXCL won't follow it; create where it points (inside). */
		if (fd == -EEXIST)
			fd = root_open(rootfd, fr->path, flags | O_CREAT, fr->mode);
	}
	if (fd < 0)
		return fail(err, fd, "open", fr->path);
	if (fstat(fd, &st) < 0)
		return fail(err, -errno, "stat", fr->path);
	if (!S_ISREG(st.st_mode))
		return not_file(err, "write", fr->path, st.st_mode);
	for (size_t n = 0; n < fr->len;) {
		ssize_t k = pwrite(fd, fr->data + n, fr->len - n, (off_t)(fr->offset + (int64_t)n));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int r = -errno;
			if (made)
				unmake(rootfd, fr->path);
			return fail(err, r, "write", fr->path);
		}
		n += (size_t)k;
	}
	if (fstat(fd, &st) < 0)
		return fail(err, -errno, "stat", fr->path);
	json_object_set_new(out, "size", json_integer((json_int_t)st.st_size));
	return 0;
}

static int do_stat(int rootfd, const struct sp_files_req *fr, json_t *out, struct sk_error *err)
{
	_cleanup_close_ int fd = root_open(rootfd, fr->path, O_PATH | O_NOFOLLOW, 0);
	struct stat st;
	if (fd < 0)
		return fail(err, fd, "stat", fr->path);
	if (fstatat(fd, "", &st, AT_EMPTY_PATH) < 0)
		return fail(err, -errno, "stat", fr->path);
	char clean[SP_FILES_MAX_PATH_BYTES + 2];
	path_clean(fr->path, clean, sizeof(clean));
	const char *name = clean[1] ? strrchr(clean, '/') + 1 : clean;
	json_t *e = entry_json(name, clean, &st, fd, "", NULL);
	if (!e)
		return sk_error_set(err, -ENOMEM, "out of memory");
	json_object_set_new(out, "entry", e);
	return 0;
}

struct lister {
	json_t *entries;
	size_t n, bytes;
	int depth;
	int truncated; /* something was left out */
	int full;      /* the reply's byte budget is spent: stop */
	char path[SP_FILES_MAX_PATH_BYTES + SP_FILES_MAX_DEPTH * (NAME_MAX + 1) + 2];
};

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Entries of the directory fd (taken) at level (1: the listed one), sorted by name, each
 * followed by what is below it up to l->depth. Symlinks are listed, never followed. */
static void list_dir(struct lister *l, int fd, int level)
{
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	size_t plen = strlen(l->path);
	char **names = NULL;
	size_t n = 0, cap = 0;
	int cut = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (l->n + n >= SP_FILES_MAX_LIST_ENTRIES) {
			cut = 1;
			break;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			char **nn = realloc(names, cap * sizeof(*names));
			if (!nn) {
				cut = 1;
				break;
			}
			names = nn;
		}
		if (!(names[n] = strdup(de->d_name))) {
			cut = 1;
			break;
		}
		n++;
	}
	if (n)
		qsort(names, n, sizeof(*names), name_cmp);
	size_t i;
	for (i = 0; i < n && l->n < SP_FILES_MAX_LIST_ENTRIES && !l->full; i++) {
		struct stat st;
		if (fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* gone meanwhile */
		snprintf(l->path + plen, sizeof(l->path) - plen, "%s%s", plen > 1 ? "/" : "",
		         names[i]);
		size_t bytes;
		json_t *e = entry_json(names[i], l->path, &st, dirfd(d), names[i], &bytes);
		if (!e || l->bytes + bytes > SP_FILES_MAX_LIST_BYTES) {
			json_decref(e);
			l->truncated = l->full = 1;
			break;
		}
		json_array_append_new(l->entries, e);
		l->n++;
		l->bytes += bytes;
		if (S_ISDIR(st.st_mode) && level < l->depth) {
			int sub =
			    openat(dirfd(d), names[i],
			           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			if (sub >= 0)
				list_dir(l, sub, level + 1);
		}
	}
	if (cut || i < n)
		l->truncated = 1;
	l->path[plen] = '\0';
	for (size_t k = 0; k < n; k++)
		free(names[k]);
	free(names);
	closedir(d);
}

static int do_list(int rootfd, const struct sp_files_req *fr, json_t *out, struct sk_error *err)
{
	int fd = root_open(rootfd, fr->path, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0);
	if (fd < 0)
		return fail(err, fd, "list", fr->path);
	struct lister l = {.entries = json_array(), .depth = fr->depth};
	path_clean(fr->path, l.path, sizeof(l.path));
	list_dir(&l, fd, 1);
	json_object_set_new(out, "entries", l.entries);
	json_object_set_new(out, "truncated", json_boolean(l.truncated));
	return 0;
}

static int do_mkdir(int rootfd, const struct sp_files_req *fr, json_t *out, struct sk_error *err)
{
	(void)out;
	if (fr->parents)
		return dirs_make(rootfd, fr->path, err);
	char name[NAME_MAX + 1];
	_cleanup_close_ int pfd = -1;
	int r = parent_open(rootfd, fr->path, name, &pfd, err);
	if (r < 0)
		return r;
	if (mkdirat(pfd, name, SP_FILES_DIR_MODE) < 0)
		return fail(err, -errno, "mkdir", fr->path);
	return 0;
}

/* Count what is below the directory fd (taken), without following symlinks; -EFBIG past
 * SP_FILES_MAX_REMOVE_ENTRIES, -ELOOP past SP_FILES_MAX_REMOVE_DEPTH levels. */
static int tree_count(int fd, int level, size_t *count)
{
	if (level > SP_FILES_MAX_REMOVE_DEPTH) {
		close(fd);
		return -ELOOP;
	}
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (++*count > SP_FILES_MAX_REMOVE_ENTRIES)
			r = -EFBIG;
		else if (de->d_type == DT_DIR || de->d_type == DT_UNKNOWN) {
			int sub =
			    openat(dirfd(d), de->d_name,
			           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			if (sub >= 0)
				r = tree_count(sub, level + 1, count);
		}
	}
	closedir(d);
	return r;
}

static int do_remove(int rootfd, const struct sp_files_req *fr, json_t *out, struct sk_error *err)
{
	(void)out;
	char name[NAME_MAX + 1];
	_cleanup_close_ int pfd = -1;
	int r = parent_open(rootfd, fr->path, name, &pfd, err);
	if (r < 0)
		return r;
	struct stat st;
	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return fail(err, -errno, "remove", fr->path);
	if (!S_ISDIR(st.st_mode))
		return unlinkat(pfd, name, 0) < 0 ? fail(err, -errno, "remove", fr->path) : 0;
	if (!fr->recursive) {
		if (unlinkat(pfd, name, AT_REMOVEDIR) < 0)
			return fail(err, -errno, "remove", fr->path);
		return 0;
	}
	/* Count first: a tree too large is refused before anything is removed. */
	int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return fail(err, -errno, "remove", fr->path);
	size_t count = 0;
	char p[MSG_PATH_MAX_BYTES + 4];
	r = tree_count(fd, 1, &count);
	if (r == -EFBIG || r == -ELOOP)
		return sk_error_set(err, -EEXIST,
		                    "remove %s: more than %d entries or %d levels below it: remove "
		                    "it in parts",
		                    msg_path(fr->path, p), SP_FILES_MAX_REMOVE_ENTRIES,
		                    SP_FILES_MAX_REMOVE_DEPTH);
	if (r < 0)
		return fail(err, r, "remove", fr->path);
	if ((r = fs_rm_rf_at(pfd, name)) < 0)
		return fail(err, r, "remove", fr->path);
	return 0;
}

static int do_move(int rootfd, const struct sp_files_req *fr, json_t *out, struct sk_error *err)
{
	(void)out;
	char from[NAME_MAX + 1], to[NAME_MAX + 1];
	_cleanup_close_ int ffd = -1, tfd = -1;
	int r = parent_open(rootfd, fr->path, from, &ffd, err);
	if (r < 0 || (r = parent_open(rootfd, fr->to, to, &tfd, err)) < 0)
		return r;
	if (renameat2(ffd, from, tfd, to, RENAME_NOREPLACE) < 0) {
		r = -errno;
		/* Which path: the source when it is missing, else the target. */
		struct stat st;
		int src = r == -ENOENT && fstatat(ffd, from, &st, AT_SYMLINK_NOFOLLOW) < 0;
		return fail(err, r, "move", src ? fr->path : fr->to);
	}
	return 0;
}

static int (*const OPS[])(int, const struct sp_files_req *, json_t *, struct sk_error *) = {
    [SP_F_READ] = do_read, [SP_F_WRITE] = do_write, [SP_F_STAT] = do_stat,
    [SP_F_LIST] = do_list, [SP_F_MKDIR] = do_mkdir, [SP_F_REMOVE] = do_remove,
    [SP_F_MOVE] = do_move,
};

/* ---- the helper ---- */

/* Every fd but fd, the sandbox's init pidfd and its cgroup directories (what rt_sandbox_enter
 * uses) is closed; 0, 1 and 2 become /dev/null. The cgroup directories are told by their inode:
 * "<mount>/skiff-<instance>/<runtime id>" in each hierarchy (cgroup.h). */
static int helper_fds_close(const struct spawner *sp, const struct rt_sandbox *sb, int fd,
                            struct sk_error *err)
{
	int keep[2 + 2 * CG_MAX_HIER];
	size_t n = 0;
	keep[n++] = fd;
	keep[n++] = rt_sandbox_pidfd(sb);
	struct stat cg[CG_MAX_HIER];
	int ncg = 0;
	for (int i = 0; i < sp->rt.cg.nhier && i < CG_MAX_HIER; i++) {
		char path[2 * CG_PATH_BYTES];
		snprintf(path, sizeof(path), "%s/skiff-%s/%s", sp->rt.cg.hier[i].mount,
		         sp->rt.instance, rt_sandbox_id(sb));
		if (stat(path, &cg[ncg]) == 0)
			ncg++;
	}
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return sk_error_errno(err, -errno, "list open fds");
	struct dirent *de;
	while ((de = readdir(d))) {
		char *end;
		long k = strtol(de->d_name, &end, 10);
		struct stat st;
		if (end == de->d_name || *end || k <= 2 || k == dirfd(d) ||
		    fstat((int)k, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		for (int i = 0; i < ncg && n < ARRAY_SIZE(keep); i++)
			if (st.st_dev == cg[i].st_dev && st.st_ino == cg[i].st_ino)
				keep[n++] = (int)k;
	}
	closedir(d);
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	for (int i = 0; i < 3; i++)
		if (null < 0 || dup2(null, i) < 0)
			return sk_error_errno(err, -errno, "stdio on /dev/null");
	int r = fs_close_all_except(keep, n); /* null too */
	return r < 0 ? sk_error_errno(err, r, "close fds") : 0;
}

/* After entering: what the sandbox's own processes hold, no more. Its capabilities (Docker's
 * default set, not every one of its user namespace), no_new_privs and its seccomp profile. */
static int helper_confine(const struct spawner *sp, struct sk_error *err)
{
	int r = caps_restrict(sp->rt.caps, err);
	if (r < 0)
		return r;
	r = rt_seccomp_load(&sp->rt.seccomp);
	return r < 0 ? sk_error_errno(err, r, "load the seccomp profile") : 0;
}

/* The helper: enter the sandbox, do the op, write the answer to fd, exit. */
_Noreturn static void helper_main(const struct spawner *sp, const struct sp_sandbox *s,
                                  const struct sp_files_req *fr, int fd)
{
	struct sk_error err = {0};
	prctl(PR_SET_NAME, SP_FILES_HELPER_NAME);
	/* From the moment it enters, nothing in the sandbox may trace it or reach its fds. */
	prctl(PR_SET_DUMPABLE, 0);
	fcntl(fd, F_SETFL, 0); /* blocking: the spawner reads when it can */
	int r = helper_fds_close(sp, s->sb, fd, &err);
	if (r == 0 && (r = rt_sandbox_enter(s->sb, &err)) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* set now: a change of uid clears it */
		int keep[1] = {fd};
		r = fs_close_all_except(keep, 1);
		if (r < 0)
			sk_error_errno(&err, r, "close fds");
		else
			r = helper_confine(sp, &err);
	}
	json_t *out = json_object();
	if (r == 0) {
		umask(0);
		int rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
		r = rootfd < 0 ? sk_error_errno(&err, -errno, "open the sandbox's root")
		               : OPS[fr->op](rootfd, fr, out, &err);
	}
	json_t *msg = r < 0 ? json_pack("{s:i, s:o?}", "code", err.code, "message",
	                                sp_json_lossy(err.msg, strlen(err.msg)))
	                    : json_pack("{s:o}", "reply", out);
	sp_child_answer(fd, msg);
}

/* ---- in the spawner: queue, helpers, answers ---- */

static int sandbox_live(const struct sp_sandbox *s)
{
	return s->state == SP_RUNNING && s->end_reason == SP_RUNNING && rt_sandbox_running(s->sb);
}

static void fop_free(struct sp_fop *o)
{
	if (o->pidfd >= 0)
		close(o->pidfd);
	if (o->pipe_fd >= 0)
		close(o->pipe_fd);
	free(o->buf);
	free(o->fr.path);
	free(o->fr.to);
	free(o->fr.data);
	json_decref(o->req_id);
	free(o);
}

/* Send o's reply: fields (taken) when err is NULL, else err. */
static void fop_answer(struct spawner *sp, struct sp_fop *o, json_t *fields,
                       const struct sk_error *err)
{
	sp_answer(sp, o->req_id, fields, err);
	o->answered = 1;
}

/* Stop o's helper (SIGKILL through its pidfd: never a recycled pid) and stop reading it; it
 * is reaped when its pidfd fires. */
static void fop_kill(struct sp_fop *o)
{
	if (o->started && !o->reaped && o->pidfd >= 0)
		syscall(SYS_pidfd_send_signal, o->pidfd, SIGKILL, NULL, 0);
	if (o->pipe_fd >= 0)
		close(o->pipe_fd);
	o->pipe_fd = -1;
}

/* Answer o with code and "<op> in <sandbox>: msg", its helper killed. */
static void fop_fail(struct spawner *sp, struct sp_fop *o, int code, const char *msg)
{
	struct sk_error err = {0};
	sk_error_set(&err, code, "%s in %s: %s", o->name, o->sandbox, msg);
	fop_kill(o);
	fop_answer(sp, o, NULL, &err);
}

void sp_fop_read(struct spawner *sp, struct sp_fop *o)
{
	while (o->pipe_fd >= 0) {
		if (o->len == o->cap) {
			if (o->cap > SP_FILES_MAX_ANSWER_BYTES) {
				fop_fail(sp, o, -EMSGSIZE, "the answer is too large");
				return;
			}
			size_t cap = o->cap ? o->cap * 2 : 4 * COLLECT_CHUNK_BYTES;
			if (cap > SP_FILES_MAX_ANSWER_BYTES + 1)
				cap = SP_FILES_MAX_ANSWER_BYTES + 1;
			char *nb = realloc(o->buf, cap);
			if (!nb) {
				fop_fail(sp, o, -ENOMEM, "out of memory");
				return;
			}
			o->buf = nb;
			o->cap = cap;
		}
		ssize_t n = read(o->pipe_fd, o->buf + o->len, o->cap - o->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			o->eof = n == 0;
			close(o->pipe_fd);
			o->pipe_fd = -1;
			return;
		}
		o->len += (size_t)n;
	}
}

void sp_fop_reap(struct spawner *sp, struct sp_fop *o)
{
	(void)sp;
	if (sp_child_reap(&o->pidfd, &o->exit_ok))
		o->reaped = 1;
}

/* The helper is reaped and its answer read: reply with it. */
static void fop_finish(struct spawner *sp, struct sp_fop *o)
{
	if (!o->eof || !o->exit_ok || o->len == 0) {
		fop_fail(sp, o, -EIO, "the helper died");
		return;
	}
	json_t *msg = json_loadb(o->buf, o->len, 0, NULL);
	json_t *rep = json_object_get(msg, "reply");
	json_t *code = json_object_get(msg, "code");
	struct sk_error err = {0};
	if (json_is_object(rep)) {
		fop_answer(sp, o, json_incref(rep), NULL);
	} else if (json_is_integer(code) && json_integer_value(code) < 0) {
		/* The helper's message names the op and path already. */
		const char *m = json_string_value(json_object_get(msg, "message"));
		sk_error_set(&err, (int)json_integer_value(code), "%s", m ? m : "failed");
		fop_answer(sp, o, NULL, &err);
	} else {
		fop_fail(sp, o, -EIO, "the helper's answer is garbled");
	}
	json_decref(msg);
}

/* Fork o's helper into o->s. */
static int fop_start(struct spawner *sp, struct sp_fop *o, struct sk_error *err)
{
	struct sp_sandbox *s = o->s;
	if (!sandbox_live(s))
		return sk_error_set(err, -ESRCH, "the sandbox is not running");
	int p[2];
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return sk_error_errno(err, -errno, "pipe");
	int pidfd = -1;
	pid_t pid = (pid_t)syscall(SYS_clone, CLONE_PIDFD | SIGCHLD, NULL, &pidfd, NULL, 0);
	if (pid < 0) {
		int r = -errno;
		close(p[0]);
		close(p[1]);
		return sk_error_errno(err, r, "fork");
	}
	if (pid == 0) {
		close(p[0]);
		helper_main(sp, s, &o->fr, p[1]);
	}
	close(p[1]);
	o->pid = pid;
	o->pidfd = pidfd;
	o->pipe_fd = p[0];
	o->started = 1;
	s->fop_running = o;
	return 0;
}

void sp_files_run(struct spawner *sp, int64_t now)
{
	int running = 0;
	for (struct sp_fop **p = &sp->fops; *p;) {
		struct sp_fop *o = *p;
		if (o->started && o->reaped && !o->answered) {
			sp_fop_read(sp, o); /* what it wrote before it exited */
			if (!o->answered)
				fop_finish(sp, o);
		}
		if (!o->answered && now >= o->deadline_mono) {
			char msg[64];
			snprintf(msg, sizeof(msg), "not done within %d ms", SP_FILES_TIMEOUT_MS);
			fop_fail(sp, o, -ETIMEDOUT, msg);
		}
		if (o->answered && (!o->started || o->reaped)) {
			if (o->s && o->s->fop_running == o)
				o->s->fop_running = NULL;
			*p = o->next;
			fop_free(o);
			continue;
		}
		running += o->started;
		p = &o->next;
	}
	for (struct sp_fop **p = &sp->fops; *p && running < SP_FILES_MAX_RUNNING;) {
		struct sp_fop *o = *p;
		if (o->started || o->answered || o->s->fop_running) {
			p = &o->next;
			continue;
		}
		struct sk_error err = {0};
		if (fop_start(sp, o, &err) < 0) {
			sk_error_prefix(&err, "%s in %s", o->name, o->sandbox);
			fop_answer(sp, o, NULL, &err);
			*p = o->next;
			fop_free(o);
			continue;
		}
		running++;
		p = &o->next;
	}
}

int64_t sp_files_next_deadline(const struct spawner *sp)
{
	int64_t next = 0;
	for (const struct sp_fop *o = sp->fops; o; o = o->next)
		if (!o->answered && (next == 0 || o->deadline_mono < next))
			next = o->deadline_mono;
	return next;
}

void sp_files_cancel(struct spawner *sp, struct sp_sandbox *s)
{
	for (struct sp_fop *o = sp->fops; o; o = o->next) {
		if (o->s != s)
			continue;
		if (!o->answered)
			fop_fail(sp, o, -ESRCH, "the sandbox is ending");
		o->s = NULL;
	}
	s->fop_running = NULL;
}

void sp_files_release(struct spawner *sp)
{
	while (sp->fops) {
		struct sp_fop *o = sp->fops;
		sp->fops = o->next;
		if (o->s)
			o->s->fop_running = NULL;
		fop_kill(o);
		fop_free(o);
	}
}

/* Queue fr (copied) for s; its reply comes later (returns 1). */
static int files_queue(struct spawner *sp, struct sp_sandbox *s, const char *name, json_t *req,
                       const struct sp_files_req *fr, struct sk_error *err)
{
	if (!sandbox_live(s))
		return sk_error_set(err, -ESRCH, "sandbox %s is not running", s->id);
	int queued = 0;
	struct sp_fop **tail = &sp->fops;
	for (; *tail; tail = &(*tail)->next)
		queued += (*tail)->s == s && !(*tail)->started && !(*tail)->answered;
	if (queued >= SP_FILES_MAX_QUEUED)
		return sk_error_set(err, -EAGAIN,
		                    "%s in %s: %d file operations are waiting already", name, s->id,
		                    SP_FILES_MAX_QUEUED);
	struct sp_fop *o = calloc(1, sizeof(*o));
	if (!o)
		return sk_error_set(err, -ENOMEM, "out of memory");
	o->s = s;
	snprintf(o->sandbox, sizeof(o->sandbox), "%s", s->id);
	o->name = name;
	o->req_id = json_incref(json_object_get(req, "req"));
	o->pidfd = o->pipe_fd = -1;
	o->deadline_mono = sp_now_mono() + SP_FILES_TIMEOUT_MS;
	o->fr = *fr;
	o->fr.path = strdup(fr->path);
	o->fr.to = fr->to ? strdup(fr->to) : NULL;
	o->fr.data = fr->len ? malloc(fr->len) : NULL;
	if (!o->fr.path || (fr->to && !o->fr.to) || (fr->len && !o->fr.data)) {
		fop_free(o);
		return sk_error_set(err, -ENOMEM, "out of memory");
	}
	if (fr->len)
		memcpy(o->fr.data, fr->data, fr->len);
	*tail = o;
	return 1;
}

/* A request's path field: absolute, at most SP_FILES_MAX_PATH_BYTES, no NUL. */
static int req_path(json_t *req, const char *key, char **ret, struct sk_error *err)
{
	const char *p;
	int r = sp_json_string(req, key, &p, err);
	if (r == -ENOENT)
		return sk_error_set(err, -EINVAL, "%s: missing", key);
	if (r < 0)
		return sk_error_set(err, -EINVAL, "%s: expected a path without NUL bytes", key);
	if (p[0] != '/')
		return sk_error_set(err, -EINVAL, "%s: expected an absolute path", key);
	if (strlen(p) > SP_FILES_MAX_PATH_BYTES)
		return sk_error_set(err, -EINVAL, "%s: longer than %d bytes", key,
		                    SP_FILES_MAX_PATH_BYTES);
	*ret = (char *)p; /* files_queue copies it */
	return 0;
}

/* An optional boolean field: absent or null is false. */
static int req_bool(json_t *req, const char *key, int *ret, struct sk_error *err)
{
	json_t *v = json_object_get(req, key);
	if (v && !json_is_null(v) && !json_is_boolean(v))
		return sk_error_set(err, -EINVAL, "%s: expected true or false", key);
	*ret = json_is_true(v);
	return 0;
}

/* An optional whole number field in [min, max]; absent or null leaves *ret. */
static int req_int(json_t *req, const char *key, json_int_t min, json_int_t max, json_int_t *ret,
                   struct sk_error *err)
{
	int r = sp_json_int(req, key, min, max, ret, err);
	return r == -ENOENT ? 0 : r;
}

/* The sandbox and path every op starts with. */
static int req_start(struct spawner *sp, json_t *req, struct sp_sandbox **ret_s,
                     struct sp_files_req *fr, struct sk_error *err)
{
	int r = sp_sandbox_get(sp, req, ret_s, err);
	if (r < 0)
		return r;
	return req_path(req, "path", &fr->path, err);
}

int sp_op_file_read(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply; /* sent by sp_files_run */
	struct sp_files_req fr = {.op = SP_F_READ};
	struct sp_sandbox *s;
	json_int_t offset = 0, max = SP_FILES_MAX_DATA_BYTES;
	int r;
	if ((r = req_start(sp, req, &s, &fr, err)) < 0 ||
	    (r = req_int(req, "offset", 0, INT64_MAX - SP_FILES_MAX_DATA_BYTES, &offset, err)) <
	        0 ||
	    (r = req_int(req, "max", 0, SP_FILES_MAX_DATA_BYTES, &max, err)) < 0)
		return r;
	fr.offset = offset;
	fr.max = (size_t)max;
	return files_queue(sp, s, "file_read", req, &fr, err);
}

int sp_op_file_write(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply; /* sent by sp_files_run */
	struct sp_files_req fr = {.op = SP_F_WRITE};
	struct sp_sandbox *s;
	json_int_t offset = 0, mode = SP_FILES_DEFAULT_MODE;
	const char *b64 = "";
	int r;
	if ((r = req_start(sp, req, &s, &fr, err)) < 0 ||
	    (r = req_int(req, "offset", 0, INT64_MAX - SP_FILES_MAX_DATA_BYTES, &offset, err)) <
	        0 ||
	    (r = req_int(req, "mode", 0, 07777, &mode, err)) < 0 ||
	    (r = req_bool(req, "truncate", &fr.truncate, err)) < 0 ||
	    (r = req_bool(req, "parents", &fr.parents, err)) < 0)
		return r;
	if (mode & (S_ISUID | S_ISGID))
		return sk_error_set(err, -EINVAL, "mode: setuid and setgid bits are not allowed");
	r = sp_json_string(req, "data_b64", &b64, err);
	if (r < 0 && r != -ENOENT)
		return r;
	size_t blen = strlen(b64);
	if (blen > base64_encoded_size(SP_FILES_MAX_DATA_BYTES) - 1)
		return sk_error_set(err, -EINVAL, "data_b64: more than %d bytes",
		                    SP_FILES_MAX_DATA_BYTES);
	_cleanup_free_ unsigned char *data = malloc(blen / 4 * 3 + 1);
	if (!data)
		return sk_error_set(err, -ENOMEM, "out of memory");
	long n = base64_decode(b64, blen, data);
	if (n < 0)
		return sk_error_set(err, -EINVAL, "data_b64: expected base64");
	fr.offset = offset;
	fr.mode = (mode_t)mode;
	fr.data = data;
	fr.len = (size_t)n;
	return files_queue(sp, s, "file_write", req, &fr, err);
}

int sp_op_fs_stat(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply; /* sent by sp_files_run */
	struct sp_files_req fr = {.op = SP_F_STAT};
	struct sp_sandbox *s;
	int r = req_start(sp, req, &s, &fr, err);
	return r < 0 ? r : files_queue(sp, s, "fs_stat", req, &fr, err);
}

int sp_op_fs_list(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply; /* sent by sp_files_run */
	struct sp_files_req fr = {.op = SP_F_LIST};
	struct sp_sandbox *s;
	json_int_t depth = 1;
	int r;
	if ((r = req_start(sp, req, &s, &fr, err)) < 0 ||
	    (r = req_int(req, "depth", 1, SP_FILES_MAX_DEPTH, &depth, err)) < 0)
		return r;
	fr.depth = (int)depth;
	return files_queue(sp, s, "fs_list", req, &fr, err);
}

int sp_op_fs_mkdir(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply; /* sent by sp_files_run */
	struct sp_files_req fr = {.op = SP_F_MKDIR};
	struct sp_sandbox *s;
	int r;
	if ((r = req_start(sp, req, &s, &fr, err)) < 0 ||
	    (r = req_bool(req, "parents", &fr.parents, err)) < 0)
		return r;
	return files_queue(sp, s, "fs_mkdir", req, &fr, err);
}

int sp_op_fs_remove(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply; /* sent by sp_files_run */
	struct sp_files_req fr = {.op = SP_F_REMOVE};
	struct sp_sandbox *s;
	int r;
	if ((r = req_start(sp, req, &s, &fr, err)) < 0 ||
	    (r = req_bool(req, "recursive", &fr.recursive, err)) < 0)
		return r;
	return files_queue(sp, s, "fs_remove", req, &fr, err);
}

int sp_op_fs_move(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err)
{
	(void)reply; /* sent by sp_files_run */
	struct sp_files_req fr = {.op = SP_F_MOVE};
	struct sp_sandbox *s;
	int r = sp_sandbox_get(sp, req, &s, err);
	if (r < 0 || (r = req_path(req, "from", &fr.path, err)) < 0 ||
	    (r = req_path(req, "to", &fr.to, err)) < 0)
		return r;
	return files_queue(sp, s, "fs_move", req, &fr, err);
}
