/* The sandbox runtime's public API. A struct rt is one instance of the runtime on a host: its
 * instance id (every kernel-visible name carries it), its state directory, the cgroup layout and
 * the compiled seccomp profile. Functions here that create namespaces must run in a
 * single-threaded process (user namespaces can't be entered from a threaded one). */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "../lib/error.h"
#include "../lib/id.h"
#include "cgroup.h"
#include "idmap.h"
#include "seccomp.h"
#include "spec.h"

#define RT_INIT_EXE_UNKNOWN      (-2)
#define RT_INSTANCE_MAX_CHARS    4
#define RT_DEFAULT_RUN_DIR       "/run/skiff"
#define RT_DEFAULT_INSTANCE      "0"
#define RT_KILL_GRACE_MS         1000 /* how long teardown waits for a cgroup to empty */
#define RT_OOM_CONFIRM_MS        200  /* how long a v1 OOM event waits for its kill to be counted */
#define RT_OOM_RECHECK_MS        5
#define RT_EXEC_START_TIMEOUT_MS 10000 /* an exec not started by then is ended */

struct rt_sandbox;

/* Network "egress", provided by a process that links src/net (skiffd's spawner; skiff-box does
 * not, and refuses egress). attach runs once a sandbox's init is cloned with its ids mapped and
 * before anything of the sandbox runs; detach before its uid slot (and with it its address) is
 * released, and for a sandbox found again after a restart too (a no-op where nothing was set). */
struct rt_net {
	int (*attach)(void *ctx, struct rt_sandbox *sb, const struct spec *spec,
	              struct sk_error *err);
	void (*detach)(void *ctx, struct rt_sandbox *sb);
	void *ctx;
	const char *resolv_conf; /* the egress sandboxes' /etc/resolv.conf */
};

/* Where sandboxes' writable layers live. */
enum rt_disk_backend {
	RT_DISK_AUTO = 0, /* btrfs where it can be had, else tmpfs (with a reason to log) */
	RT_DISK_BTRFS,    /* btrfs or fail */
	RT_DISK_TMPFS,    /* a tmpfs in the sandbox's mount namespace, charged to its memory */
};

/* The data directory's btrfs: <data>/disk, a mount of the image <data>/disk.img unless the data
 * directory is on btrfs itself; shared by every instance using that data directory, each in a
 * directory <data>/disk/<instance> of its own. */
struct rt_disk {
	int btrfs;           /* 1: writable layers are subvolumes; 0: tmpfs */
	int inst_fd;         /* <data>/disk/<instance>, or -1 */
	int lock_fd;         /* <data>/disk.lock, held shared while we use the disk, or -1 */
	char dir[3072];      /* <data>/disk */
	char why_tmpfs[512]; /* RT_DISK_AUTO fell back to tmpfs: why ("" when it did not) */
};

struct rt {
	char instance[RT_INSTANCE_MAX_CHARS + 1];
	char run_dir[256];  /* RT_DEFAULT_RUN_DIR: shared by instances (uid slots) */
	char inst_dir[300]; /* run_dir/<instance> */
	struct cg_layout cg;
	struct rt_seccomp seccomp;
	uint64_t caps;
	int lock_fd;              /* <run_dir>/<instance>.lock, held shared */
	const struct rt_net *net; /* NULL: network egress is refused */
	/* skiff-init, which a detached sandbox's init execs into once its command runs (-1: init
	 * stays the copy of its starter it was born as; RT_INIT_EXE_UNKNOWN: not looked for yet, as
	 * only a detached start needs it; see rt_init_exe_open). */
	int init_exe_fd;
	struct rt_disk disk;
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
/* Where writable layers go, after rt_init (without it they are tmpfs). With make, the data
 * directory's btrfs is made and mounted as needed (mkfs.btrfs once per data directory); without,
 * it is used only if it is there already (gc, kill). RT_DISK_AUTO falls back to tmpfs on any
 * failure and says why in rt->disk.why_tmpfs; RT_DISK_BTRFS fails instead. */
int rt_disk_setup(struct rt *rt, const char *data_dir, enum rt_disk_backend backend, int make,
                  struct sk_error *err);
/* Where data_dir's image store is, in root (size bytes). Where the data directory is not btrfs,
 * the store is made on the btrfs disk (<data>/disk/images, <data>/images a symlink to it) so that
 * trees reflink their blobs, when on_disk (writable layers are not tmpfs) and the disk can be
 * had; else, and where a store is there already as a directory, it is <data>/images on the data
 * directory's filesystem. A store on the disk is held (mounted, its lock shared) until
 * rt_image_store_release(*ret_lock_fd); -1 otherwise. note: what to log about where it is ("" for
 * nothing). 1: the store is on the disk but was made anew there (the disk was), empty: note says
 * so, to be logged as a warning. */
int rt_image_store_place(const char *data_dir, int on_disk, char *root, size_t size,
                         int *ret_lock_fd, char *note, size_t note_size, struct sk_error *err);
/* Let the store's disk go (lock_fd -1: nothing), unmounting it if no one else holds it and no
 * instance has anything on it. */
void rt_image_store_release(const char *data_dir, int lock_fd);
/* "btrfs" or "tmpfs". */
const char *rt_disk_backend_name(const struct rt *rt);
/* Parse "auto", "btrfs" or "tmpfs"; -EINVAL otherwise. */
int rt_disk_backend_parse(const char *s, enum rt_disk_backend *ret);

/* Start flags. A detached sandbox outlives the process that started it (its init has no
 * parent-death signal, its state is recorded for rt_sandbox_attach); it may have no command
 * (spec->argv NULL): then it idles, waiting for execs. */
#define RT_START_DETACHED 1u
/* A pooled sandbox is made complete but without its command: init waits for rt_sandbox_run.
 * Pooled and detached: it outlives its starter only once it runs (until then init exits with its
 * starter); its output files and events log exist from the start, its record from the run. */
#define RT_START_POOLED 2u
/* Execs reach init, which starts them itself: a message and a fork of a small process, where
 * the way in from outside (setns) takes a fork of the runtime, cgroup writes and two more forks.
 * For a starter that keeps the sandbox's socket and execs into it (the worker's spawner). init
 * then holds the capabilities its commands get (no more), not none. */
#define RT_START_INIT_EXECS 4u
/* Return once init has everything it needs to make the sandbox, without waiting for it to have
 * (its mounts take a few milliseconds). With RT_START_POOLED, rt_sandbox_ready_fd becomes
 * readable when it is done or failed, and rt_sandbox_ready_await then says which; without, it
 * becomes readable when the command runs or failed to, and rt_sandbox_start_step says which.
 * Until then the sandbox is good for rt_sandbox_destroy only. */
#define RT_START_NOWAIT 8u

/* Create a sandbox for spec and start its command; returns once the command has been exec'd.
 * rootfs is the host directory that becomes the read-only lower layer. */
int rt_sandbox_start(struct rt *rt, const struct spec *spec, const char *rootfs, unsigned flags,
                     struct rt_sandbox **ret, struct sk_error *err);
/* Start spec's command in a sandbox made with RT_START_POOLED: its cpu, memory and pids limits
 * (and its disk limit, on btrfs) are applied where they differ from the ones it was made with;
 * rootfs and network must be the same, and disk too on tmpfs (rt_pool_fits). Returns once the
 * command has been exec'd. A detached one may get no command (spec->argv NULL): it then idles,
 * waiting for execs. */
int rt_sandbox_run(struct rt_sandbox *sb, const struct spec *spec, struct sk_error *err);
/* A sandbox started with RT_START_POOLED | RT_START_NOWAIT: the fd to poll for its end of
 * making, and the wait for it (0 once it is ready; on failure it is destroyed). */
int rt_sandbox_ready_fd(const struct rt_sandbox *sb);
int rt_sandbox_ready_await(struct rt_sandbox *sb, struct sk_error *err);
/* A sandbox on its way (rt_pool_start_begin, or RT_START_NOWAIT without RT_START_POOLED), once
 * rt_sandbox_ready_fd is readable: 1 while more is to come (poll again), 0 once its command
 * runs (spec, the one it was begun with, is recorded), or an error: the sandbox is destroyed. */
int rt_sandbox_start_step(struct rt_sandbox *sb, const struct spec *spec, struct sk_error *err);

/* A pool of sandboxes made ahead for one base spec and root filesystem, refilled by its owner
 * (between requests, or when idle: rt_pool_fill, or in two steps: rt_pool_fill_begin, then
 * rt_pool_fill_end once rt_pool_making_fd is readable, with other work in between).
 * Single-threaded, like all sandbox making. */
struct rt_pool {
	struct rt *rt;
	struct spec base; /* numbers only: the pool does not own strings */
	char rootfs[4096];
	struct rt_sandbox **ready;
	struct rt_sandbox *making; /* begun, its init still making it */
	int n, target;
	unsigned flags; /* added to every start (RT_START_DETACHED); 0 after rt_pool_init */
};
int rt_pool_init(struct rt_pool *p, struct rt *rt, const struct spec *base, const char *rootfs,
                 int target, struct sk_error *err);
/* Make up to max_new sandboxes, as long as the pool is below its target. Returns how many. */
int rt_pool_fill(struct rt_pool *p, int max_new, struct sk_error *err);
/* Begin one sandbox for the pool if it is below its target and none is being made: 1 when
 * begun, 0 when none was needed, or -errno. */
int rt_pool_fill_begin(struct rt_pool *p, struct sk_error *err);
/* The fd of the sandbox being made (readable once its init is done), -1 when none is. */
int rt_pool_making_fd(const struct rt_pool *p);
/* Finish the sandbox being made (waits for its init if it is not done yet): 0 when it joined
 * the pool, 0 too when none was being made, or -errno (it is gone). */
int rt_pool_fill_end(struct rt_pool *p, struct sk_error *err);
/* True when a request can be served from the pool (same root and network; same disk size
 * unless the disk is btrfs, whose limit changes at the start). */
int rt_pool_fits(const struct rt_pool *p, const struct spec *spec, const char *rootfs);
/* Start spec: from the pool when it fits and has one ready (*ret_pooled 1), else made on the
 * spot. */
int rt_pool_start(struct rt_pool *p, const struct spec *spec, const char *rootfs,
                  struct rt_sandbox **ret, int *ret_pooled, struct sk_error *err);
/* The same without waiting for init: from the pool when it fits and has one ready or being made,
 * else begun on the spot (RT_START_NOWAIT). *ret is on its way: poll rt_sandbox_ready_fd and call
 * rt_sandbox_start_step with the same spec until it has started. */
int rt_pool_start_begin(struct rt_pool *p, const struct spec *spec, const char *rootfs,
                        struct rt_sandbox **ret, int *ret_pooled, struct sk_error *err);
/* rt_sandbox_start_step for a start rt_pool_start_begin began: when it took the sandbox being
 * made and that make failed, it is made on the spot instead, as rt_pool_start does (*sb is
 * then the new one, *pooled 0, and 1 is returned: poll its fd). On failure *sb is destroyed and
 * NULL. */
int rt_pool_start_step(struct rt_pool *p, struct rt_sandbox **sb, const struct spec *spec,
                       int *pooled, struct sk_error *err);
/* Destroy the sandboxes still waiting. */
void rt_pool_release(struct rt_pool *p);

/* Forget a sandbox without touching it (a detached one runs on). Accepts NULL. */
void rt_sandbox_close(struct rt_sandbox *sb);
/* Find a detached sandbox of this instance from its state (any process may: after a restart,
 * or beside the one that started it). Its init is identified by pidfd and start time, never by a
 * bare pid. A sandbox whose init is gone is returned too, as ended (rt_sandbox_running 0),
 * with its main command's status when init recorded one. -ENOENT: no such sandbox. */
int rt_sandbox_attach(struct rt *rt, const char *id, struct rt_sandbox **ret, struct sk_error *err);
/* True while the sandbox's init runs. */
int rt_sandbox_running(const struct rt_sandbox *sb);
/* The label its starter gave it (spec->label), "" when none. */
const char *rt_sandbox_label(const struct rt_sandbox *sb);
/* The sandbox's state directory, where a detached one's output files live. */
const char *rt_sandbox_dir(const struct rt_sandbox *sb);

/* A process to start in a running sandbox, like its main command but beside it. */
struct rt_exec_spec {
	char *const *argv; /* NULL-terminated */
	char *const *env;  /* "K=V", envc of them */
	size_t envc;
	const char *workdir; /* NULL: / */
	int stdio[3];        /* fds it gets as 0, 1, 2; -1: /dev/null */
	/* A terminal instead of stdio: a pseudo-terminal of the sandbox's own devpts (its slave's
	 * path is valid inside) of this size, the command's controlling terminal in a session of
	 * its own, on its 0, 1 and 2; the master comes back in rt_exec.pty_fd. */
	int pty;
	unsigned short pty_rows, pty_cols;
};

/* A started exec. Its status outlives this handle and this process: it is in the sandbox's
 * events log under (nspid, start). */
struct rt_exec {
	pid_t pid;                /* in the host's pid namespace */
	pid_t nspid;              /* in the sandbox's */
	unsigned long long start; /* start time: with nspid, names it in the events log */
	int pidfd;
	int pty_fd; /* the terminal's master (O_NONBLOCK), when asked for; else -1 */
};

/* Start a process in the sandbox: its cgroups, namespaces, root, capabilities and seccomp
 * profile, as a child of its init. Returns once it has exec'd (127/126-style errors come back
 * as -SK_ECMD_NOTFOUND / -SK_ECMD_EXEC). */
int rt_sandbox_exec(struct rt_sandbox *sb, const struct rt_exec_spec *es, struct rt_exec *ret,
                    struct sk_error *err);
/* The same without waiting for the command's exec where init starts it (RT_START_INIT_EXECS):
 * returns 0 with *ret filled when it started at once (the setns way), or 1 with *ret_start on its
 * way. Poll rt_exec_start_fd() for its *events and call rt_exec_start_step, until it returns 0
 * (*ret filled) or an error (rt_sandbox_exec's); at rt_exec_start_deadline_ms() (CLOCK_MONOTONIC),
 * or when the caller is done with the sandbox, rt_exec_start_cancel. Either frees the start, and a
 * command that did not exec is killed. */
struct rt_exec_start;
int rt_sandbox_exec_begin(struct rt_sandbox *sb, const struct rt_exec_spec *es, struct rt_exec *ret,
                          struct rt_exec_start **ret_start, struct sk_error *err);
int rt_exec_start_fd(const struct rt_exec_start *st, short *events);
long long rt_exec_start_deadline_ms(const struct rt_exec_start *st);
int rt_exec_start_step(struct rt_sandbox *sb, struct rt_exec_start *st, struct rt_exec *ret,
                       struct sk_error *err);
/* Ends it with -ETIMEDOUT (the message says so). */
int rt_exec_start_cancel(struct rt_sandbox *sb, struct rt_exec_start *st, struct sk_error *err);
/* Wait up to timeout_ms (-1: forever) for the exec to end; *ret_status gets its wait status.
 * -ETIMEDOUT, or -ESRCH when its status is lost (the sandbox ended with it). */
int rt_exec_wait(struct rt_sandbox *sb, const struct rt_exec *ex, int timeout_ms, int *ret_status);
/* Without blocking, after the exec's pidfd polled readable: its wait status (0), -EAGAIN while
 * init has not logged it yet, -ESRCH when it never will (the sandbox ended first). */
int rt_exec_status(struct rt_sandbox *sb, const struct rt_exec *ex, int *ret_status);
int rt_exec_signal(const struct rt_exec *ex, int sig);
/* An exec found again after a restart from what rt_sandbox_exec returned: *ret gets a pidfd for
 * it while it still runs (its start time checked after the open, pids recycle), else pidfd -1:
 * it ended, and rt_exec_status says how. An error (a bad record, pidfd_open failing otherwise
 * than with ESRCH) leaves pidfd -1 too. pty_fd is -1 (a terminal's master is its holder's). */
int rt_exec_attach(pid_t pid, pid_t nspid, unsigned long long start, struct rt_exec *ret,
                   struct sk_error *err);
/* Size a terminal: its rows and columns (the foreground process group gets SIGWINCH). */
int rt_pty_resize(int pty_fd, unsigned short rows, unsigned short cols);
/* In a single-threaded fork of the runtime, which it changes for good: join the running
 * sandbox's cgroups and namespaces through its init's pidfd and become its root. The process's
 * root and working directory are then the sandbox's /, its future children in its pid namespace;
 * it holds the capabilities of the sandbox's user namespace (its own files, not the host's). */
int rt_sandbox_enter(const struct rt_sandbox *sb, struct sk_error *err);
/* Move process pid (0: the caller) into the sandbox's cgroups, and nothing else: for a process
 * that serves a running sandbox from the host's namespaces, so that the sandbox's limits, its
 * teardown and gc cover it as one of the sandbox's own. */
int rt_sandbox_join_cgroups(const struct rt_sandbox *sb, pid_t pid, struct sk_error *err);
void rt_exec_release(struct rt_exec *ex);
/* A socket (socket(2)'s domain, type and protocol; close-on-exec) made in the running
 * sandbox's network namespace, by a short-lived child that joins that namespace only: connected
 * or bound by the caller, it reaches what the sandbox's loopback reaches and nothing else (a
 * NETLINK_ROUTE one configures the sandbox's links). *ret_fd is the caller's. */
int rt_sandbox_socket(const struct rt_sandbox *sb, int domain, int type, int protocol, int *ret_fd,
                      struct sk_error *err);
/* An fd of the sandbox's network namespace (for IFLA_NET_NS_FD), checked to be its init's while
 * init still runs (pids recycle). */
int rt_sandbox_netns_open(const struct rt_sandbox *sb, int *ret_fd, struct sk_error *err);
/* The sandbox's writable layer (overlayfs' upper directory), open for reading from the host:
 * what its processes wrote, and whiteouts for what they removed, owned by the host ids of its
 * uid range (*ret_base + the id inside). On btrfs while its subvolume lasts (until release);
 * on tmpfs only in the process that started it, until release. The upper is written through
 * the page cache, which this fd reads too: what a running sandbox wrote is there, synced or
 * not. */
int rt_sandbox_upper_open(const struct rt_sandbox *sb, int *ret_fd, uid_t *ret_base,
                          struct sk_error *err);
/* The sandbox's uid slot: unique on the host among live sandboxes of every instance (egress
 * addresses derive from it); -1 once released. */
int rt_sandbox_slot(const struct rt_sandbox *sb);

enum rt_state {
	RT_STATE_RUNNING,    /* detached, init runs */
	RT_STATE_EXITED,     /* detached, its main command ended (exit_status) */
	RT_STATE_LOST,       /* its init is gone without a word, or its state is broken */
	RT_STATE_FOREGROUND, /* run by the process that started it, not detached */
};

struct rt_sandbox_info {
	char id[ID_MAX_BYTES];
	enum rt_state state;
	pid_t pid;       /* init's, when running */
	int exit_status; /* wait status, when exited */
	char created_at[32];
	char command[256];        /* the main command, space-joined and cut */
	char label[ID_MAX_BYTES]; /* spec->label at the start, "" when none */
};
/* The instance's sandboxes, in no particular order; *ret is malloc'ed. Returns the count. */
int rt_sandbox_list(struct rt *rt, struct rt_sandbox_info **ret, struct sk_error *err);
const char *rt_sandbox_id(const struct rt_sandbox *sb);
/* Readable when the sandbox's init has exited (then call rt_sandbox_reap). */
int rt_sandbox_pidfd(const struct rt_sandbox *sb);
/* Readable / POLLPRI when the memory cgroup reports OOM (then call rt_sandbox_check_oom). */
int rt_sandbox_oom_fd(const struct rt_sandbox *sb, short *ret_events);
/* After the OOM fd fired: 1 when an OOM kill happened in the sandbox (the whole sandbox is then
 * killed), 0 when not, -EAGAIN while an event is being confirmed: call again after
 * RT_OOM_RECHECK_MS (even without the fd firing). */
int rt_sandbox_check_oom(struct rt_sandbox *sb);
/* Block until the main command has exited and init has reaped it; *ret_status gets its wait
 * status. -ESRCH when init went without saying (killed). The sandbox is ending meanwhile. */
int rt_sandbox_wait_command(struct rt_sandbox *sb, int *ret_status);
/* Deliver sig to the main command (through init). */
int rt_sandbox_signal(struct rt_sandbox *sb, int sig);
/* Send sig to every process of the sandbox but init (found in its cgroups; each checked to
 * still be there after its pidfd is opened, pids recycle). sig 0 counts them. Returns how many. */
int rt_sandbox_signal_all(struct rt_sandbox *sb, int sig);
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
/* After the sandbox ended (reaped): remove its cgroups and release its uid range now, and keep
 * its state directory (output, events, record) until rt_sandbox_destroy. */
int rt_sandbox_release(struct rt_sandbox *sb, struct sk_error *err);
/* Kill what is left, remove cgroups, state and uid range, free sb. Accepts NULL. */
int rt_sandbox_destroy(struct rt_sandbox *sb, struct sk_error *err);

/* Remove the instance's parent cgroups, state directory, lock file and egress firewall table
 * when no other runtime of the instance runs (1: rt may then only be released), or leave them
 * (0). */
int rt_instance_remove_if_idle(struct rt *rt);
/* Delete the instance's nftables table (inet skiff_<instance>) if there is one: with a bare
 * nfnetlink message, so that static programs (skiff-box gc) can; src/net makes the table. */
int rt_net_table_remove(const struct rt *rt);
/* 1 if the instance's table is there, 0 if not, -errno when the kernel can't say (same bare
 * nfnetlink: a cheap check before every egress start). */
int rt_net_table_exists(const struct rt *rt);
/* Remove what crashed runs of this instance left: sandboxes whose owner is gone. Returns how many.
 */
int rt_gc(struct rt *rt, struct sk_error *err);
/* Like rt_gc, but keep the state directory of every detached sandbox that ended (its record and
 * output stay for the process that owns the instance: it reports and removes them); their
 * cgroups and uid ranges are released. */
int rt_gc_keep_ended(struct rt *rt, struct sk_error *err);
