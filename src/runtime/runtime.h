/* The sandbox runtime's public API. A struct rt is one instance of the runtime on a host: its
 * instance id (every kernel-visible name carries it), its state directory, the cgroup layout and
 * the compiled seccomp profile. Functions here that create namespaces must run in a
 * single-threaded process (user namespaces can't be entered from a threaded one). */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "../lib/error.h"
#include "cgroup.h"
#include "idmap.h"
#include "seccomp.h"
#include "spec.h"

#define RT_INSTANCE_MAX_CHARS 4
#define RT_DEFAULT_RUN_DIR    "/run/skiff"
#define RT_DEFAULT_INSTANCE   "0"
#define RT_KILL_GRACE_MS      1000 /* how long teardown waits for a cgroup to empty */
#define RT_OOM_CONFIRM_MS     200  /* how long a v1 OOM event waits for its kill to be counted */
#define RT_OOM_RECHECK_MS     5

struct rt {
	char instance[RT_INSTANCE_MAX_CHARS + 1];
	char run_dir[256];  /* RT_DEFAULT_RUN_DIR: shared by instances (uid slots) */
	char inst_dir[300]; /* run_dir/<instance> */
	struct cg_layout cg;
	struct rt_seccomp seccomp;
	uint64_t caps;
	int lock_fd; /* <run_dir>/<instance>.lock, held shared */
	/* Cleanup helpers told to exit but not reaped yet: reaped later, never waited for on a
	 * sandbox's teardown path. */
	struct {
		pid_t pid;
		void *stack;
	} helpers[64];
	int nhelpers;
};

/* How a sandbox's main command ended. */
enum rt_end {
	RT_END_EXITED,   /* code = exit status */
	RT_END_SIGNALED, /* signal = N */
	RT_END_OOM,      /* the memory limit was hit and the sandbox killed */
	RT_END_KILLED,   /* killed from outside (timeout, terminate) */
	RT_END_LOST,     /* init died without reporting */
};

struct rt_result {
	enum rt_end end;
	int code;
	int signal;
	struct cg_usage usage;
};

struct rt_sandbox;

/* Valid instance ids: 1-4 characters of [a-z0-9]. */
int rt_instance_valid(const char *instance);
/* Prepare an instance: detect cgroups, make the parent cgroups and directories, build seccomp. */
int rt_init(struct rt *rt, const char *instance, const char *run_dir, struct sk_error *err);
void rt_release(struct rt *rt);

/* Create a sandbox for spec and start its command; returns once the command has been exec'd.
 * rootfs is the host directory that becomes the read-only lower layer. */
int rt_sandbox_start(struct rt *rt, const struct spec *spec, const char *rootfs,
                     struct rt_sandbox **ret, struct sk_error *err);
const char *rt_sandbox_id(const struct rt_sandbox *sb);
/* Readable when the sandbox's init has exited (then call rt_sandbox_reap). */
int rt_sandbox_pidfd(const struct rt_sandbox *sb);
/* Readable / POLLPRI when the memory cgroup reports OOM (then call rt_sandbox_check_oom). */
int rt_sandbox_oom_fd(const struct rt_sandbox *sb, short *ret_events);
/* After the OOM fd fired: 1 when an OOM kill happened in the sandbox (the whole sandbox is then
 * killed), 0 when not, -EAGAIN while an event is being confirmed: call again after
 * RT_OOM_RECHECK_MS (even without the fd firing). */
int rt_sandbox_check_oom(struct rt_sandbox *sb);
/* Deliver sig to the main command (through init). */
int rt_sandbox_signal(struct rt_sandbox *sb, int sig);
/* Kill every process of the sandbox at once (reason: RT_END_KILLED or RT_END_OOM). */
int rt_sandbox_kill(struct rt_sandbox *sb, enum rt_end reason);
/* After init exited: collect how the main command ended and the usage. Blocks until init is reaped.
 */
int rt_sandbox_reap(struct rt_sandbox *sb, struct rt_result *ret);
int rt_sandbox_usage(const struct rt_sandbox *sb, struct cg_usage *ret);

/* Where a start's time went: steps in order, each with the nanoseconds since the previous one.
 * Names are valid until the next call. Returns the number of steps written (at most max). */
struct rt_step {
	const char *name;
	uint64_t ns;
};
int rt_sandbox_timings(struct rt_sandbox *sb, struct rt_step *steps, int max);
/* Kill what is left, remove cgroups, state and uid range, free sb. Accepts NULL. */
int rt_sandbox_destroy(struct rt_sandbox *sb, struct sk_error *err);

/* Remove the instance's parent cgroups, state directory and lock file when no other runtime of
 * the instance runs (1: rt may then only be released), or leave them (0). */
int rt_instance_remove_if_idle(struct rt *rt);
/* Remove what crashed runs of this instance left: sandboxes whose owner is gone. Returns how many.
 */
int rt_gc(struct rt *rt, struct sk_error *err);
