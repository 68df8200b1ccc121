/* Blobs for image builds: a local directory or file packed as a tar, and files uploaded by the
 * SHA-256 of their bytes (HEAD /v1/blobs/sha256:HEX, PUT only when the server lacks it).
 *
 * The tar is deterministic, so the same tree gives the same digest (and the server's layer
 * cache hits) from any machine, and from the Python SDK, which writes the same bytes: ustar as
 * libarchive writes it, entries depth first with each directory's names sorted bytewise, a
 * directory before what it holds, owner 0:0 without names, permission bits and mtimes (whole
 * seconds) kept, nothing else (no atime, xattrs or device numbers). Regular files, directories
 * and symbolic links only: anything else is refused rather than silently left out. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/encoding.h"
#include "../lib/hash.h"
#include "cli.h"

#define TAR_NAME_MAX  255            /* ustar: a 155-byte prefix, '/', a 100-byte name */
#define TAR_LINK_MAX  100            /* ustar's linkname field */
#define TAR_MTIME_MAX 077777777777LL /* 11 octal digits */
#define TAR_COPY_BUF  (256u << 10)

struct tar_ctx {
	struct archive *a;
	int out_fd;
	EVP_MD_CTX *md;
	uint64_t bytes; /* the archive's bytes written so far */
	uint64_t entries;
	const char *local; /* what is being packed, for messages */
	struct sk_error err;
	char *buf;
};

/* libarchive's writer callback: to the output file, through the hash. */
static la_ssize_t tar_on_write(struct archive *a, void *ud, const void *buf, size_t n)
{
	struct tar_ctx *t = ud;
	if (t->bytes + n > CLI_MAX_BLOB_BYTES) {
		sk_error_set(&t->err, -SK_EINVAL_SPEC,
		             "%s: the archive is over the %" PRIu64 " MiB a blob may hold",
		             t->local, (uint64_t)CLI_MAX_BLOB_BYTES >> 20);
		if (a)
			archive_set_error(a, EFBIG, "too big");
		return -1;
	}
	for (size_t off = 0; off < n;) {
		ssize_t w = write(t->out_fd, (const char *)buf + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			sk_error_errno(&t->err, w < 0 ? -errno : -EIO, "write the archive of %s",
			               t->local);
			if (a)
				archive_set_error(a, EIO, "write failed");
			return -1;
		}
		off += (size_t)w;
	}
	if (!EVP_DigestUpdate(t->md, buf, n)) {
		sk_error_set(&t->err, -EIO, "hash the archive of %s", t->local);
		return -1;
	}
	t->bytes += n;
	return (la_ssize_t)n;
}

/* The error of a failed libarchive call: ours when the callback set one, else libarchive's. */
static int tar_fail(struct tar_ctx *t, const char *what, struct sk_error *err)
{
	if (t->err.code) {
		*err = t->err;
		return err->code;
	}
	return sk_error_set(err, -EIO, "%s: %s", what, archive_error_string(t->a));
}

/* The hex SHA-256 and the length of what went through t. */
static int tar_digest(struct tar_ctx *t, char ret_hex[65], uint64_t *ret_size, struct sk_error *err)
{
	uint8_t md[32];
	unsigned int mdlen = 0;
	if (!EVP_DigestFinal_ex(t->md, md, &mdlen) || mdlen != sizeof(md))
		return sk_error_set(err, -EIO, "hash %s", t->local);
	for (size_t i = 0; i < sizeof(md); i++)
		snprintf(ret_hex + 2 * i, 3, "%02x", md[i]);
	*ret_size = t->bytes;
	return 0;
}

/* Copy size bytes of fd into the archive; a file that shrank meanwhile is an error (its
 * header already promised size bytes), one that grew is cut at size. */
static int tar_copy_data(struct tar_ctx *t, int fd, uint64_t size, const char *path,
                         struct sk_error *err)
{
	while (size > 0) {
		/* Ctrl-C stops a long pack: the temporary file goes with the descriptor. */
		if (cli_signal_count())
			return sk_error_set(err, -EINTR, "interrupted");
		size_t want = size < TAR_COPY_BUF ? (size_t)size : TAR_COPY_BUF;
		ssize_t n = read(fd, t->buf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return sk_error_errno(err, -errno, "read %s", path);
		if (n == 0)
			return sk_error_set(err, -EIO, "%s shrank while it was being packed", path);
		if (archive_write_data(t->a, t->buf, (size_t)n) != n)
			return tar_fail(t, path, err);
		size -= (uint64_t)n;
	}
	return 0;
}

static int tar_add_tree(struct tar_ctx *t, int dirfd, const char *prefix, const char *shown,
                        struct sk_error *err);

/* Add name (in dirfd; st its lstat, or stat for the top) as path in the archive. shown is how
 * the user names it, for messages. */
static int tar_add(struct tar_ctx *t, int dirfd, const char *name, const struct stat *st,
                   const char *path, const char *shown, struct sk_error *err)
{
	if (strlen(path) + S_ISDIR(st->st_mode) > TAR_NAME_MAX)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "%s: its path in the archive is over %d bytes", shown,
		                    TAR_NAME_MAX);
	/* Image paths are UTF-8 (manifests are JSON): say so here, before any upload. */
	if (!utf8_valid((const unsigned char *)path, strlen(path)))
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "%s: the name is not valid UTF-8, which image paths must be",
		                    shown);
	if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode))
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "%s: only regular files, directories and symbolic links can be "
		                    "copied into an image",
		                    shown);
	if (cli_signal_count())
		return sk_error_set(err, -EINTR, "interrupted");
	if (++t->entries > CLI_MAX_TAR_ENTRIES)
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: more than %u entries", t->local,
		                    CLI_MAX_TAR_ENTRIES);

	_cleanup_close_ int fd = -1;
	struct stat fst = *st;
	char target[TAR_LINK_MAX + 2];
	if (S_ISREG(st->st_mode)) {
		/* The top (dirfd AT_FDCWD) is what the user named: a link to it is followed. */
		fd = openat(dirfd, name,
		            O_RDONLY | O_CLOEXEC | (dirfd == AT_FDCWD ? 0 : O_NOFOLLOW));
		if (fd < 0 || fstat(fd, &fst) < 0)
			return sk_error_errno(err, -errno, "open %s", shown);
		if (!S_ISREG(fst.st_mode))
			return sk_error_set(err, -EIO, "%s changed while it was being packed",
			                    shown);
	} else if (S_ISLNK(st->st_mode)) {
		ssize_t n = readlinkat(dirfd, name, target, sizeof(target));
		if (n < 0)
			return sk_error_errno(err, -errno, "read the link %s", shown);
		if ((size_t)n > TAR_LINK_MAX)
			return sk_error_set(err, -SK_EINVAL_SPEC, "%s: a link target over %d bytes",
			                    shown, TAR_LINK_MAX);
		target[n] = '\0';
		if (!utf8_valid((const unsigned char *)target, (size_t)n))
			return sk_error_set(err, -SK_EINVAL_SPEC,
			                    "%s: the link's target is not valid UTF-8", shown);
	}

	struct archive_entry *e = archive_entry_new();
	if (!e)
		return sk_error_errno(err, -ENOMEM, "pack %s", shown);
	archive_entry_set_pathname(e, path);
	archive_entry_set_mode(e, (fst.st_mode & S_IFMT) | (fst.st_mode & 07777));
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	long long mtime = fst.st_mtim.tv_sec;
	archive_entry_set_mtime(e,
	                        mtime < 0               ? 0
	                        : mtime > TAR_MTIME_MAX ? TAR_MTIME_MAX
	                                                : mtime,
	                        0);
	archive_entry_set_size(e, S_ISREG(fst.st_mode) ? fst.st_size : 0);
	if (S_ISLNK(fst.st_mode))
		archive_entry_set_symlink(e, target);
	int ar = archive_write_header(t->a, e);
	archive_entry_free(e);
	/* ARCHIVE_FAILED: this entry cannot be in a ustar archive (a path that does not split
	 * into a 155-byte directory part and a 100-byte name): the tree's fault, not an I/O
	 * error. */
	if (ar == ARCHIVE_FAILED && !t->err.code)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "%s: %s (a tar holds a name of at most 100 bytes after a "
		                    "directory part of at most 155)",
		                    shown, archive_error_string(t->a));
	if (ar != ARCHIVE_OK)
		return tar_fail(t, shown, err);

	if (S_ISREG(fst.st_mode))
		return tar_copy_data(t, fd, (uint64_t)fst.st_size, shown, err);
	if (S_ISDIR(fst.st_mode)) {
		_cleanup_close_ int sub =
		    openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			return sk_error_errno(err, -errno, "open %s", shown);
		return tar_add_tree(t, sub, path, shown, err);
	}
	return 0;
}

static int name_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name); /* bytewise: no locale */
}

static int no_dots(const struct dirent *d)
{
	return strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0;
}

/* Add what the directory dirfd holds, sorted, under prefix ("" for the archive's root). */
static int tar_add_tree(struct tar_ctx *t, int dirfd, const char *prefix, const char *shown,
                        struct sk_error *err)
{
	struct dirent **list = NULL;
	int n = scandirat(dirfd, ".", &list, no_dots, name_cmp);
	if (n < 0)
		return sk_error_errno(err, -errno, "list %s", shown);
	int r = 0;
	for (int i = 0; i < n; i++) {
		const char *name = list[i]->d_name;
		_cleanup_free_ char *path = NULL, *sub_shown = NULL;
		struct stat st;
		if (r < 0) {
			/* freeing the rest */
		} else if (asprintf(&path, "%s%s%s", prefix, prefix[0] ? "/" : "", name) < 0 ||
		           asprintf(&sub_shown, "%s/%s", shown, name) < 0) {
			r = sk_error_errno(err, -ENOMEM, "pack %s", shown);
		} else if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = sk_error_errno(err, -errno, "stat %s", sub_shown);
		} else {
			r = tar_add(t, dirfd, name, &st, path, sub_shown, err);
		}
		free(list[i]);
	}
	free(list);
	return r;
}

/* A file open for reading and writing that is gone once closed. */
static int temp_file(struct sk_error *err)
{
	const char *dir = getenv("TMPDIR");
	if (!dir || dir[0] != '/')
		dir = "/tmp";
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
	_cleanup_free_ char *tmpl = NULL;
	if (asprintf(&tmpl, "%s/skiff-tar-XXXXXX", dir) < 0)
		return sk_error_errno(err, -ENOMEM, "temporary file");
	fd = mkostemp(tmpl, O_CLOEXEC);
	if (fd < 0)
		return sk_error_errno(err, -errno, "make a temporary file in %s", dir);
	unlink(tmpl);
	return fd;
}

int cli_tar_check(const char *local, struct sk_error *err)
{
	struct stat st;
	if (stat(local, &st) < 0)
		return sk_error_set(err, errno == ENOENT ? -SK_EINVAL_SPEC : -errno, "%s: %s",
		                    local, strerror(errno));
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: not a directory or a regular file",
		                    local);
	return 0;
}

int cli_tar_pack(const char *local, const char *as_name, int out_fd, char ret_hex[65],
                 uint64_t *ret_size, struct sk_error *err)
{
	struct stat st;
	int r = cli_tar_check(local, err);
	if (r < 0 || stat(local, &st) < 0)
		return r < 0 ? r : sk_error_errno(err, -errno, "%s", local);
	if (!S_ISDIR(st.st_mode) && (!as_name || !as_name[0] || strchr(as_name, '/')))
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: a file needs a name to have", local);

	struct tar_ctx t = {.out_fd = out_fd, .local = local};
	t.a = archive_write_new();
	t.md = EVP_MD_CTX_new();
	t.buf = malloc(TAR_COPY_BUF);
	if (!t.a || !t.md || !t.buf || !EVP_DigestInit_ex(t.md, EVP_sha256(), NULL)) {
		r = sk_error_errno(err, -ENOMEM, "pack %s", local);
		goto out;
	}
	/* ustar with libarchive's default 10240-byte blocks, the last one padded. */
	if (archive_write_set_format_ustar(t.a) != ARCHIVE_OK ||
	    archive_write_add_filter_none(t.a) != ARCHIVE_OK ||
	    archive_write_open(t.a, &t, NULL, tar_on_write, NULL) != ARCHIVE_OK) {
		r = tar_fail(&t, "start the archive", err);
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		_cleanup_close_ int dfd = open(local, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = dfd < 0 ? sk_error_errno(err, -errno, "open %s", local)
		            : tar_add_tree(&t, dfd, "", local, err);
	} else {
		r = tar_add(&t, AT_FDCWD, local, &st, as_name, local, err);
	}
	if (r == 0 && archive_write_close(t.a) != ARCHIVE_OK)
		r = tar_fail(&t, "finish the archive", err);
	if (r == 0)
		r = tar_digest(&t, ret_hex, ret_size, err);
out:
	if (t.a)
		archive_write_free(t.a);
	EVP_MD_CTX_free(t.md);
	free(t.buf);
	return r;
}

/* Upload len bytes at data named sha256:hex unless the server has them; *ret_put says whether
 * they were sent. */
static int blob_put(struct cli *c, const void *data, size_t len, const char *hex, bool *ret_put,
                    struct sk_error *err)
{
	_cleanup_free_ char *path = NULL;
	*ret_put = false;
	if (asprintf(&path, "/v1/blobs/sha256:%s", hex) < 0)
		return sk_error_errno(err, -ENOMEM, "upload");
	long status = 0;
	int r = cli_http_head(c, path, &status, err);
	if (r < 0)
		return r;
	if (status >= 200 && status < 300)
		return 0;
	/* A HEAD reply has no body to say why: say it here. */
	if (status == 401)
		return sk_error_set(err, -EREMOTEIO,
		                    "the server refused the token (HTTP 401): check SKIFF_TOKEN or "
		                    "run 'skiff login'");
	if (status == 403)
		return sk_error_set(err, -EREMOTEIO,
		                    "the token may not upload blobs (HTTP 403): a role that may "
		                    "build images is needed");
	if (status != 404)
		return sk_error_set(err, -EREMOTEIO, "HEAD %s: HTTP status %ld", path, status);
	_cleanup_free_ char *reply = NULL;
	size_t n;
	/* A minute a GiB on top of an ordinary request's time: a slow link still finishes. */
	long timeout_s = CLI_REQUEST_TIMEOUT_S + (long)(len >> 24);
	*ret_put = true;
	return cli_http_raw(c, "PUT", path, data, len, timeout_s, &reply, &n, NULL, err);
}

void cli_blob_release(struct cli_blob *b)
{
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
}

int cli_blob_pack(const char *local, const char *as_name, struct cli_blob *ret,
                  struct sk_error *err)
{
	int fd = temp_file(err);
	if (fd < 0)
		return fd;
	int r = cli_tar_pack(local, as_name, fd, ret->hex, &ret->size, err);
	if (r < 0) {
		close(fd);
		return r;
	}
	ret->fd = fd;
	return 0;
}

/* Copy in_fd's size bytes to out_fd, hashing them: what is uploaded is this copy, so the
 * digest is of the bytes sent even when the file changes meanwhile. */
static int copy_hashed(int in_fd, int out_fd, uint64_t size, const char *file, char ret_hex[65],
                       uint64_t *ret_size, struct sk_error *err)
{
	struct tar_ctx t = {.out_fd = out_fd, .local = file};
	t.md = EVP_MD_CTX_new();
	t.buf = malloc(TAR_COPY_BUF);
	int r = 0;
	if (!t.md || !t.buf || !EVP_DigestInit_ex(t.md, EVP_sha256(), NULL))
		r = sk_error_errno(err, -ENOMEM, "hash %s", file);
	uint64_t left = size;
	while (r == 0 && left > 0) {
		if (cli_signal_count()) {
			r = sk_error_set(err, -EINTR, "interrupted");
			break;
		}
		size_t want = left < TAR_COPY_BUF ? (size_t)left : TAR_COPY_BUF;
		ssize_t n = read(in_fd, t.buf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r = sk_error_errno(err, -errno, "read %s", file);
		else if (n == 0)
			r = sk_error_set(err, -EIO, "%s shrank while it was being read", file);
		else if (tar_on_write(NULL, &t, t.buf, (size_t)n) != n)
			r = t.err.code ? (*err = t.err, err->code) : -EIO;
		else
			left -= (uint64_t)n;
	}
	if (r == 0)
		r = tar_digest(&t, ret_hex, ret_size, err);
	EVP_MD_CTX_free(t.md);
	free(t.buf);
	return r;
}

int cli_blob_copy_file(const char *file, struct cli_blob *ret, struct sk_error *err)
{
	_cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return sk_error_set(err, errno == ENOENT ? -SK_EINVAL_SPEC : -errno, "%s: %s", file,
		                    strerror(errno));
	if (!S_ISREG(st.st_mode))
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: not a regular file", file);
	if ((uint64_t)st.st_size > CLI_MAX_BLOB_BYTES)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "%s: %" PRIu64 " MiB, over the %" PRIu64 " MiB a blob may hold",
		                    file, (uint64_t)st.st_size >> 20,
		                    (uint64_t)CLI_MAX_BLOB_BYTES >> 20);
	if (st.st_size == 0)
		return sk_error_set(err, -SK_EINVAL_SPEC, "%s: empty", file);
	int out = temp_file(err);
	if (out < 0)
		return out;
	int r = copy_hashed(fd, out, (uint64_t)st.st_size, file, ret->hex, &ret->size, err);
	if (r < 0) {
		close(out);
		return r;
	}
	ret->fd = out;
	return 0;
}

int cli_blob_upload(struct cli *c, const struct cli_blob *b, bool *ret_put, struct sk_error *err)
{
	if (b->size == 0)
		return blob_put(c, "", 0, b->hex, ret_put, err);
	/* The temporary file is ours alone (unlinked): it cannot shrink under the mapping. */
	void *map = mmap(NULL, b->size, PROT_READ, MAP_PRIVATE, b->fd, 0);
	if (map == MAP_FAILED)
		return sk_error_errno(err, -errno, "map the archive");
	int r = blob_put(c, map, b->size, b->hex, ret_put, err);
	munmap(map, b->size);
	return r;
}
