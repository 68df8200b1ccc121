/* Unit tests for src/runtime/cgroup*.c against a fake cgroup tree in a temporary directory: a
 * hand-written mountinfo and plain directories and files where the kernel would have cgroupfs.
 * Nothing here touches the host's real cgroups. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/lib/fsutil.h"
#include "../../src/runtime/cgroup.h"

#define BIT(c) (1u << (c))

struct fake {
	char root[256];      /* the temporary directory */
	char mountinfo[300]; /* root/mountinfo */
};

/* ---- helpers ---- */

static int fake_setup(void **state)
{
	struct fake *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->root, sizeof(f->root), "/tmp/skiff-unit-cgroup-XXXXXX");
	assert_non_null(mkdtemp(f->root));
	snprintf(f->mountinfo, sizeof(f->mountinfo), "%s/mountinfo", f->root);
	*state = f;
	return 0;
}

static int fake_teardown(void **state)
{
	struct fake *f = *state;
	int r = fs_rm_rf_at(AT_FDCWD, f->root);
	free(f);
	return r;
}

static void put_at(int dfd, const char *name, const char *content)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		print_error("create %s: %s\n", name, strerror(errno));
	assert_true(fd >= 0);
	size_t len = strlen(content);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	close(fd);
}

/* Create root/rel (and its parents) with content. */
static void fake_put(struct fake *f, const char *rel, const char *content)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", f->root, rel);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	assert_int_equal(fs_mkdir_p(path, 0755), 0);
	*slash = '/';
	put_at(AT_FDCWD, path, content);
}

static void fake_mkdir(struct fake *f, const char *rel)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", f->root, rel);
	assert_int_equal(fs_mkdir_p(path, 0755), 0);
}

static void fake_rmdir(struct fake *f, const char *rel)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", f->root, rel);
	assert_int_equal(rmdir(path), 0);
}

static int fake_exists(struct fake *f, const char *rel)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", f->root, rel);
	return access(path, F_OK) == 0;
}

/* The mountinfo lines: "%R" in a line stands for the fake root. */
static void fake_mountinfo(struct fake *f, const char *const *lines)
{
	FILE *out = fopen(f->mountinfo, "we");
	assert_non_null(out);
	for (const char *const *l = lines; *l; l++) {
		for (const char *p = *l; *p; p++) {
			if (p[0] == '%' && p[1] == 'R') {
				fputs(f->root, out);
				p++;
			} else {
				fputc(*p, out);
			}
		}
		fputc('\n', out);
	}
	fclose(out);
}

static void read_at(int dfd, const char *name, char *buf, size_t size)
{
	ssize_t n = fs_read_at(dfd, name, buf, size);
	if (n < 0)
		print_error("read %s: %s\n", name, strerror((int)-n));
	assert_true(n >= 0);
}

static void assert_file(int dfd, const char *name, const char *want)
{
	char buf[256];
	read_at(dfd, name, buf, sizeof(buf));
	if (strcmp(buf, want) != 0)
		print_error("%s: '%s', want '%s'\n", name, buf, want);
	assert_string_equal(buf, want);
}

/* A directory with empty files of these names; returns an fd on it. */
static int prepared_dir(struct fake *f, const char *rel, const char *const *files)
{
	fake_mkdir(f, rel);
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", f->root, rel);
	int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	for (const char *const *n = files; n && *n; n++)
		put_at(dfd, *n, "");
	return dfd;
}

static void hier_mount_is(struct fake *f, const struct cg_hier *h, const char *rel)
{
	char want[CG_PATH_BYTES];
	snprintf(want, sizeof(want), "%s/%s", f->root, rel);
	assert_string_equal(h->mount, want);
}

/* This host's hybrid layout: v1 controllers one per hierarchy, cgroup2 with only hugetlb. */
static const char *const HYBRID[] = {
    "24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
    "30 22 0:27 / %R/cg rw,relatime shared:8 - tmpfs tmpfs rw,mode=755",
    "31 30 0:28 / %R/cg/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu",
    "32 30 0:29 / %R/cg/cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpuacct",
    "33 30 0:30 / %R/cg/cpuset rw,relatime shared:11 - cgroup cgroup rw,cpuset",
    "34 30 0:31 / %R/cg/memory rw,relatime shared:12 - cgroup cgroup rw,memory",
    "35 30 0:32 / %R/cg/devices rw,relatime shared:13 - cgroup cgroup rw,devices",
    "36 30 0:33 / %R/cg/freezer rw,relatime shared:14 - cgroup cgroup rw,freezer",
    "37 30 0:34 / %R/cg/blkio rw,relatime shared:15 - cgroup cgroup rw,blkio",
    "38 30 0:35 / %R/cg/pids rw,relatime shared:16 - cgroup cgroup rw,pids",
    "39 30 0:36 / %R/cg/systemd rw,relatime shared:17 - cgroup cgroup rw,name=systemd",
    "40 30 0:37 / %R/cg/unified rw,relatime shared:18 - cgroup2 cgroup2 rw",
    NULL,
};

static void hybrid_setup(struct fake *f)
{
	fake_mountinfo(f, HYBRID);
	static const char *const dirs[] = {"cpu",     "cpuacct", "cpuset", "memory", "devices",
	                                   "freezer", "blkio",   "pids",   "systemd"};
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		char rel[64];
		snprintf(rel, sizeof(rel), "cg/%s", dirs[i]);
		fake_mkdir(f, rel);
	}
	fake_put(f, "cg/unified/cgroup.controllers", "hugetlb\n");
}

static const char *const PURE_V2[] = {
    "30 22 0:27 / %R/cg rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot",
    NULL,
};

static void pure_v2_setup(struct fake *f)
{
	fake_mountinfo(f, PURE_V2);
	fake_put(f, "cg/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
}

/* ---- layout detection ---- */

static void test_detect_hybrid(void **state)
{
	struct fake *f = *state;
	hybrid_setup(f);
	struct cg_layout l;
	struct sk_error err = {0};
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), 0);
	assert_int_equal(l.nhier, 4);
	assert_int_equal(l.where[CG_CPU], 0);
	assert_int_equal(l.where[CG_CPUACCT], 1);
	assert_int_equal(l.where[CG_MEMORY], 2);
	assert_int_equal(l.where[CG_PIDS], 3);
	hier_mount_is(f, &l.hier[0], "cg/cpu");
	hier_mount_is(f, &l.hier[1], "cg/cpuacct");
	hier_mount_is(f, &l.hier[2], "cg/memory");
	hier_mount_is(f, &l.hier[3], "cg/pids");
	for (int i = 0; i < 4; i++)
		assert_int_equal(l.hier[i].version, 1);
	assert_int_equal(l.hier[0].ctrls, BIT(CG_CPU));
	assert_int_equal(l.hier[1].ctrls, BIT(CG_CPUACCT));
	assert_int_equal(l.hier[2].ctrls, BIT(CG_MEMORY));
	assert_int_equal(l.hier[3].ctrls, BIT(CG_PIDS));
}

static void test_detect_pure_v2(void **state)
{
	struct fake *f = *state;
	pure_v2_setup(f);
	struct cg_layout l;
	struct sk_error err = {0};
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), 0);
	assert_int_equal(l.nhier, 1);
	hier_mount_is(f, &l.hier[0], "cg");
	assert_int_equal(l.hier[0].version, 2);
	assert_int_equal(l.hier[0].ctrls, BIT(CG_CPU) | BIT(CG_MEMORY) | BIT(CG_PIDS));
	assert_int_equal(l.where[CG_CPU], 0);
	assert_int_equal(l.where[CG_MEMORY], 0);
	assert_int_equal(l.where[CG_PIDS], 0);
	assert_int_equal(l.where[CG_CPUACCT], -1); /* no v2 counterpart */
}

static void test_detect_merged_v1(void **state)
{
	struct fake *f = *state;
	static const char *const lines[] = {
	    "31 30 0:28 / %R/cg/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup "
	    "rw,cpu,cpuacct",
	    "32 30 0:29 / %R/cg/cpuset rw,relatime shared:10 - cgroup cgroup rw,cpuset",
	    "34 30 0:31 / %R/cg/memory rw,relatime - cgroup cgroup rw,memory",
	    "38 30 0:35 / %R/cg/pids rw,relatime - cgroup cgroup rw,pids",
	    "40 30 0:37 / %R/cg/unified rw,relatime - cgroup2 cgroup2 rw",
	    NULL,
	};
	fake_mountinfo(f, lines);
	fake_put(f, "cg/unified/cgroup.controllers", ""); /* no controllers at all */
	struct cg_layout l;
	struct sk_error err = {0};
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), 0);
	assert_int_equal(l.nhier, 3);
	assert_int_equal(l.where[CG_CPU], 0);
	assert_int_equal(l.where[CG_CPUACCT], 0);
	assert_int_equal(l.where[CG_MEMORY], 1);
	assert_int_equal(l.where[CG_PIDS], 2);
	hier_mount_is(f, &l.hier[0], "cg/cpu,cpuacct");
	assert_int_equal(l.hier[0].ctrls, BIT(CG_CPU) | BIT(CG_CPUACCT));
	assert_int_equal(l.hier[0].version, 1);
	assert_int_equal(l.hier[1].ctrls, BIT(CG_MEMORY));
	assert_int_equal(l.hier[2].ctrls, BIT(CG_PIDS));
}

/* cgroup2 offers memory and pids, v1 keeps cpu: each controller where it is offered. */
static void test_detect_mixed_versions(void **state)
{
	struct fake *f = *state;
	static const char *const lines[] = {
	    "31 30 0:28 / %R/cg/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu",
	    "34 30 0:31 / %R/cg/memory rw - cgroup cgroup rw,memory",
	    "40 30 0:37 / %R/cg/unified rw - cgroup2 cgroup2 rw",
	    NULL,
	};
	fake_mountinfo(f, lines);
	fake_put(f, "cg/unified/cgroup.controllers", "memory pids");
	struct cg_layout l;
	struct sk_error err = {0};
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), 0);
	assert_int_equal(l.nhier, 2);
	assert_int_equal(l.where[CG_CPU], 0);
	assert_int_equal(l.where[CG_CPUACCT], 0);
	assert_int_equal(l.where[CG_MEMORY], 1);
	assert_int_equal(l.where[CG_PIDS], 1);
	assert_int_equal(l.hier[0].version, 1);
	assert_int_equal(l.hier[1].version, 2);
	hier_mount_is(f, &l.hier[1], "cg/unified");
	assert_int_equal(l.hier[1].ctrls, BIT(CG_MEMORY) | BIT(CG_PIDS));
}

/* A mount whose root is not "/" (a bind of a sub-cgroup, as in a container) is not a hierarchy. */
static void test_detect_ignores_non_root_mounts(void **state)
{
	struct fake *f = *state;
	static const char *const lines[] = {
	    "50 30 0:31 /docker/abc %R/bind/memory rw - cgroup cgroup rw,memory",
	    "51 30 0:28 /x %R/bind/cpu rw - cgroup cgroup rw,cpu,cpuacct",
	    "52 30 0:37 /sub %R/bind/v2 rw - cgroup2 cgroup2 rw",
	    "31 30 0:28 / %R/cg/cpu rw - cgroup cgroup rw,cpu,cpuacct",
	    "34 30 0:31 / %R/cg/memory rw - cgroup cgroup rw,memory",
	    "38 30 0:35 / %R/cg/pids rw - cgroup cgroup rw,pids",
	    "40 30 0:37 / %R/cg/unified rw - cgroup2 cgroup2 rw",
	    NULL,
	};
	fake_mountinfo(f, lines);
	fake_put(f, "bind/v2/cgroup.controllers", "cpu memory pids");
	fake_put(f, "cg/unified/cgroup.controllers", "hugetlb");
	struct cg_layout l;
	struct sk_error err = {0};
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), 0);
	assert_int_equal(l.nhier, 3);
	hier_mount_is(f, &l.hier[l.where[CG_CPU]], "cg/cpu");
	hier_mount_is(f, &l.hier[l.where[CG_MEMORY]], "cg/memory");
	hier_mount_is(f, &l.hier[l.where[CG_PIDS]], "cg/pids");
	for (int i = 0; i < l.nhier; i++)
		assert_int_equal(l.hier[i].version, 1);

	/* With only the bind of memory, memory is missing. */
	static const char *const only_bind[] = {
	    "50 30 0:31 /docker/abc %R/bind/memory rw - cgroup cgroup rw,memory",
	    "31 30 0:28 / %R/cg/cpu rw - cgroup cgroup rw,cpu",
	    "38 30 0:35 / %R/cg/pids rw - cgroup cgroup rw,pids",
	    NULL,
	};
	fake_mountinfo(f, only_bind);
	memset(&l, 0x5a, sizeof(l));
	struct cg_layout before = l;
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), -ENOTSUP);
	assert_string_equal(err.msg, "cgroup controller 'memory' is not available (neither "
	                             "cgroup v1 nor v2 offers it)");
	assert_memory_equal(&l, &before, sizeof(l)); /* untouched on failure */
}

static void test_detect_missing_controllers(void **state)
{
	struct fake *f = *state;
	struct cg_layout l;
	struct sk_error err = {0};

	static const char *const no_memory[] = {
	    "31 30 0:28 / %R/cg/cpu rw - cgroup cgroup rw,cpu,cpuacct",
	    "38 30 0:35 / %R/cg/pids rw - cgroup cgroup rw,pids",
	    "40 30 0:37 / %R/cg/unified rw - cgroup2 cgroup2 rw",
	    NULL,
	};
	fake_mountinfo(f, no_memory);
	fake_put(f, "cg/unified/cgroup.controllers", "hugetlb\n");
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), -ENOTSUP);
	assert_int_equal(err.code, -ENOTSUP);
	assert_non_null(strstr(err.msg, "'memory'"));

	/* "cpuset" is not "cpu"; "memory_recursiveprot" is not "memory". */
	static const char *const lookalikes[] = {
	    "31 30 0:28 / %R/cg/cpuset rw - cgroup cgroup rw,cpuset",
	    "34 30 0:31 / %R/cg/memory rw - cgroup cgroup rw,memory",
	    "38 30 0:35 / %R/cg/pids rw - cgroup cgroup rw,pids",
	    NULL,
	};
	fake_mountinfo(f, lookalikes);
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "'cpu'"));

	static const char *const no_pids[] = {
	    "31 30 0:28 / %R/cg/cpu rw - cgroup cgroup rw,cpu",
	    "34 30 0:31 / %R/cg/memory rw - cgroup cgroup rw,memory",
	    NULL,
	};
	fake_mountinfo(f, no_pids);
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "'pids'"));

	/* cgroup2 whose cgroup.controllers cannot be read offers nothing. */
	static const char *const v2_unreadable[] = {
	    "30 22 0:27 / %R/nothere rw - cgroup2 cgroup2 rw",
	    NULL,
	};
	fake_mountinfo(f, v2_unreadable);
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), -ENOTSUP);

	/* No cgroups at all; no mountinfo at all. */
	static const char *const none[] = {
	    "24 1 0:22 / /sys rw - sysfs sysfs rw",
	    "garbage line without separator",
	    "",
	    NULL,
	};
	fake_mountinfo(f, none);
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), -ENOTSUP);
	char missing[400];
	snprintf(missing, sizeof(missing), "%s/nope", f->root);
	assert_int_equal(cgroup_layout_detect(missing, &l, &err), -ENOENT);
	assert_memory_equal(err.msg, "open ", 5);
}

/* Mount points with octal escapes (space is \040); the first mount of a controller wins. */
static void test_detect_escapes_and_first_wins(void **state)
{
	struct fake *f = *state;
	static const char *const lines[] = {
	    "31 30 0:28 / %R/my\\040cg/cpu rw - cgroup cgroup rw,cpu,cpuacct",
	    "34 30 0:31 / %R/my\\040cg/memory rw - cgroup cgroup rw,memory",
	    "35 30 0:31 / %R/other/memory rw - cgroup cgroup rw,memory",
	    "40 30 0:37 / %R/my\\040cg/v2 rw - cgroup2 cgroup2 rw",
	    NULL,
	};
	fake_mountinfo(f, lines);
	fake_put(f, "my cg/v2/cgroup.controllers", "pids");
	struct cg_layout l;
	struct sk_error err = {0};
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), 0);
	assert_int_equal(l.nhier, 3);
	hier_mount_is(f, &l.hier[0], "my cg/cpu");
	hier_mount_is(f, &l.hier[1], "my cg/memory");
	hier_mount_is(f, &l.hier[2], "my cg/v2");
	assert_int_equal(l.hier[2].version, 2);
	assert_int_equal(l.where[CG_PIDS], 2);
}

/* ---- the sandbox life cycle on a fake tree ---- */

static void test_sandbox_create_no_limits_v1(void **state)
{
	struct fake *f = *state;
	hybrid_setup(f);
	struct cg_layout l;
	struct sk_error err = {0};
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), 0);
	struct cg_limits none = {0};
	assert_int_equal(cgroup_parent_ensure(&l, "t1", &none, &err), 0);
	assert_int_equal(cgroup_parent_ensure(&l, "t1", &none, &err), 0); /* idempotent */
	assert_true(fake_exists(f, "cg/cpu/skiff-t1"));
	assert_true(fake_exists(f, "cg/pids/skiff-t1"));
	assert_false(fake_exists(f, "cg/cpuset/skiff-t1"));

	struct cg_sandbox cg;
	assert_int_equal(cgroup_sandbox_create(&l, "t1", "sb-1", &none, &cg, &err), 0);
	assert_string_equal(cg.rel, "skiff-t1/sb-1");
	assert_ptr_equal(cg.layout, &l);
	for (int i = 0; i < CG_MAX_HIER; i++)
		assert_true(i < l.nhier ? cg.dirfd[i] >= 0 : cg.dirfd[i] == -1);
	assert_true(fake_exists(f, "cg/cpu/skiff-t1/sb-1"));
	assert_true(fake_exists(f, "cg/cpuacct/skiff-t1/sb-1"));
	assert_true(fake_exists(f, "cg/memory/skiff-t1/sb-1"));
	assert_true(fake_exists(f, "cg/pids/skiff-t1/sb-1"));
	/* The same name again: EEXIST, and the first one's cgroups are left alone. */
	struct cg_sandbox cg2;
	assert_int_equal(cgroup_sandbox_create(&l, "t1", "sb-1", &none, &cg2, &err), -EEXIST);
	for (int i = 0; i < CG_MAX_HIER; i++)
		assert_int_equal(cg2.dirfd[i], -1);
	assert_true(fake_exists(f, "cg/cpu/skiff-t1/sb-1"));

	/* Usage from the files the kernel would fill. */
	put_at(cg.dirfd[l.where[CG_CPUACCT]], "cpuacct.usage", "123456789\n");
	int mfd = cg.dirfd[l.where[CG_MEMORY]];
	put_at(mfd, "memory.usage_in_bytes", "1048576\n");
	put_at(mfd, "memory.max_usage_in_bytes", "2097152\n");
	put_at(mfd, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
	struct cg_usage u;
	memset(&u, 0xff, sizeof(u));
	assert_int_equal(cgroup_sandbox_usage(&cg, &u), 0);
	assert_int_equal(u.cpu_ns, 123456789);
	assert_int_equal(u.memory_bytes, 1048576);
	assert_int_equal(u.memory_peak_bytes, 2097152);
	assert_int_equal(u.oom_kills, 2);

	/* Attach writes the pid to every hierarchy's cgroup.procs. */
	assert_int_equal(cgroup_sandbox_attach(&cg, 4242, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "move pid 4242 into cgroup"));
	for (int i = 0; i < l.nhier; i++)
		put_at(cg.dirfd[i], "cgroup.procs", "");
	assert_int_equal(cgroup_sandbox_attach(&cg, 4242, &err), 0);
	for (int i = 0; i < l.nhier; i++)
		assert_file(cg.dirfd[i], "cgroup.procs", "4242");

	/* Listing: each name once, whatever the number of hierarchies; files are not sandboxes. */
	put_at(cg.dirfd[0], "../not-a-cgroup", "");
	fake_mkdir(f, "cg/memory/skiff-t1/sb-2");
	fake_mkdir(f, "cg/memory/skiff-t1/.hidden");
	char **names = NULL;
	int n = cgroup_instance_list(&l, "t1", &names);
	assert_int_equal(n, 2);
	int seen1 = 0, seen2 = 0;
	for (int i = 0; i < n; i++) {
		seen1 += !strcmp(names[i], "sb-1");
		seen2 += !strcmp(names[i], "sb-2");
		free(names[i]);
	}
	assert_null(names[n]);
	free(names);
	assert_int_equal(seen1, 1);
	assert_int_equal(seen2, 1);
	assert_int_equal(cgroup_instance_list(&l, "zz", &names), 0);
	assert_non_null(names);
	assert_null(names[0]);
	free(names);

	/* Open finds the existing cgroups. */
	struct cg_sandbox again;
	assert_int_equal(cgroup_sandbox_open(&l, "t1", "sb-1", &again), 0);
	for (int i = 0; i < l.nhier; i++)
		assert_true(again.dirfd[i] >= 0);
	cgroup_sandbox_close(&again);
	for (int i = 0; i < CG_MAX_HIER; i++)
		assert_int_equal(again.dirfd[i], -1);
	assert_int_equal(cgroup_sandbox_open(&l, "t1", "sb-9", &again), -ENOENT);
	assert_int_equal(cgroup_sandbox_open(&l, "t1", "sb-2", &again), 0);
	assert_true(again.dirfd[l.where[CG_MEMORY]] >= 0);
	assert_int_equal(again.dirfd[l.where[CG_CPU]], -1);
	cgroup_sandbox_close(&again);

	/* Destroy: a cgroup that is not empty (here: files) is an error, fds are closed anyway. */
	assert_int_equal(cgroup_sandbox_destroy(&cg, 0, &err), -ENOTEMPTY);
	assert_non_null(strstr(err.msg, "remove cgroup"));
	for (int i = 0; i < CG_MAX_HIER; i++)
		assert_int_equal(cg.dirfd[i], -1);
	static const char *const files[] = {
	    "cpu/skiff-t1/sb-1/cgroup.procs",
	    "cpuacct/skiff-t1/sb-1/cgroup.procs",
	    "cpuacct/skiff-t1/sb-1/cpuacct.usage",
	    "memory/skiff-t1/sb-1/cgroup.procs",
	    "memory/skiff-t1/sb-1/memory.usage_in_bytes",
	    "memory/skiff-t1/sb-1/memory.max_usage_in_bytes",
	    "memory/skiff-t1/sb-1/memory.oom_control",
	    "pids/skiff-t1/sb-1/cgroup.procs",
	    "cpu/skiff-t1/not-a-cgroup",
	};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char path[1024];
		snprintf(path, sizeof(path), "%s/cg/%s", f->root, files[i]);
		assert_int_equal(unlink(path), 0);
	}
	assert_int_equal(cgroup_sandbox_open(&l, "t1", "sb-1", &cg), 0);
	assert_int_equal(cgroup_sandbox_destroy(&cg, 0, &err), 0);
	assert_false(fake_exists(f, "cg/cpu/skiff-t1/sb-1"));
	assert_false(fake_exists(f, "cg/memory/skiff-t1/sb-1"));
	/* The parent goes only where it is empty. */
	assert_int_equal(cgroup_parent_remove(&l, "t1"), -ENOTEMPTY);
	assert_true(fake_exists(f, "cg/memory/skiff-t1"));
	assert_false(fake_exists(f, "cg/cpu/skiff-t1"));
	fake_rmdir(f, "cg/memory/skiff-t1/sb-2");
	fake_rmdir(f, "cg/memory/skiff-t1/.hidden");
	assert_int_equal(cgroup_parent_remove(&l, "t1"), 0);
	assert_false(fake_exists(f, "cg/memory/skiff-t1"));
}

static void test_sandbox_create_limits_fail_cleans_up(void **state)
{
	struct fake *f = *state;
	hybrid_setup(f);
	struct cg_layout l;
	struct sk_error err = {0};
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), 0);
	struct cg_limits none = {0};
	assert_int_equal(cgroup_parent_ensure(&l, "t2", &none, &err), 0);

	/* Only pids is limited: the cpu, cpuacct and memory cgroups are made, then pids.max is
	 * missing on the fake tree, and everything made so far is removed again. */
	struct cg_limits lim = {.pids = 64};
	struct cg_sandbox cg;
	assert_int_equal(cgroup_sandbox_create(&l, "t2", "sb-x", &lim, &cg, &err), -ENOENT);
	char want[1024];
	snprintf(want, sizeof(want), "cgroup %s/cg/pids/skiff-t2/sb-x: write 64 to pids.max: %s",
	         f->root, strerror(ENOENT));
	assert_string_equal(err.msg, want);
	for (int i = 0; i < CG_MAX_HIER; i++)
		assert_int_equal(cg.dirfd[i], -1);
	assert_false(fake_exists(f, "cg/cpu/skiff-t2/sb-x"));
	assert_false(fake_exists(f, "cg/cpuacct/skiff-t2/sb-x"));
	assert_false(fake_exists(f, "cg/memory/skiff-t2/sb-x"));
	assert_false(fake_exists(f, "cg/pids/skiff-t2/sb-x"));

	/* Without the parent, mkdir fails first. */
	assert_int_equal(cgroup_sandbox_create(&l, "nope", "sb-x", &none, &cg, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "create cgroup"));
	/* A NULL error object: still a failure (the code itself is carried by err). */
	assert_true(cgroup_sandbox_create(&l, "nope", "sb-x", &none, &cg, NULL) < 0);
	for (int i = 0; i < CG_MAX_HIER; i++)
		assert_int_equal(cg.dirfd[i], -1);
}

static void test_parent_ensure_v2(void **state)
{
	struct fake *f = *state;
	pure_v2_setup(f);
	struct cg_layout l;
	struct sk_error err = {0};
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), 0);
	struct cg_limits agg = {.cpu = 4, .memory_bytes = 1 << 30, .pids = 1000};

	/* The root's subtree_control is missing. */
	assert_int_equal(cgroup_parent_ensure(&l, "t3", &agg, &err), -ENOENT);
	assert_memory_equal(err.msg, "cgroup ", 7);
	assert_non_null(strstr(err.msg, "enable controllers (+cpu +memory +pids)"));

	/* The root enables controllers; the new skiff-t3 has no files on a fake tree, so the
	 * parent is removed again. */
	fake_put(f, "cg/cgroup.subtree_control", "");
	assert_int_equal(cgroup_parent_ensure(&l, "t3", &agg, &err), -ENOENT);
	char want[1024];
	snprintf(want, sizeof(want), "cgroup %s/cg/skiff-t3: enable controllers", f->root);
	assert_memory_equal(err.msg, want, strlen(want));
	assert_false(fake_exists(f, "cg/skiff-t3"));
	char path[1024];
	snprintf(path, sizeof(path), "%s/cg", f->root);
	int root = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(root >= 0);
	assert_file(root, "cgroup.subtree_control", "+cpu +memory +pids");

	/* An existing parent is kept as it is: no limits written again. */
	fake_put(f, "cg/skiff-t3/marker", "");
	assert_int_equal(cgroup_parent_ensure(&l, "t3", &agg, &err), 0);
	assert_true(fake_exists(f, "cg/skiff-t3/marker"));
	assert_false(fake_exists(f, "cg/skiff-t3/cpu.max"));
	assert_false(fake_exists(f, "cg/skiff-t3/memory.oom.group"));

	/* But memory.oom.group, which older versions set there, goes off: with it on the parent,
	 * an OOM under the instance's limit kills every sandbox of the instance. */
	fake_put(f, "cg/skiff-t3/memory.oom.group", "1");
	assert_int_equal(cgroup_parent_ensure(&l, "t3", &agg, &err), 0);
	snprintf(path, sizeof(path), "%s/cg/skiff-t3", f->root);
	int parent = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(parent >= 0);
	assert_file(parent, "memory.oom.group", "0");
	close(parent);
	close(root);
}

/* cgroup_sandbox_kill SIGKILLs every pid listed in cgroup.procs. */
static void test_sandbox_kill(void **state)
{
	struct fake *f = *state;
	pure_v2_setup(f);
	struct cg_layout l;
	struct sk_error err = {0};
	assert_int_equal(cgroup_layout_detect(f->mountinfo, &l, &err), 0);
	fake_mkdir(f, "cg/skiff-t4");
	struct cg_limits none = {0};
	struct cg_sandbox cg;
	assert_int_equal(cgroup_sandbox_create(&l, "t4", "sb-k", &none, &cg, &err), 0);

	pid_t kids[2];
	for (int i = 0; i < 2; i++) {
		kids[i] = fork();
		assert_true(kids[i] >= 0);
		if (kids[i] == 0) {
			for (;;)
				pause();
		}
	}
	char procs[64];
	snprintf(procs, sizeof(procs), "%d\n%d\n", (int)kids[0], (int)kids[1]);
	put_at(cg.dirfd[0], "cgroup.procs", procs);
	assert_int_equal(cgroup_sandbox_kill(&cg), 2);
	for (int i = 0; i < 2; i++) {
		int status;
		assert_int_equal(waitpid(kids[i], &status, 0), kids[i]);
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGKILL);
	}
	/* An empty cgroup.procs: nothing left. */
	put_at(cg.dirfd[0], "cgroup.procs", "");
	assert_int_equal(cgroup_sandbox_kill(&cg), 0);

	/* v2 OOM notification: memory.events with POLLPRI. */
	int fd = -1;
	short events = 0;
	assert_int_equal(cgroup_sandbox_oom_fd(&cg, &fd, &events, &err), -ENOENT);
	assert_int_equal(fd, -1);
	put_at(cg.dirfd[0], "memory.events", "oom_kill 0\n");
	assert_int_equal(cgroup_sandbox_oom_fd(&cg, &fd, &events, &err), 0);
	assert_true(fd >= 0);
	assert_int_equal(events, POLLPRI);
	close(fd);
	cgroup_sandbox_close(&cg);
}

/* ---- limits, usage and controllers on one prepared directory ---- */

static const char *const V1_FILES[] = {
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "memory.limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.swappiness",
    "pids.max",
    NULL,
};

static const unsigned ALL_V1 = BIT(CG_CPU) | BIT(CG_CPUACCT) | BIT(CG_MEMORY) | BIT(CG_PIDS);

static void test_v1_limits_apply(void **state)
{
	struct fake *f = *state;
	int dfd = prepared_dir(f, "v1", V1_FILES);
	struct sk_error err = {0};
	struct cg_limits lim = {.cpu = 0.5, .memory_bytes = 64ull << 20, .pids = 100};
	assert_int_equal(cgroup_v1_limits_apply(dfd, ALL_V1, &lim, &err), 0);
	assert_file(dfd, "cpu.cfs_period_us", "100000");
	assert_file(dfd, "cpu.cfs_quota_us", "50000");
	assert_file(dfd, "memory.limit_in_bytes", "67108864");
	assert_file(dfd, "memory.memsw.limit_in_bytes", "67108864");
	assert_file(dfd, "memory.swappiness", ""); /* swap accounting present: not needed */
	assert_file(dfd, "pids.max", "100");
	close(dfd);

	/* More than one core, and large memory. */
	dfd = prepared_dir(f, "v1b", V1_FILES);
	lim = (struct cg_limits){.cpu = 2.5, .memory_bytes = 5ull << 30, .pids = 4194304};
	assert_int_equal(cgroup_v1_limits_apply(dfd, ALL_V1, &lim, &err), 0);
	assert_file(dfd, "cpu.cfs_quota_us", "250000");
	assert_file(dfd, "memory.limit_in_bytes", "5368709120");
	assert_file(dfd, "memory.memsw.limit_in_bytes", "5368709120");
	assert_file(dfd, "pids.max", "4194304");
	close(dfd);

	/* The kernel's minimum quota is 1 ms. */
	dfd = prepared_dir(f, "v1c", V1_FILES);
	lim = (struct cg_limits){.cpu = 0.001};
	assert_int_equal(cgroup_v1_limits_apply(dfd, ALL_V1, &lim, &err), 0);
	assert_file(dfd, "cpu.cfs_quota_us", "1000");
	assert_file(dfd, "memory.limit_in_bytes", ""); /* 0: unlimited, untouched */
	assert_file(dfd, "pids.max", "");
	close(dfd);
}

static void test_v1_limits_rounding(void **state)
{
	struct fake *f = *state;
	struct sk_error err = {0};
	/* Cores that are not exact in binary floating point still give the nearest quota. */
	static const struct {
		double cpu;
		const char *quota;
	} cases[] = {
	    {0.29, "29000"}, {0.57, "57000"}, {1.1, "110000"}, {0.01, "1000"}, {0.7, "70000"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char rel[32];
		snprintf(rel, sizeof(rel), "round%zu", i);
		int dfd = prepared_dir(f, rel, V1_FILES);
		struct cg_limits lim = {.cpu = cases[i].cpu};
		assert_int_equal(cgroup_v1_limits_apply(dfd, BIT(CG_CPU), &lim, &err), 0);
		assert_file(dfd, "cpu.cfs_quota_us", cases[i].quota);
		close(dfd);
		snprintf(rel, sizeof(rel), "round%zu-v2", i);
		static const char *const v2[] = {"cpu.max", NULL};
		dfd = prepared_dir(f, rel, v2);
		assert_int_equal(cgroup_v2_limits_apply(dfd, BIT(CG_CPU), &lim, &err), 0);
		char want[64];
		snprintf(want, sizeof(want), "%s 100000", cases[i].quota);
		assert_file(dfd, "cpu.max", want);
		close(dfd);
	}
}

static void test_v1_limits_swap_and_masks(void **state)
{
	struct fake *f = *state;
	struct sk_error err = {0};
	struct cg_limits lim = {.cpu = 1, .memory_bytes = 64ull << 20, .pids = 10};

	/* No swap accounting (memsw absent): swappiness 0 instead. */
	static const char *const no_memsw[] = {"memory.limit_in_bytes", "memory.swappiness", NULL};
	int dfd = prepared_dir(f, "nomemsw", no_memsw);
	assert_int_equal(cgroup_v1_limits_apply(dfd, BIT(CG_MEMORY), &lim, &err), 0);
	assert_file(dfd, "memory.limit_in_bytes", "67108864");
	assert_file(dfd, "memory.swappiness", "0");
	assert_int_equal(faccessat(dfd, "memory.memsw.limit_in_bytes", F_OK, 0), -1);
	close(dfd);

	/* Neither: an error naming the file. */
	static const char *const bare[] = {"memory.limit_in_bytes", NULL};
	dfd = prepared_dir(f, "bare", bare);
	assert_int_equal(cgroup_v1_limits_apply(dfd, BIT(CG_MEMORY), &lim, &err), -ENOENT);
	char want[256];
	snprintf(want, sizeof(want), "write 0 to memory.swappiness: %s", strerror(ENOENT));
	assert_string_equal(err.msg, want);
	close(dfd);

	/* Only the controllers of this hierarchy are written. */
	dfd = prepared_dir(f, "pidsonly", V1_FILES);
	assert_int_equal(cgroup_v1_limits_apply(dfd, BIT(CG_PIDS), &lim, &err), 0);
	assert_file(dfd, "pids.max", "10");
	assert_file(dfd, "cpu.cfs_quota_us", "");
	assert_file(dfd, "cpu.cfs_period_us", "");
	assert_file(dfd, "memory.limit_in_bytes", "");
	close(dfd);
	dfd = prepared_dir(f, "cpuacctonly", V1_FILES);
	assert_int_equal(cgroup_v1_limits_apply(dfd, BIT(CG_CPUACCT), &lim, &err), 0);
	assert_file(dfd, "cpu.cfs_quota_us", "");
	assert_file(dfd, "pids.max", "");
	close(dfd);

	/* Missing files are errors that name the value and the file. */
	dfd = prepared_dir(f, "empty1", NULL);
	assert_int_equal(cgroup_v1_limits_apply(dfd, ALL_V1, &lim, &err), -ENOENT);
	snprintf(want, sizeof(want), "write 100000 to cpu.cfs_period_us: %s", strerror(ENOENT));
	assert_string_equal(err.msg, want);
	assert_int_equal(cgroup_v1_limits_apply(dfd, BIT(CG_PIDS), &lim, &err), -ENOENT);
	snprintf(want, sizeof(want), "write 10 to pids.max: %s", strerror(ENOENT));
	assert_string_equal(err.msg, want);
	/* Nothing to limit: nothing written, no error. */
	struct cg_limits none = {0};
	assert_int_equal(cgroup_v1_limits_apply(dfd, ALL_V1, &none, &err), 0);
	close(dfd);
}

static const char *const V2_FILES[] = {
    "cpu.max", "memory.max", "memory.swap.max", "memory.oom.group", "pids.max", NULL,
};

static const unsigned ALL_V2 = BIT(CG_CPU) | BIT(CG_MEMORY) | BIT(CG_PIDS);

static void test_v2_limits_apply(void **state)
{
	struct fake *f = *state;
	struct sk_error err = {0};
	int dfd = prepared_dir(f, "v2", V2_FILES);
	struct cg_limits lim = {.cpu = 0.5, .memory_bytes = 64ull << 20, .pids = 100};
	assert_int_equal(cgroup_v2_limits_apply(dfd, ALL_V2, &lim, &err), 0);
	assert_file(dfd, "cpu.max", "50000 100000");
	assert_file(dfd, "memory.max", "67108864");
	assert_file(dfd, "memory.swap.max", "0");
	/* Not a limit: sandbox cgroups get it apart, the instance's parent never. */
	assert_file(dfd, "memory.oom.group", "");
	assert_file(dfd, "pids.max", "100");
	close(dfd);

	dfd = prepared_dir(f, "v2b", V2_FILES);
	lim = (struct cg_limits){.cpu = 1024, .pids = 1};
	assert_int_equal(cgroup_v2_limits_apply(dfd, ALL_V2, &lim, &err), 0);
	assert_file(dfd, "cpu.max", "102400000 100000");
	assert_file(dfd, "memory.max", "");
	assert_file(dfd, "memory.swap.max", "");
	assert_file(dfd, "pids.max", "1");
	close(dfd);

	dfd = prepared_dir(f, "v2c", V2_FILES);
	lim = (struct cg_limits){.cpu = 0.001};
	assert_int_equal(cgroup_v2_limits_apply(dfd, ALL_V2, &lim, &err), 0);
	assert_file(dfd, "cpu.max", "1000 100000");
	close(dfd);

	/* Without swap accounting memory.swap.max is absent, and memory.oom.group on old
	 * kernels: both are fine. */
	static const char *const minimal[] = {"memory.max", NULL};
	dfd = prepared_dir(f, "v2min", minimal);
	lim = (struct cg_limits){.memory_bytes = 4ull << 20};
	assert_int_equal(cgroup_v2_limits_apply(dfd, ALL_V2, &lim, &err), 0);
	assert_file(dfd, "memory.max", "4194304");
	close(dfd);

	/* A missing required file is an error naming it. */
	dfd = prepared_dir(f, "v2none", NULL);
	lim = (struct cg_limits){.cpu = 1, .memory_bytes = 1 << 20, .pids = 5};
	char want[256];
	assert_int_equal(cgroup_v2_limits_apply(dfd, ALL_V2, &lim, &err), -ENOENT);
	snprintf(want, sizeof(want), "write cpu.max: %s", strerror(ENOENT));
	assert_string_equal(err.msg, want);
	assert_int_equal(cgroup_v2_limits_apply(dfd, BIT(CG_MEMORY), &lim, &err), -ENOENT);
	snprintf(want, sizeof(want), "write memory.max: %s", strerror(ENOENT));
	assert_string_equal(err.msg, want);
	assert_int_equal(cgroup_v2_limits_apply(dfd, BIT(CG_PIDS), &lim, &err), -ENOENT);
	snprintf(want, sizeof(want), "write pids.max: %s", strerror(ENOENT));
	assert_string_equal(err.msg, want);
	/* memory.swap.max failing otherwise than ENOENT is an error: here it is a directory. */
	put_at(dfd, "memory.max", "");
	assert_int_equal(mkdirat(dfd, "memory.swap.max", 0755), 0);
	assert_int_equal(cgroup_v2_limits_apply(dfd, BIT(CG_MEMORY), &lim, &err), -EISDIR);
	snprintf(want, sizeof(want), "write memory.swap.max: %s", strerror(EISDIR));
	assert_string_equal(err.msg, want);
	close(dfd);
}

static void test_v1_usage_read(void **state)
{
	struct fake *f = *state;
	int dfd = prepared_dir(f, "u1", NULL);
	put_at(dfd, "cpuacct.usage", "987654321\n");
	put_at(dfd, "memory.usage_in_bytes", "4096\n");
	put_at(dfd, "memory.max_usage_in_bytes", "8192\n");
	put_at(dfd, "memory.oom_control", "oom_kill_disable 1\nunder_oom 0\noom_kill 5\n");
	struct cg_usage u = {0};
	cgroup_v1_usage_read(dfd, ALL_V1, &u);
	assert_int_equal(u.cpu_ns, 987654321);
	assert_int_equal(u.memory_bytes, 4096);
	assert_int_equal(u.memory_peak_bytes, 8192);
	assert_int_equal(u.oom_kills, 5);

	/* Only this hierarchy's controllers are read; the rest is left as it was. */
	struct cg_usage v = {
	    .cpu_ns = 1, .memory_bytes = 2, .memory_peak_bytes = 3, .oom_kills = 4};
	cgroup_v1_usage_read(dfd, BIT(CG_CPU) | BIT(CG_PIDS), &v);
	assert_int_equal(v.cpu_ns, 1);
	assert_int_equal(v.memory_bytes, 2);
	cgroup_v1_usage_read(dfd, BIT(CG_CPUACCT), &v);
	assert_int_equal(v.cpu_ns, 987654321);
	assert_int_equal(v.memory_bytes, 2);
	assert_int_equal(v.oom_kills, 4);
	close(dfd);

	/* Missing or unreadable files leave fields alone; an old kernel without oom_kill gives 0.
	 */
	dfd = prepared_dir(f, "u1b", NULL);
	put_at(dfd, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n");
	put_at(dfd, "memory.usage_in_bytes", "garbage");
	v = (struct cg_usage){
	    .cpu_ns = 1, .memory_bytes = 2, .memory_peak_bytes = 3, .oom_kills = 4};
	cgroup_v1_usage_read(dfd, ALL_V1, &v);
	assert_int_equal(v.cpu_ns, 1);
	assert_int_equal(v.memory_bytes, 2);
	assert_int_equal(v.memory_peak_bytes, 3);
	assert_int_equal(v.oom_kills, 0);
	close(dfd);
}

static void test_v2_usage_read(void **state)
{
	struct fake *f = *state;
	int dfd = prepared_dir(f, "u2", NULL);
	put_at(dfd, "cpu.stat",
	       "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n"
	       "nr_throttled 0\nthrottled_usec 0\n");
	put_at(dfd, "memory.current", "12288\n");
	put_at(dfd, "memory.peak", "65536\n");
	put_at(dfd, "memory.events", "low 0\nhigh 0\nmax 9\noom 3\noom_kill 2\noom_group_kill 1\n");
	struct cg_usage u = {0};
	cgroup_v2_usage_read(dfd, ALL_V2, &u);
	assert_int_equal(u.cpu_ns, 1500000);
	assert_int_equal(u.memory_bytes, 12288);
	assert_int_equal(u.memory_peak_bytes, 65536);
	assert_int_equal(u.oom_kills, 2);

	struct cg_usage v = {
	    .cpu_ns = 1, .memory_bytes = 2, .memory_peak_bytes = 3, .oom_kills = 4};
	cgroup_v2_usage_read(dfd, BIT(CG_PIDS), &v);
	assert_int_equal(v.cpu_ns, 1);
	assert_int_equal(v.memory_bytes, 2);
	assert_int_equal(v.memory_peak_bytes, 3);
	assert_int_equal(v.oom_kills, 4);
	close(dfd);

	/* No memory.peak on older kernels: the peak stays as it was. */
	dfd = prepared_dir(f, "u2b", NULL);
	put_at(dfd, "memory.current", "max\n");
	put_at(dfd, "cpu.stat", "user_usec 1\n");
	v = (struct cg_usage){.cpu_ns = 1, .memory_peak_bytes = 3};
	cgroup_v2_usage_read(dfd, ALL_V2, &v);
	assert_int_equal(v.cpu_ns, 0); /* cpu.stat without usage_usec */
	assert_true(v.memory_bytes == UINT64_MAX);
	assert_int_equal(v.memory_peak_bytes, 3);
	close(dfd);
}

static void test_v2_enable_controllers(void **state)
{
	struct fake *f = *state;
	static const char *const sc[] = {"cgroup.subtree_control", NULL};
	struct sk_error err = {0};

	int dfd = prepared_dir(f, "e1", sc);
	assert_int_equal(cgroup_v2_enable_controllers(dfd, ALL_V1, &err), 0);
	assert_file(dfd, "cgroup.subtree_control", "+cpu +memory +pids");
	close(dfd);

	dfd = prepared_dir(f, "e2", sc);
	assert_int_equal(cgroup_v2_enable_controllers(dfd, BIT(CG_MEMORY), &err), 0);
	assert_file(dfd, "cgroup.subtree_control", "+memory");
	close(dfd);

	dfd = prepared_dir(f, "e3", sc);
	assert_int_equal(cgroup_v2_enable_controllers(dfd, BIT(CG_PIDS) | BIT(CG_CPU), &err), 0);
	assert_file(dfd, "cgroup.subtree_control", "+cpu +pids");
	close(dfd);

	/* Nothing to enable (cpuacct has no v2 controller): no write at all. */
	dfd = prepared_dir(f, "e4", NULL);
	assert_int_equal(cgroup_v2_enable_controllers(dfd, BIT(CG_CPUACCT), &err), 0);
	assert_int_equal(cgroup_v2_enable_controllers(dfd, 0, &err), 0);
	assert_int_equal(cgroup_v2_enable_controllers(dfd, BIT(CG_MEMORY), &err), -ENOENT);
	char want[256];
	snprintf(want, sizeof(want), "enable controllers (+memory) in cgroup.subtree_control: %s",
	         strerror(ENOENT));
	assert_string_equal(err.msg, want);
	close(dfd);
}

static void test_v1_oom_fd(void **state)
{
	struct fake *f = *state;
	struct sk_error err = {0};
	int dfd = prepared_dir(f, "oom", NULL);
	int fd = -7;
	assert_int_equal(cgroup_v1_oom_fd(dfd, &fd, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "memory.oom_control"));
	assert_int_equal(fd, -7);
	put_at(dfd, "memory.oom_control", "oom_kill 0\n");
	assert_int_equal(cgroup_v1_oom_fd(dfd, &fd, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "register OOM notification"));
	assert_int_equal(fd, -7);

	put_at(dfd, "cgroup.event_control", "");
	assert_int_equal(cgroup_v1_oom_fd(dfd, &fd, &err), 0);
	assert_true(fd >= 0);
	/* The registration line is "<eventfd> <oom_control fd>", and the eventfd is returned. */
	char buf[64];
	read_at(dfd, "cgroup.event_control", buf, sizeof(buf));
	int efd = -1, ofd = -1;
	assert_int_equal(sscanf(buf, "%d %d", &efd, &ofd), 2);
	assert_int_equal(efd, fd);
	assert_true(ofd >= 0 && ofd != efd);
	char link[64], target[128];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	assert_string_equal(target, "anon_inode:[eventfd]");
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	close(dfd);
}

/* ---- keyed files ---- */

static void test_keyed_u64(void **state)
{
	(void)state;
	assert_true(fs_keyed_u64("usage_usec 42\n", "usage_usec") == 42);
	assert_true(fs_keyed_u64("user_usec 1\nusage_usec 42", "usage_usec") == 42);
	assert_true(fs_keyed_u64("oom_kill_disable 1\noom_kill 3\n", "oom_kill") == 3);
	assert_true(fs_keyed_u64("oom_kill_disable 1\n", "oom_kill") == 0);
	assert_true(fs_keyed_u64("xoom_kill 3\n", "oom_kill") == 0);
	assert_true(fs_keyed_u64("oom_kill\t3\n", "oom_kill") == 0);
	assert_true(fs_keyed_u64("", "oom_kill") == 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fake_setup, fake_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_detect_hybrid),
	    T(test_detect_pure_v2),
	    T(test_detect_merged_v1),
	    T(test_detect_mixed_versions),
	    T(test_detect_ignores_non_root_mounts),
	    T(test_detect_missing_controllers),
	    T(test_detect_escapes_and_first_wins),
	    T(test_sandbox_create_no_limits_v1),
	    T(test_sandbox_create_limits_fail_cleans_up),
	    T(test_parent_ensure_v2),
	    T(test_sandbox_kill),
	    T(test_v1_limits_apply),
	    T(test_v1_limits_rounding),
	    T(test_v1_limits_swap_and_masks),
	    T(test_v2_limits_apply),
	    T(test_v1_usage_read),
	    T(test_v2_usage_read),
	    T(test_v2_enable_controllers),
	    T(test_v1_oom_fd),
	    cmocka_unit_test(test_keyed_u64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
