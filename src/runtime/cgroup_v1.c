/* cgroup v1 files: one hierarchy per controller (or a few merged, "cpu,cpuacct"). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "cgroup.h"

static int write_u64(int dirfd, const char *file, uint64_t v, struct sk_error *err)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	int r = fs_write_str_at(dirfd, file, buf);
	if (r < 0)
		return sk_error_errno(err, r, "write %s to %s", buf, file);
	return 0;
}

int cgroup_v1_limits_apply(int dirfd, unsigned ctrls, const struct cg_limits *lim,
                           struct sk_error *err)
{
	int r;
	if ((ctrls & (1u << CG_CPU)) && lim->cpu > 0) {
		if ((r = write_u64(dirfd, "cpu.cfs_period_us", CG_CPU_PERIOD_US, err)) < 0)
			return r;
		uint64_t quota = (uint64_t)(lim->cpu * CG_CPU_PERIOD_US + 0.5); /* nearest */
		if (quota < 1000)
			quota = 1000; /* the kernel's minimum */
		if ((r = write_u64(dirfd, "cpu.cfs_quota_us", quota, err)) < 0)
			return r;
	}
	if ((ctrls & (1u << CG_MEMORY)) && lim->memory_bytes) {
		if ((r = write_u64(dirfd, "memory.limit_in_bytes", lim->memory_bytes, err)) < 0)
			return r;
		/* Swap off: memory+swap equal to memory. Without swap accounting, swappiness 0. */
		if (faccessat(dirfd, "memory.memsw.limit_in_bytes", F_OK, 0) == 0) {
			if ((r = write_u64(dirfd, "memory.memsw.limit_in_bytes", lim->memory_bytes,
			                   err)) < 0)
				return r;
		} else if ((r = write_u64(dirfd, "memory.swappiness", 0, err)) < 0) {
			return r;
		}
	}
	if ((ctrls & (1u << CG_PIDS)) && lim->pids) {
		if ((r = write_u64(dirfd, "pids.max", lim->pids, err)) < 0)
			return r;
	}
	return 0;
}

void cgroup_v1_usage_read(int dirfd, unsigned ctrls, struct cg_usage *u)
{
	unsigned long long v;
	if ((ctrls & (1u << CG_CPUACCT)) && fs_read_u64_at(dirfd, "cpuacct.usage", &v) == 0)
		u->cpu_ns = v;
	if (ctrls & (1u << CG_MEMORY)) {
		if (fs_read_u64_at(dirfd, "memory.usage_in_bytes", &v) == 0)
			u->memory_bytes = v;
		if (fs_read_u64_at(dirfd, "memory.max_usage_in_bytes", &v) == 0)
			u->memory_peak_bytes = v;
		char buf[512];
		if (fs_read_at(dirfd, "memory.oom_control", buf, sizeof(buf)) > 0)
			u->oom_kills = fs_keyed_u64(buf, "oom_kill");
	}
}

int cgroup_v1_oom_fd(int dirfd, int *ret_fd, struct sk_error *err)
{
	_cleanup_close_ int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0)
		return sk_error_errno(err, -errno, "eventfd");
	_cleanup_close_ int ofd = openat(dirfd, "memory.oom_control", O_RDONLY | O_CLOEXEC);
	if (ofd < 0)
		return sk_error_errno(err, -errno, "open memory.oom_control");
	char buf[64];
	snprintf(buf, sizeof(buf), "%d %d", efd, ofd);
	int r = fs_write_str_at(dirfd, "cgroup.event_control", buf);
	if (r < 0)
		return sk_error_errno(err, r, "register OOM notification");
	/* The registration holds its own references; the eventfd is what we poll. */
	*ret_fd = TAKE_FD(efd);
	return 0;
}
