/* Pooled sandbox starts, measured by a program linking the runtime (issue 4's benchmark).
 *   pool_start latency RUNS      request -> command exited and reaped, side by side in one run:
 *                                host fork+exec+wait of /bin/true, a start from the pool, and a
 *                                start made on the spot; p50/p90/p99 of each
 *   pool_start rate-skiff N      N pooled starts of /bin/true, refilling as it goes; prints
 * starts/s pool_start rate-bwrap N ROOT N runs of bwrap --unshare-all /bin/true; prints runs/s
 * Environment: SKIFF_INSTANCE (default "bpol"), SKIFF_DATA (default /tmp/skiff-bench-data). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../src/image/busybox.h"
#include "../src/runtime/runtime.h"

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
	qsort(v, n, sizeof(double), cmp_double);
	int i = (int)(p / 100.0 * (n - 1) + 0.5);
	return v[i];
}

static void die(const char *what, const struct sk_error *err)
{
	fprintf(stderr, "pool_start: %s: %s\n", what, err ? err->msg : strerror(errno));
	exit(1);
}

static void fork_exec(const char *path)
{
	pid_t pid = fork();
	if (pid == 0) {
		char *argv[] = {(char *)path, NULL};
		execv(path, argv);
		_exit(127);
	}
	int status;
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("/bin/true failed", NULL);
}

struct env {
	struct rt rt;
	struct spec spec;
	char rootfs[4096];
};

static void env_init(struct env *e)
{
	struct sk_error err = {0};
	const char *inst = getenv("SKIFF_INSTANCE") ? getenv("SKIFF_INSTANCE") : "bpol";
	const char *data = getenv("SKIFF_DATA") ? getenv("SKIFF_DATA") : "/tmp/skiff-bench-data";
	if (image_busybox_ensure(data, getenv(BUSYBOX_PATH_ENV), e->rootfs, sizeof(e->rootfs),
	                         &err) < 0)
		die("busybox root", &err);
	if (rt_init(&e->rt, inst, NULL, &err) < 0)
		die("rt_init", &err);
	/* Writable layers as skiff-box makes them: SKIFF_DISK_BACKEND (auto, btrfs, tmpfs). */
	enum rt_disk_backend backend = RT_DISK_AUTO;
	const char *want = getenv("SKIFF_DISK_BACKEND");
	if (want && rt_disk_backend_parse(want, &backend) < 0)
		die("SKIFF_DISK_BACKEND: auto, btrfs or tmpfs", &err);
	if (rt_disk_setup(&e->rt, data, backend, 1, &err) < 0)
		die("disk", &err);
	fprintf(stderr, "pool_start: writable layers on %s%s%s\n", rt_disk_backend_name(&e->rt),
	        e->rt.disk.why_tmpfs[0] ? ": " : "", e->rt.disk.why_tmpfs);
	spec_init(&e->spec);
	char *argv[] = {"/bin/true"};
	if (spec_set_argv(&e->spec, argv, 1, &err) < 0)
		die("spec", &err);
	e->spec.timeout_s = 0;
}

/* Start (from the pool when pooled), wait for the command to be reaped: the measured part.
 * Teardown follows, unmeasured. */
static double one_start(struct env *e, struct rt_pool *pool)
{
	struct sk_error err = {0};
	struct rt_sandbox *sb;
	int pooled = 0, status = -1;
	double t0 = now_us();
	int r = pool ? rt_pool_start(pool, &e->spec, e->rootfs, &sb, &pooled, &err)
	             : rt_sandbox_start(&e->rt, &e->spec, e->rootfs, 0, &sb, &err);
	if (r < 0)
		die("start", &err);
	if (rt_sandbox_wait_command(sb, &status) < 0 || status != 0)
		die("the command did not exit 0", NULL);
	double t = now_us() - t0;
	if (pool && !pooled)
		die("the pool was empty", NULL);
	rt_sandbox_destroy(sb, NULL);
	return t;
}

static int latency(int runs)
{
	struct env e;
	env_init(&e);
	struct sk_error err = {0};
	struct rt_pool pool;
	if (rt_pool_init(&pool, &e.rt, &e.spec, e.rootfs, 4, &err) < 0 ||
	    rt_pool_fill(&pool, 4, &err) < 0)
		die("pool", &err);
	/* TAKE_DISK_MIB: requests ask for another disk size than the pool was made for. */
	if (getenv("TAKE_DISK_MIB"))
		e.spec.disk_mib = strtoull(getenv("TAKE_DISK_MIB"), NULL, 10);
	double *host = calloc(runs, sizeof(double)), *pooled = calloc(runs, sizeof(double)),
	       *spot = calloc(runs, sizeof(double));
	for (int w = 0; w < 5; w++) { /* warm-up */
		fork_exec("/bin/true");
		one_start(&e, &pool);
		rt_pool_fill(&pool, 1, &err);
	}
	/* Interleaved, so drift in the machine's load hits all three alike. */
	for (int i = 0; i < runs; i++) {
		double t0 = now_us();
		fork_exec("/bin/true");
		host[i] = now_us() - t0;
		pooled[i] = one_start(&e, &pool);
		if (rt_pool_fill(&pool, 1, &err) < 0) /* the refill, off the measured path */
			die("refill", &err);
		spot[i] = one_start(&e, NULL);
	}
	printf("method          p50 ms   p90 ms   p99 ms   (request -> command exited and reaped, "
	       "%d runs)\n",
	       runs);
	double h50 = pct(host, runs, 50), p50 = pct(pooled, runs, 50), s50 = pct(spot, runs, 50);
	printf("fork+exec     %8.3f %8.3f %8.3f\n", h50 / 1e3, pct(host, runs, 90) / 1e3,
	       pct(host, runs, 99) / 1e3);
	printf("skiff pooled  %8.3f %8.3f %8.3f\n", p50 / 1e3, pct(pooled, runs, 90) / 1e3,
	       pct(pooled, runs, 99) / 1e3);
	printf("skiff on spot %8.3f %8.3f %8.3f\n", s50 / 1e3, pct(spot, runs, 90) / 1e3,
	       pct(spot, runs, 99) / 1e3);
	printf("pooled / fork+exec p50: %.2f\n", p50 / h50);
	printf(
	    "pool_latency host_p50_ms=%.3f pooled_p50_ms=%.3f pooled_p99_ms=%.3f spot_p50_ms=%.3f "
	    "pooled_vs_host=%.2f runs=%d\n",
	    h50 / 1e3, p50 / 1e3, pct(pooled, runs, 99) / 1e3, s50 / 1e3, p50 / h50, runs);
	rt_pool_release(&pool);
	rt_gc(&e.rt, NULL);
	rt_instance_remove_if_idle(&e.rt);
	rt_release(&e.rt);
	spec_release(&e.spec);
	free(host);
	free(pooled);
	free(spot);
	return 0;
}

static int rate_skiff(int n)
{
	struct env e;
	env_init(&e);
	struct sk_error err = {0};
	struct rt_pool pool;
	if (rt_pool_init(&pool, &e.rt, &e.spec, e.rootfs, 2, &err) < 0 ||
	    rt_pool_fill(&pool, 2, &err) < 0)
		die("pool", &err);
	double t0 = now_us();
	for (int i = 0; i < n; i++) {
		one_start(&e, &pool);
		if (rt_pool_fill(&pool, 1, &err) < 0) /* refill included in the rate */
			die("refill", &err);
	}
	double s = (now_us() - t0) / 1e6;
	printf("%.1f\n", n / s);
	rt_pool_release(&pool);
	rt_gc(&e.rt, NULL);
	rt_instance_remove_if_idle(&e.rt);
	rt_release(&e.rt);
	spec_release(&e.spec);
	return 0;
}

static int rate_bwrap(int n, const char *root)
{
	double t0 = now_us();
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			execlp("bwrap", "bwrap", "--unshare-all", "--ro-bind", root, "/", "--proc",
			       "/proc", "--dev", "/dev", "/bin/true", (char *)NULL);
			_exit(127);
		}
		int status;
		waitpid(pid, &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			die("bwrap failed", NULL);
	}
	double s = (now_us() - t0) / 1e6;
	printf("%.1f\n", n / s);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "latency"))
		return latency(atoi(argv[2]));
	if (argc >= 3 && !strcmp(argv[1], "rate-skiff"))
		return rate_skiff(atoi(argv[2]));
	if (argc >= 4 && !strcmp(argv[1], "rate-bwrap"))
		return rate_bwrap(atoi(argv[2]), argv[3]);
	fprintf(stderr, "usage: pool_start latency RUNS | rate-skiff N | rate-bwrap N ROOT\n");
	return 2;
}
