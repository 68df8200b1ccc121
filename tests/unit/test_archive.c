/* Tar layers and OCI imports (src/image/archive.c), fed archives built here with libarchive's
 * writer: every member type round trips with its metadata; whiteouts; hostile archives (names
 * that climb out, links out of the archive, members through symlinks, device nodes, a sparse
 * file claiming 1 TiB, a gzip bomb, too many members) are refused or dropped and leave nothing
 * outside the store; docker save and OCI layout archives import to the right image and config. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "../../src/image/archive.h"
#include "../../src/lib/encoding.h"
#include "../../src/lib/fsutil.h"
#include "../../src/lib/hash.h"

struct fixture {
	char dir[64];
	char canary[80];
	struct img_store s;
	struct img_limits lim;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/skiff-archive-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	char root[128];
	snprintf(root, sizeof(root), "%s/store", f->dir);
	snprintf(f->canary, sizeof(f->canary), "%s/canary", f->dir);
	assert_int_equal(mkdir(f->canary, 0755), 0);
	struct sk_error err = {0};
	int r = img_store_open(&f->s, root, &err);
	if (r < 0)
		fail_msg("img_store_open: %s", err.msg);
	f->lim = img_default_limits;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	img_store_close(&f->s);
	assert_int_equal(fs_rm_rf_at(AT_FDCWD, f->dir), 0);
	free(f);
	return 0;
}

/* Entries in a directory of the fixture (0 for an empty one). */
static int count_entries(const char *path)
{
	DIR *d = opendir(path);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Files (not directories) anywhere below path. */
static int count_files(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return 0;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char sub[1024];
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		struct stat st;
		assert_int_equal(lstat(sub, &st), 0);
		n += S_ISDIR(st.st_mode) ? count_files(sub) : 1;
	}
	closedir(d);
	return n;
}

/* Nothing but finished blobs: tmp/ is empty and nothing appeared in the canary directory. */
static void assert_clean(struct fixture *f)
{
	char tmp[160];
	snprintf(tmp, sizeof(tmp), "%s/store/tmp", f->dir);
	assert_int_equal(count_entries(tmp), 0);
	assert_int_equal(count_entries(f->canary), 0);
}

/* An archive being written into a memfd. */
struct tw {
	struct archive *a;
	int fd;
};

enum { TW_PLAIN, TW_GZIP, TW_ZSTD };

static struct tw tw_open(int filter)
{
	struct tw t = {.a = archive_write_new(), .fd = memfd_create("tar", MFD_CLOEXEC)};
	assert_true(t.fd >= 0);
	assert_int_equal(archive_write_set_format_pax(t.a), ARCHIVE_OK);
	if (filter == TW_GZIP)
		assert_int_equal(archive_write_add_filter_gzip(t.a), ARCHIVE_OK);
	if (filter == TW_ZSTD)
		assert_int_equal(archive_write_add_filter_zstd(t.a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_fd(t.a, t.fd), ARCHIVE_OK);
	return t;
}

/* A member with its metadata; data for regular files. */
static struct archive_entry *tw_entry(const char *name, mode_t type, mode_t perm)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, perm);
	archive_entry_set_mtime(e, 1700000000, 5);
	return e;
}

static void tw_put(struct tw *t, struct archive_entry *e, const void *data, size_t len)
{
	assert_int_equal(archive_write_header(t->a, e), ARCHIVE_OK);
	if (len)
		assert_int_equal(archive_write_data(t->a, data, len), (la_ssize_t)len);
	archive_entry_free(e);
}

static void tw_file(struct tw *t, const char *name, const char *data)
{
	struct archive_entry *e = tw_entry(name, AE_IFREG, 0644);
	archive_entry_set_size(e, (la_int64_t)strlen(data));
	tw_put(t, e, data, strlen(data));
}

static void tw_dir(struct tw *t, const char *name)
{
	tw_put(t, tw_entry(name, AE_IFDIR, 0755), NULL, 0);
}

static void tw_symlink(struct tw *t, const char *name, const char *target)
{
	struct archive_entry *e = tw_entry(name, AE_IFLNK, 0777);
	archive_entry_set_symlink(e, target);
	tw_put(t, e, NULL, 0);
}

static void tw_hardlink(struct tw *t, const char *name, const char *target)
{
	struct archive_entry *e = tw_entry(name, AE_IFREG, 0644);
	archive_entry_set_hardlink(e, target);
	archive_entry_set_size(e, 0);
	tw_put(t, e, NULL, 0);
}

/* Finish the archive; its fd, at offset 0. */
static int tw_close(struct tw *t)
{
	assert_int_equal(archive_write_close(t->a), ARCHIVE_OK);
	archive_write_free(t->a);
	assert_int_equal(lseek(t->fd, 0, SEEK_SET), 0);
	return t->fd;
}

/* The archive's bytes (for nesting it in another). */
static char *tw_bytes(struct tw *t, size_t *ret_len)
{
	int fd = tw_close(t);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	char *buf = malloc((size_t)st.st_size + 1);
	assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*ret_len = (size_t)st.st_size;
	return buf;
}

static void tw_file_bytes(struct tw *t, const char *name, const char *data, size_t len)
{
	struct archive_entry *e = tw_entry(name, AE_IFREG, 0644);
	archive_entry_set_size(e, (la_int64_t)len);
	tw_put(t, e, data, len);
}

/* Read fd as a layer at dest; the error's code (0 on success), err filled. */
static int layer(struct fixture *f, int fd, const char *dest, int flags, struct img_manifest *m,
                 struct sk_error *err)
{
	img_manifest_init(m);
	int r = img_layer_from_tar(&f->s, fd, dest, flags, &f->lim, m, err);
	close(fd);
	return r;
}

static const struct img_entry *find(const struct img_manifest *m, const char *path)
{
	const struct img_entry *e = img_manifest_find(m, path);
	if (!e)
		fail_msg("%s is not in the manifest", path);
	return e;
}

static void assert_blob(struct fixture *f, const struct img_entry *e, const char *data)
{
	char *buf = NULL;
	size_t len = 0;
	struct sk_error err = {0};
	assert_int_equal(e->type, IMG_REG);
	assert_int_equal(img_blob_read(&f->s, e->digest, 1 << 20, &buf, &len, &err), 0);
	assert_int_equal(len, strlen(data));
	assert_memory_equal(buf, data, len);
	assert_int_equal(e->size, len);
	free(buf);
}

static void test_types_round_trip(void **state)
{
	struct fixture *f = *state;
	struct tw t = tw_open(TW_ZSTD);
	struct archive_entry *e = tw_entry("./bin", AE_IFDIR, 01777);
	archive_entry_set_uid(e, 7);
	archive_entry_set_gid(e, 8);
	tw_put(&t, e, NULL, 0);
	e = tw_entry("./bin/tool", AE_IFREG, 04755);
	archive_entry_set_uid(e, 1000);
	archive_entry_set_gid(e, 100);
	archive_entry_set_mtime(e, 1234567890, 123456789);
	archive_entry_set_size(e, 5);
	archive_entry_xattr_add_entry(e, "user.zeta", "z", 1);
	archive_entry_xattr_add_entry(e, "security.capability", "\x01\x00\x00\x02", 4);
	archive_entry_xattr_add_entry(e, "trusted.overlay.opaque", "y", 1);
	tw_put(&t, e, "hello", 5);
	tw_symlink(&t, "bin/link", "tool");
	tw_symlink(&t, "abs", "/etc/passwd");
	tw_symlink(&t, "up", "../../../../etc");
	e = tw_entry("run/fifo", AE_IFIFO, 0600);
	tw_put(&t, e, NULL, 0);
	tw_hardlink(&t, "bin/tool2", "bin/tool");
	tw_file(&t, "//top//x/./y", "y");

	struct img_manifest m;
	struct sk_error err = {0};
	struct img_tar_stats stats;
	img_manifest_init(&m);
	int fd = tw_close(&t);
	int r = img_layer_from_tar_stats(&f->s, fd, "/", 0, &f->lim, &m, &stats, &err);
	close(fd);
	if (r < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(stats.members, 8);
	assert_string_equal(stats.warning, "");

	const struct img_entry *d = find(&m, "/bin");
	assert_int_equal(d->type, IMG_DIR);
	assert_int_equal(d->mode, 01777);
	assert_int_equal(d->uid, 7);
	assert_int_equal(d->gid, 8);
	const struct img_entry *x = find(&m, "/bin/tool");
	assert_blob(f, x, "hello");
	assert_int_equal(x->mode, 04755);
	assert_int_equal(x->uid, 1000);
	assert_int_equal(x->gid, 100);
	assert_int_equal(x->mtime_sec, 1234567890);
	assert_int_equal(x->mtime_nsec, 123456789);
	/* sorted, the overlay one dropped */
	assert_int_equal(x->nxattrs, 2);
	assert_string_equal(x->xattrs[0].name, "security.capability");
	assert_int_equal(x->xattrs[0].len, 4);
	assert_memory_equal(x->xattrs[0].value, "\x01\x00\x00\x02", 4);
	assert_string_equal(x->xattrs[1].name, "user.zeta");
	const struct img_entry *h = find(&m, "/bin/tool2");
	assert_string_equal(h->digest, x->digest);
	assert_int_equal(h->mode, 04755);
	assert_int_equal(h->nxattrs, 2);
	const struct img_entry *l = find(&m, "/bin/link");
	assert_int_equal(l->type, IMG_SYMLINK);
	assert_string_equal(l->target, "tool");
	assert_string_equal(find(&m, "/abs")->target, "/etc/passwd");
	assert_string_equal(find(&m, "/up")->target, "../../../../etc");
	const struct img_entry *p = find(&m, "/run/fifo");
	assert_int_equal(p->type, IMG_FIFO);
	assert_int_equal(p->mode, 0600);
	assert_int_equal(p->mtime_sec, 1700000000);
	assert_blob(f, find(&m, "/top/x/y"), "y");
	img_manifest_free(&m);
	assert_clean(f);
}

static void test_dest_and_dotdot(void **state)
{
	struct fixture *f = *state;
	struct tw t = tw_open(TW_GZIP);
	tw_file(&t, "/etc/passwd", "root");
	tw_file(&t, "a/../b", "b");
	struct img_manifest m;
	struct sk_error err = {0};
	if (layer(f, tw_close(&t), "/srv/app", 0, &m, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(m.n, 2);
	assert_blob(f, find(&m, "/srv/app/etc/passwd"), "root");
	assert_blob(f, find(&m, "/srv/app/b"), "b");
	img_manifest_free(&m);

	t = tw_open(TW_PLAIN);
	tw_file(&t, "x", "x");
	assert_int_equal(layer(f, tw_close(&t), "/srv/../x", 0, &m, &err), -SK_EINVAL_SPEC);

	/* nothing but a directory may stand at the destination itself */
	for (int i = 0; i < 3; i++) {
		t = tw_open(TW_PLAIN);
		tw_file(&t, "f", "f");
		if (i == 0)
			tw_file(&t, ".", "file");
		else if (i == 1)
			tw_symlink(&t, ".", "/etc");
		else
			tw_hardlink(&t, ".", "f");
		assert_int_equal(layer(f, tw_close(&t), "/srv", 0, &m, &err), -SK_EINVAL_SPEC);
		assert_non_null(strstr(err.msg, "destination"));
	}
}

/* A second archive read into the same layer: its hard links may name the first one's files,
 * and its members replace the first one's entries. */
static void test_layer_so_far(void **state)
{
	struct fixture *f = *state;
	struct tw t = tw_open(TW_PLAIN);
	tw_file(&t, "base", "base");
	tw_file(&t, "old", "old");
	struct img_manifest m;
	struct sk_error err = {0};
	if (layer(f, tw_close(&t), "/srv", 0, &m, &err) < 0)
		fail_msg("%s", err.msg);
	t = tw_open(TW_PLAIN);
	tw_hardlink(&t, "link", "base");
	tw_file(&t, "old", "new");
	int fd = tw_close(&t);
	if (img_layer_from_tar(&f->s, fd, "/srv", 0, &f->lim, &m, &err) < 0)
		fail_msg("%s", err.msg);
	close(fd);
	assert_int_equal(m.n, 3);
	assert_string_equal(find(&m, "/srv/link")->digest, find(&m, "/srv/base")->digest);
	assert_blob(f, find(&m, "/srv/old"), "new");
	/* a refused archive leaves the layer as it was */
	t = tw_open(TW_PLAIN);
	tw_file(&t, "more", "more");
	tw_hardlink(&t, "bad", "/etc/shadow");
	fd = tw_close(&t);
	assert_int_equal(img_layer_from_tar(&f->s, fd, "/srv", 0, &f->lim, &m, &err),
	                 -SK_EINVAL_SPEC);
	close(fd);
	assert_int_equal(m.n, 3);
	assert_null(img_manifest_find(&m, "/srv/more"));
	img_manifest_free(&m);
}

/* Names that climb above the root refuse the whole archive, naming the member. */
static void test_escape_refused(void **state)
{
	struct fixture *f = *state;
	static const char *const NAMES[] = {"../../etc/passwd", "a/../../x", "./..",
	                                    "a/b/../../.."};
	char escape[256];
	snprintf(escape, sizeof(escape), "../../../../../..%s/passwd", f->canary);
	for (size_t i = 0; i <= sizeof(NAMES) / sizeof(NAMES[0]); i++) {
		const char *name = i < sizeof(NAMES) / sizeof(NAMES[0]) ? NAMES[i] : escape;
		struct tw t = tw_open(TW_PLAIN);
		tw_file(&t, "ok", "fine");
		tw_file(&t, name, "owned");
		struct img_manifest m;
		struct sk_error err = {0};
		assert_int_equal(layer(f, tw_close(&t), "/", 0, &m, &err), -SK_EINVAL_SPEC);
		assert_non_null(strstr(err.msg, name));
		assert_non_null(strstr(err.msg, "climbs above"));
		assert_int_equal(m.n, 0);
		assert_clean(f);
		/* the member before it was stored, the refused one was not */
		char hex[SHA256_HEX_BYTES];
		assert_int_equal(sha256_hex("fine", 4, hex), 0);
		assert_true(img_blob_exists(&f->s, hex));
		assert_int_equal(sha256_hex("owned", 5, hex), 0);
		assert_false(img_blob_exists(&f->s, hex));
	}
}

/* A member "through" a symlink of the archive is refused, never written where it points. */
static void test_through_symlink_refused(void **state)
{
	struct fixture *f = *state;
	struct tw t = tw_open(TW_PLAIN);
	tw_symlink(&t, "evil", f->canary);
	tw_file(&t, "evil/passwd", "owned");
	struct img_manifest m;
	struct sk_error err = {0};
	assert_int_equal(layer(f, tw_close(&t), "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "evil/passwd"));
	assert_non_null(strstr(err.msg, "symlink"));
	assert_clean(f);

	t = tw_open(TW_PLAIN);
	tw_symlink(&t, "up", "../../../..");
	tw_dir(&t, "up/etc");
	assert_int_equal(layer(f, tw_close(&t), "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_clean(f);
}

static void test_hardlinks(void **state)
{
	struct fixture *f = *state;
	/* what is not a regular file earlier in the archive: the host's files, a directory, the
	 * link itself, a file that comes after the link */
	static const char *const TARGETS[] = {"missing", "/etc/shadow", "etc/shadow",   "dir",
	                                      "self",    "later",       "../etc/shadow"};
	for (size_t i = 0; i < sizeof(TARGETS) / sizeof(TARGETS[0]); i++) {
		struct tw t = tw_open(TW_PLAIN);
		tw_dir(&t, "dir");
		tw_hardlink(&t, "self", TARGETS[i]);
		tw_file(&t, "later", "x");
		struct img_manifest m;
		struct sk_error err = {0};
		assert_int_equal(layer(f, tw_close(&t), "/", 0, &m, &err), -SK_EINVAL_SPEC);
		assert_non_null(strstr(err.msg, "hard link"));
		assert_non_null(strstr(err.msg, TARGETS[i]));
		assert_int_equal(m.n, 0);
		assert_clean(f);
	}
}

static void test_devices_dropped(void **state)
{
	struct fixture *f = *state;
	struct tw t = tw_open(TW_PLAIN);
	struct archive_entry *e = tw_entry("dev/sda", AE_IFBLK, 0600);
	archive_entry_set_rdev(e, makedev(8, 0));
	tw_put(&t, e, NULL, 0);
	e = tw_entry("dev/mem", AE_IFCHR, 0600);
	archive_entry_set_rdev(e, makedev(1, 1));
	tw_put(&t, e, NULL, 0);
	tw_file(&t, "dev/ok", "ok");
	struct img_manifest m;
	struct img_tar_stats stats;
	struct sk_error err = {0};
	img_manifest_init(&m);
	int fd = tw_close(&t);
	int r = img_layer_from_tar_stats(&f->s, fd, "/", 0, &f->lim, &m, &stats, &err);
	close(fd);
	if (r < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(stats.devices_dropped, 2);
	assert_int_equal(stats.sockets_dropped, 0); /* tar has no type for them */
	assert_non_null(strstr(stats.warning, "2 device"));
	assert_int_equal(m.n, 1);
	assert_null(img_manifest_find(&m, "/dev/sda"));
	assert_null(img_manifest_find(&m, "/dev/mem"));
	img_manifest_free(&m);
}

static void test_whiteouts(void **state)
{
	struct fixture *f = *state;
	for (int flags = 0; flags <= IMG_TAR_WHITEOUTS; flags += IMG_TAR_WHITEOUTS) {
		struct tw t = tw_open(TW_PLAIN);
		tw_dir(&t, "d");
		tw_file(&t, "d/.wh..wh..opq", "");
		tw_file(&t, "d/keep", "k");
		tw_file(&t, "etc/.wh.gone", "");
		tw_file(&t, "o/.wh..wh..opq", ""); /* no entry for o: one is made */
		tw_file(&t, ".wh..wh.plnk", "");
		struct img_manifest m;
		struct sk_error err = {0};
		if (layer(f, tw_close(&t), "/", flags, &m, &err) < 0)
			fail_msg("%s", err.msg);
		if (flags) {
			assert_int_equal(m.n, 4);
			assert_true(find(&m, "/d")->opaque);
			assert_blob(f, find(&m, "/d/keep"), "k");
			assert_int_equal(find(&m, "/etc/gone")->type, IMG_WHITEOUT);
			assert_int_equal(find(&m, "/o")->type, IMG_DIR);
			assert_true(find(&m, "/o")->opaque);
		} else {
			assert_int_equal(m.n, 6);
			assert_false(find(&m, "/d")->opaque);
			assert_blob(f, find(&m, "/etc/.wh.gone"), "");
		}
		img_manifest_free(&m);
	}
}

/* The later of two members at one path wins; a directory replaced by a file loses what the
 * archive put below it, and a whiteout removes what came before it. */
static void test_later_wins(void **state)
{
	struct fixture *f = *state;
	struct tw t = tw_open(TW_PLAIN);
	tw_file(&t, "x", "first");
	tw_file(&t, "x", "second");
	tw_dir(&t, "d");
	tw_file(&t, "d/f", "f");
	tw_file(&t, "d", "now a file");
	tw_dir(&t, "w");
	tw_file(&t, "w/f", "f");
	tw_file(&t, ".wh.w", "");
	struct img_manifest m;
	struct sk_error err = {0};
	if (layer(f, tw_close(&t), "/", IMG_TAR_WHITEOUTS, &m, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(m.n, 3);
	assert_blob(f, find(&m, "/x"), "second");
	assert_blob(f, find(&m, "/d"), "now a file");
	assert_null(img_manifest_find(&m, "/d/f"));
	assert_int_equal(find(&m, "/w")->type, IMG_WHITEOUT);
	img_manifest_free(&m);
}

/* A pax sparse file whose logical size is 1 TiB: refused from its header, nothing spooled. */
static void test_sparse_refused(void **state)
{
	struct fixture *f = *state;
	const la_int64_t TIB = 1LL << 40;
	f->lim.max_file_bytes = 1 << 30;
	struct tw t = tw_open(TW_PLAIN);
	struct archive_entry *e = tw_entry("sparse", AE_IFREG, 0644);
	archive_entry_set_size(e, TIB);
	archive_entry_sparse_add_entry(e, 0, 4096);
	archive_entry_sparse_add_entry(e, TIB - 4096, 4096);
	assert_int_equal(archive_write_header(t.a, e), ARCHIVE_OK);
	static char block[4096];
	assert_int_equal(archive_write_data(t.a, block, sizeof(block)), (la_ssize_t)sizeof(block));
	assert_int_equal(archive_write_data(t.a, block, sizeof(block)), (la_ssize_t)sizeof(block));
	archive_entry_free(e);
	int fd = tw_close(&t);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_true(st.st_size < 1 << 20); /* the archive itself is small */
	struct img_manifest m;
	struct sk_error err = {0};
	assert_int_equal(layer(f, fd, "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "1099511627776 bytes"));
	assert_clean(f);
	char blobs[160];
	snprintf(blobs, sizeof(blobs), "%s/store/blobs", f->dir);
	assert_int_equal(count_files(blobs), 0);
}

/* A small sparse file reads back whole: its holes as zeros. */
static void test_sparse_small(void **state)
{
	struct fixture *f = *state;
	struct tw t = tw_open(TW_GZIP);
	struct archive_entry *e = tw_entry("sparse", AE_IFREG, 0644);
	archive_entry_set_size(e, 65536);
	archive_entry_sparse_add_entry(e, 8192, 4);
	/* the writer takes the whole logical content and leaves the holes out */
	char *want = calloc(1, 65536);
	memcpy(want + 8192, "data", 4);
	assert_int_equal(archive_write_header(t.a, e), ARCHIVE_OK);
	assert_int_equal(archive_write_data(t.a, want, 65536), 65536);
	archive_entry_free(e);
	int fd = tw_close(&t);
	struct archive *r = archive_read_new(); /* it is stored sparse */
	archive_read_support_filter_all(r);
	archive_read_support_format_tar(r);
	assert_int_equal(archive_read_open_fd(r, fd, 4096), ARCHIVE_OK);
	assert_int_equal(archive_read_next_header(r, &e), ARCHIVE_OK);
	assert_true(archive_entry_sparse_count(e) >= 1);
	archive_read_free(r);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	struct img_manifest m;
	struct sk_error err = {0};
	if (layer(f, fd, "/", 0, &m, &err) < 0)
		fail_msg("%s", err.msg);
	const struct img_entry *x = find(&m, "/sparse");
	assert_int_equal(x->size, 65536);
	char *buf = NULL;
	size_t len = 0;
	assert_int_equal(img_blob_read(&f->s, x->digest, 1 << 20, &buf, &len, &err), 0);
	assert_int_equal(len, 65536);
	assert_memory_equal(buf, want, 65536);
	free(buf);
	free(want);
	img_manifest_free(&m);
}

/* 10 MiB of zeros gzipped into a few KiB, under a 1 MiB limit. */
static void test_gzip_bomb(void **state)
{
	struct fixture *f = *state;
	f->lim.max_bytes = 1 << 20;
	f->lim.max_file_bytes = 1 << 20;
	size_t len = 10 << 20;
	char *zeros = calloc(1, len);
	/* split in files under the per-file limit: the total stops it */
	struct tw t = tw_open(TW_GZIP);
	for (int i = 0; i < 10; i++) {
		char name[16];
		snprintf(name, sizeof(name), "z%d", i);
		tw_file_bytes(&t, name, zeros, len / 10);
	}
	int fd = tw_close(&t);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_true(st.st_size < 100 << 10);
	struct img_manifest m;
	struct sk_error err = {0};
	assert_int_equal(layer(f, fd, "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "more than 1048576 bytes"));
	assert_clean(f);

	t = tw_open(TW_GZIP);
	tw_file_bytes(&t, "one", zeros, len);
	assert_int_equal(layer(f, tw_close(&t), "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "past the limit of 1048576"));
	assert_clean(f);
	free(zeros);
}

/* An empty tar (its end blocks only) is an empty layer; an empty file is no tar. */
static void test_empty(void **state)
{
	struct fixture *f = *state;
	struct tw t = tw_open(TW_GZIP);
	struct img_manifest m;
	struct sk_error err = {0};
	if (layer(f, tw_close(&t), "/", 0, &m, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(m.n, 0);
	img_manifest_free(&m);
	int fd = memfd_create("empty", MFD_CLOEXEC);
	assert_int_equal(layer(f, fd, "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "not a tar archive"));
}

/* A ustar header, by hand: what libarchive's writer will not produce; link (or NULL) its
 * linkname. */
static void raw_header_link(char h[512], const char *name, char type, size_t size, const char *link)
{
	memset(h, 0, 512);
	snprintf(h, 100, "%s", name);
	if (link)
		snprintf(h + 157, 100, "%s", link);
	snprintf(h + 100, 8, "%07o", 0644);
	snprintf(h + 108, 8, "%07o", 0);
	snprintf(h + 116, 8, "%07o", 0);
	snprintf(h + 124, 12, "%011zo", size);
	snprintf(h + 136, 12, "%011o", 0);
	h[156] = type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memset(h + 148, ' ', 8);
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += (unsigned char)h[i];
	snprintf(h + 148, 8, "%06o", sum);
}

static void raw_header(char h[512], const char *name, char type, size_t size)
{
	raw_header_link(h, name, type, size, NULL);
}

/* A pax header of 600 KiB (one long comment) before a small file: the member declares nothing
 * large, but the stream is, and reading stops there. */
/* One pax record, "LEN key=value\n" where LEN counts its own digits; its length. */
static size_t pax_record(char *out, size_t size, const char *key, const char *value)
{
	size_t body = 1 + strlen(key) + 1 + strlen(value) + 1, len = body + 1;
	while ((size_t)snprintf(NULL, 0, "%zu", len) + body != len)
		len++;
	assert_int_equal(snprintf(out, size, "%zu %s=%s\n", len, key, value), (int)len);
	return len;
}

/* A file member whose header carries the given pax records. */
static int pax_member(const char *records, char type, const char *name, const char *linkname)
{
	int fd = memfd_create("pax", MFD_CLOEXEC);
	static const char zeros[1024];
	char h[512];
	size_t plen = strlen(records);
	raw_header(h, "PaxHeaders/m", 'x', plen);
	assert_int_equal(write(fd, h, 512), 512);
	assert_int_equal(write(fd, records, plen), (ssize_t)plen);
	assert_int_equal(write(fd, zeros, (512 - plen % 512) % 512),
	                 (ssize_t)((512 - plen % 512) % 512));
	raw_header_link(h, name, type, 0, linkname);
	assert_int_equal(write(fd, h, 512), 512);
	assert_int_equal(write(fd, zeros, 1024), 1024);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

/* Extended attributes as GNU tar and Python's tarfile write them: SCHILY.xattr only. */
static void test_schily_xattrs(void **state)
{
	struct fixture *f = *state;
	char pax[512];
	size_t plen = pax_record(pax, sizeof(pax), "SCHILY.xattr.user.mime", "text/plain");
	plen += pax_record(pax + plen, sizeof(pax) - plen, "SCHILY.xattr.trusted.x", "dropped");
	int fd = memfd_create("schily", MFD_CLOEXEC);
	char h[512];
	static const char zeros[1024];
	raw_header(h, "PaxHeaders/f", 'x', plen);
	assert_int_equal(write(fd, h, 512), 512);
	assert_int_equal(write(fd, pax, plen), (ssize_t)plen);
	assert_int_equal(write(fd, zeros, 512 - plen), (ssize_t)(512 - plen));
	raw_header(h, "f", '0', 2);
	assert_int_equal(write(fd, h, 512), 512);
	assert_int_equal(write(fd, "hi", 2), 2);
	assert_int_equal(write(fd, zeros, 510), 510);
	assert_int_equal(write(fd, zeros, 1024), 1024);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	struct img_manifest m;
	struct sk_error err = {0};
	if (layer(f, fd, "/", 0, &m, &err) < 0)
		fail_msg("%s", err.msg);
	const struct img_entry *e = find(&m, "/f");
	assert_blob(f, e, "hi");
	assert_int_equal(e->nxattrs, 1);
	assert_string_equal(e->xattrs[0].name, "user.mime");
	assert_int_equal(e->xattrs[0].len, 10);
	assert_memory_equal(e->xattrs[0].value, "text/plain", 10);
	img_manifest_free(&m);
}

static int header_bomb(void)
{
	size_t clen = 600 << 10; /* libarchive itself refuses pax headers past 1 MiB */
	char *value = malloc(clen + 1), *pax = malloc(clen + 64);
	memset(value, 'x', clen);
	value[clen] = '\0';
	size_t plen = pax_record(pax, clen + 64, "comment", value);
	free(value);
	int fd = memfd_create("bomb", MFD_CLOEXEC);
	char h[512];
	raw_header(h, "PaxHeaders/f", 'x', plen);
	assert_int_equal(write(fd, h, 512), 512);
	assert_int_equal(write(fd, pax, plen), (ssize_t)plen);
	static const char zeros[1024];
	size_t pad = (512 - plen % 512) % 512;
	assert_int_equal(write(fd, zeros, pad), (ssize_t)pad);
	raw_header(h, "f", '0', 0);
	assert_int_equal(write(fd, h, 512), 512);
	assert_int_equal(write(fd, zeros, 1024), 1024);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	free(pax);
	return fd;
}

static void test_header_bomb(void **state)
{
	struct fixture *f = *state;
	struct img_manifest m;
	struct sk_error err = {0};
	assert_int_equal(layer(f, header_bomb(), "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "header is larger"));
	assert_clean(f);
	/* the same as an image archive */
	struct img_config c = {0};
	int fd = header_bomb();
	assert_int_equal(img_oci_import(&f->s, fd, &f->lim, &m, &c, &err), -SK_EINVAL_SPEC);
	close(fd);
	assert_non_null(strstr(err.msg, "larger than the limits allow"));
	assert_clean(f);
}

static void test_too_many_files(void **state)
{
	struct fixture *f = *state;
	f->lim.max_files = 3;
	struct tw t = tw_open(TW_PLAIN);
	for (int i = 0; i < 5; i++) {
		char name[16];
		snprintf(name, sizeof(name), "f%d", i);
		tw_file(&t, name, "x");
	}
	struct img_manifest m;
	struct sk_error err = {0};
	assert_int_equal(layer(f, tw_close(&t), "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "more than 3 members"));
}

static void test_not_a_tar(void **state)
{
	struct fixture *f = *state;
	int fd = memfd_create("junk", MFD_CLOEXEC);
	static const char JUNK[] = "this is not an archive at all, just some text\n";
	for (int i = 0; i < 100; i++)
		assert_int_equal(write(fd, JUNK, sizeof(JUNK) - 1), (ssize_t)sizeof(JUNK) - 1);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	struct img_manifest m;
	struct sk_error err = {0};
	assert_int_equal(layer(f, fd, "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "not a tar archive"));

	/* a zip is an archive libarchive reads, but not a tar */
	struct archive *a = archive_write_new();
	fd = memfd_create("zip", MFD_CLOEXEC);
	assert_int_equal(archive_write_set_format_zip(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_fd(a, fd), ARCHIVE_OK);
	struct archive_entry *e = tw_entry("f", AE_IFREG, 0644);
	archive_entry_set_size(e, 1);
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	assert_int_equal(archive_write_data(a, "x", 1), 1);
	archive_entry_free(e);
	archive_write_close(a);
	archive_write_free(a);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(layer(f, fd, "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "not a tar archive"));

	/* and an image import says so too */
	fd = memfd_create("junk", MFD_CLOEXEC);
	assert_int_equal(write(fd, JUNK, sizeof(JUNK) - 1), (ssize_t)sizeof(JUNK) - 1);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	struct img_config cfg = {0};
	img_manifest_init(&m);
	assert_int_equal(img_oci_import(&f->s, fd, &f->lim, &m, &cfg, &err), -SK_EINVAL_SPEC);
	close(fd);
	assert_non_null(strstr(err.msg, "not a tar archive"));
	assert_clean(f);
}

/* Two layers: the first makes /bin/sh, /etc/a and /etc/keep; the second removes /etc/a and adds
 * /etc/b. */
static char *layer1(size_t *len, int filter)
{
	struct tw t = tw_open(filter);
	tw_dir(&t, "bin");
	tw_file(&t, "bin/sh", "#!shell");
	tw_dir(&t, "etc");
	tw_file(&t, "etc/a", "a");
	tw_file(&t, "etc/keep", "keep");
	return tw_bytes(&t, len);
}

static char *layer2(size_t *len, int filter)
{
	struct tw t = tw_open(filter);
	tw_file(&t, "etc/.wh.a", "");
	tw_file(&t, "etc/b", "b");
	return tw_bytes(&t, len);
}

static const char CONFIG_FMT[] =
    "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\",\"A=1\"],"
    "\"WorkingDir\":\"/srv\",\"Entrypoint\":[\"/bin/sh\",\"-c\"],\"Cmd\":[\"echo hi\"]},"
    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:%s\",\"sha256:%s\"]}}";

static void assert_image(struct fixture *f, const struct img_manifest *m,
                         const struct img_config *c)
{
	static const char *const PATHS[] = {"/", "/bin", "/bin/sh", "/etc", "/etc/b", "/etc/keep"};
	assert_int_equal(m->n, 6);
	for (size_t i = 0; i < 6; i++)
		assert_string_equal(m->e[i].path, PATHS[i]);
	assert_int_equal(m->e[0].mode, 0755);
	assert_blob(f, find(m, "/bin/sh"), "#!shell");
	assert_blob(f, find(m, "/etc/b"), "b");
	assert_int_equal(c->nenv, 2);
	assert_string_equal(c->env[0], "PATH=/bin");
	assert_string_equal(c->env[1], "A=1");
	assert_string_equal(c->workdir, "/srv");
	assert_int_equal(c->nentrypoint, 2);
	assert_string_equal(c->entrypoint[1], "-c");
	assert_int_equal(c->ncmd, 1);
	assert_string_equal(c->cmd[0], "echo hi");
}

static int import(struct fixture *f, int fd, struct img_manifest *m, struct img_config *c,
                  struct sk_error *err)
{
	img_manifest_init(m);
	*c = (struct img_config){0};
	int r = img_oci_import(&f->s, fd, &f->lim, m, c, err);
	close(fd);
	return r;
}

/* docker save (the layout before Docker 25): <id>/layer.tar, <config digest>.json,
 * manifest.json; the layers checked against the config's diff_ids. */
static int docker_save(int corrupt)
{
	size_t l1len, l2len;
	char *l1 = layer1(&l1len, TW_PLAIN), *l2 = layer2(&l2len, TW_PLAIN);
	char d1[SHA256_HEX_BYTES], d2[SHA256_HEX_BYTES], cd[SHA256_HEX_BYTES];
	assert_int_equal(sha256_hex(l1, l1len, d1), 0);
	assert_int_equal(sha256_hex(l2, l2len, d2), 0);
	if (corrupt)
		l2[600] ^= 1; /* inside etc/b's data */
	char config[2048], cname[128], manifest[1024];
	snprintf(config, sizeof(config), CONFIG_FMT, d1, d2);
	assert_int_equal(sha256_hex(config, strlen(config), cd), 0);
	snprintf(cname, sizeof(cname), "%s.json", cd);
	snprintf(manifest, sizeof(manifest),
	         "[{\"Config\":\"%s\",\"RepoTags\":[\"t:latest\"],\"Layers\":[\"aaa/layer.tar\","
	         "\"bbb/layer.tar\"]}]",
	         cname);
	struct tw t = tw_open(TW_PLAIN);
	tw_dir(&t, "aaa");
	tw_file_bytes(&t, "aaa/layer.tar", l1, l1len);
	tw_dir(&t, "bbb");
	tw_file_bytes(&t, "ccc/layer.tar", l2, l2len);
	tw_symlink(&t, "bbb/layer.tar", "../ccc/layer.tar"); /* how docker saves a shared layer */
	tw_file(&t, cname, config);
	tw_file(&t, "manifest.json", manifest);
	free(l1);
	free(l2);
	return tw_close(&t);
}

static void test_docker_save(void **state)
{
	struct fixture *f = *state;
	struct img_manifest m;
	struct img_config c;
	struct sk_error err = {0};
	if (import(f, docker_save(0), &m, &c, &err) < 0)
		fail_msg("%s", err.msg);
	assert_image(f, &m, &c);
	img_manifest_free(&m);
	img_config_free(&c);
	assert_clean(f);

	assert_int_equal(import(f, docker_save(1), &m, &c, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "layer 2"));
	assert_non_null(strstr(err.msg, "digest"));
	assert_int_equal(m.n, 0);
	assert_null(c.env);
	assert_clean(f);
}

enum {
	OCI_OK,
	OCI_NESTED,
	OCI_NESTED_BARE, /* the outer descriptor without a media type */
	OCI_BAD_DIGEST,
	OCI_TWO_IMAGES,
	OCI_JUNK_LAYER,
	OCI_THROUGH_LINK,
};

static void tw_blob(struct tw *t, const char *data, size_t len, char hex[SHA256_HEX_BYTES])
{
	char name[128];
	assert_int_equal(sha256_hex(data, len, hex), 0);
	snprintf(name, sizeof(name), "blobs/sha256/%s", hex);
	tw_file_bytes(t, name, data, len);
}

/* An OCI image layout (gzip and zstd layers), as `docker save` from Docker 25 on or skopeo
 * write it, with index.json pointing at the manifest, or at an index that does. */
static int oci_layout(int variant)
{
	size_t l1len, l2len;
	char *l1 = layer1(&l1len, TW_GZIP), *l2 = layer2(&l2len, TW_ZSTD);
	if (variant == OCI_THROUGH_LINK) {
		/* the first layer makes /etc a symlink out, the second writes through it */
		struct tw t = tw_open(TW_PLAIN);
		tw_symlink(&t, "etc", "/tmp");
		free(l1);
		l1 = tw_bytes(&t, &l1len);
	}
	char d1[SHA256_HEX_BYTES], d2[SHA256_HEX_BYTES], cd[SHA256_HEX_BYTES], md[SHA256_HEX_BYTES];
	char id[SHA256_HEX_BYTES];
	struct tw t = tw_open(TW_PLAIN);
	tw_file(&t, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
	tw_blob(&t, l1, l1len, d1);
	if (variant == OCI_BAD_DIGEST) {
		assert_int_equal(sha256_hex(l2, l2len, d2), 0);
		char name[128];
		snprintf(name, sizeof(name), "blobs/sha256/%s", d2);
		l2[l2len / 2] ^= 0x40;
		tw_file_bytes(&t, name, l2, l2len);
	} else if (variant == OCI_JUNK_LAYER) {
		static const char JUNK[] =
		    "no tar in here, only text that gzip and zstd won't claim";
		tw_blob(&t, JUNK, sizeof(JUNK) - 1, d2);
	} else {
		tw_blob(&t, l2, l2len, d2);
	}
	char config[2048], manifest[2048], index[2048];
	snprintf(config, sizeof(config), CONFIG_FMT, "00", "00"); /* diff_ids: not checked */
	tw_blob(&t, config, strlen(config), cd);
	snprintf(
	    manifest, sizeof(manifest),
	    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
	    "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
	    "\"digest\":\"sha256:%s\",\"size\":%zu},\"layers\":["
	    "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
	    "\"digest\":\"sha256:%s\",\"size\":%zu},"
	    "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\","
	    "\"digest\":\"sha256:%s\",\"size\":%zu}]}",
	    cd, strlen(config), d1, l1len, d2, l2len);
	tw_blob(&t, manifest, strlen(manifest), md);
	const char *mt = "application/vnd.oci.image.manifest.v1+json";
	if (variant == OCI_TWO_IMAGES) {
		snprintf(index, sizeof(index),
		         "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"%s\",\"digest\":"
		         "\"sha256:%s\",\"size\":1},{\"mediaType\":\"%s\",\"digest\":\"sha256:%s\","
		         "\"size\":1}]}",
		         mt, md, mt, cd);
	} else {
		snprintf(index, sizeof(index),
		         "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"%s\",\"digest\":"
		         "\"sha256:%s\",\"size\":%zu}]}",
		         mt, md, strlen(manifest));
	}
	if (variant == OCI_NESTED || variant == OCI_NESTED_BARE) {
		tw_blob(&t, index, strlen(index), id);
		snprintf(index, sizeof(index),
		         "{\"schemaVersion\":2,\"manifests\":[{%s\"digest\":\"sha256:%s\"}]}",
		         variant == OCI_NESTED
		             ? "\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
		             : "",
		         id);
	}
	tw_file(&t, "index.json", index);
	free(l1);
	free(l2);
	return tw_close(&t);
}

static void test_oci_layout(void **state)
{
	struct fixture *f = *state;
	for (int v = OCI_OK; v <= OCI_NESTED_BARE; v++) {
		struct img_manifest m;
		struct img_config c;
		struct sk_error err = {0};
		if (import(f, oci_layout(v), &m, &c, &err) < 0)
			fail_msg("%s", err.msg);
		assert_image(f, &m, &c);
		img_manifest_free(&m);
		img_config_free(&c);
		assert_clean(f);
	}
}

static void test_oci_refused(void **state)
{
	struct fixture *f = *state;
	struct img_manifest m;
	struct img_config c;
	struct sk_error err = {0};
	assert_int_equal(import(f, oci_layout(OCI_BAD_DIGEST), &m, &c, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "layer 2"));
	assert_non_null(strstr(err.msg, "but sha256:"));
	assert_int_equal(m.n, 0);
	assert_int_equal(import(f, oci_layout(OCI_TWO_IMAGES), &m, &c, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "several images"));
	assert_int_equal(import(f, oci_layout(OCI_THROUGH_LINK), &m, &c, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "/etc/b"));
	assert_int_equal(import(f, oci_layout(OCI_JUNK_LAYER), &m, &c, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "layer 2"));
	assert_non_null(strstr(err.msg, "not a tar archive"));

	struct tw t = tw_open(TW_PLAIN);
	tw_file(&t, "hello.txt", "not an image");
	assert_int_equal(import(f, tw_close(&t), &m, &c, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "index.json"));
	assert_clean(f);
}

/* A hard link names a file of the layer as it stands at the link: one below a directory that an
 * earlier whiteout removed, or that a later member made a file or a symlink, is gone (tar would
 * fail the link there), so the link is refused rather than given the removed file's content. */
static void test_hardlink_to_removed(void **state)
{
	struct fixture *f = *state;
	for (int c = 0; c < 3; c++) {
		struct tw t = tw_open(TW_PLAIN);
		tw_dir(&t, "d");
		tw_file(&t, "d/secret", "removed");
		if (c == 0)
			tw_file(&t, ".wh.d", "");
		else if (c == 1)
			tw_file(&t, "d", "now a file");
		else
			tw_symlink(&t, "d", "/etc");
		tw_hardlink(&t, "x", "d/secret");
		struct img_manifest m;
		struct sk_error err = {0};
		assert_int_equal(layer(f, tw_close(&t), "/", IMG_TAR_WHITEOUTS, &m, &err),
		                 -SK_EINVAL_SPEC);
		assert_non_null(strstr(err.msg, "hard link"));
		assert_non_null(strstr(err.msg, "removed"));
		assert_int_equal(m.n, 0);
		assert_clean(f);
	}
	/* the layer so far holds the file; this archive whites out its directory first */
	struct tw t = tw_open(TW_PLAIN);
	tw_dir(&t, "d");
	tw_file(&t, "d/secret", "removed");
	struct img_manifest m;
	struct sk_error err = {0};
	if (layer(f, tw_close(&t), "/", IMG_TAR_WHITEOUTS, &m, &err) < 0)
		fail_msg("%s", err.msg);
	t = tw_open(TW_PLAIN);
	tw_file(&t, ".wh.d", "");
	tw_hardlink(&t, "x", "d/secret");
	int fd = tw_close(&t);
	assert_int_equal(img_layer_from_tar(&f->s, fd, "/", IMG_TAR_WHITEOUTS, &f->lim, &m, &err),
	                 -SK_EINVAL_SPEC);
	close(fd);
	assert_non_null(strstr(err.msg, "removed"));
	assert_int_equal(m.n, 2); /* left as it was */
	img_manifest_free(&m);
	/* a file replaced after the link: the link keeps the content it named, as with tar */
	t = tw_open(TW_PLAIN);
	tw_file(&t, "f", "one");
	tw_hardlink(&t, "x", "f");
	tw_file(&t, "f", "two");
	if (layer(f, tw_close(&t), "/", IMG_TAR_WHITEOUTS, &m, &err) < 0)
		fail_msg("%s", err.msg);
	assert_blob(f, find(&m, "/x"), "one");
	assert_blob(f, find(&m, "/f"), "two");
	img_manifest_free(&m);
}

/* Names are manifest strings, which are UTF-8: a member whose name, link target or xattr name
 * is not is refused at its header (its data never stored), with a message that is itself valid
 * UTF-8. Newlines and other control characters are valid and kept. */
static void test_names_not_utf8(void **state)
{
	struct fixture *f = *state;
	static const char zeros[1024];
	char h[512];
	for (int c = 0; c < 3; c++) {
		int fd = memfd_create("names", MFD_CLOEXEC);
		if (c == 0) {
			raw_header(h, "caf\xe9", '0', 6);
		} else {
			raw_header_link(h, c == 1 ? "l" : "h", c == 1 ? '2' : '1', 6, "t\xff");
		}
		assert_int_equal(write(fd, h, 512), 512);
		if (c == 0) {
			assert_int_equal(write(fd, "stored", 6), 6);
			assert_int_equal(write(fd, zeros, 506), 506);
		}
		assert_int_equal(write(fd, zeros, 1024), 1024);
		assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
		struct img_manifest m;
		struct sk_error err = {0};
		assert_int_equal(layer(f, fd, "/", 0, &m, &err), -SK_EINVAL_SPEC);
		assert_non_null(strstr(err.msg, "not valid UTF-8"));
		assert_non_null(strstr(err.msg, c == 0 ? "caf\\xe9" : "t\\xff"));
		assert_true(utf8_valid((const unsigned char *)err.msg, strlen(err.msg)));
		char hex[SHA256_HEX_BYTES];
		assert_int_equal(sha256_hex("stored", 6, hex), 0);
		assert_false(img_blob_exists(&f->s, hex));
		assert_clean(f);
	}
	/* an xattr name */
	char pax[512];
	pax_record(pax, sizeof(pax), "SCHILY.xattr.user.\xff", "v");
	int fd = pax_member(pax, '0', "f", NULL);
	struct img_manifest m;
	struct sk_error err = {0};
	assert_int_equal(layer(f, fd, "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "user.\\xff"));
	assert_true(utf8_valid((const unsigned char *)err.msg, strlen(err.msg)));
	/* a newline and a non-ASCII letter round trip through the canonical JSON */
	fd = memfd_create("names", MFD_CLOEXEC);
	static const char *const NAMES[] = {"new\nline", "caf\xc3\xa9"};
	for (int i = 0; i < 2; i++) {
		raw_header(h, NAMES[i], '0', 1);
		assert_int_equal(write(fd, h, 512), 512);
		assert_int_equal(write(fd, i ? "e" : "n", 1), 1);
		assert_int_equal(write(fd, zeros, 511), 511);
	}
	assert_int_equal(write(fd, zeros, 1024), 1024);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	if (layer(f, fd, "/", 0, &m, &err) < 0)
		fail_msg("%s", err.msg);
	assert_blob(f, find(&m, "/new\nline"), "n");
	assert_blob(f, find(&m, "/caf\xc3\xa9"), "e");
	char *json = NULL;
	size_t len = 0;
	struct img_manifest back;
	img_manifest_init(&back);
	assert_int_equal(img_manifest_encode(&m, &json, &len, &err), 0);
	assert_int_equal(img_manifest_decode(json, len, 1, &f->lim, &back, &err), 0);
	assert_int_equal(back.n, 2);
	assert_non_null(img_manifest_find(&back, "/new\nline"));
	free(json);
	img_manifest_free(&back);
	img_manifest_free(&m);
}

/* Attributes that steer the host's kernel (overlayfs' trusted.* and user.overlay.*, LSM labels)
 * are dropped; user.*, file capabilities and POSIX ACLs are kept. */
static void test_xattrs_allowed(void **state)
{
	struct fixture *f = *state;
	static const char *const KEYS[] = {"user.keep",           "security.capability",
	                                   "security.selinux",    "security.SMACK64EXEC",
	                                   "security.ima",        "trusted.overlay.redirect",
	                                   "user.overlay.opaque", "system.posix_acl_access",
	                                   "system.other"};
	char pax[2048];
	size_t plen = 0;
	for (size_t i = 0; i < sizeof(KEYS) / sizeof(KEYS[0]); i++) {
		char key[128];
		snprintf(key, sizeof(key), "SCHILY.xattr.%s", KEYS[i]);
		plen += pax_record(pax + plen, sizeof(pax) - plen, key, "v");
	}
	pax[plen] = '\0';
	int fd = pax_member(pax, '0', "f", NULL);
	struct img_manifest m;
	struct sk_error err = {0};
	if (layer(f, fd, "/", 0, &m, &err) < 0)
		fail_msg("%s", err.msg);
	const struct img_entry *e = find(&m, "/f");
	assert_int_equal(e->nxattrs, 3);
	assert_string_equal(e->xattrs[0].name, "security.capability");
	assert_string_equal(e->xattrs[1].name, "system.posix_acl_access");
	assert_string_equal(e->xattrs[2].name, "user.keep");
	img_manifest_free(&m);
}

/* A pax hard link may carry data of its own; libarchive reads past it, so it counts against the
 * byte limit like a file's. */
static void test_hardlink_data_counted(void **state)
{
	struct fixture *f = *state;
	f->lim.max_bytes = 4096;
	static const char zeros[8192];
	char h[512], pax[64];
	int fd = memfd_create("hldata", MFD_CLOEXEC);
	raw_header(h, "f", '0', 2);
	assert_int_equal(write(fd, h, 512), 512);
	assert_int_equal(write(fd, "hi", 2), 2);
	assert_int_equal(write(fd, zeros, 510), 510);
	size_t plen = pax_record(pax, sizeof(pax), "size", "8192");
	raw_header(h, "PaxHeaders/h", 'x', plen);
	assert_int_equal(write(fd, h, 512), 512);
	assert_int_equal(write(fd, pax, plen), (ssize_t)plen);
	assert_int_equal(write(fd, zeros, 512 - plen), (ssize_t)(512 - plen));
	raw_header_link(h, "h", '1', 0, "f");
	assert_int_equal(write(fd, h, 512), 512);
	assert_int_equal(write(fd, zeros, 8192), 8192);
	assert_int_equal(write(fd, zeros, 1024), 1024);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	struct img_manifest m;
	struct sk_error err = {0};
	assert_int_equal(layer(f, fd, "/", 0, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "more than 4096 bytes"));
	/* a whiteout's data is read past too */
	struct tw t = tw_open(TW_GZIP);
	tw_file_bytes(&t, ".wh.x", zeros, sizeof(zeros));
	assert_int_equal(layer(f, tw_close(&t), "/", IMG_TAR_WHITEOUTS, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "more than 4096 bytes"));
}

/* docker save output whose layers each replace /f with 8 new bytes: every layer and the image
 * are within a 10 byte limit, but the layers together wrote 8 * nlayers bytes of blobs. */
static int docker_save_layers(int nlayers)
{
	struct tw t = tw_open(TW_PLAIN);
	char manifest[1024] = "[{\"Config\":\"config.json\",\"Layers\":[";
	for (int i = 0; i < nlayers; i++) {
		struct tw l = tw_open(TW_PLAIN);
		char data[16], name[32];
		snprintf(data, sizeof(data), "layer %02d", i);
		tw_file(&l, "f", data);
		size_t len;
		char *bytes = tw_bytes(&l, &len);
		snprintf(name, sizeof(name), "l%d/layer.tar", i);
		tw_file_bytes(&t, name, bytes, len);
		free(bytes);
		snprintf(manifest + strlen(manifest), sizeof(manifest) - strlen(manifest),
		         "%s\"%s\"", i ? "," : "", name);
	}
	snprintf(manifest + strlen(manifest), sizeof(manifest) - strlen(manifest), "]}]");
	tw_file(&t, "config.json", "{\"config\":{}}");
	tw_file(&t, "manifest.json", manifest);
	return tw_close(&t);
}

static void test_oci_layers_limited_together(void **state)
{
	struct fixture *f = *state;
	f->lim.max_bytes = 10;
	struct img_manifest m;
	struct img_config c;
	struct sk_error err = {0};
	if (import(f, docker_save_layers(2), &m, &c, &err) < 0)
		fail_msg("%s", err.msg);
	assert_blob(f, find(&m, "/f"), "layer 01");
	img_manifest_free(&m);
	img_config_free(&c);
	assert_int_equal(import(f, docker_save_layers(3), &m, &c, &err), -SK_EINVAL_SPEC);
	if (!strstr(err.msg, "layer 3") || !strstr(err.msg, "together may hold 20 bytes"))
		fail_msg("%s", err.msg);
	assert_int_equal(m.n, 0);
	assert_clean(f);
}

/* What the ustar header says is harmless, but the pax header overrides it: the override is what
 * is checked (path, linkpath, size, uid); a GNU long name is checked as any name. Negative
 * mtimes (before 1970) are kept. */
static void test_pax_overrides(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *key, *value;
		char type;
		const char *link, *expect;
	} CASES[] = {
	    {"path", "../../etc/passwd", '0', NULL, "climbs above"},
	    {"linkpath", "../../etc/shadow", '1', "ok", "climbs above"},
	    {"size", "99999999999999", '0', NULL, "past the limit"},
	    {"uid", "4294967295", '0', NULL, "bad owner"},
	    {"gid", "99999999999", '0', NULL, "bad owner"},
	};
	for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
		char rec[256];
		pax_record(rec, sizeof(rec), CASES[i].key, CASES[i].value);
		struct img_manifest m;
		struct sk_error err = {0};
		assert_int_equal(
		    layer(f, pax_member(rec, CASES[i].type, "ok", CASES[i].link), "/", 0, &m, &err),
		    -SK_EINVAL_SPEC);
		if (!strstr(err.msg, CASES[i].expect))
			fail_msg("%s=%s: %s", CASES[i].key, CASES[i].value, err.msg);
		assert_clean(f);
	}
	char rec[256];
	/* libarchive 3.6 reads a negative fraction's sign off its nanoseconds ("-0.25" as 0.25):
	 * whole seconds only */
	pax_record(rec, sizeof(rec), "mtime", "-86400");
	struct img_manifest m;
	struct sk_error err = {0};
	if (layer(f, pax_member(rec, '0', "old", NULL), "/", 0, &m, &err) < 0)
		fail_msg("%s", err.msg);
	const struct img_entry *e = find(&m, "/old");
	assert_int_equal(e->mtime_sec, -86400);
	assert_int_equal(e->mtime_nsec, 0);
	char *json = NULL;
	size_t len = 0;
	struct img_manifest back;
	img_manifest_init(&back);
	assert_int_equal(img_manifest_encode(&m, &json, &len, &err), 0);
	assert_int_equal(img_manifest_decode(json, len, 1, &f->lim, &back, &err), 0);
	assert_int_equal(find(&back, "/old")->mtime_sec, -86400);
	free(json);
	img_manifest_free(&back);
	img_manifest_free(&m);

	/* a GNU long name past IMG_PATH_MAX */
	struct tw t = {.a = archive_write_new(), .fd = memfd_create("gnu", MFD_CLOEXEC)};
	assert_int_equal(archive_write_set_format_gnutar(t.a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_fd(t.a, t.fd), ARCHIVE_OK);
	char name[IMG_PATH_MAX + 64];
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	tw_file(&t, name, "long");
	assert_int_equal(layer(f, tw_close(&t), "/", 0, &m, &err), -SK_EINVAL_SPEC);
	if (!strstr(err.msg, "path too long"))
		fail_msg("%s", err.msg);
	assert_clean(f);
}

/* Messages quote names cut to a length: a cut inside a character must not leave the message
 * invalid UTF-8 (it travels in JSON). */
static void test_message_cut_in_a_character(void **state)
{
	struct fixture *f = *state;
	static char name[4300], rec[4400];
	size_t n = (size_t)snprintf(name, sizeof(name), "a");
	while (n + 2 < sizeof(name))
		n += (size_t)snprintf(name + n, sizeof(name) - n, "\xc3\xa9");
	pax_record(rec, sizeof(rec), "path", name);
	struct img_manifest m;
	struct sk_error err = {0};
	assert_int_equal(layer(f, pax_member(rec, '0', "ok", NULL), "/", 0, &m, &err),
	                 -SK_EINVAL_SPEC);
	if (!strstr(err.msg, "path too long"))
		fail_msg("%s", err.msg);
	assert_true(utf8_valid((const unsigned char *)err.msg, strlen(err.msg)));
	assert_clean(f);
}

/* A symlink of an image archive whose target is too long is refused whole, not cut to fit (its
 * "a/b/../b/../..." cut short would name another member). */
static void test_oci_long_symlink(void **state)
{
	struct fixture *f = *state;
	static char target[9000];
	size_t n = (size_t)snprintf(target, sizeof(target), "a/");
	while (n + 20 < sizeof(target))
		n += (size_t)snprintf(target + n, sizeof(target) - n, "b/../");
	snprintf(target + n, sizeof(target) - n, "manifest.json");
	struct tw t = tw_open(TW_PLAIN);
	tw_file(&t, "a/manifest.json", "[]");
	tw_symlink(&t, "manifest.json", target);
	struct img_manifest m;
	struct img_config c;
	struct sk_error err = {0};
	assert_int_equal(import(f, tw_close(&t), &m, &c, &err), -SK_EINVAL_SPEC);
	if (!strstr(err.msg, "symlink target too long"))
		fail_msg("%s", err.msg);
	assert_clean(f);
}

/* libarchive's writer (bsdtar) gives each xattr twice, as LIBARCHIVE.xattr and SCHILY.xattr:
 * it counts once against the limit of one entry's xattrs. */
static void test_xattr_written_twice(void **state)
{
	struct fixture *f = *state;
	struct tw t = tw_open(TW_PLAIN);
	struct archive_entry *e = tw_entry("f", AE_IFREG, 0644);
	static char value[40000];
	memset(value, 'v', sizeof(value));
	archive_entry_xattr_add_entry(e, "user.big", value, sizeof(value));
	tw_put(&t, e, NULL, 0);
	struct img_manifest m;
	struct sk_error err = {0};
	if (layer(f, tw_close(&t), "/", 0, &m, &err) < 0)
		fail_msg("%s", err.msg);
	const struct img_entry *x = find(&m, "/f");
	assert_int_equal(x->nxattrs, 1);
	assert_int_equal(x->xattrs[0].len, sizeof(value));
	assert_memory_equal(x->xattrs[0].value, value, sizeof(value));
	img_manifest_free(&m);
}

/* A hard link copies its target's xattrs: one file with 60 KB of them and 4500 links (a small
 * archive) would hold 270 MB of metadata in memory and in the manifest; the layer's metadata is
 * limited. */
static void test_hardlink_metadata_limited(void **state)
{
	struct fixture *f = *state;
	struct tw t = tw_open(TW_GZIP);
	struct archive_entry *e = tw_entry("f", AE_IFREG, 0644);
	static char value[60000];
	memset(value, 'v', sizeof(value));
	archive_entry_xattr_add_entry(e, "user.big", value, sizeof(value));
	archive_entry_set_size(e, 1);
	tw_put(&t, e, "x", 1);
	for (int i = 0; i < 4500; i++) {
		char name[32];
		snprintf(name, sizeof(name), "l%d", i);
		tw_hardlink(&t, name, "f");
	}
	struct img_manifest m;
	struct sk_error err = {0};
	assert_int_equal(layer(f, tw_close(&t), "/", 0, &m, &err), -SK_EINVAL_SPEC);
	if (!strstr(err.msg, "extended attributes take more than"))
		fail_msg("%s", err.msg);
	assert_int_equal(m.n, 0);
	assert_clean(f);
}

/* A whiteout is one by its name, whatever its type: a hard link named .wh.f removes f, as
 * Docker reads it, rather than becoming a file named .wh.f in the layer. */
static void test_whiteout_hardlink(void **state)
{
	struct fixture *f = *state;
	struct tw t = tw_open(TW_PLAIN);
	tw_file(&t, "g", "g");
	tw_hardlink(&t, ".wh.f", "g");
	struct img_manifest m;
	struct sk_error err = {0};
	if (layer(f, tw_close(&t), "/", IMG_TAR_WHITEOUTS, &m, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(m.n, 2);
	assert_null(img_manifest_find(&m, "/.wh.f"));
	assert_int_equal(find(&m, "/f")->type, IMG_WHITEOUT);
	img_manifest_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_types_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dest_and_dotdot, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_layer_so_far, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_escape_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_through_symlink_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hardlinks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_devices_dropped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_whiteouts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_later_wins, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sparse_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sparse_small, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gzip_bomb, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_schily_xattrs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_header_bomb, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_too_many_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_not_a_tar, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_docker_save, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_oci_layout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_oci_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hardlink_to_removed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_names_not_utf8, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_xattrs_allowed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hardlink_data_counted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_whiteout_hardlink, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hardlink_metadata_limited, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_xattr_written_twice, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_oci_layers_limited_together, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pax_overrides, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_oci_long_symlink, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_message_cut_in_a_character, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
