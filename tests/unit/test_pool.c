/* The pool of sandboxes made ahead (src/runtime/pool.c), against the real kernel: needs root.
 * Every sandbox is checked to run the command it was given, with the request's limits, env,
 * working directory and host name; a request the pool can't serve is made on the spot; the
 * pool refills under a stream of starts, and in two steps with other work between them (a start
 * takes the sandbox being made; one whose init dies fails); nothing is left afterwards. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/image/busybox.h"
#include "../../src/lib/fsutil.h"
#include "../../src/runtime/runtime.h"

struct fixture {
	struct rt rt;
	char rootfs[4096];
	char data[64];
	struct spec base;
	struct rt_pool pool;
};

static int setup(void **state)
{
	if (geteuid() != 0) {
		print_message("skipped: making sandboxes needs root\n");
		return -1;
	}
	struct fixture *f = calloc(1, sizeof(*f));
	struct sk_error err = {0};
	snprintf(f->data, sizeof(f->data), "/tmp/skiff-test-pool-%d", (int)getpid());
	char inst[8];
	snprintf(inst, sizeof(inst), "p%03d", (int)(getpid() % 1000));
	assert_int_equal(image_busybox_ensure(f->data, getenv(BUSYBOX_PATH_ENV), f->rootfs,
	                                      sizeof(f->rootfs), &err),
	                 0);
	if (rt_init(&f->rt, inst, NULL, &err) < 0)
		fail_msg("rt_init: %s", err.msg);
	spec_init(&f->base);
	f->base.timeout_s = 0;
	assert_int_equal(rt_pool_init(&f->pool, &f->rt, &f->base, f->rootfs, 2, &err), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	rt_pool_release(&f->pool);
	struct sk_error err = {0};
	rt_gc(&f->rt, &err);
	char inst_dir[sizeof(f->rt.inst_dir)];
	memcpy(inst_dir, f->rt.inst_dir, sizeof(inst_dir));
	assert_int_equal(rt_instance_remove_if_idle(&f->rt), 1);
	rt_release(&f->rt);
	struct stat st;
	assert_int_not_equal(stat(inst_dir, &st), 0); /* nothing left of the instance */
	spec_release(&f->base);
	fs_rm_rf_at(AT_FDCWD, f->data);
	free(f);
	return 0;
}

/* A spec that runs "sh -c script" without a timeout. */
static void script_spec(struct spec *s, const char *script)
{
	struct sk_error err = {0};
	spec_init(s);
	s->timeout_s = 0;
	char *argv[] = {"sh", "-c", (char *)script};
	assert_int_equal(spec_set_argv(s, argv, 3, &err), 0);
}

/* Start a shell script with the given limits through the pool; return its exit code. */
static int run(struct fixture *f, const char *script, uint64_t memory_mib, const char *workdir,
               const char *hostname, const char *env, int *ret_pooled, char *ret_id)
{
	struct sk_error err = {0};
	struct spec s;
	script_spec(&s, script);
	s.memory_mib = memory_mib;
	if (workdir)
		assert_int_equal(spec_set_string(&s.workdir, workdir, "workdir", &err), 0);
	if (hostname)
		assert_int_equal(spec_set_string(&s.hostname, hostname, "hostname", &err), 0);
	if (env)
		assert_int_equal(spec_set_env(&s, env, &err), 0);
	struct rt_sandbox *sb;
	if (rt_pool_start(&f->pool, &s, f->rootfs, &sb, ret_pooled, &err) < 0)
		fail_msg("start: %s", err.msg);
	if (ret_id)
		snprintf(ret_id, ID_MAX_BYTES, "%s", rt_sandbox_id(sb));
	int status = -1;
	if (rt_sandbox_wait_command(sb, &status) < 0) {
		/* init went without a word: only an OOM kill (init may be its victim) may do that.
		 */
		struct rt_result res;
		rt_sandbox_reap(sb, &res);
		assert_int_equal(res.end, RT_END_OOM);
		status = SIGKILL; /* the wait status of a SIGKILL */
	}
	if (rt_sandbox_destroy(sb, &err) < 0)
		fail_msg("destroy: %s", err.msg);
	spec_release(&s);
	/* A signal (the OOM killer's) comes back as minus its number. */
	return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

static void test_pooled_start_runs_the_request(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	assert_int_equal(rt_pool_fill(&f->pool, 10, &err), 2);
	assert_int_equal(f->pool.n, 2);
	int pooled = 0;
	/* The request's env, working directory and host name, not the pool's. */
	int code = run(f,
	               "test \"$A\" = one && test \"$(pwd)\" = /tmp && test \"$(hostname)\" = "
	               "req-host && exit 7",
	               f->base.memory_mib, "/tmp", "req-host", "A=one", &pooled, NULL);
	assert_int_equal(pooled, 1);
	assert_int_equal(code, 7);
	assert_int_equal(f->pool.n, 1);
}

static void test_pooled_start_applies_the_requests_limits(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	rt_pool_fill(&f->pool, 2, &err);
	/* The runtime applies the request's limit on the host; the command shows it by failing to
	 * hold more than it. */
	int pooled = 0;
	int code = run(f, "x=$(head -c 40000000 /dev/zero | tr '\\0' a); exit 0", 16, NULL, NULL,
	               NULL, &pooled, NULL);
	assert_int_equal(pooled, 1);
	assert_int_not_equal(code, 0); /* killed, or the shell failed: 16 MiB was applied */
	code = run(f, "x=$(head -c 4000000 /dev/zero | tr '\\0' a); exit 3", 64, NULL, NULL, NULL,
	           &pooled, NULL);
	assert_int_equal(pooled, 1);
	assert_int_equal(code, 3);
}

static void test_long_workdir_and_hostname_reach_the_command(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	rt_pool_fill(&f->pool, 2, &err);
	/* A working directory longer than a message's text, and a host name beside it. */
	char workdir[1400] = "/tmp";
	while (strlen(workdir) < 1100) {
		size_t len = strlen(workdir);
		snprintf(workdir + len, sizeof(workdir) - len, "/%s",
		         "dddddddddddddddddddddddddddddddddddddddddddddddddd");
	}
	char host[4096 + 1400];
	snprintf(host, sizeof(host), "%s%s", f->rootfs, workdir);
	assert_int_equal(fs_mkdir_p(host, 0755), 0);
	char script[1600];
	snprintf(script, sizeof(script),
	         "test \"$(pwd)\" = %s && test \"$(hostname)\" = longer-host "
	         "&& exit 5",
	         workdir);
	int pooled = 0;
	assert_int_equal(
	    run(f, script, f->base.memory_mib, workdir, "longer-host", NULL, &pooled, NULL), 5);
	assert_int_equal(pooled, 1);
}

static void test_unfit_request_made_on_the_spot(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	rt_pool_fill(&f->pool, 2, &err);
	int before = f->pool.n;
	struct spec s;
	spec_init(&s);
	s.timeout_s = 0;
	s.disk_mib = f->base.disk_mib + 1; /* another disk size: not what the pool made */
	char *argv[] = {"true"};
	assert_int_equal(spec_set_argv(&s, argv, 1, &err), 0);
	assert_false(rt_pool_fits(&f->pool, &s, f->rootfs));
	struct rt_sandbox *sb;
	int pooled = 1, status = -1;
	assert_int_equal(rt_pool_start(&f->pool, &s, f->rootfs, &sb, &pooled, &err), 0);
	assert_int_equal(pooled, 0);
	assert_int_equal(rt_sandbox_wait_command(sb, &status), 0);
	assert_int_equal(status, 0);
	assert_int_equal(rt_sandbox_destroy(sb, &err), 0);
	assert_int_equal(f->pool.n, before); /* the pool was not touched */
	spec_release(&s);
}

static void test_refill_under_a_stream_of_starts(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	rt_pool_fill(&f->pool, 2, &err);
	for (int i = 0; i < 40; i++) {
		int pooled = 0;
		char script[64];
		snprintf(script, sizeof(script), "exit %d", i % 50);
		assert_int_equal(
		    run(f, script, f->base.memory_mib, NULL, NULL, NULL, &pooled, NULL), i % 50);
		assert_int_equal(pooled, 1);
		assert_int_equal(rt_pool_fill(&f->pool, 1, &err), 1);
		assert_int_equal(f->pool.n, 2);
	}
}

/* An empty pool (the fixture is the group's: earlier tests filled it). */
static void pool_drain(struct fixture *f)
{
	struct sk_error err = {0};
	assert_int_equal(rt_pool_fill_end(&f->pool, &err), 0);
	while (f->pool.n > 0)
		assert_int_equal(rt_sandbox_destroy(f->pool.ready[--f->pool.n], &err), 0);
}

/* Wait (up to 20 s) for the sandbox being made to be done. */
static void making_wait(struct fixture *f)
{
	struct pollfd p = {.fd = rt_pool_making_fd(&f->pool), .events = POLLIN};
	assert_true(p.fd >= 0);
	assert_int_equal(poll(&p, 1, 20000), 1);
}

/* An empty pool whose sandbox being made has lost its init. */
static void making_killed(struct fixture *f)
{
	struct sk_error err = {0};
	pool_drain(f);
	assert_int_equal(rt_pool_fill_begin(&f->pool, &err), 1);
	assert_int_equal(
	    syscall(SYS_pidfd_send_signal, rt_sandbox_pidfd(f->pool.making), SIGKILL, NULL, 0), 0);
}

static void test_refill_in_steps_with_other_starts_between(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	pool_drain(f);
	assert_int_equal(rt_pool_fill_begin(&f->pool, &err), 1);
	assert_true(rt_pool_making_fd(&f->pool) >= 0);
	assert_int_equal(rt_pool_fill_begin(&f->pool, &err), 0); /* one at a time */
	/* Another sandbox made and run to its end while the pool's is being made. */
	struct spec s;
	spec_init(&s);
	s.timeout_s = 0;
	char *argv[] = {"sh", "-c", "exit 3"};
	assert_int_equal(spec_set_argv(&s, argv, 3, &err), 0);
	struct rt_sandbox *sb;
	if (rt_sandbox_start(&f->rt, &s, f->rootfs, 0, &sb, &err) < 0)
		fail_msg("start: %s", err.msg);
	int status = -1;
	assert_int_equal(rt_sandbox_wait_command(sb, &status), 0);
	assert_int_equal(WEXITSTATUS(status), 3);
	assert_int_equal(rt_sandbox_destroy(sb, &err), 0);
	spec_release(&s);
	making_wait(f);
	if (rt_pool_fill_end(&f->pool, &err) < 0)
		fail_msg("fill_end: %s", err.msg);
	assert_int_equal(f->pool.n, 1);
	assert_int_equal(rt_pool_making_fd(&f->pool), -1);
	int pooled = 0;
	assert_int_equal(run(f, "exit 4", f->base.memory_mib, NULL, NULL, NULL, &pooled, NULL), 4);
	assert_int_equal(pooled, 1);
}

static void test_a_start_takes_the_sandbox_being_made(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	pool_drain(f);
	assert_int_equal(rt_pool_fill_begin(&f->pool, &err), 1);
	int pooled = 0;
	assert_int_equal(run(f, "exit 6", f->base.memory_mib, NULL, NULL, NULL, &pooled, NULL), 6);
	assert_int_equal(pooled, 1);
	assert_int_equal(f->pool.n, 0);
	assert_int_equal(rt_pool_making_fd(&f->pool), -1);
}

static void test_a_make_whose_init_dies_fails_and_leaves_nothing(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	making_killed(f);
	making_wait(f);
	assert_true(rt_pool_fill_end(&f->pool, &err) < 0);
	assert_int_equal(f->pool.n, 0);
	assert_int_equal(rt_pool_making_fd(&f->pool), -1);
	/* The teardown checks that nothing of the instance is left. */
}

static void test_release_destroys_the_sandbox_being_made(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	pool_drain(f);
	assert_int_equal(rt_pool_fill_begin(&f->pool, &err), 1);
	/* The teardown releases the pool now, and checks that nothing is left. */
}

/* Begin a start of "sh -c script" through the pool without waiting, step it as a loop would,
 * and return its exit code; *ret_pooled: how it was made in the end. */
static int run_begun(struct fixture *f, const char *script, int *ret_pooled)
{
	struct sk_error err = {0};
	struct spec s;
	script_spec(&s, script);
	struct rt_sandbox *sb = NULL;
	if (rt_pool_start_begin(&f->pool, &s, f->rootfs, &sb, ret_pooled, &err) < 0)
		fail_msg("begin: %s", err.msg);
	int r;
	do {
		struct pollfd p = {.fd = rt_sandbox_ready_fd(sb), .events = POLLIN};
		assert_int_equal(poll(&p, 1, 20000), 1);
		r = rt_pool_start_step(&f->pool, &sb, &s, ret_pooled, &err);
	} while (r == 1);
	if (r < 0)
		fail_msg("step: %s", err.msg);
	int status = -1;
	assert_int_equal(rt_sandbox_wait_command(sb, &status), 0);
	assert_int_equal(rt_sandbox_destroy(sb, &err), 0);
	spec_release(&s);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_begun_starts_from_the_pool_the_make_and_the_spot(void **state)
{
	struct fixture *f = *state;
	struct sk_error err = {0};
	pool_drain(f);
	assert_int_equal(rt_pool_fill(&f->pool, 1, &err), 1);
	int pooled = 0;
	assert_int_equal(run_begun(f, "exit 11", &pooled), 11);
	assert_int_equal(pooled, 1);
	assert_int_equal(rt_pool_fill_begin(&f->pool, &err), 1);
	assert_int_equal(run_begun(f, "exit 12", &pooled), 12);
	assert_int_equal(pooled, 1);
	assert_int_equal(rt_pool_making_fd(&f->pool), -1);
	assert_int_equal(run_begun(f, "exit 13", &pooled), 13);
	assert_int_equal(pooled, 0);
}

/* A start that took the sandbox being made, whose make then fails, is made on the spot, as
 * rt_pool_start does: the pool's failure is not the request's. */
static void test_begun_start_on_a_failed_make_is_made_on_the_spot(void **state)
{
	struct fixture *f = *state;
	making_killed(f);
	int pooled = 0;
	assert_int_equal(run_begun(f, "exit 14", &pooled), 14);
	assert_int_equal(pooled, 0);
	/* The teardown checks that nothing of the failed make is left. */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pooled_start_runs_the_request),
	    cmocka_unit_test(test_pooled_start_applies_the_requests_limits),
	    cmocka_unit_test(test_long_workdir_and_hostname_reach_the_command),
	    cmocka_unit_test(test_unfit_request_made_on_the_spot),
	    cmocka_unit_test(test_refill_under_a_stream_of_starts),
	    cmocka_unit_test(test_refill_in_steps_with_other_starts_between),
	    cmocka_unit_test(test_a_start_takes_the_sandbox_being_made),
	    cmocka_unit_test(test_a_make_whose_init_dies_fails_and_leaves_nothing),
	    cmocka_unit_test(test_release_destroys_the_sandbox_being_made),
	    cmocka_unit_test(test_begun_starts_from_the_pool_the_make_and_the_spot),
	    cmocka_unit_test(test_begun_start_on_a_failed_make_is_made_on_the_spot),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
