/* Unit tests for src/runtime/idmap.c: map lines, uid range slots in a temporary run directory, and
 * the maps written for a process in a new user namespace. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/lib/fsutil.h"
#include "../../src/runtime/idmap.h"

struct run {
	char dir[256];  /* the temporary run directory */
	char uids[300]; /* dir/uids */
};

static int run_setup(void **state)
{
	struct run *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	snprintf(r->dir, sizeof(r->dir), "/tmp/skiff-unit-idmap-XXXXXX");
	assert_non_null(mkdtemp(r->dir));
	snprintf(r->uids, sizeof(r->uids), "%s/uids", r->dir);
	*state = r;
	return 0;
}

static int run_teardown(void **state)
{
	struct run *r = *state;
	int ret = fs_rm_rf_at(AT_FDCWD, r->dir);
	free(r);
	return ret;
}

/* The content of uids/<slot>, or "" when the file is missing. */
static void slot_content(struct run *r, int slot, char *buf, size_t size)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/%d", r->uids, slot);
	if (fs_read_at(AT_FDCWD, path, buf, size) < 0)
		buf[0] = '\0';
}

static int slot_exists(struct run *r, int slot)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/%d", r->uids, slot);
	return access(path, F_OK) == 0;
}

static void slot_put(struct run *r, const char *name, const char *owner)
{
	assert_int_equal(fs_mkdir_p(r->uids, 0700), 0);
	char path[400];
	snprintf(path, sizeof(path), "%s/%s", r->uids, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, owner, strlen(owner)), (ssize_t)strlen(owner));
	close(fd);
}

/* ---- map lines ---- */

static void test_format_line(void **state)
{
	(void)state;
	char buf[64];
	assert_int_equal(idmap_format_line(buf, sizeof(buf), IDMAP_BASE, IDMAP_RANGE), 18);
	assert_string_equal(buf, "0 268435456 65536\n");
	assert_int_equal(idmap_format_line(buf, sizeof(buf), 0, 1), 6);
	assert_string_equal(buf, "0 0 1\n");
	assert_int_equal(idmap_format_line(buf, sizeof(buf), 4294967294u, 1), 15);
	assert_string_equal(buf, "0 4294967294 1\n");
	/* The last slot's range. */
	uid_t last = IDMAP_BASE + (IDMAP_SLOTS - 1) * IDMAP_RANGE;
	assert_int_equal(idmap_format_line(buf, sizeof(buf), last, IDMAP_RANGE), 19);
	assert_string_equal(buf, "0 1342111744 65536\n");
	/* Exactly enough room for the line and its NUL; one byte less is an error. */
	assert_int_equal(idmap_format_line(buf, 19, IDMAP_BASE, IDMAP_RANGE), 18);
	assert_int_equal(idmap_format_line(buf, 18, IDMAP_BASE, IDMAP_RANGE), -ENOBUFS);
	assert_int_equal(idmap_format_line(buf, 1, IDMAP_BASE, IDMAP_RANGE), -ENOBUFS);
}

/* ---- slots ---- */

static void test_alloc_basic(void **state)
{
	struct run *r = *state;
	struct sk_error err = {0};
	struct idmap_slot s = {.slot = -5, .base = 1};
	/* The uids directory is made on first use, private to root. */
	assert_int_equal(idmap_slot_alloc(r->dir, "0 sb-AAA", &s, &err), 0);
	assert_true(s.slot >= 0 && s.slot < (int)IDMAP_SLOTS);
	assert_int_equal(s.base, IDMAP_BASE + (unsigned)s.slot * IDMAP_RANGE);
	struct stat st;
	assert_int_equal(stat(r->uids, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	char buf[256];
	slot_content(r, s.slot, buf, sizeof(buf));
	assert_string_equal(buf, "0 sb-AAA"); /* the slot file names its owner, nothing more */
	char path[400];
	snprintf(path, sizeof(path), "%s/%d", r->uids, s.slot);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
}

static void test_alloc_distinct(void **state)
{
	struct run *r = *state;
	struct sk_error err = {0};
	enum { N = 300 };
	struct idmap_slot s[N];
	for (int i = 0; i < N; i++) {
		char owner[64];
		snprintf(owner, sizeof(owner), "0 sb-%d", i);
		assert_int_equal(idmap_slot_alloc(r->dir, owner, &s[i], &err), 0);
	}
	for (int i = 0; i < N; i++) {
		for (int k = i + 1; k < N; k++)
			assert_int_not_equal(s[i].slot, s[k].slot);
		char owner[64], buf[256];
		snprintf(owner, sizeof(owner), "0 sb-%d", i);
		slot_content(r, s[i].slot, buf, sizeof(buf));
		assert_string_equal(buf, owner);
		assert_int_equal(s[i].base, IDMAP_BASE + (unsigned)s[i].slot * IDMAP_RANGE);
		/* Ranges never overlap and stay below IDMAP_BASE + 2^30. */
		assert_true((uint64_t)s[i].base + IDMAP_RANGE <= (uint64_t)IDMAP_BASE + (1u << 30));
	}
}

/* With every slot but one taken, that one is found; with all taken, EAGAIN. */
static void test_alloc_full(void **state)
{
	struct run *r = *state;
	struct sk_error err = {0};
	assert_int_equal(fs_mkdir_p(r->uids, 0700), 0);
	int dfd = open(r->uids, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	for (unsigned i = 0; i < IDMAP_SLOTS; i++) {
		if (i == 5000)
			continue;
		char name[16];
		snprintf(name, sizeof(name), "%u", i);
		int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, "9 sb-X", 6), 6);
		close(fd);
	}
	close(dfd);
	struct idmap_slot s = {.slot = -1};
	assert_int_equal(idmap_slot_alloc(r->dir, "0 sb-LAST", &s, &err), 0);
	assert_int_equal(s.slot, 5000);
	assert_int_equal(s.base, IDMAP_BASE + 5000u * IDMAP_RANGE);

	struct idmap_slot none = {.slot = -7, .base = 7};
	assert_int_equal(idmap_slot_alloc(r->dir, "0 sb-MORE", &none, &err), -EAGAIN);
	assert_int_equal(err.code, -EAGAIN);
	assert_string_equal(err.msg, "no free uid range: all 16384 are in use");
	assert_int_equal(none.slot, -7); /* untouched on failure */
	assert_int_equal(none.base, 7);
	/* Releasing one makes it available again. */
	assert_int_equal(idmap_slot_release(r->dir, 5000, "0 sb-LAST"), 0);
	assert_int_equal(idmap_slot_alloc(r->dir, "0 sb-MORE", &none, &err), 0);
	assert_int_equal(none.slot, 5000);
}

static void test_alloc_bad_run_dir(void **state)
{
	struct run *r = *state;
	struct sk_error err = {0};
	char file[400];
	snprintf(file, sizeof(file), "%s/file", r->dir);
	int fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	struct idmap_slot s = {.slot = -3};
	assert_int_equal(idmap_slot_alloc(file, "0 sb-A", &s, &err), -ENOTDIR);
	char want[512];
	snprintf(want, sizeof(want), "open %s/uids: %s", file, strerror(ENOTDIR));
	assert_string_equal(err.msg, want);
	assert_int_equal(s.slot, -3);
}

static void test_release(void **state)
{
	struct run *r = *state;
	struct sk_error err = {0};
	struct idmap_slot a, b;
	assert_int_equal(idmap_slot_alloc(r->dir, "0 sb-A", &a, &err), 0);
	assert_int_equal(idmap_slot_alloc(r->dir, "0 sb-AB", &b, &err), 0);

	/* A slot naming another owner is not released, even one that shares a prefix. */
	assert_int_equal(idmap_slot_release(r->dir, a.slot, "0 sb-B"), -EPERM);
	assert_int_equal(idmap_slot_release(r->dir, a.slot, "1 sb-A"), -EPERM);
	assert_int_equal(idmap_slot_release(r->dir, a.slot, "0 sb-"), -EPERM);
	assert_int_equal(idmap_slot_release(r->dir, a.slot, "0 sb-AB"), -EPERM);
	assert_int_equal(idmap_slot_release(r->dir, b.slot, "0 sb-A"), -EPERM);
	assert_int_equal(idmap_slot_release(r->dir, a.slot, ""), -EPERM);
	assert_true(slot_exists(r, a.slot));
	assert_true(slot_exists(r, b.slot));

	assert_int_equal(idmap_slot_release(r->dir, a.slot, "0 sb-A"), 0);
	assert_false(slot_exists(r, a.slot));
	assert_true(slot_exists(r, b.slot));
	/* Already gone, or no slot at all: nothing to do. */
	assert_int_equal(idmap_slot_release(r->dir, a.slot, "0 sb-A"), 0);
	assert_int_equal(idmap_slot_release(r->dir, -1, "0 sb-A"), 0);

	/* A reused slot: the old owner's late release leaves the new owner's claim alone. */
	slot_put(r, "77", "0 sb-NEW");
	assert_int_equal(idmap_slot_release(r->dir, 77, "0 sb-OLD"), -EPERM);
	char buf[256];
	slot_content(r, 77, buf, sizeof(buf));
	assert_string_equal(buf, "0 sb-NEW");
	assert_int_equal(idmap_slot_release(r->dir, 77, "0 sb-NEW"), 0);
	assert_false(slot_exists(r, 77));
}

struct gc_state {
	const char *const *alive;
	char seen[16][64];
	int nseen;
};

static int gc_alive(const char *sbid, void *ud)
{
	struct gc_state *g = ud;
	if (g->nseen < 16)
		snprintf(g->seen[g->nseen++], sizeof(g->seen[0]), "%s", sbid);
	for (const char *const *a = g->alive; *a; a++)
		if (!strcmp(*a, sbid))
			return 1;
	return 0;
}

static int seen(const struct gc_state *g, const char *sbid)
{
	int n = 0;
	for (int i = 0; i < g->nseen; i++)
		n += !strcmp(g->seen[i], sbid);
	return n;
}

static void test_gc(void **state)
{
	struct run *r = *state;
	/* A missing uids directory: nothing to collect. */
	static const char *const none_alive[] = {NULL};
	struct gc_state g = {.alive = none_alive};
	assert_int_equal(idmap_slots_gc(r->dir, "0", gc_alive, &g), 0);
	assert_int_equal(g.nseen, 0);

	slot_put(r, "1", "0 sb-dead1");
	slot_put(r, "2", "0 sb-alive");
	slot_put(r, "3", "0 sb-dead2");
	slot_put(r, "4", "1 sb-dead3");  /* another instance */
	slot_put(r, "5", "01 sb-dead4"); /* an instance whose id starts with ours */
	slot_put(r, "6", "");            /* being claimed: owner not written yet */
	slot_put(r, "7", "0");           /* no sandbox part */
	slot_put(r, "8", "0sb-dead5");
	static const char *const alive[] = {"sb-alive", NULL};
	g = (struct gc_state){.alive = alive};
	assert_int_equal(idmap_slots_gc(r->dir, "0", gc_alive, &g), 2);
	assert_false(slot_exists(r, 1));
	assert_true(slot_exists(r, 2));
	assert_false(slot_exists(r, 3));
	for (int i = 4; i <= 8; i++)
		assert_true(slot_exists(r, i));
	/* Only this instance's owners were asked about, with the sandbox id alone. */
	assert_int_equal(g.nseen, 3);
	assert_int_equal(seen(&g, "sb-dead1"), 1);
	assert_int_equal(seen(&g, "sb-alive"), 1);
	assert_int_equal(seen(&g, "sb-dead2"), 1);

	/* Instance "1" next; again nothing of instance "0" or "01". */
	g = (struct gc_state){.alive = none_alive};
	assert_int_equal(idmap_slots_gc(r->dir, "1", gc_alive, &g), 1);
	assert_false(slot_exists(r, 4));
	assert_true(slot_exists(r, 2));
	assert_true(slot_exists(r, 5));
	assert_int_equal(g.nseen, 1);
	assert_string_equal(g.seen[0], "sb-dead3");

	/* Slots allocated by idmap_slot_alloc are collected the same way. */
	struct sk_error err = {0};
	struct idmap_slot s;
	assert_int_equal(idmap_slot_alloc(r->dir, "01 sb-x", &s, &err), 0);
	g = (struct gc_state){.alive = none_alive};
	assert_int_equal(idmap_slots_gc(r->dir, "01", gc_alive, &g), 2);
	assert_false(slot_exists(r, s.slot));
	assert_false(slot_exists(r, 5));
	assert_true(slot_exists(r, 2));
	assert_true(slot_exists(r, 6));
}

/* The maps of a process in a new user namespace: root inside is the range's first uid. */
static void test_write_maps(void **state)
{
	(void)state;
	int go[2], done[2];
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	assert_int_equal(pipe2(done, O_CLOEXEC), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		char c = unshare(CLONE_NEWUSER) == 0 ? 'u' : 'e';
		if (write(done[1], &c, 1) != 1 || c != 'u')
			_exit(2);
		if (read(go[0], &c, 1) != 1)
			_exit(3);
		/* Mapped: uid 0 exists in here now, so we can become it. */
		if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
			_exit(4);
		c = getuid() == 0 && getgid() == 0 ? 'r' : 'x';
		if (write(done[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(5);
		_exit(0);
	}
	char c = 0;
	assert_int_equal(read(done[0], &c, 1), 1);
	if (c != 'u') {
		waitpid(child, NULL, 0);
		skip(); /* user namespaces are not available here */
	}
	struct sk_error err = {0};
	uid_t base = IDMAP_BASE + 3 * IDMAP_RANGE;
	assert_int_equal(idmap_write_maps(child, base, IDMAP_RANGE, &err), 0);
	char path[64], buf[128];
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)child);
	assert_true(fs_read_at(AT_FDCWD, path, buf, sizeof(buf)) > 0);
	unsigned long in = 1, out = 0, count = 0;
	assert_int_equal(sscanf(buf, "%lu %lu %lu", &in, &out, &count), 3);
	assert_int_equal(in, 0);
	assert_int_equal(out, base);
	assert_int_equal(count, IDMAP_RANGE);
	snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)child);
	assert_true(fs_read_at(AT_FDCWD, path, buf, sizeof(buf)) > 0);
	assert_int_equal(sscanf(buf, "%lu %lu %lu", &in, &out, &count), 3);
	assert_int_equal(out, base);
	/* A map is written once. */
	assert_int_equal(idmap_write_maps(child, base, IDMAP_RANGE, &err), -EPERM);
	char want[128];
	snprintf(want, sizeof(want), "write /proc/%d/uid_map: %s", (int)child, strerror(EPERM));
	assert_string_equal(err.msg, want);

	/* Root inside is the range's first uid outside. */
	assert_int_equal(write(go[1], "g", 1), 1);
	assert_int_equal(read(done[0], &c, 1), 1);
	assert_int_equal(c, 'r');
	snprintf(path, sizeof(path), "/proc/%d/status", (int)child);
	char status_text[4096];
	assert_true(fs_read_at(AT_FDCWD, path, status_text, sizeof(status_text)) > 0);
	char want_uid[128];
	snprintf(want_uid, sizeof(want_uid), "\nUid:\t%u\t%u\t%u\t%u\n", base, base, base, base);
	assert_non_null(strstr(status_text, want_uid));
	snprintf(want_uid, sizeof(want_uid), "\nGid:\t%u\t%u\t%u\t%u\n", base, base, base, base);
	assert_non_null(strstr(status_text, want_uid));
	assert_int_equal(write(go[1], "g", 1), 1);
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(go[0]);
	close(go[1]);
	close(done[0]);
	close(done[1]);

	/* A pid that is gone. */
	assert_int_equal(idmap_write_maps(child, base, IDMAP_RANGE, &err), -ENOENT);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, run_setup, run_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format_line),
	    T(test_alloc_basic),
	    T(test_alloc_distinct),
	    T(test_alloc_full),
	    T(test_alloc_bad_run_dir),
	    T(test_release),
	    T(test_gc),
	    cmocka_unit_test(test_write_maps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
