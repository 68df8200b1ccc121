/* The image content store (src/image): blobs stored by digest (a mismatch or an oversized blob
 * stores nothing), manifests encoded canonically and decoded strictly (bad input refused with the
 * entry named, never a crash), layers applied, directories ingested and trees materialized. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "../../src/lib/fsutil.h"
#include "../../src/lib/hash.h"
#include "../../src/image/manifest.h"
#include "../../src/image/store_internal.h"

struct fixture {
	char dir[64];
	struct img_store s;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/skiff-unit-image-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	char root[128];
	snprintf(root, sizeof(root), "%s/images", f->dir);
	struct sk_error err = {0};
	int r = img_store_open(&f->s, root, &err);
	if (r < 0)
		print_error("img_store_open: %s\n", err.msg);
	assert_int_equal(r, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	img_store_close(&f->s);
	fs_rm_rf_at(AT_FDCWD, f->dir);
	free(f);
	return 0;
}

/* Under dirfd/path: the non-directories at every depth (recursive), or every entry directly in
 * it, directories included. */
static int count_in(int at, const char *path, int recursive)
{
	int fd = openat(at, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	DIR *d = fdopendir(fd);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (recursive && de->d_type == DT_DIR)
			n += count_in(dirfd(d), de->d_name, 1);
		else
			n++;
	}
	closedir(d);
	return n;
}

static int count_files(int at, const char *path)
{
	return count_in(at, path, 1);
}

static int count_entries(int at, const char *path)
{
	return count_in(at, path, 0);
}

/* ---- blobs ---- */

static void test_blob_put_read(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char digest[IMG_DIGEST_HEX], want[IMG_DIGEST_HEX];
	const char data[] = "hello, store";
	assert_int_equal(sha256_hex(data, sizeof(data) - 1, want), 0);
	uint64_t bytes = 0;
	assert_false(img_blob_exists(&f->s, want));
	assert_int_equal(img_blob_size(&f->s, want, &bytes), -ENOENT);
	assert_int_equal(img_blob_size(&f->s, "../../etc", &bytes), -ENOENT);
	assert_int_equal(img_blob_put(&f->s, data, sizeof(data) - 1, digest, &err), 0);
	assert_string_equal(digest, want);
	assert_true(img_blob_exists(&f->s, digest));
	assert_int_equal(img_blob_size(&f->s, digest, &bytes), 0);
	assert_int_equal(bytes, sizeof(data) - 1);
	/* Stored again: kept, one file. */
	assert_int_equal(img_blob_put(&f->s, data, sizeof(data) - 1, digest, &err), 0);
	assert_int_equal(count_files(f->s.root_fd, "blobs"), 1);
	assert_int_equal(count_files(f->s.root_fd, "tmp"), 0);

	char path[256];
	snprintf(path, sizeof(path), "blobs/sha256/%.2s/%s", want, want + 2);
	struct stat st;
	assert_int_equal(fstatat(f->s.root_fd, path, &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0444);

	char *buf = NULL;
	size_t len = 0;
	assert_int_equal(img_blob_read(&f->s, digest, 100, &buf, &len, &err), 0);
	assert_int_equal(len, sizeof(data) - 1);
	assert_string_equal(buf, data);
	free(buf);
	assert_int_equal(img_blob_read(&f->s, digest, 3, &buf, &len, &err), -EFBIG);

	int fd = -1;
	uint64_t size = 0;
	assert_int_equal(img_blob_open(&f->s, digest, &fd, &size, &err), 0);
	assert_int_equal(size, sizeof(data) - 1);
	close(fd);
	char missing[IMG_DIGEST_HEX];
	memset(missing, 'a', 64);
	missing[64] = '\0';
	assert_int_equal(img_blob_open(&f->s, missing, &fd, &size, &err), -ENOENT);
	assert_int_equal(img_blob_open(&f->s, "../../etc/passwd", &fd, &size, &err),
	                 -SK_EINVAL_SPEC);
}

static void test_blob_writer_mismatch_and_efbig(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char digest[IMG_DIGEST_HEX], other[IMG_DIGEST_HEX];
	assert_int_equal(sha256_hex("other", 5, other), 0);

	struct img_blob_writer *w = NULL;
	assert_int_equal(img_blob_begin(&f->s, 1 << 20, &w, &err), 0);
	assert_int_equal(img_blob_write(w, "some ", 5, &err), 0);
	assert_int_equal(img_blob_write(w, "bytes", 5, &err), 0);
	assert_int_equal(img_blob_finish(w, other, digest, NULL, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, other));
	assert_int_equal(count_files(f->s.root_fd, "blobs"), 0);

	assert_int_equal(img_blob_begin(&f->s, 8, &w, &err), 0);
	assert_int_equal(img_blob_write(w, "12345", 5, &err), 0);
	assert_int_equal(img_blob_write(w, "6789", 4, &err), -EFBIG);
	img_blob_abort(w);
	assert_int_equal(count_files(f->s.root_fd, "blobs"), 0);
	assert_int_equal(count_files(f->s.root_fd, "tmp"), 0);

	/* From an fd, streamed, with a limit. */
	char tmpl[128];
	snprintf(tmpl, sizeof(tmpl), "%s/src-XXXXXX", f->dir);
	int fd = mkstemp(tmpl);
	assert_true(fd >= 0);
	static char big[300000];
	memset(big, 'x', sizeof(big));
	assert_int_equal(write(fd, big, sizeof(big)), sizeof(big));
	uint64_t size = 0;
	lseek(fd, 0, SEEK_SET);
	assert_int_equal(img_blob_put_fd(&f->s, fd, sizeof(big) - 1, digest, &size, &err), -EFBIG);
	assert_int_equal(count_files(f->s.root_fd, "blobs"), 0);
	lseek(fd, 0, SEEK_SET);
	assert_int_equal(img_blob_put_fd(&f->s, fd, sizeof(big), digest, &size, &err), 0);
	assert_int_equal(size, sizeof(big));
	char want[IMG_DIGEST_HEX];
	sha256_hex(big, sizeof(big), want);
	assert_string_equal(digest, want);
	close(fd);
}

/* A write that fails half-way (here: past RLIMIT_FSIZE, the file holds the first 10 of 20
 * bytes) leaves a hash of bytes the file lacks: finishing must store nothing rather than a blob
 * whose name lies about its content. In a child, which alone gets the limit. */
static void test_blob_write_failure_stores_nothing(void **state)
{
	struct fixture *f = *state;
	const char data[] = "0123456789abcdefghij";
	char whole[IMG_DIGEST_HEX], half[IMG_DIGEST_HEX];
	assert_int_equal(sha256_hex(data, 20, whole), 0);
	assert_int_equal(sha256_hex(data, 10, half), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = {.rlim_cur = 10, .rlim_max = 10};
		struct sk_error err = {0};
		struct img_blob_writer *w = NULL;
		char digest[IMG_DIGEST_HEX];
		if (setrlimit(RLIMIT_FSIZE, &rl) < 0 || img_blob_begin(&f->s, 100, &w, &err) < 0)
			_exit(2);
		if (img_blob_write(w, data, 20, &err) == 0)
			_exit(3);
		if (img_blob_write(w, "", 0, &err) == 0)
			_exit(4); /* nothing more goes in either */
		_exit(img_blob_finish(w, NULL, digest, NULL, &err) < 0 ? 0 : 5);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_false(img_blob_exists(&f->s, whole));
	assert_false(img_blob_exists(&f->s, half));
	assert_int_equal(count_files(f->s.root_fd, "blobs"), 0);
	assert_int_equal(count_files(f->s.root_fd, "tmp"), 0);
}

/* EVP_MD_CTX_new failing on demand (the real one otherwise): this program's definition comes
 * before libcrypto's. */
static int md_new_fails;
EVP_MD_CTX *EVP_MD_CTX_new(void)
{
	static EVP_MD_CTX *(*real)(void);
	if (md_new_fails)
		return NULL;
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "EVP_MD_CTX_new");
	return real();
}

/* A writer that fails before its file is made closes nothing of the caller's (fd 0 was closed:
 * in a daemon, whatever socket came to hold it). */
static void test_blob_begin_failure_closes_nothing(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	struct img_blob_writer *w = NULL;
	int saved = dup(0), p[2];
	assert_true(saved >= 0);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(dup2(p[0], 0), 0);
	md_new_fails = 1;
	int r = img_blob_begin(&f->s, 100, &w, &err);
	md_new_fails = 0;
	int open0 = fcntl(0, F_GETFD) >= 0;
	assert_int_equal(dup2(saved, 0), 0);
	close(saved);
	close(p[0]);
	close(p[1]);
	assert_int_equal(r, -EIO);
	assert_true(open0);
}

static void make_old(struct fixture *f, const char *digest)
{
	char rel[128];
	snprintf(rel, sizeof(rel), "blobs/sha256/%.2s/%s", digest, digest + 2);
	struct timespec ts[2] = {{.tv_sec = 1000}, {.tv_sec = 1000}};
	assert_int_equal(utimensat(f->s.root_fd, rel, ts, AT_SYMLINK_NOFOLLOW), 0);
}

/* The same bytes stored again as gc is about to remove their old, unkept blob (a test hook
 * in gc). */
static struct img_store *again_store;
static void put_again(const char *digest)
{
	struct sk_error err = {0};
	char d[IMG_DIGEST_HEX];
	assert_int_equal(img_blob_put(again_store, "again", 5, d, &err), 0);
	assert_string_equal(d, digest);
}

/* A blob stored again long after it was first stored (unreferenced since) gets gc's full grace
 * from now: whoever stored it is about to name it in a manifest. So it does when it is stored
 * again just as gc is about to remove it: the writer was told it is stored. */
static void test_blob_stored_again_outlives_gc(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char digest[IMG_DIGEST_HEX];
	struct img_gc_stats st = {0};
	assert_int_equal(img_blob_put(&f->s, "again", 5, digest, &err), 0);
	make_old(f, digest);
	assert_int_equal(img_blob_put(&f->s, "again", 5, digest, &err), 0);
	assert_int_equal(img_store_gc(&f->s, NULL, 0, 3600, &st, &err), 0);
	assert_true(img_blob_exists(&f->s, digest));

	make_old(f, digest);
	again_store = &f->s;
	img_blob_remove_hook = put_again;
	int r = img_store_gc(&f->s, NULL, 0, 3600, &st, &err);
	img_blob_remove_hook = NULL;
	assert_int_equal(r, 0);
	assert_true(img_blob_exists(&f->s, digest));
	assert_int_equal(st.blobs_removed, 0);
	assert_int_equal(count_files(f->s.root_fd, "tmp"), 0);

	/* Old and not stored again: gc takes it (the test can fail), nothing left aside. */
	make_old(f, digest);
	assert_int_equal(img_store_gc(&f->s, NULL, 0, 3600, &st, &err), 0);
	assert_false(img_blob_exists(&f->s, digest));
	assert_int_equal(st.blobs_removed, 1);
	assert_int_equal(count_files(f->s.root_fd, "tmp"), 0);
}

static void test_digest_and_path_valid(void **state)
{
	(void)state;
	char d[IMG_DIGEST_HEX];
	memset(d, 'f', 64);
	d[64] = '\0';
	assert_true(img_digest_valid(d));
	d[3] = 'F';
	assert_false(img_digest_valid(d));
	assert_false(img_digest_valid("abc"));
	assert_false(img_digest_valid(NULL));

	const char *good[] = {"/", "/a", "/a/b", "/.a", "/a/..b", "/a/b..", "/ a"};
	const char *bad[] = {"",    "a",      "//",      "/a/",  "/a//b", "/.",
	                     "/..", "/a/./b", "/a/../b", "/a/.", NULL};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(img_path_valid(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(img_path_valid(bad[i]));
	char longp[IMG_PATH_MAX + 2];
	memset(longp, 'a', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	assert_false(img_path_valid(longp));
	longp[sizeof(longp) - 2] = '\0';
	assert_true(img_path_valid(longp));
	/* IMG_PATH_DEPTH_MAX components, not one more (removing a tree holds an fd per level). */
	char deep[2 * IMG_PATH_DEPTH_MAX + 3];
	for (int i = 0; i < IMG_PATH_DEPTH_MAX; i++)
		memcpy(deep + 2 * i, "/a", 2);
	deep[2 * IMG_PATH_DEPTH_MAX] = '\0';
	assert_true(img_path_valid(deep));
	memcpy(deep + 2 * IMG_PATH_DEPTH_MAX, "/a", 3);
	assert_false(img_path_valid(deep));
}

/* A tree nested deeper than a manifest may be is refused by ingest, with the place named; one
 * level less is taken. */
static void test_ingest_too_deep(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char top[128];
	snprintf(top, sizeof(top), "%s/deep", f->dir);
	assert_int_equal(mkdir(top, 0755), 0);
	int fd = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	int rootfd = dup(fd);
	for (int i = 0; i < IMG_PATH_DEPTH_MAX; i++) {
		assert_int_equal(mkdirat(fd, "d", 0755), 0);
		int next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		assert_true(next >= 0);
		close(fd);
		fd = next;
	}
	struct img_manifest m;
	img_manifest_init(&m);
	assert_int_equal(img_ingest_dir(&f->s, rootfd, 0, NULL, &m, &err), 0);
	assert_int_equal(m.n, IMG_PATH_DEPTH_MAX + 1);
	assert_int_equal(mkdirat(fd, "d", 0755), 0);
	assert_int_equal(img_ingest_dir(&f->s, rootfd, 0, NULL, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "nested deeper"));
	assert_int_equal(m.n, IMG_PATH_DEPTH_MAX + 1); /* untouched */
	img_manifest_free(&m);
	close(fd);
	close(rootfd);
}

/* ---- manifests ---- */

static void add(struct img_manifest *m, const char *path, enum img_type type, uint32_t mode)
{
	struct img_entry e = {.path = (char *)path, .type = type, .mode = mode};
	if (type == IMG_REG) {
		sha256_hex(path, strlen(path), e.digest);
		e.size = strlen(path);
	}
	if (type == IMG_SYMLINK)
		e.target = "../target";
	struct sk_error err = {0};
	assert_int_equal(img_manifest_add(m, &e, &err), 0);
}

/* A manifest with every type, owners, times and xattrs, entries added in the order given by
 * perm (a permutation of 0..N-1). */
#define FULL_N 9
static void full_manifest(struct img_manifest *m, const int *perm)
{
	unsigned char cap[] = {1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	struct img_xattr xs[] = {
	    {.name = "security.capability", .value = cap, .len = sizeof(cap)},
	    {.name = "user.empty", .value = (unsigned char *)"", .len = 0},
	    {.name = "user.z", .value = (unsigned char *)"\xff\x00z", .len = 3}};
	struct img_entry es[FULL_N] = {
	    {.path = "/", .type = IMG_DIR, .mode = 0755, .mtime_sec = 1700000000},
	    {.path = "/bin", .type = IMG_DIR, .mode = 0755, .uid = 0, .gid = 0},
	    {.path = "/bin/ping",
	     .type = IMG_REG,
	     .mode = 04755,
	     .size = 12,
	     .uid = 1000,
	     .gid = 1001,
	     .mtime_sec = -5,
	     .mtime_nsec = 123456789,
	     .xattrs = xs,
	     .nxattrs = 3},
	    {.path = "/bin/sh", .type = IMG_SYMLINK, .mode = 0777, .target = "busybox"},
	    {.path = "/dev", .type = IMG_DIR, .mode = 0755},
	    {.path = "/dev/null", .type = IMG_CHR, .mode = 0666, .rdev_major = 1, .rdev_minor = 3},
	    {.path = "/dev/sda", .type = IMG_BLK, .mode = 0660, .rdev_major = 8},
	    {.path = "/fifo", .type = IMG_FIFO, .mode = 0600},
	    {.path = "/tmp", .type = IMG_DIR, .mode = 01777},
	};
	sha256_hex("ping", 4, es[2].digest);
	struct sk_error err = {0};
	for (int i = 0; i < FULL_N; i++)
		assert_int_equal(img_manifest_add(m, &es[perm[i]], &err), 0);
	assert_int_equal(img_manifest_sort(m, &err), 0);
}

static void test_manifest_round_trip_canonical(void **state)
{
	(void)state;
	struct sk_error err = {0};
	const int order1[FULL_N] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
	const int order2[FULL_N] = {8, 3, 5, 0, 7, 2, 6, 1, 4};
	struct img_manifest a, b, c;
	img_manifest_init(&a);
	img_manifest_init(&b);
	img_manifest_init(&c);
	full_manifest(&a, order1);
	full_manifest(&b, order2);
	assert_int_equal(img_manifest_check(&a, 0, &img_default_limits, &err), 0);

	char *ja = NULL, *jb = NULL, *jc = NULL;
	size_t la = 0, lb = 0, lc = 0;
	assert_int_equal(img_manifest_encode(&a, &ja, &la, &err), 0);
	assert_int_equal(img_manifest_encode(&b, &jb, &lb, &err), 0);
	assert_int_equal(la, lb);
	assert_memory_equal(ja, jb, la);
	/* Defaults omitted, fixed key order, xattrs in base64. */
	assert_non_null(strstr(ja, "{\"version\":1,\"entries\":[{\"path\":\"/\",\"type\":\"dir\","
	                           "\"mode\":493,\"mtime\":1700000000}"));
	assert_non_null(strstr(ja, "\"user.z\":\"/wB6\""));
	assert_null(strstr(ja, "\"uid\":0"));
	/* The very bytes of this manifest as the encoder has always written them: a change of
	 * encoding would rename every stored image. */
	char h[IMG_DIGEST_HEX];
	assert_int_equal(sha256_hex(ja, la, h), 0);
	assert_string_equal(h, "e384c853e0ea0b42145877b67c803f55b7d401ecd95ca6203e6366078c056f2c");
	assert_int_equal(strlen(ja), la);
	struct img_manifest empty;
	img_manifest_init(&empty);
	char *je = NULL;
	size_t le = 0;
	assert_int_equal(img_manifest_encode(&empty, &je, &le, &err), 0);
	assert_string_equal(je, "{\"version\":1,\"entries\":[]}");
	assert_int_equal(le, strlen(je));
	free(je);

	int r = img_manifest_decode(ja, la, 0, &img_default_limits, &c, &err);
	if (r < 0)
		print_error("decode: %s\n", err.msg);
	assert_int_equal(r, 0);
	assert_int_equal(c.n, FULL_N);
	const struct img_entry *ping = img_manifest_find(&c, "/bin/ping");
	assert_non_null(ping);
	assert_int_equal(ping->mode, 04755);
	assert_int_equal(ping->mtime_sec, -5);
	assert_int_equal(ping->mtime_nsec, 123456789);
	assert_int_equal(ping->nxattrs, 3);
	assert_int_equal(ping->xattrs[2].len, 3);
	assert_memory_equal(ping->xattrs[2].value, "\xff\x00z", 3);
	assert_int_equal(img_manifest_find(&c, "/dev/null")->rdev_minor, 3);
	assert_string_equal(img_manifest_find(&c, "/bin/sh")->target, "busybox");
	assert_null(img_manifest_find(&c, "/nope"));
	assert_int_equal(img_manifest_encode(&c, &jc, &lc, &err), 0);
	assert_int_equal(la, lc);
	assert_memory_equal(ja, jc, la);

	/* Saved and loaded through the store. */
	free(ja);
	free(jb);
	free(jc);
	img_manifest_free(&a);
	img_manifest_free(&b);
	img_manifest_free(&c);
}

static void test_manifest_save_load(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	const int order[FULL_N] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
	struct img_manifest a, b;
	img_manifest_init(&a);
	img_manifest_init(&b);
	full_manifest(&a, order);
	char d1[IMG_DIGEST_HEX], d2[IMG_DIGEST_HEX];
	assert_int_equal(img_manifest_save(&f->s, &a, d1, &err), 0);
	assert_true(img_blob_exists(&f->s, d1));
	assert_int_equal(img_manifest_load(&f->s, d1, NULL, &b, &err), 0);
	assert_int_equal(img_manifest_save(&f->s, &b, d2, &err), 0);
	assert_string_equal(d1, d2);
	img_manifest_free(&a);
	img_manifest_free(&b);
}

static void test_manifest_sort_duplicate(void **state)
{
	(void)state;
	struct img_manifest m;
	img_manifest_init(&m);
	add(&m, "/", IMG_DIR, 0755);
	add(&m, "/a", IMG_REG, 0644);
	add(&m, "/a", IMG_DIR, 0755);
	struct sk_error err = {0};
	assert_int_equal(img_manifest_sort(&m, &err), -EEXIST);
	assert_non_null(strstr(err.msg, "\"/a\""));
	img_manifest_free(&m);
}

#define D64  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEAD "{\"version\":1,\"entries\":[{\"path\":\"/\",\"type\":\"dir\",\"mode\":493},"

/* Each bad manifest is refused with a message naming what is wrong (the entry where there is
 * one), and leaves the output manifest as it was. */
static void test_manifest_decode_bad(void **state)
{
	(void)state;
	struct {
		const char *json, *want;
	} cases[] = {
	    {"", "bad JSON"},
	    {"[]", "not an object"},
	    {"{\"version\":2,\"entries\":[]}", "version 2"},
	    {"{\"version\":1,\"entries\":[],\"x\":1}", "not an object"},
	    {"{\"version\":1,\"entries\":[]}", "no root"},
	    {"{\"version\":1,\"entries\":[{\"path\":\"/a\",\"type\":\"dir\"}]}", "no root"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"reg\"}]}", "\"/a\": regular file without"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"reg\",\"digest\":\"" D64 "\",\"size\":-1}]}",
	     "\"/a\": an integer"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"reg\",\"digest\":\"" D64 "\",\"bogus\":1}]}",
	     "\"/a\": unknown key"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"door\"}]}", "\"/a\": unknown type"},
	    {HEAD "{\"path\":\"/a/../b\",\"type\":\"dir\"}]}", "\"/a/../b\": path is not"},
	    {HEAD "{\"path\":\"/a/b\",\"type\":\"dir\"}]}", "\"/a/b\": parent directory missing"},
	    {HEAD "{\"path\":\"/b\",\"type\":\"dir\"},{\"path\":\"/a\",\"type\":\"dir\"}]}",
	     "\"/a\": entries not sorted"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"dir\"},{\"path\":\"/a\",\"type\":\"dir\"}]}",
	     "\"/a\": entries not sorted"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"fifo\",\"mode\":4096}]}", "\"/a\": an integer"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"symlink\"}]}", "\"/a\": symlink target"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"dir\",\"target\":\"x\"}]}", "\"/a\": target on"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"whiteout\"}]}", "\"/a\": a whiteout outside"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"dir\",\"opaque\":true}]}", "\"/a\": opaque outside"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"fifo\",\"major\":1}]}", "\"/a\": device numbers"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"fifo\",\"mtime_nsec\":1000000000}]}", "\"/a\": an "},
	    {HEAD "{\"path\":\"/a\",\"type\":\"fifo\",\"xattrs\":{\"user.a\":\"!!\"}}]}",
	     "\"/a\": an xattr value is not base64"},
	    {HEAD
	     "{\"path\":\"/a\",\"type\":\"fifo\",\"xattrs\":{\"user.b\":\"\",\"user.a\":\"\"}}]}",
	     "\"/a\": xattrs not sorted"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"fifo\",\"xattrs\":{}}]}", "\"/a\": xattrs is empty"},
	    {HEAD
	     "{\"path\":\"/a\",\"type\":\"dir\",\"xattrs\":{\"user.overlay.opaque\":\"eQ==\"}}]}",
	     "\"/a\": an overlayfs attribute"},
	    {HEAD "{\"path\":\"/"
	          "a\",\"type\":\"dir\",\"xattrs\":{\"trusted.overlay.redirect\":\"eQ==\"}}]}",
	     "\"/a\": an overlayfs attribute"},
	    {HEAD "{\"path\":\"/a\",\"type\":\"reg\",\"digest\":\"" D64
	          "\",\"size\":17179869185}]}",
	     "\"/a\": file larger than the limit"},
	    {HEAD "{\"path\":\"/a\\u0000b\",\"type\":\"dir\"}]}", "bad JSON"},
	    {"{\"version\":1,\"entries\":[{\"path\":\"/\",\"type\":\"fifo\"}]}",
	     "root is not a dir"},
	    {"{\"version\":1,\"entries\":[[[[[[]]]]]]}", "nested too deeply"},
	    {"{\"version\":1,\"version\":1,\"entries\":[]}", "not an object"},
	    {"{\"version\":01,\"entries\":[]}", "not an object"},
	    {"{\"version\":1.0,\"entries\":[]}", "not an object"},
	    {"{\"version\":1,\"entries\":[],}", "not an object"},
	    {"{\"version\":1,\"entries\":[]} x", "not an object"},
	    {"{\"version\":1,\"entries\":[{\"path\":\"/\",\"type\":\"dir\"},]}", "bad JSON"},
	    {"{\"version\":1,\"entries\":[{\"path\":\"/\",\"type\":\"dir\"}", "bad JSON"},
	    {"{\"version\":1,\"entries\":[1]}", "entry 0: bad JSON"},
	    {"{\"version\":1,\"entries\":[{\"path\":\"/\",\"path\":\"/\",\"type\":\"dir\"}]}",
	     "entry 0: bad JSON"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct img_manifest m;
		img_manifest_init(&m);
		struct sk_error err = {0};
		int r = img_manifest_decode(cases[i].json, strlen(cases[i].json), 0,
		                            &img_default_limits, &m, &err);
		if (r != -SK_EINVAL_SPEC || !strstr(err.msg, cases[i].want))
			print_error("case %zu: %d %s\n", i, r, err.msg);
		assert_int_equal(r, -SK_EINVAL_SPEC);
		assert_non_null(strstr(err.msg, cases[i].want));
		assert_int_equal(m.n, 0);
	}
	/* The outer keys in either order, whitespace where JSON allows it. */
	const char *spaced = " {\n \"entries\" : [ {\"path\":\"/\",\"type\":\"dir\"} ,\n"
	                     " {\"path\":\"/a\",\"type\":\"fifo\"} ] , \"version\" : 1 }\n";
	struct img_manifest m;
	img_manifest_init(&m);
	struct sk_error err = {0};
	assert_int_equal(img_manifest_decode(spaced, strlen(spaced), 0, NULL, &m, &err), 0);
	assert_int_equal(m.n, 2);
	assert_string_equal(m.e[1].path, "/a");
	img_manifest_free(&m);
}

static void test_manifest_limits(void **state)
{
	(void)state;
	struct img_limits lim = img_default_limits;
	const char *json =
	    HEAD "{\"path\":\"/a\",\"type\":\"reg\",\"digest\":\"" D64
	         "\",\"size\":10},{\"path\":\"/b\",\"type\":\"reg\",\"digest\":\"" D64
	         "\",\"size\":10}]}";
	struct img_manifest m;
	img_manifest_init(&m);
	struct sk_error err = {0};
	assert_int_equal(img_manifest_decode(json, strlen(json), 0, &lim, &m, &err), 0);
	img_manifest_free(&m);
	lim.max_files = 2;
	assert_int_equal(img_manifest_decode(json, strlen(json), 0, &lim, &m, &err),
	                 -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "more than 2 entries"));
	/* Refused once the count passes the limit, before the rest is read (a manifest is parsed
	 * entry by entry: the parser's memory is never the whole text's several times over). */
	const char *over =
	    HEAD "{\"path\":\"/a\",\"type\":\"dir\"},{\"path\":\"/b\",\"type\":\"dir\"},"
	         "{\"path\":\"/c\",\"type\":\"dir\"} and then no JSON at all";
	assert_int_equal(img_manifest_decode(over, strlen(over), 0, &lim, &m, &err),
	                 -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "more than 2 entries"));
	lim = img_default_limits;
	lim.max_bytes = 15;
	assert_int_equal(img_manifest_decode(json, strlen(json), 0, &lim, &m, &err),
	                 -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "\"/b\": files larger than the limit in all"));
	lim = img_default_limits;
	lim.max_xattr_bytes = 8;
	const char *xj =
	    HEAD "{\"path\":\"/a\",\"type\":\"fifo\",\"xattrs\":{\"user.abc\":\"eA==\"}}]}";
	assert_int_equal(img_manifest_decode(xj, strlen(xj), 0, &lim, &m, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "\"/a\": xattrs larger"));
	assert_int_equal(m.n, 0);
}

/* Mutated manifests: any outcome but a crash (the sanitized build checks memory too). */
static void test_manifest_decode_mutations(void **state)
{
	(void)state;
	const int order[FULL_N] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
	struct img_manifest a;
	img_manifest_init(&a);
	full_manifest(&a, order);
	char *json = NULL;
	size_t len = 0;
	struct sk_error err = {0};
	assert_int_equal(img_manifest_encode(&a, &json, &len, &err), 0);
	img_manifest_free(&a);
	unsigned seed = 12345;
	const char alphabet[] = "{}[]\":,0123456789-/.abz\\ ";
	char *buf = malloc(len);
	assert_non_null(buf);
	int ok = 0;
	for (int iter = 0; iter < 3000; iter++) {
		memcpy(buf, json, len);
		int edits = 1 + iter % 4;
		for (int k = 0; k < edits; k++) {
			seed = seed * 1103515245 + 12345;
			size_t pos = (seed >> 8) % len;
			seed = seed * 1103515245 + 12345;
			buf[pos] = alphabet[(seed >> 8) % (sizeof(alphabet) - 1)];
		}
		size_t cut = iter % 7 == 0 ? (seed >> 4) % len : len;
		struct img_manifest m;
		img_manifest_init(&m);
		err.msg[0] = '\0';
		if (img_manifest_decode(buf, cut, iter % 2, &img_default_limits, &m, &err) == 0) {
			/* What was taken encodes canonically and comes back the same. */
			char *j1 = NULL, *j2 = NULL;
			size_t l1 = 0, l2 = 0;
			struct img_manifest back;
			img_manifest_init(&back);
			int er = img_manifest_encode(&m, &j1, &l1, &err);
			if (er < 0)
				print_error("iter %d: %.*s -> %s\n", iter, (int)cut, buf, err.msg);
			assert_int_equal(er, 0);
			assert_int_equal(
			    img_manifest_decode(j1, l1, iter % 2, &img_default_limits, &back, &err),
			    0);
			assert_int_equal(img_manifest_encode(&back, &j2, &l2, &err), 0);
			assert_int_equal(l1, l2);
			assert_memory_equal(j1, j2, l1);
			free(j1);
			free(j2);
			img_manifest_free(&back);
			ok++;
		} else {
			/* Refused with a reason, nothing half-decoded left. */
			assert_true(err.msg[0] != '\0');
			assert_int_equal(m.n, 0);
		}
		img_manifest_free(&m);
	}
	free(buf);
	free(json);
	/* Both ways were taken: some mutants are still manifests, most are not. */
	assert_true(ok > 0 && ok < 3000);
}

/* ---- layers ---- */

/* A layer that holds "/" (a step that touched the root) and a file whose parents it lacks (a
 * tar layer of one file) is stored and loaded back: nothing in it says "layer" but that. */
static void test_layer_with_root_saves(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	struct img_manifest m, back;
	img_manifest_init(&m);
	img_manifest_init(&back);
	add(&m, "/", IMG_DIR, 0755);
	add(&m, "/usr/bin/tool", IMG_REG, 0755);
	assert_int_equal(img_manifest_sort(&m, &err), 0);
	char digest[IMG_DIGEST_HEX];
	int r = img_manifest_save(&f->s, &m, digest, &err);
	if (r < 0)
		print_error("save: %s\n", err.msg);
	assert_int_equal(r, 0);
	assert_int_equal(img_manifest_load(&f->s, digest, NULL, &back, &err), 0);
	assert_int_equal(back.n, 2);
	assert_string_equal(back.e[1].path, "/usr/bin/tool");
	/* As an image it is refused, where an image is needed. */
	assert_int_equal(img_manifest_check(&back, 0, NULL, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "parent directory missing"));
	img_manifest_free(&m);
	img_manifest_free(&back);
}

static void build(struct img_manifest *m, const char *const *spec)
{
	/* spec: "path type" pairs, type one of d f l w o (opaque dir) */
	for (size_t i = 0; spec[i]; i += 2) {
		char t = spec[i + 1][0];
		enum img_type type = t == 'd' || t == 'o' ? IMG_DIR
		                     : t == 'f'           ? IMG_REG
		                     : t == 'l'           ? IMG_SYMLINK
		                                          : IMG_WHITEOUT;
		add(m, spec[i], type, type == IMG_WHITEOUT ? 0 : 0755);
		m->e[m->n - 1].opaque = t == 'o';
	}
	struct sk_error err = {0};
	assert_int_equal(img_manifest_sort(m, &err), 0);
}

/* "path:type path:type ..." of a manifest, in order. */
static void describe(const struct img_manifest *m, char *out, size_t size)
{
	size_t off = 0;
	out[0] = '\0';
	for (size_t i = 0; i < m->n && off < size; i++)
		off += snprintf(out + off, size - off, "%s%s:%c", i ? " " : "", m->e[i].path,
		                "fdlcbpsw"[m->e[i].type]);
}

static void apply_case(const char *const *base_spec, const char *const *layer_spec,
                       const char *want)
{
	struct img_manifest base, layer;
	img_manifest_init(&base);
	img_manifest_init(&layer);
	build(&base, base_spec);
	build(&layer, layer_spec);
	struct sk_error err = {0};
	assert_int_equal(img_manifest_check(&layer, 1, NULL, &err), 0);
	int r = img_manifest_apply(&base, &layer, &err);
	if (r < 0)
		print_error("apply: %s\n", err.msg);
	assert_int_equal(r, 0);
	assert_int_equal(img_manifest_check(&base, 0, NULL, &err), 0);
	char got[1024];
	describe(&base, got, sizeof(got));
	if (strcmp(got, want) != 0)
		print_error("got  %s\nwant %s\n", got, want);
	assert_string_equal(got, want);
	img_manifest_free(&base);
	img_manifest_free(&layer);
}

static void test_apply(void **state)
{
	(void)state;
	const char *base[] = {"/", "d",    "/a", "d",  "/a/b", "f",      "/a/c", "d", "/a/c/d",
	                      "f", "/a-b", "f",  "/e", "f",    "/a/c/e", "l",    NULL};
	/* A whiteout of a directory removes its subtree, not its neighbours ("/a-b"). */
	apply_case(base, (const char *[]){"/a", "w", NULL}, "/:d /a-b:f /e:f");
	/* An opaque directory keeps itself, hides the lower's children, keeps its own. */
	apply_case(base, (const char *[]){"/a", "o", "/a/new", "f", NULL},
	           "/:d /a:d /a-b:f /a/new:f /e:f");
	/* A directory replaced by a file loses its children. */
	apply_case(base, (const char *[]){"/a/c", "f", NULL}, "/:d /a:d /a-b:f /a/b:f /a/c:f /e:f");
	/* A file replaced by a directory; missing ancestors made. */
	apply_case(base, (const char *[]){"/e", "d", "/e/f", "f", "/x/y/z", "f", NULL},
	           "/:d /a:d /a-b:f /a/b:f /a/c:d /a/c/d:f /a/c/e:l /e:d /e/f:f /x:d /x/y:d "
	           "/x/y/z:f");
	/* A whiteout of something absent changes nothing; plain additions merge in order. */
	apply_case(base, (const char *[]){"/nothing", "w", "/a/c/a", "f", NULL},
	           "/:d /a:d /a-b:f /a/b:f /a/c:d /a/c/a:f /a/c/d:f /a/c/e:l /e:f");
	/* Subtrees whose order differs from their roots' ("/a" < "/a-b" but "/a-b/" < "/a/"),
	 * nested ones, and the root made opaque. */
	const char *base2[] = {"/",    "d", "/a",     "d", "/a-b", "d", "/a-b/x", "f",
	                       "/a/b", "d", "/a/b/c", "f", "/a/z", "f", NULL};
	apply_case(base2, (const char *[]){"/a", "o", "/a-b", "w", NULL}, "/:d /a:d");
	apply_case(base2, (const char *[]){"/a-b", "f", "/a/b", "o", NULL},
	           "/:d /a:d /a-b:f /a/b:d /a/z:f");
	apply_case(base2, (const char *[]){"/a", "o", "/a/b", "o", "/a/b/n", "f", NULL},
	           "/:d /a:d /a-b:d /a-b/x:f /a/b:d /a/b/n:f");
	apply_case(base2, (const char *[]){"/", "o", "/n", "f", NULL}, "/:d /n:f");
	/* Onto an empty base. */
	apply_case((const char *[]){NULL}, (const char *[]){"/q/r", "f", NULL}, "/:d /q:d /q/r:f");

	/* A layer entry under a file of the base is refused, and base is left as it was. */
	struct img_manifest b, l;
	img_manifest_init(&b);
	img_manifest_init(&l);
	build(&b, base);
	build(&l, (const char *[]){"/e/x", "f", NULL});
	struct sk_error err = {0};
	assert_int_equal(img_manifest_apply(&b, &l, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "\"/e/x\""));
	assert_int_equal(b.n, 8);
	img_manifest_free(&b);
	img_manifest_free(&l);
}

/* ---- ingest ---- */

static void write_file(int dfd, const char *name, const char *data, mode_t mode)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

/* A tree with every type, owners, suid, times in ns, xattrs and a hard link, under f->dir/src;
 * returns its fd. *have_user_xattr, *have_link_xattr: what the filesystem took. */
static int make_tree(struct fixture *f, int *ret_user_xattr, int *ret_link_xattr)
{
	char src[128];
	snprintf(src, sizeof(src), "%s/src", f->dir);
	assert_int_equal(mkdir(src, 0750), 0);
	int dfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(mkdirat(dfd, "bin", 0755), 0);
	assert_int_equal(mkdirat(dfd, "dev", 0755), 0);
	write_file(dfd, "bin/ping", "ping bytes", 04755);
	assert_int_equal(fchownat(dfd, "bin/ping", 1000, 1001, 0), 0);
	assert_int_equal(fchmodat(dfd, "bin/ping", 04755, 0), 0); /* chown cleared suid */
	assert_int_equal(linkat(dfd, "bin/ping", dfd, "bin/ping6", 0), 0);
	write_file(dfd, "empty", "", 0600);
	assert_int_equal(symlinkat("/nowhere/at/all", dfd, "bin/dangling"), 0);
	assert_int_equal(mknodat(dfd, "dev/null", S_IFCHR | 0666, makedev(1, 3)), 0);
	assert_int_equal(mkfifoat(dfd, "fifo", 0640), 0);
	char p[256];
	snprintf(p, sizeof(p), "%s/bin/ping", src);
	int have_user_xattr = setxattr(p, "user.b", "\x00\x01", 2, 0) == 0;
	if (have_user_xattr)
		assert_int_equal(setxattr(p, "user.a", "A", 1, 0), 0);
	else
		print_message("no user xattrs on %s: their ingest is not checked\n", src);
	/* trusted.* can be set on a symlink (user.* cannot): read without following it. */
	snprintf(p, sizeof(p), "%s/bin/dangling", src);
	int have_link_xattr = lsetxattr(p, "trusted.t", "T", 1, 0) == 0;
	struct timespec ts[2] = {{.tv_sec = 1, .tv_nsec = 0},
	                         {.tv_sec = 1600000000, .tv_nsec = 987654321}};
	assert_int_equal(utimensat(dfd, "bin/ping", ts, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(utimensat(dfd, "bin/dangling", ts, AT_SYMLINK_NOFOLLOW), 0);
	*ret_user_xattr = have_user_xattr;
	*ret_link_xattr = have_link_xattr;
	return dfd;
}

static void test_ingest_every_type(void **state)
{
	struct fixture *f = *state;
	int have_user_xattr, have_link_xattr;
	int dfd = make_tree(f, &have_user_xattr, &have_link_xattr);
	struct img_manifest m;
	img_manifest_init(&m);
	struct sk_error err = {0};
	int r = img_ingest_dir(&f->s, dfd, 0, NULL, &m, &err);
	if (r < 0)
		print_error("ingest: %s\n", err.msg);
	assert_int_equal(r, 0);
	char got[1024];
	describe(&m, got, sizeof(got));
	assert_string_equal(got, "/:d /bin:d /bin/dangling:l /bin/ping:f /bin/ping6:f /dev:d "
	                         "/dev/null:c /empty:f /fifo:p");
	assert_int_equal(img_manifest_find(&m, "/")->mode, 0750);
	assert_int_equal(img_manifest_find(&m, "/fifo")->type, IMG_FIFO);
	const struct img_entry *ping = img_manifest_find(&m, "/bin/ping");
	assert_int_equal(ping->mode, 04755);
	assert_int_equal(ping->uid, 1000);
	assert_int_equal(ping->gid, 1001);
	assert_int_equal(ping->size, 10);
	assert_int_equal(ping->mtime_sec, 1600000000);
	assert_int_equal(ping->mtime_nsec, 987654321);
	char want[IMG_DIGEST_HEX];
	sha256_hex("ping bytes", 10, want);
	assert_string_equal(ping->digest, want);
	assert_string_equal(img_manifest_find(&m, "/bin/ping6")->digest, want);
	assert_true(img_blob_exists(&f->s, want));
	if (have_user_xattr) {
		assert_int_equal(ping->nxattrs, 2);
		assert_string_equal(ping->xattrs[0].name, "user.a");
		assert_int_equal(ping->xattrs[1].len, 2);
		assert_memory_equal(ping->xattrs[1].value, "\x00\x01", 2);
	}
	const struct img_entry *l = img_manifest_find(&m, "/bin/dangling");
	assert_string_equal(l->target, "/nowhere/at/all");
	assert_int_equal(l->mtime_nsec, 987654321);
	if (have_link_xattr) {
		assert_int_equal(l->nxattrs, 1);
		assert_string_equal(l->xattrs[0].name, "trusted.t");
	} else {
		print_message("no trusted xattrs on symlinks here: not checked\n");
	}
	assert_int_equal(img_manifest_find(&m, "/dev/null")->rdev_minor, 3);
	sha256_hex("", 0, want);
	assert_string_equal(img_manifest_find(&m, "/empty")->digest, want);
	assert_int_equal(img_manifest_check(&m, 0, NULL, &err), 0);

	/* Limits abort the walk. */
	struct img_limits lim = img_default_limits;
	lim.max_files = 4;
	struct img_manifest m2;
	img_manifest_init(&m2);
	assert_int_equal(img_ingest_dir(&f->s, dfd, 0, &lim, &m2, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "more than 4 files"));
	lim = img_default_limits;
	lim.max_file_bytes = 5;
	assert_int_equal(img_ingest_dir(&f->s, dfd, 0, &lim, &m2, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "/bin/ping"));
	assert_int_equal(m2.n, 0);
	/* What the manifest keeps in memory is limited too (the tree's names alone, here). */
	lim = img_default_limits;
	lim.max_meta_bytes = 20;
	assert_int_equal(img_ingest_dir(&f->s, dfd, 0, &lim, &m2, &err), -SK_EINVAL_SPEC);
	assert_non_null(strstr(err.msg, "names, link targets and xattrs larger than 20 bytes"));
	assert_int_equal(m2.n, 0);
	lim.max_meta_bytes = 4096;
	assert_int_equal(img_ingest_dir(&f->s, dfd, 0, &lim, &m2, &err), 0);
	img_manifest_free(&m2);
	img_manifest_free(&m);
	close(dfd);
}

/* An upper layer made by a real overlay mount (userxattr): a deleted file becomes a whiteout, a
 * directory deleted and made again becomes opaque, overlay's own attributes are dropped. */
static void test_ingest_overlay_layer(void **state)
{
	struct fixture *f = *state;
	char lower[128], upper[128], work[128], merged[128], opts[512];
	snprintf(lower, sizeof(lower), "%s/lower", f->dir);
	snprintf(upper, sizeof(upper), "%s/upper", f->dir);
	snprintf(work, sizeof(work), "%s/work", f->dir);
	snprintf(merged, sizeof(merged), "%s/merged", f->dir);
	assert_int_equal(mkdir(lower, 0755), 0);
	assert_int_equal(mkdir(upper, 0755), 0);
	assert_int_equal(mkdir(work, 0755), 0);
	assert_int_equal(mkdir(merged, 0755), 0);
	int lfd = open(lower, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(lfd >= 0);
	assert_int_equal(mkdirat(lfd, "etc", 0755), 0);
	write_file(lfd, "etc/gone", "x", 0644);
	write_file(lfd, "etc/kept", "x", 0644);
	assert_int_equal(mkdirat(lfd, "var", 0755), 0);
	write_file(lfd, "var/old", "x", 0644);
	close(lfd);
	snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s,userxattr", lower, upper,
	         work);
	if (mount("overlay", merged, "overlay", 0, opts) < 0) {
		print_message("overlay with userxattr cannot be mounted here (%s): skipped\n",
		              strerror(errno));
		skip();
	}
	/* Changes made, then unmounted at once, before anything can fail. */
	int mfd = open(merged, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ok = mfd >= 0 && unlinkat(mfd, "etc/gone", 0) == 0 &&
	         unlinkat(mfd, "var/old", 0) == 0 && unlinkat(mfd, "var", AT_REMOVEDIR) == 0 &&
	         mkdirat(mfd, "var", 0700) == 0;
	if (ok)
		write_file(mfd, "var/new", "new", 0600);
	if (mfd >= 0)
		close(mfd);
	assert_int_equal(umount2(merged, MNT_DETACH), 0);
	assert_true(ok);

	int ufd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(ufd >= 0);
	struct img_manifest m;
	img_manifest_init(&m);
	struct sk_error err = {0};
	int r = img_ingest_dir(&f->s, ufd, IMG_INGEST_LAYER, NULL, &m, &err);
	if (r < 0)
		print_error("ingest: %s\n", err.msg);
	assert_int_equal(r, 0);
	char got[1024];
	describe(&m, got, sizeof(got));
	assert_string_equal(got, "/:d /etc:d /etc/gone:w /var:d /var/new:f");
	const struct img_entry *var = img_manifest_find(&m, "/var");
	assert_true(var->opaque);
	assert_int_equal(var->mode, 0700);
	for (size_t i = 0; i < m.n; i++)
		for (size_t k = 0; k < m.e[i].nxattrs; k++)
			assert_null(strstr(m.e[i].xattrs[k].name, "overlay"));
	assert_false(img_manifest_find(&m, "/etc")->opaque);
	/* The layer applied to the lower's manifest gives the merged view. */
	lfd = open(lower, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct img_manifest base;
	img_manifest_init(&base);
	assert_int_equal(img_ingest_dir(&f->s, lfd, 0, NULL, &base, &err), 0);
	assert_int_equal(img_manifest_apply(&base, &m, &err), 0);
	describe(&base, got, sizeof(got));
	assert_string_equal(got, "/:d /etc:d /etc/kept:f /var:d /var/new:f");
	/* Ingested without the flag, a whiteout is a device: nothing is dropped. */
	struct img_manifest plain;
	img_manifest_init(&plain);
	assert_int_equal(img_ingest_dir(&f->s, ufd, 0, NULL, &plain, &err), 0);
	assert_int_equal(img_manifest_find(&plain, "/etc/gone")->type, IMG_CHR);
	img_manifest_free(&plain);
	img_manifest_free(&base);
	img_manifest_free(&m);
	close(lfd);
	close(ufd);
}

/* ---- materialize ---- */

static void encode_equal(const struct img_manifest *a, const struct img_manifest *b)
{
	char *ja = NULL, *jb = NULL;
	size_t la = 0, lb = 0;
	struct sk_error err = {0};
	assert_int_equal(img_manifest_encode(a, &ja, &la, &err), 0);
	assert_int_equal(img_manifest_encode(b, &jb, &lb, &err), 0);
	if (la != lb || memcmp(ja, jb, la) != 0)
		print_error("differ:\n%s\n%s\n", ja, jb);
	assert_int_equal(la, lb);
	assert_memory_equal(ja, jb, la);
	free(ja);
	free(jb);
}

static ino_t ino_of(const char *dir, const char *rel)
{
	char p[512];
	snprintf(p, sizeof(p), "%s%s", dir, rel);
	struct stat st;
	assert_int_equal(lstat(p, &st), 0);
	return st.st_ino;
}

/* Ingesting the materialized tree gives back the manifest it was made from: types, owners,
 * modes with suid, times in ns, xattrs, targets, devices. Twice: the same tree, untouched. */
static void test_materialize_round_trip(void **state)
{
	struct fixture *f = *state;
	int ux, lx;
	int dfd = make_tree(f, &ux, &lx);
	struct img_manifest m, back;
	img_manifest_init(&m);
	img_manifest_init(&back);
	struct sk_error err = {0};
	assert_int_equal(img_ingest_dir(&f->s, dfd, 0, NULL, &m, &err), 0);
	close(dfd);
	char digest[IMG_DIGEST_HEX];
	assert_int_equal(img_manifest_save(&f->s, &m, digest, &err), 0);

	char path[512], path2[512];
	int r = img_materialize(&f->s, digest, path, sizeof(path), &err);
	if (r < 0)
		print_error("materialize: %s\n", err.msg);
	assert_int_equal(r, 0);
	int tfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(tfd >= 0);
	assert_int_equal(img_ingest_dir(&f->s, tfd, 0, NULL, &back, &err), 0);
	close(tfd);
	encode_equal(&m, &back);
	/* Hard links in the image share an inode too (same content and metadata). */
	assert_int_equal(ino_of(path, "/bin/ping"), ino_of(path, "/bin/ping6"));

	struct stat st1, st2;
	assert_int_equal(lstat(path, &st1), 0);
	ino_t ping = ino_of(path, "/bin/ping");
	assert_int_equal(img_materialize(&f->s, digest, path2, sizeof(path2), &err), 0);
	assert_string_equal(path, path2);
	assert_int_equal(lstat(path, &st2), 0);
	assert_int_equal(st1.st_ino, st2.st_ino);
	assert_int_equal(st1.st_ctim.tv_sec, st2.st_ctim.tv_sec);
	assert_int_equal(st1.st_ctim.tv_nsec, st2.st_ctim.tv_nsec);
	assert_int_equal(ping, ino_of(path, "/bin/ping"));
	img_manifest_free(&m);
	img_manifest_free(&back);
}

static void one_file_manifest(struct fixture *f, const char *const *names, const uint32_t *modes,
                              size_t n, char digest[IMG_DIGEST_HEX])
{
	struct sk_error err = {0};
	struct img_manifest m;
	img_manifest_init(&m);
	add(&m, "/", IMG_DIR, 0755);
	char blob[IMG_DIGEST_HEX];
	assert_int_equal(img_blob_put(&f->s, "shared bytes", 12, blob, &err), 0);
	for (size_t i = 0; i < n; i++) {
		struct img_entry e = {.path = (char *)names[i],
		                      .type = IMG_REG,
		                      .mode = modes[i],
		                      .size = 12,
		                      .mtime_sec = 1234};
		memcpy(e.digest, blob, sizeof(blob));
		assert_int_equal(img_manifest_add(&m, &e, &err), 0);
	}
	assert_int_equal(img_manifest_sort(&m, &err), 0);
	assert_int_equal(img_manifest_save(&f->s, &m, digest, &err), 0);
	img_manifest_free(&m);
}

/* Trees of two images share the inode of a file with equal content and metadata; another mode
 * is another inode with the same bytes. Once an inode is full, a new one is started. */
static void test_materialize_shared_inodes(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char d1[IMG_DIGEST_HEX], d2[IMG_DIGEST_HEX], p1[512], p2[512];
	one_file_manifest(f, (const char *[]){"/a"}, (const uint32_t[]){0644}, 1, d1);
	one_file_manifest(f, (const char *[]){"/b", "/c"}, (const uint32_t[]){0644, 0600}, 2, d2);
	assert_int_equal(img_materialize(&f->s, d1, p1, sizeof(p1), &err), 0);
	assert_int_equal(img_materialize(&f->s, d2, p2, sizeof(p2), &err), 0);
	assert_int_equal(ino_of(p1, "/a"), ino_of(p2, "/b"));
	assert_int_not_equal(ino_of(p1, "/a"), ino_of(p2, "/c"));
	char c[512];
	snprintf(c, sizeof(c), "%s/c", p2);
	struct stat st;
	assert_int_equal(stat(c, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, 12);
	assert_int_equal(st.st_mtime, 1234);

	/* At most 3 links an inode (its name under inodes/ and 2 in trees): 5 files of one key
	 * need 3 inodes. */
	char d3[IMG_DIGEST_HEX], p3[512];
	one_file_manifest(f, (const char *[]){"/1", "/2", "/3", "/4", "/5"},
	                  (const uint32_t[]){0640, 0640, 0640, 0640, 0640}, 5, d3);
	img_inode_max_links = 3;
	int r = img_materialize(&f->s, d3, p3, sizeof(p3), &err);
	img_inode_max_links = 0;
	assert_int_equal(r, 0);
	const char *names[] = {"/1", "/2", "/3", "/4", "/5"};
	int distinct = 0;
	for (int i = 0; i < 5; i++) {
		char p[512];
		snprintf(p, sizeof(p), "%s%s", p3, names[i]);
		assert_int_equal(stat(p, &st), 0);
		assert_true(st.st_nlink <= 3);
		int seen = 0;
		for (int k = 0; k < i; k++)
			seen |= ino_of(p3, names[k]) == st.st_ino;
		distinct += !seen;
	}
	assert_int_equal(distinct, 3);
}

/* A manifest (stored by hand: the encoder would refuse it) with a symlink to a directory
 * outside and a file "under" the symlink: refused, nothing written outside, nothing left. */
static void test_materialize_symlink_escape(void **state)
{
	struct fixture *f = *state;
	char outside[128], json[1024];
	snprintf(outside, sizeof(outside), "%s/outside", f->dir);
	assert_int_equal(mkdir(outside, 0755), 0);
	char blob[IMG_DIGEST_HEX], digest[IMG_DIGEST_HEX], path[512];
	struct sk_error err = {0};
	assert_int_equal(img_blob_put(&f->s, "evil", 4, blob, &err), 0);
	snprintf(json, sizeof(json),
	         "{\"version\":1,\"entries\":[{\"path\":\"/\",\"type\":\"dir\",\"mode\":493},"
	         "{\"path\":\"/a\",\"type\":\"symlink\",\"mode\":511,\"target\":\"%s\"},"
	         "{\"path\":\"/a/x\",\"type\":\"reg\",\"mode\":420,\"size\":4,\"digest\":\"%s\"}]}",
	         outside, blob);
	assert_int_equal(img_blob_put(&f->s, json, strlen(json), digest, &err), 0);
	assert_true(img_materialize(&f->s, digest, path, sizeof(path), &err) < 0);
	assert_non_null(strstr(err.msg, "\"/a/x\""));
	assert_int_equal(count_files(AT_FDCWD, outside), 0);
	assert_int_equal(count_entries(f->s.root_fd, "trees"), 0);
	char p[256];
	snprintf(p, sizeof(p), "%s/x", outside);
	assert_int_equal(access(p, F_OK), -1);
}

/* A file that cannot be written whole (here: past RLIMIT_FSIZE, in a child; ENOSPC and EDQUOT
 * go the same way) fails the build with that reason, not a bare "Input/output error", and leaves
 * no tree. */
static void test_materialize_copy_failure_says_why(void **state)
{
	struct fixture *f = *state;
	static char big[200000];
	memset(big, 'b', sizeof(big));
	struct sk_error err = {0};
	char blob[IMG_DIGEST_HEX], digest[IMG_DIGEST_HEX];
	assert_int_equal(img_blob_put(&f->s, big, sizeof(big), blob, &err), 0);
	struct img_manifest m;
	img_manifest_init(&m);
	add(&m, "/", IMG_DIR, 0755);
	struct img_entry e = {.path = "/big", .type = IMG_REG, .mode = 0644, .size = sizeof(big)};
	memcpy(e.digest, blob, sizeof(blob));
	assert_int_equal(img_manifest_add(&m, &e, &err), 0);
	assert_int_equal(img_manifest_save(&f->s, &m, digest, &err), 0);
	img_manifest_free(&m);
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = {.rlim_cur = 100000, .rlim_max = 100000};
		char path[512];
		int r = setrlimit(RLIMIT_FSIZE, &rl) < 0
		            ? -1
		            : img_materialize(&f->s, digest, path, sizeof(path), &err);
		ssize_t n = write(p[1], err.msg, strlen(err.msg));
		_exit(r == -EFBIG && n > 0 ? 0 : 1);
	}
	close(p[1]);
	char msg[1024] = "";
	ssize_t n = read(p[0], msg, sizeof(msg) - 1);
	msg[n > 0 ? n : 0] = '\0';
	close(p[0]);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		print_error("materialize: %s\n", msg);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_non_null(strstr(msg, "\"/big\""));
	assert_int_equal(count_entries(f->s.root_fd, "trees"), 0);
}

/* A blob missing half-way through the build: a clear error, no tree and no .tmp- left. */
static void test_materialize_missing_blob(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char digest[IMG_DIGEST_HEX], path[512];
	struct img_manifest m;
	img_manifest_init(&m);
	add(&m, "/", IMG_DIR, 0755);
	add(&m, "/a", IMG_DIR, 0755);
	add(&m, "/a/never-stored", IMG_REG, 0644);
	assert_int_equal(img_manifest_sort(&m, &err), 0);
	assert_int_equal(img_manifest_save(&f->s, &m, digest, &err), 0);
	int r = img_materialize(&f->s, digest, path, sizeof(path), &err);
	assert_int_equal(r, -ENOENT);
	assert_non_null(strstr(err.msg, "\"/a/never-stored\""));
	assert_non_null(strstr(err.msg, m.e[2].digest));
	assert_int_equal(count_entries(f->s.root_fd, "trees"), 0);
	assert_int_equal(r = img_materialize(&f->s, "nothex", path, sizeof(path), &err),
	                 -SK_EINVAL_SPEC);
	img_manifest_free(&m);
}

/* Two processes materialize one image at once: both succeed with the same tree. */
static void test_materialize_concurrent(void **state)
{
	struct fixture *f = *state;
	char digest[IMG_DIGEST_HEX], path[512];
	const char *names[64];
	uint32_t modes[64];
	char bufs[64][8];
	for (int i = 0; i < 64; i++) {
		snprintf(bufs[i], sizeof(bufs[i]), "/f%02d", i);
		names[i] = bufs[i];
		modes[i] = 0600 + (uint32_t)(i % 3);
	}
	one_file_manifest(f, names, modes, 64, digest);
	pid_t pids[2];
	for (int k = 0; k < 2; k++) {
		pids[k] = fork();
		assert_true(pids[k] >= 0);
		if (pids[k] == 0) {
			struct sk_error err = {0};
			char p[512];
			_exit(img_materialize(&f->s, digest, p, sizeof(p), &err) == 0 ? 0 : 1);
		}
	}
	for (int k = 0; k < 2; k++) {
		int status = 0;
		assert_int_equal(waitpid(pids[k], &status, 0), pids[k]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	struct sk_error err = {0};
	assert_int_equal(img_materialize(&f->s, digest, path, sizeof(path), &err), 0);
	char p[512];
	snprintf(p, sizeof(p), "%s/f63", path);
	assert_int_equal(access(p, F_OK), 0);
	/* One tree (and its stamp) and no .tmp- left. */
	int tfd = openat(f->s.root_fd, "trees", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fdopendir(tfd);
	struct dirent *de;
	int n = 0;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' || strncmp(de->d_name, ".tmp", 4) == 0)
			n++;
	closedir(d);
	assert_int_equal(n, 2);
}

/* The physical address of a file's first extent and whether it is shared (FIEMAP). */
static int first_extent(const char *path, uint64_t *ret_phys, int *ret_shared)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct {
		struct fiemap fm;
		struct fiemap_extent ext[1];
	} q = {.fm = {.fm_length = ~0ULL, .fm_flags = FIEMAP_FLAG_SYNC, .fm_extent_count = 1}};
	int r = ioctl(fd, FS_IOC_FIEMAP, &q);
	close(fd);
	if (r < 0 || q.fm.fm_mapped_extents < 1)
		return -1;
	*ret_phys = q.ext[0].fe_physical;
	*ret_shared = !!(q.ext[0].fe_flags & FIEMAP_EXTENT_SHARED);
	return 0;
}

/* On btrfs, inodes of one blob with different metadata share its extents (reflink). A btrfs
 * image is made on a sparse file and loop-mounted for the test, and removed after. */
static void test_materialize_reflink_btrfs(void **state)
{
	struct fixture *f = *state;
	char img[128], mnt[128], cmd[512];
	snprintf(img, sizeof(img), "%s/btrfs.img", f->dir);
	snprintf(mnt, sizeof(mnt), "%s/btrfs", f->dir);
	assert_int_equal(mkdir(mnt, 0700), 0);
	int fd = open(img, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 256 << 20), 0);
	close(fd);
	snprintf(cmd, sizeof(cmd), "mkfs.btrfs -q %s >/dev/null 2>&1 && mount -o loop %s %s", img,
	         img, mnt);
	if (system(cmd) != 0) {
		print_message("btrfs cannot be made and loop-mounted here: reflinks not checked\n");
		skip();
	}
	/* Everything on the mount is done before any assertion, then it is unmounted. */
	char root[160], p1[512], p2[512], a[600], b[600];
	snprintf(root, sizeof(root), "%s/images", mnt);
	struct img_store bs;
	struct sk_error err = {0};
	int ok = img_store_open(&bs, root, &err) == 0;
	static char data[65536];
	memset(data, 'r', sizeof(data));
	char blob[IMG_DIGEST_HEX], d1[IMG_DIGEST_HEX], d2[IMG_DIGEST_HEX];
	ok = ok && img_blob_put(&bs, data, sizeof(data), blob, &err) == 0;
	char *digests[2] = {d1, d2};
	for (int i = 0; ok && i < 2; i++) {
		struct img_manifest m;
		img_manifest_init(&m);
		struct img_entry r = {.path = "/", .type = IMG_DIR, .mode = 0755};
		struct img_entry e = {
		    .path = "/f", .type = IMG_REG, .mode = i ? 0600 : 0644, .size = sizeof(data)};
		memcpy(e.digest, blob, sizeof(blob));
		ok = img_manifest_add(&m, &r, &err) == 0 && img_manifest_add(&m, &e, &err) == 0 &&
		     img_manifest_save(&bs, &m, digests[i], &err) == 0;
		img_manifest_free(&m);
	}
	ok = ok && img_materialize(&bs, d1, p1, sizeof(p1), &err) == 0 &&
	     img_materialize(&bs, d2, p2, sizeof(p2), &err) == 0;
	uint64_t x = 1, y = 2;
	int sx = 0, sy = 0;
	struct stat st1 = {0}, st2 = {0};
	if (ok) {
		snprintf(a, sizeof(a), "%s/f", p1);
		snprintf(b, sizeof(b), "%s/f", p2);
		ok = stat(a, &st1) == 0 && stat(b, &st2) == 0 && first_extent(a, &x, &sx) == 0 &&
		     first_extent(b, &y, &sy) == 0;
	}
	if (bs.root_fd >= 0)
		img_store_close(&bs);
	int umounted = umount2(mnt, 0) == 0 || umount2(mnt, MNT_DETACH) == 0;
	if (!ok)
		print_error("btrfs: %s\n", err.msg);
	assert_true(umounted);
	assert_true(ok);
	assert_int_not_equal(st1.st_ino, st2.st_ino);
	assert_true(sx && sy);
	assert_int_equal(x, y);
}

/* A blob stored again counts as new: gc (by mtime) must not take it before the manifest that
 * is about to name it is saved and recorded. */
static void test_gc_spares_a_blob_stored_again(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char digest[IMG_DIGEST_HEX];
	assert_int_equal(img_blob_put(&f->s, "again", 5, digest, &err), 0);
	make_old(f, digest);
	assert_int_equal(img_blob_put(&f->s, "again", 5, digest, &err), 0);
	struct img_gc_stats st = {0};
	assert_int_equal(img_store_gc(&f->s, NULL, 0, 3600, &st, &err), 0);
	assert_true(img_blob_exists(&f->s, digest));
	/* Left old, it goes. */
	make_old(f, digest);
	assert_int_equal(img_store_gc(&f->s, NULL, 0, 3600, &st, &err), 0);
	assert_false(img_blob_exists(&f->s, digest));
}

static void note_dropped(const char *digest, void *ud)
{
	snprintf(ud, IMG_DIGEST_HEX, "%s", digest);
}

/* gc keeps live manifests and their blobs, held trees, young blobs; removes the rest. */
static void test_gc(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char live[IMG_DIGEST_HEX], dead[IMG_DIGEST_HEX], held[IMG_DIGEST_HEX], p[512];
	struct img_manifest m;
	/* live: /x (bytes "x"); dead: /y (bytes "y"); held: /z (bytes "z") */
	const char *which[3][2] = {{"/x", "x"}, {"/y", "y"}, {"/z", "z"}};
	char *out[3] = {live, dead, held};
	char blobs[3][IMG_DIGEST_HEX];
	for (int i = 0; i < 3; i++) {
		img_manifest_init(&m);
		add(&m, "/", IMG_DIR, 0755);
		struct img_entry e = {
		    .path = (char *)which[i][0], .type = IMG_REG, .mode = 0644, .size = 1};
		assert_int_equal(img_blob_put(&f->s, which[i][1], 1, blobs[i], &err), 0);
		memcpy(e.digest, blobs[i], IMG_DIGEST_HEX);
		assert_int_equal(img_manifest_add(&m, &e, &err), 0);
		assert_int_equal(img_manifest_save(&f->s, &m, out[i], &err), 0);
		img_manifest_free(&m);
		assert_int_equal(img_materialize(&f->s, out[i], p, sizeof(p), &err), 0);
		make_old(f, out[i]);
		make_old(f, blobs[i]);
	}
	char young[IMG_DIGEST_HEX];
	assert_int_equal(img_blob_put(&f->s, "young", 5, young, &err), 0);
	assert_int_equal(img_tree_hold(&f->s, held, "sb-1", &err), 0);
	assert_int_equal(img_tree_hold(&f->s, held, "sb-1", &err), 0);
	assert_int_equal(img_tree_hold(&f->s, held, "../x", &err), -SK_EINVAL_SPEC);

	const char *lv[] = {live};
	struct img_gc_stats st = {0};
	int r = img_store_gc(&f->s, lv, 1, 3600, &st, &err);
	if (r < 0)
		print_error("gc: %s\n", err.msg);
	assert_int_equal(r, 0);
	assert_true(img_blob_exists(&f->s, live));
	assert_true(img_blob_exists(&f->s, blobs[0]));
	assert_true(img_blob_exists(&f->s, held));
	assert_true(img_blob_exists(&f->s, blobs[2]));
	assert_true(img_blob_exists(&f->s, young));
	assert_false(img_blob_exists(&f->s, dead));
	assert_false(img_blob_exists(&f->s, blobs[1]));
	assert_int_equal(st.blobs_removed, 2);
	assert_int_equal(st.trees_removed, 1);
	assert_int_equal(st.inodes_removed, 1);
	char rel[128];
	struct stat sb;
	snprintf(rel, sizeof(rel), "trees/%s", dead);
	assert_int_equal(fstatat(f->s.root_fd, rel, &sb, 0), -1);
	snprintf(rel, sizeof(rel), "trees/%s", held);
	assert_int_equal(fstatat(f->s.root_fd, rel, &sb, 0), 0);
	/* 2 inodes left: x and z. */
	assert_int_equal(count_files(f->s.root_fd, "inodes"), 2);

	/* Released: the next gc removes the tree, its inode and (old) blobs. */
	img_tree_release(&f->s, held, "sb-1");
	assert_int_equal(img_store_gc(&f->s, lv, 1, 3600, &st, &err), 0);
	assert_int_equal(st.trees_removed, 1);
	assert_false(img_blob_exists(&f->s, held));
	assert_int_equal(count_files(f->s.root_fd, "inodes"), 1);
	assert_int_equal(count_entries(f->s.root_fd, "trees"), 2); /* live's tree and stamp */

	/* Pruning: with an impossible amount of free space asked for, every unheld tree goes;
	 * none while the disk has what is asked, none that is held. */
	assert_int_equal(img_trees_prune(&f->s, 0, NULL, NULL, &err), 0);
	assert_int_equal(img_tree_hold(&f->s, live, "sb-2", &err), 0);
	assert_int_equal(img_trees_prune(&f->s, UINT64_MAX, NULL, NULL, &err), 0);
	img_tree_release(&f->s, live, "sb-2");
	char dropped[IMG_DIGEST_HEX] = "";
	assert_int_equal(img_trees_prune(&f->s, UINT64_MAX, note_dropped, dropped, &err), 1);
	assert_string_equal(dropped, live); /* the caller is told which */
	assert_int_equal(count_files(f->s.root_fd, "inodes"), 0);
}

/* A layer's ids back from the host: owners, ACL entries and capability roots. */
static void test_ids_unmap(void **state)
{
	(void)state;
	const uint32_t base = 300000, range = 65536, nobody = 65534;
	/* ACL: user_obj, user base+1000, group outside the range, mask. */
	unsigned char acl[4 + 4 * 8] = {2, 0, 0, 0};
	const struct {
		uint16_t tag;
		uint32_t id;
	} aces[] = {{0x01, 0xffffffffu}, {0x02, base + 1000}, {0x08, 7}, {0x10, 0xffffffffu}};
	for (size_t i = 0; i < sizeof(aces) / sizeof(aces[0]); i++) {
		unsigned char *p = acl + 4 + i * 8;
		p[0] = (unsigned char)aces[i].tag;
		p[2] = 7;
		for (int b = 0; b < 4; b++)
			p[4 + b] = (unsigned char)(aces[i].id >> (8 * b));
	}
	/* v3 capabilities (cap_net_raw permitted, effective): of the sandbox's root, of an id
	 * inside, of one outside. */
	unsigned char cap[3][24];
	const uint32_t roots[] = {base, base + 5, base + range};
	for (size_t i = 0; i < 3; i++) {
		memset(cap[i], 0, sizeof(cap[i]));
		cap[i][3] = 3;
		cap[i][0] = 1;
		cap[i][5] = 0x20; /* bit 13 */
		for (int b = 0; b < 4; b++)
			cap[i][20 + b] = (unsigned char)(roots[i] >> (8 * b));
	}
	struct img_manifest m;
	img_manifest_init(&m);
	struct sk_error err = {0};
	static const char *const PATHS[] = {"/a", "/b", "/c"};
	for (size_t i = 0; i < 3; i++) {
		struct img_xattr xs[2] = {{"security.capability", cap[i], sizeof(cap[i])},
		                          {"system.posix_acl_access", acl, sizeof(acl)}};
		struct img_entry e = {.path = (char *)PATHS[i],
		                      .type = IMG_DIR,
		                      .mode = 0755,
		                      .uid = base + (uint32_t)i,
		                      .gid = i == 2 ? 12 : base + 3,
		                      .xattrs = xs,
		                      .nxattrs = 2};
		assert_int_equal(img_manifest_add(&m, &e, &err), 0);
	}
	img_manifest_ids_unmap(&m, base, range, nobody);
	const struct img_entry *a = &m.e[0], *b = &m.e[1], *c = &m.e[2];
	assert_true(a->uid == 0 && a->gid == 3 && b->uid == 1 && c->gid == nobody);
	/* The root's capability is v2 now, the other root's the id inside, the outsider's gone. */
	assert_int_equal(a->nxattrs, 2);
	assert_int_equal(a->xattrs[0].len, 20);
	assert_int_equal(a->xattrs[0].value[3], 2);
	assert_int_equal(a->xattrs[0].value[5], 0x20);
	assert_int_equal(b->xattrs[0].len, 24);
	assert_int_equal(b->xattrs[0].value[20], 5);
	assert_int_equal(b->xattrs[0].value[22], 0);
	assert_int_equal(c->nxattrs, 1);
	assert_string_equal(c->xattrs[0].name, "system.posix_acl_access");
	/* ACL: the user entry back inside, the group's outsider nobody, the others as they were. */
	const unsigned char *v = c->xattrs[0].value;
	assert_int_equal(v[4 + 8 + 4] | v[4 + 8 + 5] << 8, 1000);
	assert_int_equal(v[4 + 16 + 4] | v[4 + 16 + 5] << 8, nobody);
	assert_int_equal(v[4 + 4], 0xff);
	assert_int_equal(v[4 + 24 + 7], 0xff);
	img_manifest_free(&m);
}

/* A hold taken as gc or pruning is about to remove a tree it found unheld (a sandbox holds,
 * then finds the tree there and mounts it): the tree stays, whole. */
static struct img_store *late_store;
static int late_holds;
static void hold_late(const char *digest)
{
	struct sk_error err = {0};
	if (img_tree_hold(late_store, digest, "late", &err) == 0)
		late_holds++;
}

static void test_gc_hold_taken_during_removal(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	char digest[IMG_DIGEST_HEX], path[512], file[600];
	one_file_manifest(f, (const char *[]){"/a"}, (const uint32_t[]){0644}, 1, digest);
	assert_int_equal(img_materialize(&f->s, digest, path, sizeof(path), &err), 0);
	snprintf(file, sizeof(file), "%s/a", path);
	late_store = &f->s;
	late_holds = 0;
	img_tree_remove_hook = hold_late;
	struct img_gc_stats st = {0};
	int r = img_store_gc(&f->s, NULL, 0, 3600, &st, &err);
	img_tree_remove_hook = NULL;
	assert_int_equal(r, 0);
	assert_int_equal(late_holds, 1);
	assert_int_equal(st.trees_removed, 0);
	assert_int_equal(access(file, F_OK), 0);
	assert_int_equal(count_files(f->s.root_fd, "inodes"), 1);

	img_tree_release(&f->s, digest, "late");
	img_tree_remove_hook = hold_late;
	r = img_trees_prune(&f->s, UINT64_MAX, NULL, NULL, &err);
	img_tree_remove_hook = NULL;
	assert_int_equal(r, 0);
	assert_int_equal(late_holds, 2);
	assert_int_equal(access(file, F_OK), 0);
	/* No hold: both take it (the test can fail). */
	img_tree_release(&f->s, digest, "late");
	assert_int_equal(img_trees_prune(&f->s, UINT64_MAX, NULL, NULL, &err), 1);
	assert_int_equal(access(file, F_OK), -1);
	assert_int_equal(count_files(f->s.root_fd, "inodes"), 0);
	int n = 0;
	int tfd = openat(f->s.root_fd, "trees", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fdopendir(tfd);
	struct dirent *de;
	while ((de = readdir(d)))
		n += strncmp(de->d_name, ".tmp-", 5) == 0;
	closedir(d);
	assert_int_equal(n, 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_blob_put_read),
	    T(test_blob_writer_mismatch_and_efbig),
	    T(test_blob_write_failure_stores_nothing),
	    T(test_blob_begin_failure_closes_nothing),
	    T(test_blob_stored_again_outlives_gc),
	    T(test_digest_and_path_valid),
	    T(test_ingest_too_deep),
	    T(test_manifest_round_trip_canonical),
	    T(test_manifest_save_load),
	    T(test_manifest_sort_duplicate),
	    T(test_manifest_decode_bad),
	    T(test_manifest_limits),
	    T(test_manifest_decode_mutations),
	    T(test_layer_with_root_saves),
	    T(test_apply),
	    T(test_ids_unmap),
	    T(test_ingest_every_type),
	    T(test_ingest_overlay_layer),
	    T(test_materialize_round_trip),
	    T(test_materialize_shared_inodes),
	    T(test_materialize_symlink_escape),
	    T(test_materialize_missing_blob),
	    T(test_materialize_copy_failure_says_why),
	    T(test_materialize_concurrent),
	    T(test_materialize_reflink_btrfs),
	    T(test_gc_spares_a_blob_stored_again),
	    T(test_gc),
	    T(test_gc_hold_taken_during_removal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
