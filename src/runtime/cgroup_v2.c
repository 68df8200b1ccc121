/* cgroup v2 files: one unified hierarchy. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "cgroup.h"

static const char *const CTRL_NAMES[CG_NCTRL] = {"cpu", "cpuacct", "memory", "pids"};

int cgroup_v2_enable_controllers(int dirfd, unsigned ctrls, struct sk_error *err)
{
	char buf[64] = "";
	size_t off = 0;
	for (int c = 0; c < CG_NCTRL; c++) {
		if (c == CG_CPUACCT || !(ctrls & (1u << c)))
			continue;
		off +=
		    snprintf(buf + off, sizeof(buf) - off, "%s+%s", off ? " " : "", CTRL_NAMES[c]);
	}
	if (off == 0)
		return 0;
	int r = fs_write_str_at(dirfd, "cgroup.subtree_control", buf);
	if (r < 0)
		return sk_error_errno(err, r, "enable controllers (%s) in cgroup.subtree_control",
		                      buf);
	return 0;
}

int cgroup_v2_limits_apply(int dirfd, unsigned ctrls, const struct cg_limits *lim,
                           struct sk_error *err)
{
	char buf[64];
	int r;
	if ((ctrls & (1u << CG_CPU)) && lim->cpu > 0) {
		uint64_t quota = (uint64_t)(lim->cpu * CG_CPU_PERIOD_US + 0.5); /* nearest */
		if (quota < 1000)
			quota = 1000;
		snprintf(buf, sizeof(buf), "%" PRIu64 " %d", quota, CG_CPU_PERIOD_US);
		if ((r = fs_write_str_at(dirfd, "cpu.max", buf)) < 0)
			return sk_error_errno(err, r, "write cpu.max");
	}
	if ((ctrls & (1u << CG_MEMORY)) && lim->memory_bytes) {
		snprintf(buf, sizeof(buf), "%" PRIu64, lim->memory_bytes);
		if ((r = fs_write_str_at(dirfd, "memory.max", buf)) < 0)
			return sk_error_errno(err, r, "write memory.max");
		/* Absent without swap accounting: then there is no swap to turn off. */
		r = fs_write_str_at(dirfd, "memory.swap.max", "0");
		if (r < 0 && r != -ENOENT)
			return sk_error_errno(err, r, "write memory.swap.max");
	}
	if ((ctrls & (1u << CG_PIDS)) && lim->pids) {
		snprintf(buf, sizeof(buf), "%" PRIu64, lim->pids);
		if ((r = fs_write_str_at(dirfd, "pids.max", buf)) < 0)
			return sk_error_errno(err, r, "write pids.max");
	}
	return 0;
}

int cgroup_v2_oom_group_set(int dirfd, int on, struct sk_error *err)
{
	/* Absent before Linux 4.19: then an OOM kills one process, and the runtime the rest. */
	int r = fs_write_str_at(dirfd, "memory.oom.group", on ? "1" : "0");
	if (r < 0 && r != -ENOENT)
		return sk_error_errno(err, r, "write %d to memory.oom.group", on ? 1 : 0);
	return 0;
}

void cgroup_v2_usage_read(int dirfd, unsigned ctrls, struct cg_usage *u)
{
	char buf[1024];
	unsigned long long v;
	if ((ctrls & (1u << CG_CPU)) && fs_read_at(dirfd, "cpu.stat", buf, sizeof(buf)) > 0)
		u->cpu_ns = fs_keyed_u64(buf, "usage_usec") * 1000;
	if (ctrls & (1u << CG_MEMORY)) {
		if (fs_read_u64_at(dirfd, "memory.current", &v) == 0)
			u->memory_bytes = v;
		if (fs_read_u64_at(dirfd, "memory.peak", &v) == 0)
			u->memory_peak_bytes = v;
		if (fs_read_at(dirfd, "memory.events", buf, sizeof(buf)) > 0)
			u->oom_kills = fs_keyed_u64(buf, "oom_kill");
	}
}
