/* Ingesting a directory tree into the store: a manifest entry per file and each regular file's
 * bytes stored as a blob, hashed while they are copied (one read). The tree may be a sandbox's
 * upper layer, written by untrusted code while we walk it, so the walk is fd-relative: every
 * name comes from readdir (no '/' possible), is opened relative to its directory's fd without
 * following symlinks, and the file opened is checked to be the one that was stat'ed. */
#include "manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "../lib/encoding.h"
#include "../lib/map.h"
#include "store_internal.h"

#define OVERLAY_XATTR_PREFIX "user.overlay." /* userxattr mounts: the sandboxes' */
#define XATTR_LIST_BYTES     65536           /* the kernel's limit on a list of names */

struct ingest {
	struct img_store *s;
	int flags;
	const struct img_limits *lim;
	struct img_manifest *m;
	uint64_t total_bytes;
	uint64_t meta_bytes; /* paths, targets and xattrs kept in m (max_meta_bytes) */
	struct map links;    /* "dev:ino" of a hard-linked file -> struct link_seen */
	/* Buffers reused file after file, kept off the stack of the recursion. */
	char names[XATTR_LIST_BYTES];
	unsigned char value[IMG_XATTR_VALUE_MAX];
	char target[IMG_PATH_MAX + 2];
};

struct link_seen {
	char key[48];
	char digest[IMG_DIGEST_HEX];
	uint64_t size;
};

static void xattrs_free(struct img_entry *e)
{
	for (size_t i = 0; i < e->nxattrs; i++) {
		free(e->xattrs[i].name);
		free(e->xattrs[i].value);
	}
	free(e->xattrs);
	e->xattrs = NULL;
	e->nxattrs = 0;
}

static int xattr_cmp(const void *a, const void *b)
{
	return strcmp(((const struct img_xattr *)a)->name, ((const struct img_xattr *)b)->name);
}

/* The extended attributes of the file open as fd (any kind of fd: they are read through its
 * /proc/self/fd link, which names the file itself, even a symlink opened with O_PATH). */
static int xattrs_read(struct ingest *in, int fd, const char *path, struct img_entry *e,
                       struct sk_error *err)
{
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	char *names = in->names;
	unsigned char *value = in->value;
	ssize_t n = listxattr(proc, names, XATTR_LIST_BYTES);
	if (n < 0 && (errno == ENOTSUP || errno == ENODATA))
		return 0;
	if (n < 0)
		return sk_error_errno(err, -errno, "ingest \"%.200s\": list xattrs", path);
	uint64_t bytes = 0;
	for (ssize_t off = 0; off < n; off += (ssize_t)strlen(names + off) + 1) {
		const char *name = names + off;
		if (img_xattr_is_overlay(name))
			continue;
		ssize_t len = getxattr(proc, name, value, IMG_XATTR_VALUE_MAX);
		if (len < 0 && errno == ENODATA)
			continue; /* removed since it was listed */
		if (len < 0)
			return sk_error_errno(err, -errno, "ingest \"%.200s\": xattr %s", path,
			                      name);
		bytes += strlen(name) + (size_t)len;
		if (bytes > in->lim->max_xattr_bytes)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "ingest \"%.200s\": xattrs larger than %llu bytes",
			                    path, (unsigned long long)in->lim->max_xattr_bytes);
		struct img_xattr *xs = realloc(e->xattrs, (e->nxattrs + 1) * sizeof(*xs));
		if (!xs)
			return sk_error_set(err, -ENOMEM, "ingest: out of memory");
		e->xattrs = xs;
		struct img_xattr *x = &xs[e->nxattrs];
		x->name = strdup(name);
		x->value = malloc(len ? (size_t)len : 1);
		x->len = (size_t)len;
		if (!x->name || !x->value) {
			free(x->name);
			free(x->value);
			return sk_error_set(err, -ENOMEM, "ingest: out of memory");
		}
		memcpy(x->value, value, (size_t)len);
		e->nxattrs++;
	}
	if (e->nxattrs > 1)
		qsort(e->xattrs, e->nxattrs, sizeof(*e->xattrs), xattr_cmp);
	return 0;
}

/* True when the file open as fd carries the overlay attribute name with value (any value when
 * NULL). */
static int overlay_flag(int fd, const char *name, const char *value)
{
	char proc[64], buf[16];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	ssize_t n = getxattr(proc, name, buf, sizeof(buf));
	if (n < 0)
		return 0;
	return !value || ((size_t)n == strlen(value) && memcmp(buf, value, (size_t)n) == 0);
}

/* Store the bytes of a regular file, once per hard-linked inode. */
static int ingest_reg(struct ingest *in, int fd, const struct stat *st, const char *path,
                      struct img_entry *e, struct sk_error *err)
{
	if ((uint64_t)st->st_size > in->lim->max_file_bytes)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "ingest \"%.200s\": %llu bytes, more than the %llu allowed",
		                    path, (unsigned long long)st->st_size,
		                    (unsigned long long)in->lim->max_file_bytes);
	char key[48];
	snprintf(key, sizeof(key), "%llx:%llx", (unsigned long long)st->st_dev,
	         (unsigned long long)st->st_ino);
	struct link_seen *seen = st->st_nlink > 1 ? map_get(&in->links, key) : NULL;
	if (seen) {
		memcpy(e->digest, seen->digest, IMG_DIGEST_HEX);
		e->size = seen->size;
		return 0;
	}
	int r = img_blob_put_fd(in->s, fd, in->lim->max_file_bytes, e->digest, &e->size, err);
	if (r < 0)
		return sk_error_prefix(err, "ingest \"%.200s\"", path);
	if (st->st_nlink > 1) {
		seen = calloc(1, sizeof(*seen));
		if (!seen)
			return sk_error_set(err, -ENOMEM, "ingest: out of memory");
		memcpy(seen->key, key, sizeof(key));
		memcpy(seen->digest, e->digest, IMG_DIGEST_HEX);
		seen->size = e->size;
		if (map_put(&in->links, seen->key, seen) < 0) {
			free(seen);
			return sk_error_set(err, -ENOMEM, "ingest: out of memory");
		}
	}
	return 0;
}

static int ingest_tree(struct ingest *in, int dfd, char *path, size_t plen, int depth,
                       struct sk_error *err);

/* Count what e keeps in memory against max_meta_bytes: a tree that is small on disk can still
 * be huge as a manifest (one file with large xattrs hard-linked a million times under long
 * paths), and the walk runs outside any sandbox's memory limit. */
static int meta_count(struct ingest *in, const struct img_entry *e, struct sk_error *err)
{
	uint64_t n = strlen(e->path) + (e->target ? strlen(e->target) : 0);
	for (size_t i = 0; i < e->nxattrs; i++)
		n += strlen(e->xattrs[i].name) + e->xattrs[i].len;
	in->meta_bytes += n;
	if (in->meta_bytes > in->lim->max_meta_bytes)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "ingest \"%.200s\": names, link targets and xattrs larger than "
		                    "%llu bytes",
		                    e->path, (unsigned long long)in->lim->max_meta_bytes);
	return 0;
}

/* One directory entry: stat'ed, opened without following, checked to be what was stat'ed,
 * recorded (and stored, and descended into). */
static int ingest_one(struct ingest *in, int dfd, const char *name, char *path, size_t plen,
                      int depth, struct sk_error *err)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : sk_error_errno(err, -errno, "ingest \"%.200s\"", path);
	if (S_ISSOCK(st.st_mode))
		return 0;
	if (in->m->n >= in->lim->max_files)
		return sk_error_set(err, -SK_EINVAL_SPEC, "ingest: more than %llu files",
		                    (unsigned long long)in->lim->max_files);
	int oflags = O_CLOEXEC | O_NOFOLLOW;
	if (S_ISREG(st.st_mode))
		oflags |= O_RDONLY | O_NOCTTY | O_NONBLOCK;
	else if (S_ISDIR(st.st_mode))
		oflags |= O_RDONLY | O_DIRECTORY;
	else
		oflags |= O_PATH; /* symlinks, devices and fifos are never opened for I/O */
	_cleanup_close_ int fd = openat(dfd, name, oflags);
	if (fd < 0)
		return sk_error_errno(err, -errno, "ingest \"%.200s\": open", path);
	struct stat st2;
	if (fstat(fd, &st2) < 0)
		return sk_error_errno(err, -errno, "ingest \"%.200s\"", path);
	if (st2.st_ino != st.st_ino || st2.st_dev != st.st_dev ||
	    (st2.st_mode & S_IFMT) != (st.st_mode & S_IFMT))
		return sk_error_set(err, -EAGAIN, "ingest \"%.200s\": changed while read", path);

	struct img_entry e = {.path = path,
	                      .mode = st2.st_mode & 07777,
	                      .uid = st2.st_uid,
	                      .gid = st2.st_gid,
	                      .mtime_sec = st2.st_mtim.tv_sec,
	                      .mtime_nsec = (uint32_t)st2.st_mtim.tv_nsec};
	char *target = in->target;
	int layer = in->flags & IMG_INGEST_LAYER;
	int r = 0;
	switch (st2.st_mode & S_IFMT) {
	case S_IFREG:
		e.type = IMG_REG;
		if (layer && overlay_flag(fd, OVERLAY_XATTR_PREFIX "whiteout", NULL))
			e.type = IMG_WHITEOUT;
		break;
	case S_IFDIR:
		e.type = IMG_DIR;
		e.opaque = layer && overlay_flag(fd, OVERLAY_XATTR_PREFIX "opaque", "y");
		break;
	case S_IFLNK: {
		ssize_t n = readlinkat(fd, "", target, IMG_PATH_MAX + 1);
		if (n < 0)
			return sk_error_errno(err, -errno, "ingest \"%.200s\": readlink", path);
		if (n == 0 || (size_t)n > IMG_PATH_MAX)
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "ingest \"%.200s\": symlink target empty or too long",
			                    path);
		target[n] = '\0';
		e.type = IMG_SYMLINK;
		e.target = target;
		break;
	}
	case S_IFCHR:
	case S_IFBLK:
		e.type = S_ISCHR(st2.st_mode) ? IMG_CHR : IMG_BLK;
		e.rdev_major = major(st2.st_rdev);
		e.rdev_minor = minor(st2.st_rdev);
		if (layer && e.type == IMG_CHR && st2.st_rdev == 0)
			e.type = IMG_WHITEOUT;
		break;
	case S_IFIFO: e.type = IMG_FIFO; break;
	default: return 0;
	}
	if (e.type == IMG_WHITEOUT) {
		struct img_entry w = {.path = path, .type = IMG_WHITEOUT};
		r = meta_count(in, &w, err);
		return r < 0 ? r : img_manifest_add(in->m, &w, err);
	}
	if (!img_path_valid(path) || !utf8_valid((const unsigned char *)path, plen))
		return sk_error_set(err, -SK_EINVAL_SPEC, "ingest \"%.200s\": name not valid UTF-8",
		                    path);
	r = xattrs_read(in, fd, path, &e, err);
	if (r == 0 && e.type == IMG_REG) {
		r = ingest_reg(in, fd, &st2, path, &e, err);
		in->total_bytes += e.size;
		if (r == 0 && in->total_bytes > in->lim->max_bytes)
			r = sk_error_set(err, -SK_EINVAL_SPEC,
			                 "ingest: files larger than %llu bytes",
			                 (unsigned long long)in->lim->max_bytes);
	}
	if (r == 0)
		r = meta_count(in, &e, err);
	if (r == 0)
		r = img_manifest_add(in->m, &e, err);
	xattrs_free(&e);
	if (r == 0 && e.type == IMG_DIR)
		r = ingest_tree(in, fd, path, plen, depth + 1, err);
	return r;
}

/* Every entry of the directory open as dfd, whose path (of length plen) is in path. */
static int ingest_tree(struct ingest *in, int dfd, char *path, size_t plen, int depth,
                       struct sk_error *err)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sk_error_errno(err, -errno, "ingest \"%.200s\": open", path);
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return sk_error_errno(err, -errno, "ingest \"%.200s\"", path);
	}
	int r = 0;
	struct dirent *de;
	size_t base = strcmp(path, "/") == 0 ? 0 : plen;
	while (r == 0 && (errno = 0, de = readdir(d))) {
		const char *name = de->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		size_t nlen = strlen(name);
		/* depth: the components of path; its entries have one more. */
		if (depth >= IMG_PATH_DEPTH_MAX) {
			r = sk_error_set(err, -SK_EINVAL_SPEC,
			                 "ingest \"%.200s\": nested deeper than %d", path,
			                 IMG_PATH_DEPTH_MAX);
			break;
		}
		if (base + 1 + nlen > IMG_PATH_MAX) {
			r = sk_error_set(err, -SK_EINVAL_SPEC,
			                 "ingest \"%.200s/%.40s\": path too long", path, name);
			break;
		}
		path[base] = '/';
		memcpy(path + base + 1, name, nlen + 1);
		r = ingest_one(in, dirfd(d), name, path, base + 1 + nlen, depth, err);
		path[plen] = '\0';
	}
	if (r == 0 && errno != 0)
		r = sk_error_errno(err, -errno, "ingest \"%.200s\": readdir", path);
	closedir(d);
	return r;
}

int img_ingest_dir(struct img_store *s, int dirfd, int flags, const struct img_limits *lim,
                   struct img_manifest *m, struct sk_error *err)
{
	_cleanup_free_ struct ingest *inp = calloc(1, sizeof(*inp));
	if (!inp)
		return sk_error_set(err, -ENOMEM, "ingest: out of memory");
	struct img_manifest out;
	img_manifest_init(&out);
	inp->s = s;
	inp->flags = flags;
	inp->lim = lim ? lim : &img_default_limits;
	inp->m = &out;
	map_init(&inp->links);
	char path[IMG_PATH_MAX + 1] = "/";
	struct stat st;
	int r = 0;
	_cleanup_close_ int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = sk_error_errno(err, -errno, "ingest: open the directory");
		goto out;
	}
	struct img_entry root = {.path = path,
	                         .type = IMG_DIR,
	                         .mode = st.st_mode & 07777,
	                         .uid = st.st_uid,
	                         .gid = st.st_gid,
	                         .mtime_sec = st.st_mtim.tv_sec,
	                         .mtime_nsec = (uint32_t)st.st_mtim.tv_nsec};
	r = xattrs_read(inp, fd, path, &root, err);
	if (r == 0)
		r = img_manifest_add(&out, &root, err);
	xattrs_free(&root);
	if (r == 0)
		r = ingest_tree(inp, fd, path, 1, 0, err);
	if (r == 0)
		r = img_manifest_sort(&out, err);
	if (r == 0)
		r = img_manifest_check(&out, flags & IMG_INGEST_LAYER, inp->lim, err);
	if (r == 0) {
		img_manifest_free(m);
		*m = out;
		img_manifest_init(&out);
	}
out:
	img_manifest_free(&out);
	size_t pos = 0;
	void *v;
	while ((v = map_next(&inp->links, &pos)))
		free(v);
	map_release(&inp->links);
	return r;
}
