/* Unit tests for src/lib: ids, the error object, file helpers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../src/lib/error.h"
#include "../../src/lib/fsutil.h"
#include "../../src/lib/id.h"
#include "../../src/lib/signame.h"

static const char CROCKFORD[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* ---- helpers ---- */

static char *tmpdir_new(void)
{
	char *d = strdup("/tmp/skiff-unit-lib-XXXXXX");
	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static void tmpdir_free(char *d)
{
	assert_int_equal(fs_rm_rf_at(AT_FDCWD, d), 0);
	assert_int_equal(access(d, F_OK), -1);
	free(d);
}

static void file_put(const char *dir, const char *name, const char *content)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	size_t len = strlen(content);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	close(fd);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The milliseconds encoded in an id's first 10 characters (48 bits, two leading zero bits). */
static uint64_t id_time_ms(const char *chars)
{
	uint64_t v = 0;
	for (int i = 0; i < 10; i++) {
		const char *p = strchr(CROCKFORD, chars[i]);
		assert_non_null(p);
		v = (v << 5) | (uint64_t)(p - CROCKFORD);
	}
	return v;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* ---- id ---- */

static void test_id_new_format(void **state)
{
	(void)state;
	char buf[ID_MAX_BYTES];
	memset(buf, 'x', sizeof(buf));
	uint64_t before = now_ms();
	assert_int_equal(id_new("sb-", buf, sizeof(buf)), 0);
	uint64_t after = now_ms();
	assert_int_equal(strlen(buf), 3 + ID_CHARS);
	assert_memory_equal(buf, "sb-", 3);
	for (int i = 3; i < 3 + ID_CHARS; i++)
		assert_non_null(strchr(CROCKFORD, buf[i]));
	/* The first character holds only the top 3 bits of 128. */
	assert_true(buf[3] >= '0' && buf[3] <= '7');
	assert_true(id_is_valid("sb-", buf));
	/* The time part is the creation time in milliseconds. */
	uint64_t t = id_time_ms(buf + 3);
	assert_true(t >= before && t <= after);
}

static void test_id_new_buffer_bounds(void **state)
{
	(void)state;
	char buf[64];
	/* Exactly prefix + 26 + NUL fits; one byte less does not. */
	assert_int_equal(id_new("ab-", buf, 3 + ID_CHARS), -ENOBUFS);
	assert_int_equal(id_new("ab-", buf, 3 + ID_CHARS + 1), 0);
	assert_int_equal(strlen(buf), 3 + ID_CHARS);
	/* Prefixes are at most 12 bytes. */
	assert_int_equal(id_new("123456789012", buf, sizeof(buf)), 0);
	assert_int_equal(strlen(buf), 12 + ID_CHARS);
	assert_true(id_is_valid("123456789012", buf));
	assert_int_equal(id_new("1234567890123", buf, sizeof(buf)), -ENOBUFS);
	/* An empty prefix is allowed. */
	assert_int_equal(id_new("", buf, sizeof(buf)), 0);
	assert_int_equal(strlen(buf), ID_CHARS);
	assert_true(id_is_valid("", buf));
}

static void test_id_is_valid(void **state)
{
	(void)state;
	assert_true(id_is_valid("sb-", "sb-01ARZ3NDEKTSV4RRFFQ69G5FAV"));
	assert_true(id_is_valid("sb-", "sb-00000000000000000000000000"));
	assert_true(id_is_valid("sb-", "sb-ZZZZZZZZZZZZZZZZZZZZZZZZZZ"));
	/* Wrong or missing prefix. */
	assert_false(id_is_valid("sb-", "ab-01ARZ3NDEKTSV4RRFFQ69G5FAV"));
	assert_false(id_is_valid("sb-", "01ARZ3NDEKTSV4RRFFQ69G5FAVXY"));
	assert_false(id_is_valid("sb-", "sb01ARZ3NDEKTSV4RRFFQ69G5FAVX"));
	/* 25 and 27 characters. */
	assert_false(id_is_valid("sb-", "sb-01ARZ3NDEKTSV4RRFFQ69G5FA"));
	assert_false(id_is_valid("sb-", "sb-01ARZ3NDEKTSV4RRFFQ69G5FAVV"));
	assert_false(id_is_valid("sb-", "sb-"));
	assert_false(id_is_valid("sb-", ""));
	/* Lower case and the letters Crockford leaves out (I, L, O, U). */
	assert_false(id_is_valid("sb-", "sb-01arz3ndektsv4rrffq69g5fav"));
	assert_false(id_is_valid("sb-", "sb-I1ARZ3NDEKTSV4RRFFQ69G5FAV"));
	assert_false(id_is_valid("sb-", "sb-01ARZ3NDEKTSV4RRFFQ69G5FAL"));
	assert_false(id_is_valid("sb-", "sb-01ARZ3NDEKTSVORRFFQ69G5FAV"));
	assert_false(id_is_valid("sb-", "sb-01ARZ3NDEKTSV4RRFFQ69G5FAU"));
	/* Path tricks. */
	assert_false(id_is_valid("sb-", "sb-../../../../../../etc/pass"));
	assert_false(id_is_valid("sb-", "sb-01ARZ3NDEKTSV4RRFFQ69G5F/V"));
}

static void test_id_sorts_by_time(void **state)
{
	(void)state;
	char prev[ID_MAX_BYTES], cur[ID_MAX_BYTES];
	assert_int_equal(id_new("sb-", prev, sizeof(prev)), 0);
	for (int i = 0; i < 20; i++) {
		sleep_ms(2);
		assert_int_equal(id_new("sb-", cur, sizeof(cur)), 0);
		assert_true(strcmp(prev, cur) < 0);
		assert_true(id_time_ms(prev + 3) < id_time_ms(cur + 3));
		memcpy(prev, cur, sizeof(prev));
	}
}

static void test_id_unique(void **state)
{
	(void)state;
	enum { N = 2000 };
	char(*ids)[ID_MAX_BYTES] = calloc(N, ID_MAX_BYTES);
	assert_non_null(ids);
	for (int i = 0; i < N; i++)
		assert_int_equal(id_new("x-", ids[i], ID_MAX_BYTES), 0);
	qsort(ids, N, ID_MAX_BYTES, str_cmp);
	for (int i = 1; i < N; i++)
		assert_true(strcmp(ids[i - 1], ids[i]) < 0);
	free(ids);
}

/* ---- error ---- */

static void test_error_set(void **state)
{
	(void)state;
	struct sk_error err = {0};
	assert_int_equal(sk_error_set(&err, -EINVAL, "bad %s %d", "thing", 7), -EINVAL);
	assert_int_equal(err.code, -EINVAL);
	assert_string_equal(err.msg, "bad thing 7");
	assert_false(sk_error_is_input(&err));
	assert_int_equal(sk_error_set(&err, -SK_EINVAL_SPEC, "x"), -SK_EINVAL_SPEC);
	assert_true(sk_error_is_input(&err));
	/* A NULL error object is allowed: only the code comes back. */
	assert_int_equal(sk_error_set(NULL, -ENOENT, "ignored"), -ENOENT);
	assert_int_equal(sk_error_errno(NULL, -ENOENT, "ignored"), -ENOENT);
	assert_int_equal(sk_error_prefix(NULL, "ignored"), -EINVAL);
}

static void test_error_errno(void **state)
{
	(void)state;
	struct sk_error err = {0};
	assert_int_equal(sk_error_errno(&err, -ENOENT, "open %s", "/x"), -ENOENT);
	assert_int_equal(err.code, -ENOENT);
	char want[256];
	snprintf(want, sizeof(want), "open /x: %s", strerror(ENOENT));
	assert_string_equal(err.msg, want);
}

static void test_error_prefix(void **state)
{
	(void)state;
	struct sk_error err = {0};
	sk_error_errno(&err, -EACCES, "mount overlay on %s", "/a");
	assert_int_equal(sk_error_prefix(&err, "create sandbox %s", "sb-1"), -EACCES);
	assert_int_equal(err.code, -EACCES);
	char want[256];
	snprintf(want, sizeof(want), "create sandbox sb-1: mount overlay on /a: %s",
	         strerror(EACCES));
	assert_string_equal(err.msg, want);
	assert_int_equal(sk_error_prefix(&err, "outer"), -EACCES);
	char want2[300];
	snprintf(want2, sizeof(want2), "outer: %s", want);
	assert_string_equal(err.msg, want2);
}

/* The error object sits at the very end of a heap block, so ASan sees any write past it. */
static struct sk_error *error_alloc(void)
{
	struct sk_error *err = malloc(sizeof(*err));
	assert_non_null(err);
	memset(err, 0, sizeof(*err));
	return err;
}

static void test_error_truncation(void **state)
{
	(void)state;
	char big[2001];
	memset(big, 'A', 2000);
	big[2000] = '\0';

	struct sk_error *err = error_alloc();
	sk_error_set(err, -EIO, "%s", big);
	assert_int_equal(strlen(err->msg), SK_ERROR_MSG_BYTES - 1);
	assert_int_equal(err->code, -EIO);

	/* Too long for the strerror suffix: the message is cut, still terminated. */
	sk_error_errno(err, -ENOENT, "%s", big);
	assert_int_equal(strlen(err->msg), SK_ERROR_MSG_BYTES - 1);
	assert_null(strchr(err->msg, ':'));

	/* A 2000-character prefix: the prefix is cut to leave ": ", the old text is dropped. */
	sk_error_set(err, -EIO, "inner");
	memset(big, 'P', 2000);
	assert_int_equal(sk_error_prefix(err, "%s", big), -EIO);
	assert_int_equal(strlen(err->msg), SK_ERROR_MSG_BYTES - 1);
	for (int i = 0; i < SK_ERROR_MSG_BYTES - 3; i++)
		assert_int_equal(err->msg[i], 'P');
	assert_string_equal(err->msg + SK_ERROR_MSG_BYTES - 3, ": ");

	/* A short prefix on a full message: the old text is cut at the end. */
	memset(big, 'B', 2000);
	sk_error_set(err, -EIO, "%s", big);
	sk_error_prefix(err, "ctx");
	assert_int_equal(strlen(err->msg), SK_ERROR_MSG_BYTES - 1);
	assert_memory_equal(err->msg, "ctx: BBB", 8);
	assert_int_equal(err->msg[SK_ERROR_MSG_BYTES - 2], 'B');

	/* Many prefixes in a row never grow past the buffer. */
	for (int i = 0; i < 200; i++)
		sk_error_prefix(err, "level %d", i);
	assert_int_equal(strlen(err->msg), SK_ERROR_MSG_BYTES - 1);
	assert_memory_equal(err->msg, "level 199: level 198: ", 22);
	free(err);
}

/* ---- fsutil ---- */

static void test_fs_read_write(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	char buf[64];

	/* fs_write_at never creates. */
	assert_int_equal(fs_write_str_at(dfd, "missing", "1"), -ENOENT);
	assert_int_equal(fs_read_at(dfd, "missing", buf, sizeof(buf)), -ENOENT);

	/* Like a control file: written in place, neither truncated nor appended. */
	file_put(dir, "f", "hello world");
	assert_int_equal(fs_write_str_at(dfd, "f", "HEY"), 0);
	assert_int_equal(fs_read_at(dfd, "f", buf, sizeof(buf)), 11);
	assert_string_equal(buf, "HEYlo world");
	assert_int_equal(fs_write_at(dfd, "f", "xyz", 2), 0);
	assert_int_equal(fs_read_at(dfd, "f", buf, sizeof(buf)), 11);
	assert_string_equal(buf, "xyYlo world");

	/* Reads stop at size - 1 and terminate. */
	assert_int_equal(fs_read_at(dfd, "f", buf, 4), 3);
	assert_string_equal(buf, "xyY");
	assert_int_equal(fs_read_at(dfd, "f", buf, 1), 0);
	assert_string_equal(buf, "");
	assert_int_equal(fs_read_at(dfd, "f", buf, 0), -EINVAL);

	/* Paths relative to AT_FDCWD work too. */
	char path[4096];
	snprintf(path, sizeof(path), "%s/f", dir);
	assert_int_equal(fs_read_at(AT_FDCWD, path, buf, sizeof(buf)), 11);

	close(dfd);
	tmpdir_free(dir);
}

static void test_fs_read_u64_at(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	unsigned long long v = 42;

	file_put(dir, "max", "max\n");
	assert_int_equal(fs_read_u64_at(dfd, "max", &v), 0);
	assert_true(v == UINT64_MAX);

	file_put(dir, "n", "67108864\n");
	assert_int_equal(fs_read_u64_at(dfd, "n", &v), 0);
	assert_true(v == 67108864ULL);

	file_put(dir, "zero", "0");
	assert_int_equal(fs_read_u64_at(dfd, "zero", &v), 0);
	assert_true(v == 0);

	file_put(dir, "big", "18446744073709551615\n");
	assert_int_equal(fs_read_u64_at(dfd, "big", &v), 0);
	assert_true(v == UINT64_MAX);

	/* Failures leave the output alone. */
	v = 42;
	file_put(dir, "overflow", "18446744073709551616\n");
	assert_int_equal(fs_read_u64_at(dfd, "overflow", &v), -EINVAL);
	file_put(dir, "empty", "");
	assert_int_equal(fs_read_u64_at(dfd, "empty", &v), -EINVAL);
	file_put(dir, "word", "abc\n");
	assert_int_equal(fs_read_u64_at(dfd, "word", &v), -EINVAL);
	assert_int_equal(fs_read_u64_at(dfd, "missing", &v), -ENOENT);
	assert_true(v == 42);

	close(dfd);
	tmpdir_free(dir);
}

static void test_fs_mkdir_p(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	char path[4096];
	struct stat st;
	mode_t old = umask(0);

	snprintf(path, sizeof(path), "%s/a/b/c", dir);
	assert_int_equal(fs_mkdir_p(path, 0710), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0710);
	snprintf(path, sizeof(path), "%s/a", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0710);

	/* Existing directories are fine, and so are a trailing slash and doubled slashes. */
	snprintf(path, sizeof(path), "%s/a/b/c", dir);
	assert_int_equal(fs_mkdir_p(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/a//b/d/", dir);
	assert_int_equal(fs_mkdir_p(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/a/b/d", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));

	/* A file in the way. */
	file_put(dir, "file", "x");
	snprintf(path, sizeof(path), "%s/file/sub", dir);
	assert_int_equal(fs_mkdir_p(path, 0700), -ENOTDIR);

	/* Empty and too-long paths. */
	assert_int_equal(fs_mkdir_p("", 0700), -ENAMETOOLONG);
	char *longp = malloc(5000);
	assert_non_null(longp);
	memset(longp, 'a', 4999);
	longp[0] = '/';
	longp[4999] = '\0';
	assert_int_equal(fs_mkdir_p(longp, 0700), -ENAMETOOLONG);
	free(longp);

	umask(old);
	tmpdir_free(dir);
}

static void test_fs_rm_rf_at_tree(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	char path[4096];
	snprintf(path, sizeof(path), "%s/t/a/b/c", dir);
	assert_int_equal(fs_mkdir_p(path, 0755), 0);
	file_put(dir, "t/f1", "1");
	file_put(dir, "t/a/f2", "2");
	file_put(dir, "t/a/b/c/f3", "3");
	snprintf(path, sizeof(path), "%s/t/a/empty", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	/* A directory without permissions (we are root, but its entries must still go). */
	snprintf(path, sizeof(path), "%s/t/a/b", dir);
	assert_int_equal(chmod(path, 0), 0);

	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(fs_rm_rf_at(dfd, "t"), 0);
	assert_int_equal(faccessat(dfd, "t", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	assert_int_equal(errno, ENOENT);

	/* Missing: nothing to do. A plain file: removed. */
	assert_int_equal(fs_rm_rf_at(dfd, "t"), 0);
	file_put(dir, "plain", "x");
	assert_int_equal(fs_rm_rf_at(dfd, "plain"), 0);
	assert_int_equal(faccessat(dfd, "plain", F_OK, AT_SYMLINK_NOFOLLOW), -1);

	close(dfd);
	tmpdir_free(dir);
}

static void test_fs_rm_rf_at_symlinks(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	char path[4096], target[4096];
	struct stat st;

	/* outside/file, and inside/link → outside, inside/flink → outside/file. */
	snprintf(path, sizeof(path), "%s/outside", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	file_put(dir, "outside/file", "keep me");
	snprintf(path, sizeof(path), "%s/inside/sub", dir);
	assert_int_equal(fs_mkdir_p(path, 0755), 0);
	snprintf(target, sizeof(target), "%s/outside", dir);
	snprintf(path, sizeof(path), "%s/inside/link", dir);
	assert_int_equal(symlink(target, path), 0);
	snprintf(path, sizeof(path), "%s/inside/sub/rel", dir);
	assert_int_equal(symlink("../../outside", path), 0);
	snprintf(target, sizeof(target), "%s/outside/file", dir);
	snprintf(path, sizeof(path), "%s/inside/flink", dir);
	assert_int_equal(symlink(target, path), 0);

	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(fs_rm_rf_at(dfd, "inside"), 0);
	assert_int_equal(faccessat(dfd, "inside", F_OK, AT_SYMLINK_NOFOLLOW), -1);

	snprintf(path, sizeof(path), "%s/outside/file", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 7);
	snprintf(path, sizeof(path), "%s/outside", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));

	/* A symlink given as the name itself is removed, not its target. */
	snprintf(path, sizeof(path), "%s/top", dir);
	snprintf(target, sizeof(target), "%s/outside", dir);
	assert_int_equal(symlink(target, path), 0);
	assert_int_equal(fs_rm_rf_at(dfd, "top"), 0);
	assert_int_equal(lstat(path, &st), -1);
	snprintf(path, sizeof(path), "%s/outside/file", dir);
	assert_int_equal(stat(path, &st), 0);

	close(dfd);
	tmpdir_free(dir);
}

static void test_fs_keyed_u64(void **state)
{
	(void)state;
	const char *cpu_stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
	assert_true(fs_keyed_u64(cpu_stat, "usage_usec") == 123456);
	assert_true(fs_keyed_u64(cpu_stat, "user_usec") == 100000);
	assert_true(fs_keyed_u64(cpu_stat, "system_usec") == 23456);
	assert_true(fs_keyed_u64(cpu_stat, "usec") == 0);
	assert_true(fs_keyed_u64(cpu_stat, "usage") == 0);

	/* A key that is a prefix of another key on an earlier line. */
	const char *oom = "oom_kill_disable 1\nunder_oom 0\noom_kill 7";
	assert_true(fs_keyed_u64(oom, "oom_kill") == 7);
	assert_true(fs_keyed_u64(oom, "oom_kill_disable") == 1);
	assert_true(fs_keyed_u64(oom, "under_oom") == 0);

	const char *events = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 5\n";
	assert_true(fs_keyed_u64(events, "oom_kill") == 1);
	assert_true(fs_keyed_u64(events, "oom") == 2);
	assert_true(fs_keyed_u64(events, "max") == 3);

	assert_true(fs_keyed_u64("", "x") == 0);
	assert_true(fs_keyed_u64(NULL, "x") == 0);
	assert_true(fs_keyed_u64("\n\n", "x") == 0);
	assert_true(fs_keyed_u64("big 18446744073709551615\n", "big") == UINT64_MAX);
}

static void test_signal_parse(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		int sig;
	} OK[] = {{"TERM", SIGTERM}, {"SIGTERM", SIGTERM},
	          {"term", SIGTERM}, {"sigkill", SIGKILL},
	          {"HUP", SIGHUP},   {"WINCH", SIGWINCH},
	          {"USR1", SIGUSR1}, {"SYS", SIGSYS},
	          {"1", 1},          {"9", 9},
	          {"15", 15},        {"64", 64}};
	for (size_t i = 0; i < ARRAY_SIZE(OK); i++)
		assert_int_equal(signal_parse(OK[i].s, strlen(OK[i].s)), OK[i].sig);
	static const char *const BAD[] = {"",    "0",     "65",         "100",   "-1",    "+9",
	                                  "09",  "SIG",   "SIGSIGTERM", "TERMX", " TERM", "TERM ",
	                                  "1.5", "RTMIN", "0x9",        "NOPE"};
	for (size_t i = 0; i < ARRAY_SIZE(BAD); i++)
		assert_int_equal(signal_parse(BAD[i], strlen(BAD[i])), -EINVAL);
	/* Length-delimited: bytes past len don't count, a NUL inside does. */
	assert_int_equal(signal_parse("TERMINATE", 4), SIGTERM);
	assert_int_equal(signal_parse("TE\0RM", 5), -EINVAL);
	assert_int_equal(signal_parse(NULL, 0), -EINVAL);
	assert_int_equal(signal_parse("SIGVERYLONGNAMEHERE", 19), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_id_new_format),    cmocka_unit_test(test_id_new_buffer_bounds),
	    cmocka_unit_test(test_id_is_valid),      cmocka_unit_test(test_id_sorts_by_time),
	    cmocka_unit_test(test_id_unique),        cmocka_unit_test(test_error_set),
	    cmocka_unit_test(test_error_errno),      cmocka_unit_test(test_error_prefix),
	    cmocka_unit_test(test_error_truncation), cmocka_unit_test(test_fs_read_write),
	    cmocka_unit_test(test_fs_read_u64_at),   cmocka_unit_test(test_fs_mkdir_p),
	    cmocka_unit_test(test_fs_rm_rf_at_tree), cmocka_unit_test(test_fs_rm_rf_at_symlinks),
	    cmocka_unit_test(test_fs_keyed_u64),     cmocka_unit_test(test_signal_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
