/* The content store's blobs: files named by the SHA-256 of their bytes, written aside under tmp/
 * while they are hashed and moved into blobs/sha256/ in one atomic step, so that a blob path that
 * exists always holds exactly the bytes its name says. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "store_internal.h"

#define BLOB_COPY_BUF_BYTES (256 * 1024)

struct img_blob_writer {
	struct img_store *s;
	int fd;
	char tmp_name[64]; /* "" for an O_TMPFILE */
	EVP_MD_CTX *md;
	uint64_t written, max;
	/* A write failed: the hash may cover bytes the file lacks, so nothing may be stored. */
	int failed;
};

static const char *const STORE_DIRS[] = {"blobs", "blobs/sha256", "tmp", "inodes", "trees"};

int img_store_open(struct img_store *s, const char *root, struct sk_error *err)
{
	s->root_fd = -1;
	if (snprintf(s->root, sizeof(s->root), "%s", root) >= (int)sizeof(s->root))
		return sk_error_set(err, -ENAMETOOLONG, "image store %s: path too long", root);
	int r = fs_mkdir_p(root, 0700);
	if (r < 0)
		return sk_error_errno(err, r, "image store: create %s", root);
	s->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->root_fd < 0)
		return sk_error_errno(err, -errno, "image store: open %s", root);
	for (size_t i = 0; i < ARRAY_SIZE(STORE_DIRS); i++) {
		if (mkdirat(s->root_fd, STORE_DIRS[i], 0700) < 0 && errno != EEXIST) {
			r = sk_error_errno(err, -errno, "image store: create %s/%s", root,
			                   STORE_DIRS[i]);
			img_store_close(s);
			return r;
		}
	}
	return 0;
}

void img_store_close(struct img_store *s)
{
	if (s->root_fd >= 0)
		close(s->root_fd);
	s->root_fd = -1;
}

int img_digest_valid(const char *hex)
{
	if (!hex)
		return 0;
	for (int i = 0; i < IMG_DIGEST_HEX - 1; i++)
		if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
			return 0;
	return hex[IMG_DIGEST_HEX - 1] == '\0';
}

void img_blob_relpath(const char *digest, char out[IMG_BLOB_RELPATH_BYTES])
{
	snprintf(out, IMG_BLOB_RELPATH_BYTES, "blobs/sha256/%.2s/%s", digest, digest + 2);
}

int img_blob_begin(struct img_store *s, uint64_t max_bytes, struct img_blob_writer **ret,
                   struct sk_error *err)
{
	struct img_blob_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return sk_error_set(err, -ENOMEM, "blob: out of memory");
	w->s = s;
	w->fd = -1; /* not 0 (calloc's): an early failure must not close the caller's fd 0 */
	w->max = max_bytes;
	w->md = EVP_MD_CTX_new();
	if (!w->md || !EVP_DigestInit_ex(w->md, EVP_sha256(), NULL)) {
		img_blob_abort(w);
		return sk_error_set(err, -EIO, "blob: SHA-256 unavailable");
	}
	/* An unnamed file leaves nothing behind if we crash; filesystems without O_TMPFILE get a
	 * random name that gc removes once it is old. */
	w->fd = openat(s->root_fd, "tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (w->fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		char hex[33];
		int r = random_hex(16, hex, sizeof(hex));
		if (r < 0) {
			img_blob_abort(w);
			return sk_error_errno(err, r, "blob: random name");
		}
		snprintf(w->tmp_name, sizeof(w->tmp_name), "tmp/blob-%s", hex);
		w->fd =
		    openat(s->root_fd, w->tmp_name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	}
	if (w->fd < 0) {
		int r = -errno;
		w->tmp_name[0] = '\0';
		img_blob_abort(w);
		return sk_error_errno(err, r, "blob: create a file in %s/tmp", s->root);
	}
	*ret = w;
	return 0;
}

int img_blob_write(struct img_blob_writer *w, const void *buf, size_t len, struct sk_error *err)
{
	if (len > w->max - w->written || w->written > w->max)
		return sk_error_set(err, -EFBIG, "blob larger than %llu bytes",
		                    (unsigned long long)w->max);
	if (w->failed)
		return sk_error_set(err, -EIO, "blob: an earlier write failed");
	w->failed = 1; /* until every byte is both hashed and written */
	if (!EVP_DigestUpdate(w->md, buf, len))
		return sk_error_set(err, -EIO, "blob: SHA-256 failed");
	const char *p = buf;
	size_t left = len;
	while (left > 0) {
		ssize_t n = write(w->fd, p, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sk_error_errno(err, -errno, "blob: write");
		}
		p += n;
		left -= (size_t)n;
	}
	w->written += len;
	w->failed = 0;
	return 0;
}

/* Give the finished file its name in blobs/: a link that fails with EEXIST means the blob is
 * already stored (same name, so same bytes) and ours is dropped. */
static int blob_place(struct img_blob_writer *w, const char *digest, struct sk_error *err)
{
	struct img_store *s = w->s;
	char rel[IMG_BLOB_RELPATH_BYTES], dir[32];
	img_blob_relpath(digest, rel);
	snprintf(dir, sizeof(dir), "blobs/sha256/%.2s", digest);
	if (mkdirat(s->root_fd, dir, 0700) < 0 && errno != EEXIST)
		return sk_error_errno(err, -errno, "blob: create %s/%s", s->root, dir);
	if (fchmod(w->fd, 0444) < 0)
		return sk_error_errno(err, -errno, "blob: chmod");
	int r;
	for (int attempt = 0;; attempt++) {
		if (w->tmp_name[0] == '\0') {
			r = img_fd_link(w->fd, s->root_fd, rel);
		} else {
			r = renameat2(s->root_fd, w->tmp_name, s->root_fd, rel, RENAME_NOREPLACE) <
			            0
			        ? -errno
			        : 0;
			if (r == 0)
				w->tmp_name[0] = '\0';
		}
		if (r != -EEXIST)
			break;
		/* Stored before: it is made as new as now, so that gc's grace (counted from its
		 * mtime) starts again for whoever is about to name it. Gone since the link
		 * failed (gc took it): ours takes its place. */
		if (utimensat(s->root_fd, rel, NULL, AT_SYMLINK_NOFOLLOW) == 0)
			return 0;
		if (errno != ENOENT || attempt == 3)
			return sk_error_errno(err, -errno, "blob: touch %s/%s", s->root, rel);
	}
	if (r < 0)
		return sk_error_errno(err, r, "blob: store %s/%s", s->root, rel);
	return 0;
}

int img_fd_link(int fd, int dirfd, const char *name)
{
	if (linkat(fd, "", dirfd, name, AT_EMPTY_PATH) == 0)
		return 0;
	if (errno != ENOENT)
		return -errno;
	/* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc link does not. */
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	return linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
}

int img_blob_finish(struct img_blob_writer *w, const char *expect, char digest[IMG_DIGEST_HEX],
                    uint64_t *ret_size, struct sk_error *err)
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	char hex[IMG_DIGEST_HEX];
	int r = 0;
	if (w->written > w->max) {
		r = sk_error_set(err, -EFBIG, "blob larger than %llu bytes",
		                 (unsigned long long)w->max);
		goto out;
	}
	if (w->failed) {
		r = sk_error_set(err, -EIO, "blob: a write failed, nothing stored");
		goto out;
	}
	if (!EVP_DigestFinal_ex(w->md, md, &mdlen) || mdlen != sizeof(md)) {
		r = sk_error_set(err, -EIO, "blob: SHA-256 failed");
		goto out;
	}
	for (size_t i = 0; i < sizeof(md); i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (expect && strcmp(expect, hex) != 0) {
		r = sk_error_set(err, -EBADMSG, "blob digest mismatch: expected %s, got %s", expect,
		                 hex);
		goto out;
	}
	r = blob_place(w, hex, err);
	if (r < 0)
		goto out;
	memcpy(digest, hex, sizeof(hex));
	if (ret_size)
		*ret_size = w->written;
out:
	img_blob_abort(w);
	return r;
}

void img_blob_abort(struct img_blob_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (w->tmp_name[0])
		unlinkat(w->s->root_fd, w->tmp_name, 0);
	EVP_MD_CTX_free(w->md);
	free(w);
}

int img_blob_put(struct img_store *s, const void *buf, size_t len, char digest[IMG_DIGEST_HEX],
                 struct sk_error *err)
{
	struct img_blob_writer *w = NULL;
	int r = img_blob_begin(s, len, &w, err);
	if (r < 0)
		return r;
	r = img_blob_write(w, buf, len, err);
	if (r < 0) {
		img_blob_abort(w);
		return r;
	}
	return img_blob_finish(w, NULL, digest, NULL, err);
}

int img_blob_put_fd(struct img_store *s, int fd, uint64_t max_bytes, char digest[IMG_DIGEST_HEX],
                    uint64_t *ret_size, struct sk_error *err)
{
	_cleanup_free_ char *buf = malloc(BLOB_COPY_BUF_BYTES);
	if (!buf)
		return sk_error_set(err, -ENOMEM, "blob: out of memory");
	struct img_blob_writer *w = NULL;
	int r = img_blob_begin(s, max_bytes, &w, err);
	if (r < 0)
		return r;
	for (;;) {
		ssize_t n = read(fd, buf, BLOB_COPY_BUF_BYTES);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = sk_error_errno(err, -errno, "blob: read");
			break;
		}
		if (n == 0)
			return img_blob_finish(w, NULL, digest, ret_size, err);
		r = img_blob_write(w, buf, (size_t)n, err);
		if (r < 0)
			break;
	}
	img_blob_abort(w);
	return r;
}

int img_blob_exists(struct img_store *s, const char *digest)
{
	if (!img_digest_valid(digest))
		return 0;
	char rel[IMG_BLOB_RELPATH_BYTES];
	img_blob_relpath(digest, rel);
	struct stat st;
	return fstatat(s->root_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

int img_blob_size(struct img_store *s, const char *digest, uint64_t *ret_size)
{
	if (!img_digest_valid(digest))
		return -ENOENT;
	char rel[IMG_BLOB_RELPATH_BYTES];
	img_blob_relpath(digest, rel);
	struct stat st;
	if (fstatat(s->root_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return -ENOENT;
	*ret_size = (uint64_t)st.st_size;
	return 0;
}

int img_blob_open(struct img_store *s, const char *digest, int *ret_fd, uint64_t *ret_size,
                  struct sk_error *err)
{
	if (!img_digest_valid(digest))
		return sk_error_set(err, -SK_EINVAL_SPEC, "invalid digest \"%.80s\"", digest);
	char rel[IMG_BLOB_RELPATH_BYTES];
	img_blob_relpath(digest, rel);
	_cleanup_close_ int fd = openat(s->root_fd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return sk_error_errno(err, -errno, "blob %s", digest);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return sk_error_errno(err, -errno, "blob %s", digest);
	if (!S_ISREG(st.st_mode))
		return sk_error_set(err, -EIO, "blob %s: not a regular file", digest);
	if (ret_size)
		*ret_size = (uint64_t)st.st_size;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int img_blob_read(struct img_store *s, const char *digest, size_t max, char **ret, size_t *ret_len,
                  struct sk_error *err)
{
	_cleanup_close_ int fd = -1;
	uint64_t size = 0;
	int r = img_blob_open(s, digest, &fd, &size, err);
	if (r < 0)
		return r;
	if (size > max)
		return sk_error_set(err, -EFBIG, "blob %s: %llu bytes, more than %zu", digest,
		                    (unsigned long long)size, max);
	_cleanup_free_ char *buf = malloc(size + 1);
	if (!buf)
		return sk_error_set(err, -ENOMEM, "blob %s: out of memory", digest);
	size_t got = 0;
	while (got < size) {
		ssize_t n = pread(fd, buf + got, size - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return sk_error_errno(err, -errno, "blob %s: read", digest);
		if (n == 0)
			return sk_error_set(err, -EIO, "blob %s: shorter than its size", digest);
		got += (size_t)n;
	}
	buf[size] = '\0';
	*ret = TAKE_PTR(buf);
	if (ret_len)
		*ret_len = size;
	return 0;
}
