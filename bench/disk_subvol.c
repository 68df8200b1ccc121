/* The per-sandbox cost of btrfs writable layers, through the runtime's own functions (disk.c):
 * create a subvolume with its qgroup limit, change the limit (a pooled start for another
 * disk_mib), destroy it (with its qgroup).
 * Usage: disk_subvol simple|full DIR RUNS   (DIR: the root of a fresh btrfs; quotas are enabled
 * in the given mode), then WRITE_ROUNDS rounds of: 256 files of 64 KiB written into a limited
 * subvolume and syncfs (what the quota costs at commit). Last line: disk_subvol mode=…
 * create_p50_us=… limit_p50_us=… destroy_p50_us=… write_sync_p50_ms=… runs=… */
#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "../src/runtime/disk.h"
#include "../src/runtime/runtime.h"

#define WRITE_ROUNDS 15

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double p50(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp);
	return v[n / 2];
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[1], "simple") && strcmp(argv[1], "full"))) {
		fprintf(stderr, "usage: disk_subvol simple|full DIR RUNS\n");
		return 2;
	}
	int runs = atoi(argv[3]);
	struct rt_disk d = {.btrfs = 1, .lock_fd = -1};
	d.inst_fd = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d.inst_fd < 0 || runs < 1) {
		perror(argv[2]);
		return 1;
	}
	/* 4: BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA (Linux 6.7). */
	struct btrfs_ioctl_quota_ctl_args q = {.cmd = strcmp(argv[1], "simple") ? 1 : 4};
	if (ioctl(d.inst_fd, BTRFS_IOC_QUOTA_CTL, &q) < 0) {
		perror("enable quotas");
		return 1;
	}
	double *mk = calloc(runs, sizeof(double)), *lim = calloc(runs, sizeof(double)),
	       *rm = calloc(runs, sizeof(double));
	struct sk_error err = {0};
	for (int i = 0; i < runs; i++) {
		char name[32];
		snprintf(name, sizeof(name), "sb-%d", i);
		int fd;
		double t0 = now_us();
		if (disk_subvol_make(&d, name, 0x10000000, 1024ull << 20, &fd, &err) < 0) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
		double t1 = now_us();
		if (disk_subvol_limit(fd, 16ull << 20, &err) < 0) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
		double t2 = now_us();
		close(fd);
		double t3 = now_us();
		int r = disk_subvol_remove(d.inst_fd, name);
		double t4 = now_us();
		if (r < 0) {
			fprintf(stderr, "destroy %s: %s\n", name, strerror(-r));
			return 1;
		}
		mk[i] = t1 - t0;
		lim[i] = t2 - t1;
		rm[i] = t4 - t3;
	}
	double ws[WRITE_ROUNDS];
	static char block[64 * 1024];
	memset(block, 'x', sizeof(block));
	for (int i = 0; i < WRITE_ROUNDS; i++) {
		char name[32];
		snprintf(name, sizeof(name), "sb-w%d", i);
		int fd;
		if (disk_subvol_make(&d, name, 0, 1024ull << 20, &fd, &err) < 0) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
		double t0 = now_us();
		for (int k = 0; k < 256; k++) {
			char f[32];
			snprintf(f, sizeof(f), "f%d", k);
			int w = openat(fd, f, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
			if (w < 0 || write(w, block, sizeof(block)) != (ssize_t)sizeof(block)) {
				perror("write");
				return 1;
			}
			close(w);
		}
		syncfs(fd);
		ws[i] = (now_us() - t0) / 1000;
		close(fd);
		disk_subvol_remove(d.inst_fd, name);
	}
	printf("disk_subvol mode=%s create_p50_us=%.1f limit_p50_us=%.1f destroy_p50_us=%.1f "
	       "write_sync_p50_ms=%.1f runs=%d\n",
	       argv[1], p50(mk, runs), p50(lim, runs), p50(rm, runs), p50(ws, WRITE_ROUNDS), runs);
	return 0;
}
