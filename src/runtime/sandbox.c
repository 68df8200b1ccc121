/* The runtime's side of a sandbox: allocate (state directory, uid range, cgroups, cleanup
 * helper), clone the sandbox's init into new namespaces, map its ids, hand it the idmapped image
 * mount, wait until the command runs; then signal, kill, reap and tear down. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/fsutil.h"
#include "../lib/id.h"
#include "../lib/timing.h"
#include "caps.h"
#include "disk.h"
#include "internal.h"

#define HELPER_STACK_BYTES (256 * 1024)
#define HELPER_CTX_BYTES   4096
#define HELPER_GUARD_BYTES 4096

/* The cleanup helper shares the runtime's memory (CLONE_VM; a fork costs ~1 ms on a VM). It
 * lives outside the sandbox's cgroups, so no OOM in a sandbox can pick it. init must not share
 * the runtime's memory: the OOM killer kills every process that shares its victim's memory, and
 * init sits in the sandbox's memory cgroup. Under ASan, whose per-thread state lives in TLS that
 * such a clone would share, the helper is forked. */
#if defined(__SANITIZE_ADDRESS__)
#define HELPER_SHARES_VM 0
#else
#define HELPER_SHARES_VM 1
#endif

/* What the cleanup helper works from: written by the runtime at the bottom of the helper's own
 * stack mapping before the clone and never touched by the runtime again, so the helper never
 * reads the runtime's (possibly freed) sandbox. */
struct helper_ctx {
	struct cg_layout layout;
	struct cg_sandbox cg; /* its dirfds are numbers in the helper's own fd table */
	int cg_made;
	char run_dir[sizeof(((struct rt *)0)->run_dir)];
	char inst_dir[sizeof(((struct rt *)0)->inst_dir)];
	char id[ID_MAX_BYTES];
	char owner[64];
	int slot;
	int rfd;
	int lock_fd;
	int disk_fd; /* the instance's directory on the btrfs disk, or -1 */
};

#define SANDBOX_NS_FLAGS                                                                           \
	(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET)

int rt_instance_valid(const char *instance)
{
	size_t n = strlen(instance);
	if (n == 0 || n > RT_INSTANCE_MAX_CHARS)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((instance[i] >= 'a' && instance[i] <= 'z') ||
		      (instance[i] >= '0' && instance[i] <= '9')))
			return 0;
	return 1;
}

static uint64_t mem_total_bytes(void)
{
	char buf[4096];
	if (fs_read_at(AT_FDCWD, "/proc/meminfo", buf, sizeof(buf)) < 0)
		return 0;
	const char *p = strstr(buf, "MemTotal:");
	return p ? strtoull(p + 9, NULL, 10) * 1024 : 0;
}

/* Take <run_dir>/<instance>.lock shared, for the runtime's life: gc removes the instance's
 * parent cgroups, state directory and this file only when it can take it exclusively, so never
 * under a runtime that runs. gc may unlink the file while we wait for it: then we hold a lock on
 * a file nobody else will open, so we take the new one. */
static int instance_lock(struct rt *rt, struct sk_error *err)
{
	char lock[sizeof(rt->run_dir) + 16];
	snprintf(lock, sizeof(lock), "%s/%s.lock", rt->run_dir, rt->instance);
	for (int tries = 0; tries < 100; tries++) {
		int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			return sk_error_errno(err, -errno, "open %s", lock);
		if (flock(fd, LOCK_SH) < 0) {
			int r = -errno;
			close(fd);
			return sk_error_errno(err, r, "lock %s", lock);
		}
		struct stat held, named;
		if (fstat(fd, &held) == 0 && stat(lock, &named) == 0 &&
		    held.st_ino == named.st_ino && held.st_dev == named.st_dev) {
			rt->lock_fd = fd;
			return 0;
		}
		close(fd);
	}
	return sk_error_set(err, -EAGAIN, "lock %s: removed again and again under us", lock);
}

int rt_init(struct rt *rt, const char *instance, const char *run_dir, struct sk_error *err)
{
	memset(rt, 0, sizeof(*rt));
	rt->lock_fd = -1;
	rt->init_exe_fd = RT_INIT_EXE_UNKNOWN;
	rt->disk.inst_fd = rt->disk.lock_fd = -1;
	if (!rt_instance_valid(instance))
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "instance id '%.16s': 1 to %d characters of a-z and 0-9",
		                    instance, RT_INSTANCE_MAX_CHARS);
	snprintf(rt->instance, sizeof(rt->instance), "%s", instance);
	snprintf(rt->run_dir, sizeof(rt->run_dir), "%s", run_dir ? run_dir : RT_DEFAULT_RUN_DIR);
	snprintf(rt->inst_dir, sizeof(rt->inst_dir), "%s/%s", rt->run_dir, rt->instance);
	rt->lock_fd = -1;
	int r = fs_mkdir_p(rt->run_dir, 0711);
	if (r < 0)
		return sk_error_errno(err, r, "make %s", rt->run_dir);
	if ((r = instance_lock(rt, err)) < 0) {
		rt_release(rt);
		return r;
	}
	if ((r = fs_mkdir_p(rt->inst_dir, 0711)) < 0) {
		sk_error_errno(err, r, "make %s", rt->inst_dir);
		rt_release(rt);
		return r;
	}
	if ((r = cgroup_layout_detect("/proc/self/mountinfo", &rt->cg, err)) < 0)
		goto fail;
	/* Aggregate limits for all sandboxes of the instance: leave the host room to breathe. */
	unsigned long long pid_max = 32768;
	fs_read_u64_at(AT_FDCWD, "/proc/sys/kernel/pid_max", &pid_max);
	uint64_t mem = mem_total_bytes();
	struct cg_limits agg = {.cpu = 0, .memory_bytes = mem / 10 * 9, .pids = pid_max / 4 * 3};
	if ((r = cgroup_parent_ensure(&rt->cg, rt->instance, &agg, err)) < 0)
		goto fail;
	if ((r = rt_seccomp_build(&rt->seccomp, err)) < 0)
		goto fail;
	rt->caps = caps_default_mask();
	caps_last_cap();
	return 0;
fail:
	rt_release(rt);
	return r;
}

static void helpers_reap(struct rt *rt, int block);

void rt_release(struct rt *rt)
{
	helpers_reap(rt, 1);
	rt_seccomp_release(&rt->seccomp);
	disk_release(&rt->disk);
	if (rt->lock_fd >= 0)
		close(rt->lock_fd);
	rt->lock_fd = -1;
	if (rt->init_exe_fd >= 0)
		close(rt->init_exe_fd);
	rt->init_exe_fd = -1;
}

int rt_instance_remove_if_idle(struct rt *rt)
{
	if (flock(rt->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int r = errno == EWOULDBLOCK ? 0 : -errno;
		/* A failed conversion has dropped the shared lock: take it back. */
		flock(rt->lock_fd, LOCK_SH);
		return r;
	}
	cgroup_parent_remove(&rt->cg, rt->instance);
	/* Only once the state directory is gone (no sandbox of the instance is left, detached
	 * ones included): a running egress sandbox without its table would be unfiltered. */
	if (rmdir(rt->inst_dir) == 0 || errno == ENOENT)
		rt_net_table_remove(rt);
	/* With the instance's lock still held: a start of the instance let in once we let go
	 * would find its directory on the disk removed under it. */
	disk_remove_if_idle(&rt->disk, rt->instance);
	char lock[sizeof(rt->run_dir) + 16];
	snprintf(lock, sizeof(lock), "%s/%s.lock", rt->run_dir, rt->instance);
	unlink(lock);
	close(rt->lock_fd);
	rt->lock_fd = -1;
	return 1;
}

const char *rt_sandbox_id(const struct rt_sandbox *sb)
{
	return sb->id;
}

const char *rt_sandbox_label(const struct rt_sandbox *sb)
{
	return sb->label;
}

const char *rt_sandbox_dir(const struct rt_sandbox *sb)
{
	return sb->scratch;
}

int rt_sandbox_pidfd(const struct rt_sandbox *sb)
{
	return sb->pidfd;
}

int rt_sandbox_oom_fd(const struct rt_sandbox *sb, short *ret_events)
{
	*ret_events = sb->oom_events;
	return sb->oom_fd;
}

/* The cleanup helper's cleanup, from its own context: the cgroups first (killing what is left),
 * and only once they are gone the uid range and state (a range is reused only when nothing of
 * its sandbox is left). Allocates nothing: the heap is shared with a process that may have died
 * anywhere. */
static void helper_cleanup(struct helper_ctx *h)
{
	h->cg.layout = &h->layout;
	if (h->cg_made && cgroup_sandbox_destroy(&h->cg, RT_KILL_GRACE_MS, NULL) < 0)
		return; /* gc finishes the job */
	if (h->disk_fd >= 0)
		disk_subvol_remove(h->disk_fd, h->id);
	idmap_slot_release(h->run_dir, h->slot, h->owner);
	state_sandbox_dir_remove(h->inst_dir, h->id);
}

/* The cleanup helper's body. It has its own stack, fd table and signal state; until we die it
 * only blocks in read(), so it never races our heap. */
static int helper_main(void *arg)
{
	struct helper_ctx *h = arg;
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	setsid();
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(devnull, 2);
	}
	int keep[3 + CG_MAX_HIER] = {h->rfd, h->lock_fd};
	size_t nkeep = 2;
	if (h->disk_fd >= 0)
		keep[nkeep++] = h->disk_fd;
	for (int i = 0; i < CG_MAX_HIER; i++)
		if (h->cg.dirfd[i] >= 0)
			keep[nkeep++] = h->cg.dirfd[i];
	fs_close_all_except(keep, nkeep);
	prctl(PR_SET_NAME, "skiff-cleanup");
	char c;
	ssize_t n;
	do {
		n = read(h->rfd, &c, 1);
	} while (n < 0 && errno == EINTR);
	if (n != 1)
		helper_cleanup(h);
	_exit(0);
}

/* A child that outlives us: if we die (even by SIGKILL) before saying we are done, it removes
 * the sandbox's cgroups, uid range and state. init dies with us through PDEATHSIG. The helper
 * is a clone sharing our memory: a fork costs ~1 ms on a VM, this ~50 µs. */
static int helper_spawn(struct rt_sandbox *sb, struct sk_error *err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return sk_error_errno(err, -errno, "pipe");
	void *stack = mmap(NULL, HELPER_STACK_BYTES, PROT_READ | PROT_WRITE,
	                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED) {
		int r = -errno;
		close(p[0]);
		close(p[1]);
		return sk_error_errno(err, r, "map the cleanup helper's stack");
	}
	/* The context fills the mapping's first page, a guard page follows, the stack grows down
	 * from the top toward it. */
	_Static_assert(sizeof(struct helper_ctx) <= HELPER_CTX_BYTES, "helper context too big");
	struct helper_ctx *h = stack;
	if (mprotect((char *)stack + HELPER_CTX_BYTES, HELPER_GUARD_BYTES, PROT_NONE) < 0) {
		int r = -errno;
		munmap(stack, HELPER_STACK_BYTES);
		close(p[0]);
		close(p[1]);
		return sk_error_errno(err, r, "guard the cleanup helper's stack");
	}
	h->layout = sb->rt->cg;
	h->cg = sb->cg;
	h->cg.layout = &h->layout;
	h->cg_made = sb->cg_made;
	snprintf(h->run_dir, sizeof(h->run_dir), "%s", sb->rt->run_dir);
	snprintf(h->inst_dir, sizeof(h->inst_dir), "%s", sb->rt->inst_dir);
	snprintf(h->id, sizeof(h->id), "%s", sb->id);
	snprintf(h->owner, sizeof(h->owner), "%s", sb->owner);
	h->slot = sb->slot.slot;
	h->rfd = p[0];
	h->lock_fd = sb->lock_fd;
	/* Our fd table is copied into the helper's: the number stays valid there. */
	h->disk_fd = sb->disk_fd >= 0 ? sb->rt->disk.inst_fd : -1;
#if HELPER_SHARES_VM
	pid_t pid = clone(helper_main, (char *)stack + HELPER_STACK_BYTES, CLONE_VM | SIGCHLD, h);
#else
	pid_t pid = fork();
	if (pid == 0)
		helper_main(h);
#endif
	if (pid < 0) {
		int r = -errno;
		munmap(stack, HELPER_STACK_BYTES);
		close(p[0]);
		close(p[1]);
		return sk_error_errno(err, r, "start the cleanup helper");
	}
	close(p[0]);
	sb->helper_pid = pid;
	sb->helper_stack = stack;
	sb->helper_fd = p[1];
	return 0;
}

/* Reap the helpers that have exited; with block, wait for all of them. */
static void helpers_reap(struct rt *rt, int block)
{
	int kept = 0;
	for (int i = 0; i < rt->nhelpers; i++) {
		pid_t p;
		do {
			p = waitpid(rt->helpers[i].pid, NULL, block ? __WALL : __WALL | WNOHANG);
		} while (p < 0 && errno == EINTR);
		if (p == 0)
			rt->helpers[kept++] = rt->helpers[i];
		else
			munmap(rt->helpers[i].stack, HELPER_STACK_BYTES);
	}
	rt->nhelpers = kept;
}

/* Let the helper go: with done, it exits; without, it cleans up what we could not. Either way
 * it is reaped later, off this path. */
static void helper_dismiss(struct rt_sandbox *sb, int done)
{
	if (sb->helper_fd >= 0) {
		if (done && write(sb->helper_fd, "D", 1) < 0) {
			/* the helper is gone already */
		}
		close(sb->helper_fd);
		sb->helper_fd = -1;
	}
	if (sb->helper_pid > 0) {
		struct rt *rt = sb->rt;
		helpers_reap(rt, 0);
		if (rt->nhelpers == (int)ARRAY_SIZE(rt->helpers))
			helpers_reap(rt, 1);
		rt->helpers[rt->nhelpers].pid = sb->helper_pid;
		rt->helpers[rt->nhelpers++].stack = sb->helper_stack;
		sb->helper_pid = 0;
		sb->helper_stack = NULL;
	}
}

/* Give the child the image as an idmapped, read-only detached mount. */
static int lower_mount_make(pid_t pid, const char *rootfs, int *ret_fd, struct sk_error *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
	_cleanup_close_ int userns = open(path, O_RDONLY | O_CLOEXEC);
	if (userns < 0)
		return sk_error_errno(err, -errno, "open %s", path);
	_cleanup_close_ int fd =
	    open_tree(AT_FDCWD, rootfs, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (fd < 0)
		return sk_error_errno(err, -errno, "clone a mount of %s", rootfs);
	struct mount_attr attr = {
	    .attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV,
	    .userns_fd = (uint64_t)userns,
	};
	if (mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
		return sk_error_errno(err, -errno, "idmap the mount of %s", rootfs);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

static void sandbox_free(struct rt_sandbox *sb);

/* The writable layer's tmpfs, made here rather than by init so that the runtime keeps a handle
 * on it (init's own mounts are out of reach once it pivots): size is the disk limit, its root
 * the sandbox's root's (base), its pages charged to whoever writes them (the sandbox's memory
 * cgroup), as a tmpfs init mounts itself. */
static int tmpfs_upper_make(uint64_t disk_mib, uid_t base, int *ret_fd, struct sk_error *err)
{
	_cleanup_close_ int fs = fsopen("tmpfs", FSOPEN_CLOEXEC);
	if (fs < 0)
		return sk_error_errno(err, -errno, "open a tmpfs");
	char size[32], id[16];
	snprintf(size, sizeof(size), "%llum", (unsigned long long)disk_mib);
	snprintf(id, sizeof(id), "%u", (unsigned)base);
	if (fsconfig(fs, FSCONFIG_SET_STRING, "source", "skiff", 0) < 0 ||
	    fsconfig(fs, FSCONFIG_SET_STRING, "size", size, 0) < 0 ||
	    fsconfig(fs, FSCONFIG_SET_STRING, "mode", "0755", 0) < 0 ||
	    fsconfig(fs, FSCONFIG_SET_STRING, "uid", id, 0) < 0 ||
	    fsconfig(fs, FSCONFIG_SET_STRING, "gid", id, 0) < 0 ||
	    fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return sk_error_errno(err, -errno, "configure the writable layer's tmpfs");
	int mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
	if (mnt < 0)
		return sk_error_errno(err, -errno, "mount the writable layer's tmpfs");
	*ret_fd = mnt;
	return 0;
}

/* Make the writable layer's mount (the btrfs subvolume's, or a tmpfs kept in sb->tmpfs_fd) and
 * send it to init. */
static int upper_send(struct rt_sandbox *sb, const struct spec *spec, struct sk_error *err)
{
	_cleanup_close_ int upper = -1;
	int r;
	if (sb->disk_fd >= 0)
		r = disk_upper_mount(sb->disk_fd, &upper, err);
	else if ((r = tmpfs_upper_make(spec->disk_mib, sb->slot.base, &upper, err)) == 0 &&
	         (sb->tmpfs_fd = fcntl(upper, F_DUPFD_CLOEXEC, 3)) < 0)
		r = sk_error_errno(err, -errno, "keep the writable layer's tmpfs");
	if (r < 0)
		return r;
	r = rt_msg_send(sb->sync_fd, RT_MSG_UPPER, 0, "", upper);
	return r < 0 ? sk_error_errno(err, r, "send the writable layer to init") : 0;
}

int rt_sandbox_upper_open(const struct rt_sandbox *sb, int *ret_fd, uid_t *ret_base,
                          struct sk_error *err)
{
	int fd;
	if (sb->tmpfs_fd >= 0)
		fd = openat(sb->tmpfs_fd, "upper", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	else if (sb->disk_fd >= 0)
		fd = openat(sb->disk_fd, "upper", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	else if (sb->rt->disk.btrfs && sb->rt->disk.inst_fd >= 0) {
		char path[ID_MAX_BYTES + 8];
		snprintf(path, sizeof(path), "%s/upper", sb->id);
		fd = openat(sb->rt->disk.inst_fd, path,
		            O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	} else
		return sk_error_set(err, -ENOENT,
		                    "sandbox %s: its writable layer is out of reach (a tmpfs "
		                    "layer is reachable only from the process that started it)",
		                    sb->id);
	if (fd < 0)
		return sk_error_errno(err, -errno, "open the writable layer of sandbox %s", sb->id);
	*ret_fd = fd;
	if (ret_base)
		*ret_base = IDMAP_BASE + (uid_t)sb->slot.slot * IDMAP_RANGE;
	return 0;
}

/* Undo what the network's attach set up outside the sandbox, before its address (its slot) can
 * go to another. */
static void net_detach(struct rt_sandbox *sb)
{
	if (sb->rt->net && sb->slot.slot >= 0)
		sb->rt->net->detach(sb->rt->net->ctx, sb);
}

void rt_sandbox_close(struct rt_sandbox *sb)
{
	if (!sb)
		return;
	cgroup_sandbox_close(&sb->cg);
	sandbox_free(sb);
}

static void sandbox_free(struct rt_sandbox *sb)
{
	if (sb->events_fd >= 0)
		close(sb->events_fd);
	if (sb->pidfd >= 0)
		close(sb->pidfd);
	if (sb->sync_fd >= 0)
		close(sb->sync_fd);
	if (sb->oom_fd >= 0)
		close(sb->oom_fd);
	if (sb->lock_fd >= 0)
		close(sb->lock_fd);
	if (sb->disk_fd >= 0)
		close(sb->disk_fd);
	if (sb->tmpfs_fd >= 0)
		close(sb->tmpfs_fd);
	free(sb);
}

/* Read messages already queued from init without blocking; remember an exit status. */
static void drain_messages(struct rt_sandbox *sb)
{
	struct pollfd pfd = {.fd = sb->sync_fd, .events = POLLIN};
	while (sb->sync_fd >= 0 && poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN)) {
		struct rt_msg m;
		if (rt_msg_recv(sb->sync_fd, &m, NULL) <= 0)
			break;
		if (m.type == RT_MSG_EXIT) {
			sb->exit_known = 1;
			sb->exit_status = m.code;
			timing_mark_at(&sb->marks, "command_exited", strtoull(m.text, NULL, 10));
		}
	}
}

static void reap_init(struct rt_sandbox *sb)
{
	if (sb->reaped || sb->pid <= 0)
		return;
	if (sb->attached) {
		/* Not our child: wait for its pidfd, and read its end from the events log. */
		struct pollfd p = {.fd = sb->pidfd, .events = POLLIN};
		while (poll(&p, 1, -1) < 0 && errno == EINTR)
			;
		int status;
		if (!sb->exit_known && state_events_main(sb->rt->inst_dir, sb->id, &status) == 0) {
			sb->exit_known = 1;
			sb->exit_status = status;
		}
		sb->reaped = 1;
		return;
	}
	drain_messages(sb);
	while (waitpid(sb->pid, NULL, __WALL) < 0 && errno == EINTR)
		;
	drain_messages(sb);
	timing_mark(&sb->marks, "sandbox_gone");
	sb->reaped = 1;
}

static int child_trampoline(void *arg)
{
	const struct rt_child_args *a = arg;
	close(a->parent_fd);
	rt_child_main(a);
}

/* The error init reported instead of "started" (or its silence). */
static int started_error(ssize_t n, const struct rt_msg *m, struct sk_error *err)
{
	if (n > 0 && m->type == RT_MSG_EXEC_ERROR)
		return sk_error_set(err, m->code == -ENOENT ? -SK_ECMD_NOTFOUND : -SK_ECMD_EXEC,
		                    "%s", m->text);
	if (n > 0 && m->type == RT_MSG_ERROR)
		return sk_error_set(err, m->code < 0 ? m->code : -EIO, "set up sandbox: %s",
		                    m->text);
	return sk_error_set(err, -EIO, "set up sandbox: init exited without a word");
}

/* Wait for init's word that the command runs. */
int started_await(struct rt_sandbox *sb, struct sk_error *err)
{
	struct rt_msg m;
	ssize_t n = rt_msg_recv(sb->sync_fd, &m, NULL);
	if (n > 0 && m.type == RT_MSG_STARTED) {
		timing_mark(&sb->marks, "started");
		size_t used = strlen(sb->init_marks);
		snprintf(sb->init_marks + used, sizeof(sb->init_marks) - used, "%s", m.text);
		return 0;
	}
	return started_error(n, &m, err);
}

int rt_sandbox_ready_fd(const struct rt_sandbox *sb)
{
	return sb->sync_fd;
}

int rt_sandbox_ready_await(struct rt_sandbox *sb, struct sk_error *err)
{
	struct rt_msg m;
	ssize_t n = rt_msg_recv(sb->sync_fd, &m, NULL);
	if (n > 0 && m.type == RT_MSG_READY) {
		timing_mark(&sb->marks, "ready");
		snprintf(sb->init_marks, sizeof(sb->init_marks), "%s", m.text);
		return 0;
	}
	int r = started_error(n, &m, err);
	rt_sandbox_destroy(sb, NULL);
	return r;
}

int rt_sandbox_start(struct rt *rt, const struct spec *spec, const char *rootfs, unsigned flags,
                     struct rt_sandbox **ret, struct sk_error *err)
{
	int detached = !!(flags & RT_START_DETACHED);
	int stdio[3] = {-1, -1, -1}; /* a detached sandbox's, until init has them */
	if (!spec->argv && !detached && !(flags & RT_START_POOLED))
		return sk_error_set(err, -SK_EINVAL_SPEC, "command: none given");
	int r = spec_validate(spec, err);
	if (r < 0)
		return r;
	if (spec->network == SPEC_NET_EGRESS && !rt->net)
		return sk_error_set(err, -SK_EINVAL_SPEC,
		                    "network egress needs skiffd (skiff sandbox create --network "
		                    "egress): this program has no egress networking");
	struct rt_sandbox *sb = calloc(1, sizeof(*sb));
	if (!sb)
		return sk_error_set(err, -ENOMEM, "out of memory");
	sb->rt = rt;
	sb->flags = flags;
	sb->base = *spec; /* numbers only: the strings stay the caller's */
	timing_mark(&sb->marks, "begin");
	sb->pidfd = sb->sync_fd = sb->lock_fd = sb->helper_fd = sb->oom_fd = sb->events_fd =
	    sb->disk_fd = sb->tmpfs_fd = -1;
	sb->slot.slot = -1;
	for (int i = 0; i < CG_MAX_HIER; i++)
		sb->cg.dirfd[i] = -1;
	r = id_new("sb-", sb->id, sizeof(sb->id));
	if (r < 0) {
		sk_error_errno(err, r, "make an id");
		goto fail;
	}
	snprintf(sb->owner, sizeof(sb->owner), "%s %s", rt->instance, sb->id);
	snprintf(sb->scratch, sizeof(sb->scratch), "%s/%s", rt->inst_dir, sb->id);
	/* The default hostname is the id's last 12 characters: unique enough, short like Docker's.
	 */
	snprintf(sb->hostname, sizeof(sb->hostname), "%s",
	         spec->hostname ? spec->hostname : sb->id + strlen(sb->id) - 12);
	for (char *h = sb->hostname; *h; h++)
		if (!spec->hostname && *h >= 'A' && *h <= 'Z')
			*h += 'a' - 'A';

	if ((r = state_sandbox_dir_create(rt, sb->id, &sb->lock_fd, err)) < 0)
		goto fail;
	timing_mark(&sb->marks, "state_dir");
	if ((r = idmap_slot_alloc(rt->run_dir, sb->owner, &sb->slot, err)) < 0)
		goto fail;
	timing_mark(&sb->marks, "uid_range");
	struct cg_limits lim = {
	    .cpu = spec->cpu,
	    .memory_bytes = spec->memory_mib * 1024 * 1024,
	    .pids = spec->pids,
	};
	if ((r = cgroup_sandbox_create(&rt->cg, rt->instance, sb->id, &lim, &sb->cg, err)) < 0)
		goto fail;
	sb->cg_made = 1;
	if ((r = cgroup_sandbox_oom_fd(&sb->cg, &sb->oom_fd, &sb->oom_events, err)) < 0)
		goto fail;
	timing_mark(&sb->marks, "cgroups");
	if (rt->disk.btrfs) {
		if ((r = disk_subvol_make(&rt->disk, sb->id, sb->slot.base,
		                          spec->disk_mib * 1024 * 1024, &sb->disk_fd, err)) < 0)
			goto fail;
		timing_mark(&sb->marks, "subvolume");
	}
	/* Looked for at the first detached start only: ls, kill, exec and foreground runs never
	 * need it. */
	if (detached && rt->init_exe_fd == RT_INIT_EXE_UNKNOWN)
		rt_init_exe_open(rt);
	if (detached) {
		/* A detached sandbox outlives us: no helper; gc cleans up after a failed start. Its
		 * output goes to files in its state directory, never to our stdio. */
		if ((r = state_events_open(rt->inst_dir, sb->id, &sb->events_fd, err)) < 0 ||
		    (r = state_output_open(rt->inst_dir, sb->id, stdio, err)) < 0)
			goto fail;
	} else if ((r = helper_spawn(sb, err)) < 0) {
		goto fail;
	}
	timing_mark(&sb->marks, "cleanup_helper");

	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
		r = sk_error_errno(err, -errno, "socketpair");
		goto fail;
	}
	sb->child_args = (struct rt_child_args){
	    .rt = rt,
	    .spec = spec,
	    .scratch = sb->scratch,
	    .hostname = sb->hostname,
	    .sync_fd = sp[1],
	    .parent_fd = sp[0],
	    .events_fd = sb->events_fd,
	    .detached = detached,
	    .stdio = {stdio[0], stdio[1], stdio[2]},
	    .wait_for_command = !!(flags & RT_START_POOLED),
	    .upper_volatile = rt->disk.btrfs,
	    .resolv_conf = spec->network == SPEC_NET_EGRESS ? rt->net->resolv_conf : NULL,
	    .serve_execs = !!(flags & RT_START_INIT_EXECS),
	    .own_netns = spec->network != SPEC_NET_EGRESS,
	};
	int pidfd = -1;
	/* Fork-like, on a copy of this stack: init gets a memory of its own (see HELPER_SHARES_VM).
	 */
	unsigned long ns_flags = SANDBOX_NS_FLAGS;
	if (sb->child_args.own_netns)
		ns_flags &= ~(unsigned long)CLONE_NEWNET;
	long pid = syscall(SYS_clone, ns_flags | CLONE_PIDFD | SIGCHLD, NULL, &pidfd, NULL, 0);
	if (pid == 0)
		child_trampoline(&sb->child_args);
	for (int i = 0; i < 3; i++) {
		if (stdio[i] >= 0)
			close(stdio[i]); /* init has them */
		stdio[i] = -1;
	}
	if (pid < 0) {
		r = sk_error_errno(err, -errno, "clone the sandbox's init");
		close(sp[0]);
		close(sp[1]);
		goto fail;
	}
	close(sp[1]);
	if (sb->events_fd >= 0) {
		close(sb->events_fd); /* init holds it */
		sb->events_fd = -1;
	}
	timing_mark(&sb->marks, "clone");
	sb->pid = (pid_t)pid;
	sb->pidfd = pidfd;
	sb->sync_fd = sp[0];

	int lower = -1;
	if ((r = idmap_write_maps(sb->pid, sb->slot.base, IDMAP_RANGE, err)) < 0)
		goto fail;
	timing_mark(&sb->marks, "id_maps");
	if ((r = cgroup_sandbox_attach(&sb->cg, sb->pid, err)) < 0)
		goto fail;
	timing_mark(&sb->marks, "cgroup_attach");
	if (spec->network == SPEC_NET_EGRESS) {
		if ((r = rt->net->attach(rt->net->ctx, sb, spec, err)) < 0)
			goto fail;
		timing_mark(&sb->marks, "net_egress");
	}
	if ((r = lower_mount_make(sb->pid, rootfs, &lower, err)) < 0)
		goto fail;
	timing_mark(&sb->marks, "idmapped_mount");
	if ((r = upper_send(sb, spec, err)) < 0) {
		close(lower);
		goto fail;
	}
	r = rt_msg_send(sb->sync_fd, RT_MSG_GO, 0, "", lower);
	close(lower);
	if (r < 0) {
		sk_error_errno(err, r, "start the sandbox's init");
		goto fail;
	}
	if (flags & RT_START_POOLED) {
		/* init mounts its root meanwhile: the caller may do other work first. */
		if (flags & RT_START_NOWAIT) {
			*ret = sb;
			return 0;
		}
		if ((r = rt_sandbox_ready_await(sb, err)) < 0)
			return r;
		*ret = sb;
		return 0;
	}
	/* Its command's start comes on sync_fd: read now, or by the caller's
	 * rt_sandbox_start_step (RT_START_NOWAIT). */
	sb->start_phase = RT_PHASE_STARTED;
	if (!(flags & RT_START_NOWAIT) && (r = rt_sandbox_start_step(sb, spec, err)) < 0)
		return r; /* it is destroyed */
	*ret = sb;
	return 0;
fail:
	for (int i = 0; i < 3; i++)
		if (stdio[i] >= 0)
			close(stdio[i]);
	rt_sandbox_destroy(sb, NULL);
	return r;
}

int rt_sandbox_timings(struct rt_sandbox *sb, struct rt_step *steps, int max)
{
	struct rt_step all[2 * TIMING_MAX_MARKS];
	int n = 0;
	for (int i = 0; i < sb->marks.n; i++)
		all[n++] = (struct rt_step){.name = sb->marks.name[i], .ns = sb->marks.ns[i]};
	/* init's marks name steps it took; their names live in init_marks, copied per step. */
	char(*names)[32] = sb->step_names;
	int k = 0;
	for (const char *p = sb->init_marks; *p && k < TIMING_MAX_MARKS;) {
		const char *colon = strchr(p, ':');
		if (!colon)
			break;
		snprintf(names[k], sizeof(names[k]), "%.*s", (int)(colon - p), p);
		char *end;
		unsigned long long ns = strtoull(colon + 1, &end, 10);
		all[n++] = (struct rt_step){.name = names[k++], .ns = ns};
		p = end + strspn(end, " ");
	}
	/* Insertion sort by time: a handful of steps. */
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && all[j].ns < all[j - 1].ns; j--) {
			struct rt_step tmp = all[j];
			all[j] = all[j - 1];
			all[j - 1] = tmp;
		}
	int out = 0;
	for (int i = 1; i < n && out < max; i++)
		steps[out++] =
		    (struct rt_step){.name = all[i].name, .ns = all[i].ns - all[i - 1].ns};
	return out;
}

int rt_sandbox_wait_command(struct rt_sandbox *sb, int *ret_status)
{
	while (!sb->exit_known && !sb->reaped && sb->sync_fd >= 0) {
		struct rt_msg m;
		ssize_t n = rt_msg_recv(sb->sync_fd, &m, NULL);
		if (n <= 0)
			break;
		if (m.type == RT_MSG_EXIT) {
			sb->exit_known = 1;
			sb->exit_status = m.code;
			timing_mark_at(&sb->marks, "command_exited", strtoull(m.text, NULL, 10));
		}
	}
	if (!sb->exit_known)
		return -ESRCH;
	*ret_status = sb->exit_status;
	return 0;
}

int rt_sandbox_signal(struct rt_sandbox *sb, int sig)
{
	if (sb->reaped)
		return -ESRCH;
	if (syscall(SYS_pidfd_send_signal, sb->pidfd, sig, NULL, 0) < 0)
		return -errno;
	return 0;
}

/* Whether /proc/<pid>/cgroup names the cgroup rel ("skiff-<instance>/<id>") in some hierarchy. */
static int proc_in_cgroup(pid_t pid, const char *rel)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	if (fs_read_at(AT_FDCWD, path, buf, sizeof(buf)) <= 0)
		return 0;
	size_t len = strlen(rel);
	for (char *p = buf; (p = strstr(p, rel)); p += len)
		if (p > buf && p[-1] == '/' && (p[len] == '\n' || p[len] == '\0'))
			return 1;
	return 0;
}

int rt_sandbox_signal_all(struct rt_sandbox *sb, int sig)
{
	const struct cg_layout *l = sb->cg.layout;
	int h = l ? l->where[CG_PIDS] : -1;
	if (sb->reaped || h < 0 || sb->cg.dirfd[h] < 0)
		return 0;
	char buf[16384];
	if (fs_read_at(sb->cg.dirfd[h], "cgroup.procs", buf, sizeof(buf)) <= 0)
		return 0;
	int count = 0;
	for (char *p = buf; *p;) {
		char *end;
		long pid = strtol(p, &end, 10);
		if (end == p)
			break;
		p = end + strspn(end, "\n");
		if (pid <= 0 || pid == sb->pid)
			continue;
		_cleanup_close_ int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
		/* The pidfd pins the process: if it is still in the sandbox now, it is ours. */
		if (fd < 0 || !proc_in_cgroup((pid_t)pid, sb->cg.rel))
			continue;
		if (sig == 0 || syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) == 0)
			count++;
	}
	return count;
}

int rt_sandbox_kill(struct rt_sandbox *sb, enum rt_end reason)
{
	if (!sb->forced)
		sb->forced = (int)reason + 1;
	if (sb->reaped)
		return 0;
	/* init is pid 1 of the sandbox's pid namespace: its death kills every process in it. */
	if (syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
		return -errno;
	return 0;
}

int rt_sandbox_usage(const struct rt_sandbox *sb, struct cg_usage *ret)
{
	return cgroup_sandbox_usage(&sb->cg, ret);
}

int rt_sandbox_check_oom(struct rt_sandbox *sb)
{
	uint64_t kills = 0;
	if (sb->oom_events == POLLIN) {
		/* v1: the event comes before the kill is counted, and also when an ancestor (the
		 * instance's aggregate limit) is out of memory and the victim is another sandbox.
		 * Only this sandbox's own kill counter says it was this sandbox: watch it a while.
		 */
		uint64_t v = 0;
		if (read(sb->oom_fd, &v, sizeof(v)) == sizeof(v) && v)
			sb->oom_watch_until_ns = timing_now_ns() + RT_OOM_CONFIRM_MS * 1000000ull;
		struct cg_usage u;
		cgroup_sandbox_usage(&sb->cg, &u);
		kills = u.oom_kills;
	} else {
		/* v2: reading memory.events re-arms its POLLPRI (an unread file polls ready
		 * forever); it changes for "high" and "max" too, so count kills. */
		char buf[512];
		ssize_t n = pread(sb->oom_fd, buf, sizeof(buf) - 1, 0);
		if (n > 0) {
			buf[n] = '\0';
			kills = fs_keyed_u64(buf, "oom_kill");
		}
	}
	if (kills) {
		sb->oom_watch_until_ns = 0;
		rt_sandbox_kill(sb, RT_END_OOM);
		return 1;
	}
	if (sb->oom_watch_until_ns && timing_now_ns() < sb->oom_watch_until_ns)
		return -EAGAIN;
	sb->oom_watch_until_ns = 0;
	return 0;
}

int rt_sandbox_reap(struct rt_sandbox *sb, struct rt_result *ret)
{
	reap_init(sb);
	struct rt_result res = {0};
	cgroup_sandbox_usage(&sb->cg, &res.usage);
	if (sb->forced) {
		res.end = (enum rt_end)(sb->forced - 1);
		res.code = 137;
		res.signal = SIGKILL;
	} else if (res.usage.oom_kills) {
		/* Any OOM kill ends the whole sandbox as out of memory, even when the process the
		 * kernel chose was not the main command and the main command exited after it. */
		res.end = RT_END_OOM;
		res.code = 137;
		res.signal = SIGKILL;
	} else if (!sb->exit_known) {
		res.end = res.usage.oom_kills ? RT_END_OOM : RT_END_LOST;
		res.code = 137;
		res.signal = SIGKILL;
	} else if (WIFEXITED(sb->exit_status)) {
		res.end = RT_END_EXITED;
		res.code = WEXITSTATUS(sb->exit_status);
	} else {
		res.signal = WTERMSIG(sb->exit_status);
		res.code = 128 + res.signal;
		res.end = RT_END_SIGNALED;
	}
	*ret = res;
	return 0;
}

/* Destroy the writable layer's subvolume, once nothing of the sandbox runs. One found by
 * attach is removed where its meta says (its data directory may not be ours), else by name
 * on our disk (none: -ENOENT, ignored). */
static void sandbox_disk_remove(struct rt_sandbox *sb)
{
	if (sb->disk_fd >= 0)
		close(sb->disk_fd);
	sb->disk_fd = -1;
	if (sb->attached && state_disk_remove(sb->rt, sb->id) == 0)
		return;
	if (sb->rt->disk.btrfs)
		disk_subvol_remove(sb->rt->disk.inst_fd, sb->id);
}

/* Its tmpfs layer goes before its cgroups: its pages are charged to them, which linger
 * (offline) while anything holds such pages. */
static void tmpfs_close(struct rt_sandbox *sb)
{
	if (sb->tmpfs_fd >= 0)
		close(sb->tmpfs_fd);
	sb->tmpfs_fd = -1;
}

int rt_sandbox_release(struct rt_sandbox *sb, struct sk_error *err)
{
	if (sb->pid > 0 && !sb->reaped)
		return sk_error_set(err, -EBUSY, "sandbox %s still runs", sb->id);
	tmpfs_close(sb);
	if (sb->cg_made) {
		int r = cgroup_sandbox_destroy(&sb->cg, RT_KILL_GRACE_MS, err);
		if (r < 0)
			return r;
		sb->cg_made = 0;
	}
	sandbox_disk_remove(sb);
	/* The slot may be another sandbox's by now (gc freed it): release only our own. */
	net_detach(sb);
	idmap_slot_release(sb->rt->run_dir, sb->slot.slot, sb->owner);
	sb->slot.slot = -1;
	if (sb->oom_fd >= 0)
		close(sb->oom_fd);
	sb->oom_fd = -1;
	return 0;
}

int rt_sandbox_destroy(struct rt_sandbox *sb, struct sk_error *err)
{
	if (!sb)
		return 0;
	if (sb->attached && sb->lock_fd < 0) {
		/* Whoever destroys it holds its lock: one at a time, never under its starter. */
		char lock[512];
		snprintf(lock, sizeof(lock), "%s/%s/lock", sb->rt->inst_dir, sb->id);
		sb->lock_fd = open(lock, O_RDWR | O_CLOEXEC);
		if (sb->lock_fd >= 0 && flock(sb->lock_fd, LOCK_EX | LOCK_NB) < 0) {
			int r = sk_error_set(err, -EBUSY,
			                     "sandbox %s is busy: another process is "
			                     "starting or ending it",
			                     sb->id);
			rt_sandbox_close(sb);
			return r;
		}
	}
	if (sb->pid > 0 && !sb->reaped) {
		rt_sandbox_kill(sb, RT_END_KILLED);
		reap_init(sb);
	}
	tmpfs_close(sb);
	int r = 0;
	if (sb->cg_made) {
		r = cgroup_sandbox_destroy(&sb->cg, RT_KILL_GRACE_MS, err);
		sb->cg_made = r < 0; /* the helper retries what we could not remove */
	}
	if (r == 0) {
		net_detach(sb);
		sandbox_disk_remove(sb);
		idmap_slot_release(sb->rt->run_dir, sb->slot.slot, sb->owner);
		if (sb->lock_fd >= 0)
			state_sandbox_dir_remove(sb->rt->inst_dir, sb->id);
	}
	pid_t helper = sb->helper_pid;
	helper_dismiss(sb, r == 0);
	if (r < 0 && helper > 0) {
		/* The helper retries now, sharing our memory (and errno): wait for it rather than
		 * run beside it. Bounded by its own grace period. */
		helpers_reap(sb->rt, 1);
	}
	cgroup_sandbox_close(&sb->cg);
	sandbox_free(sb);
	return r;
}

static int gc_alive(const char *sbid, void *ud)
{
	return state_sandbox_is_alive(ud, sbid);
}

/* rt_gc's body; keep_ended keeps the state directories that hold a detached record. */
static int gc_run(struct rt *rt, int keep_ended, struct sk_error *err)
{
	int removed = 0;
	_cleanup_close_ int dfd = open(rt->inst_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		DIR *d = fdopendir(TAKE_FD(dfd));
		struct dirent *de;
		while (d && (de = readdir(d))) {
			if (!strncmp(de->d_name, ".new-", 5) &&
			    state_new_dir_name_valid(de->d_name)) {
				/* A start that died before its state directory was complete. */
				if (state_new_dir_abandoned(dirfd(d), de->d_name)) {
					fs_rm_rf_at(dirfd(d), de->d_name);
					removed++;
				}
				continue;
			}
			if (!id_is_valid("sb-", de->d_name) ||
			    state_sandbox_is_alive(rt, de->d_name))
				continue;
			struct state_init si;
			if (keep_ended && state_init_read(rt->inst_dir, de->d_name, &si) == 0)
				continue; /* its cgroups go below, its uid range last */
			struct cg_sandbox cg;
			int ended = 1;
			if (cgroup_sandbox_open(&rt->cg, rt->instance, de->d_name, &cg) == 0)
				ended = cgroup_sandbox_destroy(&cg, RT_KILL_GRACE_MS, NULL) == 0;
			/* Its layer, wherever it is (disk_gc below covers our own disk). */
			if (ended)
				state_disk_remove(rt, de->d_name);
			fs_rm_rf_at(dirfd(d), de->d_name);
			removed++;
		}
		if (d)
			closedir(d);
	}
	/* Cgroups whose state directory is gone. */
	char **names = NULL;
	int n = cgroup_instance_list(&rt->cg, rt->instance, &names);
	for (int i = 0; i < n; i++) {
		if (!state_sandbox_is_alive(rt, names[i])) {
			struct cg_sandbox cg;
			if (cgroup_sandbox_open(&rt->cg, rt->instance, names[i], &cg) == 0 &&
			    cgroup_sandbox_destroy(&cg, RT_KILL_GRACE_MS, err) == 0)
				removed++;
		}
		free(names[i]);
	}
	free(names);
	idmap_slots_gc(rt->run_dir, rt->instance, gc_alive, rt);
	/* Subvolumes whose sandbox is gone: counted with its state directory or cgroups. */
	disk_gc(&rt->disk, gc_alive, rt);
	return removed;
}

int rt_gc(struct rt *rt, struct sk_error *err)
{
	return gc_run(rt, 0, err);
}

int rt_gc_keep_ended(struct rt *rt, struct sk_error *err)
{
	return gc_run(rt, 1, err);
}
