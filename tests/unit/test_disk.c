/* Unit tests for src/runtime/disk.c: the backend names, and the choices rt_disk_setup makes
 * before any btrfs is involved (tmpfs asked for, nothing to attach to, an image that can't be
 * made). Needs no root: the runtime instance is a bare struct rt. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/lib/fsutil.h"
#include "../../src/runtime/runtime.h"

static void rt_bare(struct rt *rt)
{
	memset(rt, 0, sizeof(*rt));
	snprintf(rt->instance, sizeof(rt->instance), "u1");
	rt->disk.inst_fd = rt->disk.lock_fd = -1;
}

static void data_dir(char *buf, size_t size)
{
	snprintf(buf, size, "/tmp/skiff-test-disk-XXXXXX");
	assert_non_null(mkdtemp(buf));
}

static void test_backend_parse(void **state)
{
	(void)state;
	enum rt_disk_backend b = RT_DISK_TMPFS;
	assert_int_equal(rt_disk_backend_parse("auto", &b), 0);
	assert_int_equal(b, RT_DISK_AUTO);
	assert_int_equal(rt_disk_backend_parse("btrfs", &b), 0);
	assert_int_equal(b, RT_DISK_BTRFS);
	assert_int_equal(rt_disk_backend_parse("tmpfs", &b), 0);
	assert_int_equal(b, RT_DISK_TMPFS);
	assert_int_equal(rt_disk_backend_parse("zfs", &b), -EINVAL);
	assert_int_equal(rt_disk_backend_parse("", &b), -EINVAL);
	assert_int_equal(b, RT_DISK_TMPFS); /* untouched on failure */
}

static void test_tmpfs_touches_nothing(void **state)
{
	(void)state;
	char data[64], p[128];
	data_dir(data, sizeof(data));
	struct rt rt;
	rt_bare(&rt);
	struct sk_error err = {0};
	assert_int_equal(rt_disk_setup(&rt, data, RT_DISK_TMPFS, 1, &err), 0);
	assert_string_equal(rt_disk_backend_name(&rt), "tmpfs");
	assert_string_equal(rt.disk.why_tmpfs, "");
	snprintf(p, sizeof(p), "%s/disk.lock", data);
	assert_int_equal(access(p, F_OK), -1);
	assert_int_equal(rmdir(data), 0);
}

static void test_attach_only_finds_nothing(void **state)
{
	(void)state;
	char data[64];
	data_dir(data, sizeof(data));
	struct rt rt;
	rt_bare(&rt);
	struct sk_error err = {0};
	/* Without make: nothing is created, nothing is reported. */
	assert_int_equal(rt_disk_setup(&rt, data, RT_DISK_AUTO, 0, &err), 0);
	assert_int_equal(rt.disk.btrfs, 0);
	assert_string_equal(rt.disk.why_tmpfs, "");
	assert_int_equal(rmdir(data), 0); /* still empty */
}

static void test_image_in_the_way(void **state)
{
	(void)state;
	char data[64], img[128];
	data_dir(data, sizeof(data));
	snprintf(img, sizeof(img), "%s/disk.img", data);
	assert_int_equal(mkdir(img, 0700), 0);
	struct rt rt;
	rt_bare(&rt);
	struct sk_error err = {0};
	/* auto: tmpfs, and why. */
	assert_int_equal(rt_disk_setup(&rt, data, RT_DISK_AUTO, 1, &err), 0);
	assert_string_equal(rt_disk_backend_name(&rt), "tmpfs");
	assert_non_null(strstr(rt.disk.why_tmpfs, "disk.img: not a file"));
	assert_int_equal(rt.disk.lock_fd, -1);
	/* btrfs: an error that says so. */
	assert_true(rt_disk_setup(&rt, data, RT_DISK_BTRFS, 1, &err) < 0);
	assert_non_null(strstr(err.msg, "btrfs disk"));
	assert_non_null(strstr(err.msg, "disk.img: not a file"));
	assert_int_equal(rt.disk.btrfs, 0);
	assert_int_equal(fs_rm_rf_at(AT_FDCWD, data), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_backend_parse),
	    cmocka_unit_test(test_tmpfs_touches_nothing),
	    cmocka_unit_test(test_attach_only_finds_nothing),
	    cmocka_unit_test(test_image_in_the_way),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
