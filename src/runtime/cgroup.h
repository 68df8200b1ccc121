/* cgroups, v1 and v2 both, detected per controller: on a v1/v2 hybrid host each controller lives in
 * whichever hierarchy has it. Every sandbox of an instance sits under one parent cgroup
 * "skiff-<instance>" made at each hierarchy's root, which carries aggregate limits. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "../lib/error.h"

enum cg_ctrl { CG_CPU, CG_CPUACCT, CG_MEMORY, CG_PIDS, CG_NCTRL };

#define CG_MAX_HIER      4
#define CG_PATH_BYTES    512
#define CG_CPU_PERIOD_US 100000

struct cg_hier {
	char mount[CG_PATH_BYTES]; /* where the hierarchy is mounted */
	int version;               /* 1 or 2 */
	unsigned ctrls;            /* bit mask of enum cg_ctrl held here */
};

struct cg_layout {
	struct cg_hier hier[CG_MAX_HIER];
	int nhier;
	int where[CG_NCTRL]; /* index into hier, or -1 when the controller is absent */
};

struct cg_limits {
	double cpu;            /* cores; 0 = unlimited */
	uint64_t memory_bytes; /* 0 = unlimited; swap is always off */
	uint64_t pids;         /* 0 = unlimited */
};

struct cg_usage {
	uint64_t cpu_ns;
	uint64_t memory_bytes;
	uint64_t memory_peak_bytes;
	uint64_t oom_kills;
};

struct cg_sandbox {
	const struct cg_layout *layout;
	int dirfd[CG_MAX_HIER]; /* the sandbox's cgroup directory in each hierarchy, -1 when none */
	char rel[CG_PATH_BYTES]; /* "skiff-<instance>/<name>" */
};

/* Read mountinfo (normally /proc/self/mountinfo) and each cgroup2 mount's cgroup.controllers; a
 * controller offered by cgroup2 is used there, otherwise from its v1 hierarchy. memory and pids are
 * required, cpu too; cpuacct is optional (v1 only). */
int cgroup_layout_detect(const char *mountinfo_path, struct cg_layout *ret, struct sk_error *err);

/* Make "skiff-<instance>" at each hierarchy's root (idempotent) with aggregate limits, and on v2
 * enable the controllers for its children. */
int cgroup_parent_ensure(const struct cg_layout *l, const char *instance,
                         const struct cg_limits *agg, struct sk_error *err);

/* Make the sandbox's cgroups and apply limits. cg is filled; release with cgroup_sandbox_destroy.
 */
int cgroup_sandbox_create(const struct cg_layout *l, const char *instance, const char *name,
                          const struct cg_limits *lim, struct cg_sandbox *cg, struct sk_error *err);
/* Open an existing sandbox's cgroups (gc, re-attach); missing hierarchies are left at -1. */
int cgroup_sandbox_open(const struct cg_layout *l, const char *instance, const char *name,
                        struct cg_sandbox *cg);
/* Move pid into every cgroup of the sandbox. */
int cgroup_sandbox_attach(const struct cg_sandbox *cg, pid_t pid, struct sk_error *err);
/* An fd that becomes readable (v1: eventfd) or POLLPRI (v2: memory.events) on memory pressure
 * ending in OOM; check cgroup_sandbox_usage().oom_kills to know a kill happened. */
int cgroup_sandbox_oom_fd(const struct cg_sandbox *cg, int *ret_fd, short *ret_events,
                          struct sk_error *err);
int cgroup_sandbox_usage(const struct cg_sandbox *cg, struct cg_usage *ret);
/* SIGKILL every process in the sandbox's cgroups; returns how many remain (0 when empty). */
int cgroup_sandbox_kill(const struct cg_sandbox *cg);
/* Kill what is left, wait up to timeout_ms for the cgroups to empty, remove them, close fds. */
int cgroup_sandbox_destroy(struct cg_sandbox *cg, int timeout_ms, struct sk_error *err);
void cgroup_sandbox_close(struct cg_sandbox *cg);

/* Names of the sandboxes that have cgroups under skiff-<instance> (gc); *ret is a NULL-terminated
 * array of strings to free with free() each and the array. */
int cgroup_instance_list(const struct cg_layout *l, const char *instance, char ***ret);
/* Remove skiff-<instance> where it is empty. */
int cgroup_parent_remove(const struct cg_layout *l, const char *instance);

/* Per-version operations (cgroup_v1.c, cgroup_v2.c) on one hierarchy's sandbox directory. */
int cgroup_v1_limits_apply(int dirfd, unsigned ctrls, const struct cg_limits *lim,
                           struct sk_error *err);
int cgroup_v2_limits_apply(int dirfd, unsigned ctrls, const struct cg_limits *lim,
                           struct sk_error *err);
void cgroup_v1_usage_read(int dirfd, unsigned ctrls, struct cg_usage *u);
void cgroup_v2_usage_read(int dirfd, unsigned ctrls, struct cg_usage *u);
int cgroup_v1_oom_fd(int dirfd, int *ret_fd, struct sk_error *err);
int cgroup_v2_enable_controllers(int dirfd, unsigned ctrls, struct sk_error *err);
/* memory.oom.group: an OOM kill takes every process of the cgroup. Only a sandbox's cgroup has
 * it: the kernel kills in the highest cgroup with it set between the victim and the cgroup out of
 * memory, so on the instance's parent one sandbox's OOM would kill every sandbox. */
int cgroup_v2_oom_group_set(int dirfd, int on, struct sk_error *err);
