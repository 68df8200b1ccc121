/* Materializing an image: a read-only tree of hard links under trees/<digest>, each link to an
 * inode under inodes/ shared by every tree that holds a file of the same content and metadata,
 * so that a thousand sandboxes on a hundred images cost one copy of each distinct file. The tree
 * is built aside (trees/.tmp-<random>, locked while it is built) and renamed into place, so a
 * tree that exists is complete; everything is created relative to directory fds of the tree
 * being built, opened without following symlinks, so an image's symlinks never lead outside. */
#include "manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "store_internal.h"

/* inodes/<2 hex>/<62 hex>.<n>: past this many inodes of one key, something is wrong. */
#define INODE_MAX_COPIES    1024
#define INODE_RELPATH_BYTES 96

unsigned long img_inode_max_links;

struct build {
	struct img_store *s;
	int tree_fd;   /* trees/.tmp-<random>: the root of the tree being built */
	int inodes_fd; /* inodes/ */
	int parent_fd; /* the directory of the last entry, cached for its siblings */
	char parent[IMG_PATH_MAX + 1];
	unsigned char prefix_made[256]; /* inodes/<2 hex>/ known to exist */
};

/* Open path (relative to the tree's root, "" for the root) as a directory, refusing any symlink
 * and anything outside the tree. */
static int tree_open_dir(int tree_fd, const char *rel)
{
	struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW,
	                       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
	                                  RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV};
	long fd = syscall(SYS_openat2, tree_fd, rel[0] ? rel : ".", &how, sizeof(how));
	return fd < 0 ? -errno : (int)fd;
}

/* The parent directory's fd of path, and the path's last component. */
static int build_parent(struct build *b, const char *path, const char **ret_name,
                        struct sk_error *err)
{
	const char *slash = strrchr(path, '/');
	size_t n = (size_t)(slash - path);
	*ret_name = slash + 1;
	if (b->parent_fd >= 0 && strlen(b->parent) == n && memcmp(b->parent, path, n) == 0)
		return b->parent_fd;
	if (b->parent_fd >= 0)
		close(b->parent_fd);
	b->parent_fd = -1;
	memcpy(b->parent, path, n);
	b->parent[n] = '\0';
	int fd = tree_open_dir(b->tree_fd, n ? b->parent + 1 : "");
	if (fd < 0)
		return sk_error_errno(err, fd, "materialize \"%.200s\": open its directory", path);
	b->parent_fd = fd;
	return fd;
}

/* Set e's xattrs on the file open as fd (any kind of fd, even O_PATH: set through /proc). */
static int xattrs_set(int fd, const struct img_entry *e, struct sk_error *err)
{
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	for (size_t i = 0; i < e->nxattrs; i++)
		if (setxattr(proc, e->xattrs[i].name, e->xattrs[i].value, e->xattrs[i].len, 0) < 0)
			return sk_error_errno(err, -errno, "materialize \"%.200s\": xattr %s",
			                      e->path, e->xattrs[i].name);
	return 0;
}

static void entry_times(const struct img_entry *e, struct timespec ts[2])
{
	ts[0].tv_sec = ts[1].tv_sec = e->mtime_sec;
	ts[0].tv_nsec = ts[1].tv_nsec = e->mtime_nsec;
}

int img_inode_key(const struct img_entry *e, char key[IMG_DIGEST_HEX])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	char head[256];
	int n = snprintf(head, sizeof(head), "%s %o %u %u %lld %u\n", e->digest, e->mode, e->uid,
	                 e->gid, (long long)e->mtime_sec, e->mtime_nsec);
	int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
	         EVP_DigestUpdate(md, head, (size_t)n);
	for (size_t i = 0; ok && i < e->nxattrs; i++) {
		uint64_t len = e->xattrs[i].len;
		ok = EVP_DigestUpdate(md, e->xattrs[i].name, strlen(e->xattrs[i].name) + 1) &&
		     EVP_DigestUpdate(md, &len, sizeof(len)) &&
		     EVP_DigestUpdate(md, e->xattrs[i].value, e->xattrs[i].len);
	}
	unsigned char out[32];
	unsigned int outlen = 0;
	ok = ok && EVP_DigestFinal_ex(md, out, &outlen) && outlen == sizeof(out);
	EVP_MD_CTX_free(md);
	if (!ok)
		return -EIO;
	for (size_t i = 0; i < sizeof(out); i++)
		snprintf(key + 2 * i, 3, "%02x", out[i]);
	return 0;
}

/* The blob's bytes into fd: a reflink where the filesystem shares extents (btrfs, xfs), else a
 * copy in the kernel, else through a buffer. */
static int copy_data(int dst, int src, uint64_t size)
{
	if (ioctl(dst, FICLONE, src) == 0)
		return 0;
	uint64_t done = 0;
	while (done < size) {
		ssize_t n = copy_file_range(src, NULL, dst, NULL, size - done, 0);
		if (n < 0 && errno == EINTR)
			continue;
		/* The disk full or the file too large is the answer; anything else (across
		 * filesystems, not supported) leaves it to the buffer. */
		if (n < 0 && (errno == ENOSPC || errno == EDQUOT || errno == EFBIG || errno == EIO))
			return -errno;
		if (n <= 0)
			break;
		done += (uint64_t)n;
	}
	if (done == size)
		return 0;
	char buf[65536];
	off_t off = (off_t)done;
	while (done < size) {
		ssize_t n = pread(src, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		for (ssize_t w = 0; w < n;) {
			ssize_t k = pwrite(dst, buf + w, (size_t)(n - w), off + w);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				return k < 0 ? -errno
				             : -EIO; /* ENOSPC, EDQUOT, EFBIG: said as such */
			w += k;
		}
		done += (uint64_t)n;
		off += n;
	}
	return 0;
}

/* A new inode for e, linked into the tree as parent_fd/name and then published as inodes/rel
 * (in that order, so that gc, which removes inodes with one link, never sees it alone). */
static int inode_create(struct build *b, const struct img_entry *e, const char *rel, int parent_fd,
                        const char *name, struct sk_error *err)
{
	char dir[8];
	snprintf(dir, sizeof(dir), "%.2s", rel);
	unsigned long prefix = strtoul(dir, NULL, 16) & 0xff;
	if (!b->prefix_made[prefix]) {
		if (mkdirat(b->inodes_fd, dir, 0700) < 0 && errno != EEXIST)
			return sk_error_errno(err, -errno, "materialize: create inodes/%s", dir);
		b->prefix_made[prefix] = 1;
	}
	_cleanup_close_ int blob = -1;
	uint64_t size = 0;
	int r = img_blob_open(b->s, e->digest, &blob, &size, err);
	if (r < 0)
		return sk_error_prefix(err, "materialize \"%.200s\"", e->path);
	if (size != e->size)
		return sk_error_set(
		    err, -EIO, "materialize \"%.200s\": blob %s holds %llu bytes, not %llu",
		    e->path, e->digest, (unsigned long long)size, (unsigned long long)e->size);
	_cleanup_close_ int fd = openat(b->inodes_fd, dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return sk_error_errno(err, -errno, "materialize: a file in inodes/%s", dir);
	r = copy_data(fd, blob, size);
	if (r < 0)
		return sk_error_errno(err, r, "materialize \"%.200s\": copy blob %s", e->path,
		                      e->digest);
	/* chown clears suid bits and file capabilities: owner first, then mode and xattrs. */
	if (fchown(fd, e->uid, e->gid) < 0 || fchmod(fd, e->mode) < 0)
		return sk_error_errno(err, -errno, "materialize \"%.200s\": owner and mode",
		                      e->path);
	r = xattrs_set(fd, e, err);
	if (r < 0)
		return r;
	struct timespec ts[2];
	entry_times(e, ts);
	if (futimens(fd, ts) < 0)
		return sk_error_errno(err, -errno, "materialize \"%.200s\": times", e->path);
	r = img_fd_link(fd, parent_fd, name);
	if (r < 0)
		return sk_error_errno(err, r, "materialize \"%.200s\": link", e->path);
	r = img_fd_link(fd, b->inodes_fd, rel);
	if (r < 0 && r != -EEXIST) /* EEXIST: made at the same time elsewhere; ours stays apart */
		return sk_error_errno(err, r, "materialize: publish inodes/%s", rel);
	return 0;
}

/* A regular file: a link to the shared inode of its key, the next one once an inode is full. */
static int build_reg(struct build *b, const struct img_entry *e, int parent_fd, const char *name,
                     struct sk_error *err)
{
	char key[IMG_DIGEST_HEX];
	if (img_inode_key(e, key) < 0)
		return sk_error_set(err, -EIO, "materialize: SHA-256 failed");
	for (int copy = 0, retries = 0; copy < INODE_MAX_COPIES;) {
		char rel[INODE_RELPATH_BYTES];
		if (copy == 0)
			snprintf(rel, sizeof(rel), "%.2s/%s", key, key + 2);
		else
			snprintf(rel, sizeof(rel), "%.2s/%s.%d", key, key + 2, copy);
		struct stat st;
		if (fstatat(b->inodes_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				return sk_error_errno(err, -errno, "materialize: inodes/%s", rel);
			return inode_create(b, e, rel, parent_fd, name, err);
		}
		if (img_inode_max_links && st.st_nlink >= img_inode_max_links) {
			copy++;
			continue;
		}
		if (linkat(b->inodes_fd, rel, parent_fd, name, 0) == 0)
			return 0;
		if (errno == EMLINK) {
			copy++;
		} else if (errno != ENOENT || ++retries > 3) {
			/* ENOENT: gc removed it since the stat; look again. */
			return sk_error_errno(err, -errno, "materialize \"%.200s\": link inodes/%s",
			                      e->path, rel);
		}
	}
	return sk_error_set(err, -EMLINK, "materialize \"%.200s\": too many inodes of one key",
	                    e->path);
}

/* Owner, mode (after the owner: chown clears suid), xattrs and times of a non-directory,
 * non-regular entry just made as parent_fd/name. */
static int build_meta(const struct img_entry *e, int parent_fd, const char *name,
                      struct sk_error *err)
{
	if (fchownat(parent_fd, name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0)
		return sk_error_errno(err, -errno, "materialize \"%.200s\": owner", e->path);
	if (e->type != IMG_SYMLINK && fchmodat(parent_fd, name, e->mode, 0) < 0)
		return sk_error_errno(err, -errno, "materialize \"%.200s\": mode", e->path);
	if (e->nxattrs) {
		_cleanup_close_ int fd = openat(parent_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return sk_error_errno(err, -errno, "materialize \"%.200s\"", e->path);
		int r = xattrs_set(fd, e, err);
		if (r < 0)
			return r;
	}
	struct timespec ts[2];
	entry_times(e, ts);
	if (utimensat(parent_fd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return sk_error_errno(err, -errno, "materialize \"%.200s\": times", e->path);
	return 0;
}

/* A directory: made, owned and given its xattrs now; mode and times at the end. */
static int build_dir(struct build *b, const struct img_entry *e, int parent_fd, const char *name,
                     struct sk_error *err)
{
	_cleanup_close_ int fd = -1;
	if (strcmp(e->path, "/") == 0) {
		fd = fcntl(b->tree_fd, F_DUPFD_CLOEXEC, 3);
	} else {
		if (mkdirat(parent_fd, name, 0700) < 0)
			return sk_error_errno(err, -errno, "materialize \"%.200s\": mkdir",
			                      e->path);
		fd = tree_open_dir(parent_fd, name);
		if (fd < 0)
			errno = -fd;
	}
	if (fd < 0)
		return sk_error_errno(err, -errno, "materialize \"%.200s\": open", e->path);
	if (fchown(fd, e->uid, e->gid) < 0)
		return sk_error_errno(err, -errno, "materialize \"%.200s\": owner", e->path);
	return xattrs_set(fd, e, err);
}

static int build_entry(struct build *b, const struct img_entry *e, struct sk_error *err)
{
	const char *name = "";
	int pfd = -1;
	if (strcmp(e->path, "/") != 0) {
		pfd = build_parent(b, e->path, &name, err);
		if (pfd < 0)
			return pfd;
	}
	switch (e->type) {
	case IMG_DIR: return build_dir(b, e, pfd, name, err);
	case IMG_REG: return build_reg(b, e, pfd, name, err);
	case IMG_SYMLINK:
		if (symlinkat(e->target, pfd, name) < 0)
			return sk_error_errno(err, -errno, "materialize \"%.200s\": symlink",
			                      e->path);
		return build_meta(e, pfd, name, err);
	case IMG_CHR:
	case IMG_BLK:
	case IMG_FIFO:
	case IMG_SOCK: {
		static const mode_t FMT[] = {[IMG_CHR] = S_IFCHR,
		                             [IMG_BLK] = S_IFBLK,
		                             [IMG_FIFO] = S_IFIFO,
		                             [IMG_SOCK] = S_IFSOCK};
		dev_t dev = makedev(e->rdev_major, e->rdev_minor);
		if (mknodat(pfd, name, FMT[e->type] | 0600, dev) < 0)
			return sk_error_errno(err, -errno, "materialize \"%.200s\": mknod",
			                      e->path);
		return build_meta(e, pfd, name, err);
	}
	case IMG_WHITEOUT: break;
	}
	return sk_error_set(err, -SK_EINVAL_SPEC, "materialize \"%.200s\": not in an image",
	                    e->path);
}

/* Directory modes and times, children before parents (reverse path order), so that making a
 * child does not change its parent's mtime afterwards. */
static int build_finish_dirs(struct build *b, const struct img_manifest *m, struct sk_error *err)
{
	for (size_t i = m->n; i-- > 0;) {
		const struct img_entry *e = &m->e[i];
		if (e->type != IMG_DIR)
			continue;
		_cleanup_close_ int fd = tree_open_dir(b->tree_fd, e->path + 1);
		if (fd < 0)
			return sk_error_errno(err, fd, "materialize \"%.200s\": open", e->path);
		struct timespec ts[2];
		entry_times(e, ts);
		if (fchmod(fd, e->mode) < 0 || futimens(fd, ts) < 0)
			return sk_error_errno(err, -errno, "materialize \"%.200s\": mode and times",
			                      e->path);
	}
	return 0;
}

static int build_tree(struct build *b, const struct img_manifest *m, struct sk_error *err)
{
	for (size_t i = 0; i < m->n; i++) {
		int r = build_entry(b, &m->e[i], err);
		if (r < 0)
			return r;
	}
	return build_finish_dirs(b, m, err);
}

void img_tree_touch(struct img_store *s, const char *digest)
{
	char name[IMG_DIGEST_HEX + 32];
	snprintf(name, sizeof(name), IMG_TREES_DIR "/%s.used", digest);
	int fd = openat(s->root_fd, name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		futimens(fd, NULL);
		close(fd);
	}
}

static int tree_path(struct img_store *s, const char *digest, char *ret_path, size_t size,
                     struct sk_error *err)
{
	if (ret_path &&
	    snprintf(ret_path, size, "%s/" IMG_TREES_DIR "/%s", s->root, digest) >= (int)size)
		return sk_error_set(err, -ENAMETOOLONG, "materialize: path buffer too small");
	return 0;
}

int img_materialize(struct img_store *s, const char *digest, char *ret_path, size_t size,
                    struct sk_error *err)
{
	if (!img_digest_valid(digest))
		return sk_error_set(err, -SK_EINVAL_SPEC, "materialize: invalid digest \"%.80s\"",
		                    digest);
	char rel[IMG_DIGEST_HEX + 32];
	snprintf(rel, sizeof(rel), IMG_TREES_DIR "/%s", digest);
	struct stat st;
	if (fstatat(s->root_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
		img_tree_touch(s, digest);
		return tree_path(s, digest, ret_path, size, err);
	}
	struct img_manifest m;
	img_manifest_init(&m);
	int r = img_manifest_load(s, digest, &img_default_limits, &m, err);
	if (r == 0)
		r = img_manifest_check(&m, 0, &img_default_limits, err);
	if (r < 0) {
		img_manifest_free(&m);
		return sk_error_prefix(err, "materialize %s", digest);
	}
	img_trees_clean_stale(s);

	char hex[17], tmp[64];
	r = random_hex(8, hex, sizeof(hex));
	snprintf(tmp, sizeof(tmp), IMG_TREES_DIR "/" IMG_TREE_TMP_PREFIX "%s", hex);
	if (r == 0 && mkdirat(s->root_fd, tmp, 0700) < 0)
		r = -errno;
	struct build b = {.s = s, .tree_fd = -1, .inodes_fd = -1, .parent_fd = -1};
	if (r == 0 && (b.tree_fd = openat(s->root_fd, tmp,
	                                  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		r = -errno;
	/* Locked while it is built: a stale one (its builder died) is one nobody has locked. */
	if (r == 0 && flock(b.tree_fd, LOCK_EX) < 0)
		r = -errno;
	if (r == 0 && (b.inodes_fd = openat(s->root_fd, "inodes",
	                                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		r = -errno;
	if (r < 0) {
		sk_error_errno(err, r, "materialize %s: create %s/%s", digest, s->root, tmp);
	} else {
		r = build_tree(&b, &m, err);
		if (r == 0 && renameat2(s->root_fd, tmp, s->root_fd, rel, RENAME_NOREPLACE) < 0 &&
		    errno != EEXIST && errno != ENOTEMPTY)
			r = sk_error_errno(err, -errno, "materialize %s: rename into place",
			                   digest);
		if (r < 0)
			sk_error_prefix(err, "materialize %s", digest);
	}
	/* Gone after a successful rename; else ours is the loser's or a failed copy. */
	fs_rm_rf_at(s->root_fd, tmp);
	if (b.parent_fd >= 0)
		close(b.parent_fd);
	if (b.inodes_fd >= 0)
		close(b.inodes_fd);
	if (b.tree_fd >= 0)
		close(b.tree_fd);
	img_manifest_free(&m);
	if (r < 0)
		return r;
	img_tree_touch(s, digest);
	return tree_path(s, digest, ret_path, size, err);
}
