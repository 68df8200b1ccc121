/* Sandboxes made ahead: a start from the pool is "apply the request's limits, send the
 * command", everything else (namespaces, uid range, cgroups, root filesystem, seccomp) done
 * before the request came. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "disk.h"
#include "internal.h"

#define POOL_MAX 256

/* rt_sandbox_run up to the command sent: init's word that it runs is still to come. */
static int run_send(struct rt_sandbox *sb, const struct spec *spec, struct sk_error *err)
{
	if (!(sb->flags & RT_START_POOLED) || sb->ran)
		return sk_error_set(err, -EINVAL, "sandbox %s is not waiting for a command",
		                    sb->id);
	if (!spec->argv && !(sb->flags & RT_START_DETACHED))
		return sk_error_set(err, -SK_EINVAL_SPEC, "command: none given");
	int r = spec_validate(spec, err);
	if (r < 0)
		return r;
	int disk_differs = spec->disk_mib != sb->base.disk_mib;
	if ((disk_differs && sb->disk_fd < 0) || spec->network != sb->base.network)
		return sk_error_set(err, -EINVAL, "sandbox %s was made for another disk or network",
		                    sb->id);
	timing_mark(&sb->marks, "run");
	/* A subvolume's limit is a qgroup's: one ioctl changes it. */
	if (disk_differs) {
		if ((r = disk_subvol_limit(sb->disk_fd, spec->disk_mib * 1024 * 1024, err)) < 0)
			return sk_error_prefix(err, "disk of %s", sb->id);
		timing_mark(&sb->marks, "disk_limit");
	}
	if (spec->cpu != sb->base.cpu || spec->memory_mib != sb->base.memory_mib ||
	    spec->pids != sb->base.pids) {
		struct cg_limits lim = {.cpu = spec->cpu,
		                        .memory_bytes = spec->memory_mib * 1024 * 1024,
		                        .pids = spec->pids};
		const struct cg_layout *l = sb->cg.layout;
		for (int i = 0; i < l->nhier; i++) {
			r = l->hier[i].version == 2
			        ? cgroup_v2_limits_apply(sb->cg.dirfd[i], l->hier[i].ctrls, &lim,
			                                 err)
			        : cgroup_v1_limits_apply(sb->cg.dirfd[i], l->hier[i].ctrls, &lim,
			                                 err);
			if (r < 0)
				return sk_error_prefix(err, "limits of %s", sb->id);
		}
		timing_mark(&sb->marks, "limits");
	}
	int memfd = rt_command_memfd(spec->workdir, spec->hostname, spec->argv, spec->argc,
	                             spec->env, spec->envc, err);
	if (memfd < 0)
		return memfd;
	char header[64];
	snprintf(header, sizeof(header), "%zu %zu %llu", spec->argc, spec->envc,
	         (unsigned long long)spec->pids);
	sb->ran = 1;
	/* The limits are the run's from here on (an exec's RLIMIT_NPROC is the sandbox's pids). */
	sb->base.cpu = spec->cpu;
	sb->base.memory_mib = spec->memory_mib;
	sb->base.pids = spec->pids;
	sb->base.disk_mib = spec->disk_mib;
	r = rt_msg_send(sb->sync_fd, RT_MSG_RUN, 0, header, memfd);
	close(memfd);
	if (r < 0)
		return sk_error_errno(err, r, "send the command to %s", sb->id);
	sb->init_marks[0] = '\0';
	return 0;
}

int rt_sandbox_run(struct rt_sandbox *sb, const struct spec *spec, struct sk_error *err)
{
	int r;
	if ((r = run_send(sb, spec, err)) < 0 || (r = started_await(sb, err)) < 0)
		return r;
	/* Detached: recorded once it runs, like a sandbox started on the spot. */
	if ((sb->flags & RT_START_DETACHED) && (r = state_sandbox_record(sb, spec, err)) < 0)
		return r;
	return 0;
}

int rt_pool_init(struct rt_pool *p, struct rt *rt, const struct spec *base, const char *rootfs,
                 int target, struct sk_error *err)
{
	memset(p, 0, sizeof(*p));
	if (target < 0 || target > POOL_MAX)
		return sk_error_set(err, -SK_EINVAL_SPEC, "pool size: 0 to %d", POOL_MAX);
	if (strlen(rootfs) >= sizeof(p->rootfs))
		return sk_error_set(err, -ENAMETOOLONG, "rootfs path too long");
	p->ready = calloc(target ? target : 1, sizeof(*p->ready));
	if (!p->ready)
		return sk_error_set(err, -ENOMEM, "out of memory");
	p->rt = rt;
	p->base = *base;
	/* Numbers only: the base's strings stay the caller's. */
	p->base.argv = p->base.env = NULL;
	p->base.argc = p->base.envc = 0;
	p->base.workdir = p->base.hostname = p->base.name = p->base.image = p->base.rootfs = NULL;
	p->base.label = NULL;
	memcpy(p->rootfs, rootfs, strlen(rootfs) + 1);
	p->target = target;
	return 0;
}

int rt_pool_fill_begin(struct rt_pool *p, struct sk_error *err)
{
	if (p->making || p->n >= p->target)
		return 0;
	int r = rt_sandbox_start(p->rt, &p->base, p->rootfs,
	                         RT_START_POOLED | RT_START_NOWAIT | p->flags, &p->making, err);
	if (r < 0) {
		p->making = NULL;
		return r;
	}
	return 1;
}

int rt_pool_making_fd(const struct rt_pool *p)
{
	return p->making ? rt_sandbox_ready_fd(p->making) : -1;
}

int rt_pool_fill_end(struct rt_pool *p, struct sk_error *err)
{
	struct rt_sandbox *sb = p->making;
	if (!sb)
		return 0;
	p->making = NULL;
	int r = rt_sandbox_ready_await(sb, err);
	if (r < 0)
		return r;
	p->ready[p->n++] = sb;
	return 0;
}

int rt_pool_fill(struct rt_pool *p, int max_new, struct sk_error *err)
{
	int made = 0, r;
	if ((r = rt_pool_fill_end(p, err)) < 0)
		return r;
	while (p->n < p->target && made < max_new) {
		if ((r = rt_pool_fill_begin(p, err)) < 0 || (r = rt_pool_fill_end(p, err)) < 0)
			return r;
		made++;
	}
	return made;
}

int rt_pool_fits(const struct rt_pool *p, const struct spec *spec, const char *rootfs)
{
	return !strcmp(rootfs, p->rootfs) &&
	       (p->rt->disk.btrfs || spec->disk_mib == p->base.disk_mib) &&
	       spec->network == p->base.network;
}

int rt_pool_start(struct rt_pool *p, const struct spec *spec, const char *rootfs,
                  struct rt_sandbox **ret, int *ret_pooled, struct sk_error *err)
{
	struct rt_sandbox *sb = NULL;
	int r = rt_pool_start_begin(p, spec, rootfs, &sb, ret_pooled, err);
	/* Each step waits for init's next word. */
	while (r == 0 && (r = rt_pool_start_step(p, &sb, spec, ret_pooled, err)) == 1)
		;
	if (r < 0)
		return r;
	*ret = sb;
	return 0;
}

int rt_pool_start_begin(struct rt_pool *p, const struct spec *spec, const char *rootfs,
                        struct rt_sandbox **ret, int *ret_pooled, struct sk_error *err)
{
	struct rt_sandbox *sb = NULL;
	if (rt_pool_fits(p, spec, rootfs)) {
		if (p->n > 0) {
			sb = p->ready[--p->n];
			int r = run_send(sb, spec, err);
			if (r < 0) {
				rt_sandbox_destroy(sb, NULL);
				return r;
			}
			sb->start_phase = RT_PHASE_STARTED;
		} else if (p->making) {
			/* Most of the way there: its rest is waited for with the command's start.
			 */
			sb = TAKE_PTR(p->making);
			sb->start_phase = RT_PHASE_READY;
		}
	}
	if (sb) {
		*ret = sb;
		*ret_pooled = 1;
		return 0;
	}
	*ret_pooled = 0;
	return rt_sandbox_start(p->rt, spec, rootfs, p->flags | RT_START_NOWAIT, ret, err);
}

int rt_sandbox_start_step(struct rt_sandbox *sb, const struct spec *spec, struct sk_error *err)
{
	int r;
	if (sb->start_phase == RT_PHASE_READY) {
		if ((r = rt_sandbox_ready_await(sb, err)) < 0) /* it is destroyed */
			return r;
		if ((r = run_send(sb, spec, err)) < 0) {
			rt_sandbox_destroy(sb, NULL);
			return r;
		}
		sb->start_phase = RT_PHASE_STARTED;
		return 1;
	}
	sb->start_phase = 0;
	if ((r = started_await(sb, err)) < 0 ||
	    ((sb->flags & RT_START_DETACHED) && (r = state_sandbox_record(sb, spec, err)) < 0)) {
		rt_sandbox_destroy(sb, NULL);
		return r;
	}
	return 0;
}

int rt_pool_start_step(struct rt_pool *p, struct rt_sandbox **sb, const struct spec *spec,
                       int *pooled, struct sk_error *err)
{
	int making = (*sb)->start_phase == RT_PHASE_READY;
	struct sk_error merr = {0};
	int r = rt_sandbox_start_step(*sb, spec, making ? &merr : err);
	if (r >= 0)
		return r;
	*sb = NULL; /* destroyed */
	if (!making)
		return r;
	/* The pool's make failed, not the request: made on the spot, as with none. It fit the
	 * pool, so its root is the pool's. */
	*pooled = 0;
	if ((r = rt_sandbox_start(p->rt, spec, p->rootfs, p->flags | RT_START_NOWAIT, sb, err)) < 0)
		return r;
	return 1;
}

void rt_pool_release(struct rt_pool *p)
{
	if (p->making)
		rt_sandbox_destroy(p->making, NULL);
	p->making = NULL;
	while (p->n > 0)
		rt_sandbox_destroy(p->ready[--p->n], NULL);
	free(p->ready);
	p->ready = NULL;
}
