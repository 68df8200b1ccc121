/* Shared between the runtime's parent side (sandbox.c) and the code that runs in the sandbox's
 * namespaces (child.c, rootfs.c). Not part of the public API. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "../lib/id.h"
#include "../lib/timing.h"
#include "runtime.h"

/* Messages on the SOCK_SEQPACKET pair between the runtime and the sandbox's init. */
enum rt_msg_type {
	RT_MSG_GO = 1, /* runtime → init: ids mapped, cgroups joined; carries the lower mount fd */
	RT_MSG_STARTED,    /* init → runtime: the command was exec'd */
	RT_MSG_ERROR,      /* init → runtime: setup failed; code is -errno, text says where */
	RT_MSG_EXIT,       /* init → runtime: code is the main command's wait status */
	RT_MSG_EXEC_ERROR, /* init → runtime: the command could not be exec'd (not found, …) */
	RT_MSG_READY,      /* init → runtime: set up, waiting for its command (pooled) */
	RT_MSG_RUN,        /* runtime → init: the command (a memfd of its strings) */
	RT_MSG_UPPER,      /* runtime → init, before GO: the writable layer's mount (btrfs) */
	RT_MSG_EXEC,       /* runtime → init, once it runs: start an exec (init_loop.c) */
};

struct rt_msg {
	int32_t type;
	int32_t code;
	char text[SK_ERROR_MSG_BYTES];
};

/* What the sandbox's init needs; it lives in the cloned copy of the parent's memory. */
struct rt_child_args {
	const struct rt *rt;
	const struct spec *spec;
	const char *scratch; /* host directory to build the root in (a private tmpfs over it) */
	const char *hostname;
	int sync_fd;
	int parent_fd; /* the runtime's end, closed in the child */
	int events_fd; /* the events log init appends to, or -1 */
	int stdio[3];  /* detached: what init and the main command get as 0, 1, 2 (else -1) */
	int detached;  /* outlive the runtime: no parent-death signal */
	int wait_for_command;    /* pooled: set up, then wait for RT_MSG_RUN */
	int upper_volatile;      /* the writable layer is on the shared btrfs (rootfs_setup) */
	const char *resolv_conf; /* network egress: /etc/resolv.conf's text; NULL: leave it */
	int serve_execs;         /* RT_START_INIT_EXECS: init keeps the commands' capabilities and
	                          * starts execs the runtime sends it on sync_fd */
	/* Unshare the network namespace after GO (none was cloned): making one takes a
	 * millisecond or two, better spent in init than in the runtime, which may be serving
	 * requests meanwhile. Not with egress, whose link the runtime sets up before GO. */
	int own_netns;
};

/* A sandbox as the runtime holds it (sandbox.c; exec.c and attach.c use it too). */
struct rt_sandbox {
	struct rt *rt;
	char id[ID_MAX_BYTES];
	char label[ID_MAX_BYTES]; /* spec->label once recorded (detached), else "" */
	char owner[64];           /* "<instance> <id>": names the uid slot */
	char scratch[512];
	char hostname[64];
	pid_t pid;
	int pidfd;
	int sync_fd;
	int lock_fd;
	pid_t helper_pid;
	int helper_fd; /* our end of the helper's pipe */
	void *helper_stack;
	struct cg_sandbox cg;
	int cg_made;
	struct idmap_slot slot;
	int oom_fd;
	short oom_events;
	int forced; /* 0, or the enum rt_end + 1 a kill asked for */
	int reaped;
	int exit_known;
	int exit_status;
	unsigned flags;   /* RT_START_* */
	struct spec base; /* pooled: the limits it was made with (numbers only) */
	int ran;          /* pooled: its command was sent */
	/* A start without waiting (rt_pool_start_begin): what init's next word is; 0: none. */
	enum { RT_PHASE_READY = 1, RT_PHASE_STARTED } start_phase;
	int attached;  /* found from state by rt_sandbox_attach: init is not our child */
	int events_fd; /* the state directory's events log (init appends to it) */
	int disk_fd;   /* its writable layer's subvolume (btrfs), or -1 */
	/* Its writable layer's tmpfs (a mount made by the runtime and moved in by init), kept so
	 * that the layer can be read from the host (a snapshot, a build step's layer) even after
	 * init pivoted away from it; -1 on btrfs, and for a sandbox found by attach. */
	int tmpfs_fd;
	uint64_t init_start; /* init's start time (clock ticks since boot): pids recycle */
	struct rt_child_args child_args;       /* read by init during setup */
	struct timing marks;                   /* the runtime's steps */
	char init_marks[SK_ERROR_MSG_BYTES];   /* init's steps, "name:ns …" */
	uint64_t oom_watch_until_ns;           /* v1: an OOM event is being confirmed until then */
	char step_names[TIMING_MAX_MARKS][32]; /* rt_sandbox_timings' names of init's steps */
};

/* What the command process reports through its close-on-exec pipe (in packet mode: one read,
 * one record): the time it is about to exec, then nothing (EOF at exec) or why it failed. */
enum {
	EXEC_ABOUT_TO = 0,
	EXEC_PTY = 100,   /* init's exec: the terminal's master attached */
	EXEC_HELLO = 101, /* init's exec: struct rt_exec_hello, init's own word */
};
struct exec_report {
	int type; /* EXEC_ABOUT_TO, RT_MSG_ERROR (setup) or RT_MSG_EXEC_ERROR (the program) */
	uint64_t ns;
	struct sk_error err;
};

/* A command to run in a sandbox: the main command, or an exec. */
struct rt_command {
	char *const *argv;
	char *const *env; /* "K=V" */
	size_t envc;
	const char *workdir; /* NULL: / */
	const char *hostname;
	uint64_t nproc;   /* RLIMIT_NPROC, 0 to leave it */
	int load_seccomp; /* load the profile here (an exec does not inherit init's) */
	int ctty;         /* a new session with fd 0 (a terminal) as its controlling terminal */
};
/* In a process inside the sandbox's namespaces (as its root): reset signals, set rlimits, the
 * working directory, the capabilities (and seccomp), wait for a byte on go_fd (unless -1), then
 * exec with our own PATH search. Reports struct exec_report records on err_fd (packet mode).
 * Allocates nothing. */
_Noreturn void rt_command_exec(const struct rt *rt, const struct rt_command *c, int err_fd,
                               int go_fd);
/* The same with the capability and seccomp step left to restrict_fn (NULL: none, the process
 * already holds just the commands' capabilities and init's filter; command.c). */
typedef int (*rt_command_restrict_fn)(const struct rt *rt, const struct rt_command *c,
                                      struct sk_error *err);
_Noreturn void rt_command_exec_with(const struct rt_command *c, int err_fd, int go_fd,
                                    rt_command_restrict_fn restrict_fn, const struct rt *rt);
/* A command's strings as they travel to init: the working directory, the host name ("" for
 * none), argv, then env, each NUL-terminated, in a new memfd (close-on-exec). */
#define RT_COMMAND_MAX_BYTES (SPEC_MAX_STRINGS_BYTES + SPEC_MAX_PATH_BYTES + 128)
int rt_command_memfd(const char *workdir, const char *hostname, char *const *argv, size_t argc,
                     char *const *env, size_t envc, struct sk_error *err);
/* Read them back: argv, env and workdir into cmd (its hostname and nproc kept), the strings in
 * *ret_buf and *ret_vec (to free), the host name given in *ret_hostname. */
int rt_command_parse(int memfd, unsigned long argc, unsigned long envc, struct rt_command *cmd,
                     char **ret_buf, char ***ret_vec, const char **ret_hostname,
                     struct sk_error *err);
/* Inside the sandbox (its root is ours): a pseudo-terminal of its devpts, its slave on our 0,
 * 1 and 2. /dev/ptmx is the sandbox's to replace: it is resolved inside its root, and what it
 * opens must be a ptmx. Returns the master (O_NONBLOCK) or -errno. */
int rt_pty_open(unsigned short rows, unsigned short cols);
/* What init replies to RT_MSG_EXEC on the request's own socket, with the command's pidfd
 * attached when type is RT_MSG_STARTED (the command's own reports follow on that socket:
 * struct exec_report, EXEC_PTY with the terminal's master; EOF once it exec'd or failed). */
struct rt_exec_hello {
	int32_t kind; /* EXEC_HELLO, where a struct exec_report has its type */
	int32_t type; /* RT_MSG_STARTED or RT_MSG_ERROR */
	int32_t code;
	pid_t nspid;
	unsigned long long start;
	char msg[SK_ERROR_MSG_BYTES];
};
/* Read a command's reports on fd until EOF (it exec'd: 0) or a failure (1, in *ret_failure,
 * type RT_MSG_ERROR or RT_MSG_EXEC_ERROR). *ret_about_ns gets when it was about to exec. */
int exec_report_wait(int fd, struct exec_report *ret_failure, uint64_t *ret_about_ns);

/* Body of the cloned child: becomes the sandbox's pid 1. Never returns. */
_Noreturn void rt_child_main(const struct rt_child_args *a);

/* In the child, after the mount namespace is private: build the root under scratch from the
 * idmapped lower mount fd and pivot into it. The writable layer is the mount upper_fd (a btrfs
 * subvolume, upper_volatile, or a tmpfs the runtime made). */
struct timing;
int rootfs_setup(const char *scratch, int lower_fd, int upper_fd, int upper_volatile,
                 struct timing *t, struct sk_error *err);

/* Bring loopback up in the current network namespace. */
int net_loopback_up(struct sk_error *err);
/* In the sandbox, after pivot_root: make /etc/resolv.conf hold text (replacing what the image
 * has there, a symlink included). */
int net_resolv_conf_write(const char *text, struct sk_error *err);

int rt_msg_send(int fd, int type, int code, const char *text, int pass_fd);
/* init's life once the sandbox runs (init_loop.c): reap, log execs' exits, forward signals to
 * main_pid, report its status and exit. mask holds the forwarded signals and SIGCHLD, blocked. */
_Noreturn void rt_init_loop(int sync_fd, int events_fd, pid_t main_pid, const sigset_t *mask,
                            int serve_execs);
/* skiff-init's mark, an ELF note in its first page: the runtime execs a file only if it bears
 * it, so that neither another root-owned program under that name nor a skiff-init whose
 * arguments or messages differ ever becomes a sandbox's init. Bump the version with them. */
struct rt_init_note {
	uint32_t namesz, descsz, type;
	char name[8], desc[8];
};
#define RT_INIT_NOTE ((struct rt_init_note){6, 7, 1, "skiff", "init-2"})
/* Find skiff-init and keep an fd to exec it by (init_exe.c). Never fails: without it, init
 * stays as it is. */
void rt_init_exe_open(struct rt *rt);
/* In init: exec skiff-init to run rt_init_loop there. Returns only if that failed. */
void rt_init_exe_run(int exe_fd, int sync_fd, int events_fd, pid_t main_pid, int serve_execs);
/* Wait for init's word that the command runs (sandbox.c; pool.c too). */
int started_await(struct rt_sandbox *sb, struct sk_error *err);
/* Receive one message; *ret_fd gets a passed fd or -1. Returns bytes, 0 on EOF, -errno. */
ssize_t rt_msg_recv(int fd, struct rt_msg *m, int *ret_fd);

/* State directory layout: <inst_dir>/<id>/ holds "lock" (flock held while the owner lives). */
int state_sandbox_dir_create(const struct rt *rt, const char *id, int *ret_lock_fd,
                             struct sk_error *err);
int state_sandbox_dir_remove(const char *inst_dir, const char *id);
/* A detached sandbox's init, as recorded in its state directory. */
struct state_init {
	pid_t pid;
	unsigned long long start; /* clock ticks since boot */
	int slot;                 /* its uid range */
	unsigned long long pids;  /* its pids limit (RLIMIT_NPROC of execs); 0 when not recorded */
};
int state_init_read(const char *inst_dir, const char *id, struct state_init *ret);
/* A pidfd for the recorded init if that very process still runs, else -ESRCH. */
int state_init_pidfd(const struct state_init *si);
/* The wait status of the main command, or of the exec nspid/start, from the events log;
 * -ENOENT when not (yet) there. */
int state_events_main(const char *inst_dir, const char *id, int *ret_status);
int state_events_exit(const char *inst_dir, const char *id, pid_t nspid, unsigned long long start,
                      int *ret_status);
/* The events log init appends to ("main <status>", "exit <pid> <start> <status>" lines). */
int state_events_open(const char *inst_dir, const char *id, int *ret_fd, struct sk_error *err);
/* A detached sandbox's main stdio: /dev/null, and its state directory's stdout and stderr. */
int state_output_open(const char *inst_dir, const char *id, int ret_fds[3], struct sk_error *err);
/* Record a detached sandbox's init (pid and start time) and what it runs, for attach and ls. */
int state_sandbox_record(struct rt_sandbox *sb, const struct spec *spec, struct sk_error *err);
/* Destroy the writable layer's subvolume recorded in a detached sandbox's meta, wherever its data
 * directory is. -ENOENT when none is recorded or it is gone. */
/* Remove a sandbox's layer where its meta says it is; a disk of another data directory than
 * rt's is unmounted once nothing uses it (as rt's own is at gc). */
int state_disk_remove(const struct rt *rt, const char *id);
/* A ".new-<pid>-sb-…" directory (a start in progress) whose maker is gone: its lock is free, or
 * it has none and its maker's pid is gone or it is older than STATE_NEW_DIR_GRACE_S. */
#define STATE_NEW_DIR_GRACE_S 10
int state_new_dir_abandoned(int inst_dirfd, const char *name);
int state_new_dir_name_valid(const char *name);
/* The owner is gone when the lock can be taken. */
int state_sandbox_is_alive(const struct rt *rt, const char *id);
