/* The spawner's insides, shared by its files: spawner.c (process, frames, loop, dispatch),
 * spawner_sandbox.c (create, end, terminate, remove, usage, hello), spawner_exec.c (exec,
 * signal, exec records), spawner_stdin.c (exec stdin and terminals), spawner_output.c (the
 * output op, trimming) and spawner_files.c (file operations in a sandbox's root). Not part of
 * the worker's API. */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "../image/store.h"
#include "../lib/id.h"
#include "../runtime/runtime.h"
#include "spawner.h"

#define SP_OUTPUT_MAX_READ_BYTES (1024 * 1024) /* per output reply: base64 stays under a frame */
/* An output read with wait_ms that finds nothing new waits for output, its writer's end or
 * wait_ms (a follower's long poll); at most this many wait at once (more are answered at
 * once), each looked at again every SP_OUTPUT_RECHECK_MS whatever inotify says. */
#define SP_OUTPUT_MAX_WAIT_MS     30000
#define SP_OUTPUT_MAX_WAITING     4096
#define SP_OUTPUT_RECHECK_MS      1000
#define SP_OUTPUT_PATH_BYTES      600
#define SP_EXEC_STATUS_RECHECK_MS 5 /* while init has not logged an exec's status */
/* Exec stdin and terminals (spawner_stdin.c). */
#define SP_STDIN_MAX_WRITE_BYTES (1024 * 1024) /* one stdin request's data */
/* A write the exec has not taken in by then is answered (deadline_exceeded). */
#define SP_STDIN_WRITE_TIMEOUT_MS 30000
#define SP_PTY_MAX_ROWS           1000
#define SP_PTY_MAX_COLS           1000
#define SP_PTY_DEFAULT_ROWS       24
#define SP_PTY_DEFAULT_COLS       80
#define SP_PTY_DEFAULT_TERM       "xterm-256color" /* TERM of a terminal exec, unless env sets it */
/* A pool refill (a sandbox made, ~10 ms here) waits until no request came for this long, so that
 * the requests that follow a create (an exec, a file) are not queued behind it; an empty pool is
 * refilled at once. */
#define SP_REFILL_QUIET_MS 20
/* Requests held for one create on its way (sp_create_hold): more are refused, not kept. */
#define SP_CREATE_MAX_HELD 64
#define SP_TERM_CHECK_MS   5 /* terminate of a sandbox without command: all gone yet? */
#define SP_MAX_GRACE_MS    (3600 * 1000)
#define SP_RECORD_NAME     "spawner.json" /* in the state directory */

/* File operations (spawner_files.c). */
#define SP_FILES_MAX_PATH_BYTES     4096
#define SP_FILES_MAX_DATA_BYTES     (1024 * 1024) /* read or written per request */
#define SP_FILES_MAX_DEPTH          16            /* fs_list */
#define SP_FILES_MAX_LIST_ENTRIES   10000
#define SP_FILES_MAX_LIST_BYTES     (1800 * 1000) /* fs_list's entries as JSON: under a frame */
#define SP_FILES_MAX_REMOVE_ENTRIES 100000        /* fs_remove recursive: more is refused */
#define SP_FILES_MAX_REMOVE_DEPTH   256
/* From its arrival, queued or running: then it is answered and its helper killed. */
#define SP_FILES_TIMEOUT_MS       10000
#define SP_FILES_MAX_RUNNING      8  /* helpers at once, all sandboxes together */
#define SP_FILES_MAX_QUEUED       16 /* per sandbox, behind its one running op */
#define SP_FILES_MAX_ANSWER_BYTES SPAWNER_MAX_MSG_BYTES /* what a helper may write */
#define SP_FILES_HELPER_NAME      "skiff-files"         /* its comm */
#define SP_FILES_DIR_MODE         0755
#define SP_FILES_DEFAULT_MODE     0644

enum sp_files_op {
	SP_F_READ,
	SP_F_WRITE,
	SP_F_STAT,
	SP_F_LIST,
	SP_F_MKDIR,
	SP_F_REMOVE,
	SP_F_MOVE
};

/* A validated file request; its strings and data belong to it. The helper reads its copy. */
struct sp_files_req {
	enum sp_files_op op;
	char *path;
	char *to; /* fs_move */
	int64_t offset;
	size_t max; /* file_read */
	unsigned char *data;
	size_t len;
	mode_t mode;
	int truncate, parents, recursive;
	int depth;
};

struct sp_sandbox;

/* A file operation (spawner_files.c): queued until its sandbox runs no other one and fewer than
 * SP_FILES_MAX_RUNNING run in all, then done by a helper process. Answered once the helper's
 * answer is read and the helper reaped, or at once at its deadline or its sandbox's end (the
 * helper killed and reaped later: only then is its place free). */
struct sp_fop {
	struct sp_fop *next;
	struct sp_sandbox *s; /* NULL once its sandbox ended */
	char sandbox[ID_MAX_BYTES];
	json_t *req_id;
	const char *name; /* the op's */
	struct sp_files_req fr;
	int64_t deadline_mono;
	int started, answered, reaped, eof;
	int exit_ok; /* reaped: exited with 0 */
	pid_t pid;
	int pidfd, pipe_fd; /* -1: none, or closed */
	char *buf;          /* the answer so far */
	size_t len, cap;
};

/* Images (spawner_image.c): jobs run in short-lived forks of the spawner (materializing a tree,
 * ingesting a writable layer: slow, never on the loop), each answering with one JSON object. */
#define SP_JOBS_MAX         32 /* at once, all kinds together: more are refused */
#define SP_JOB_ANSWER_BYTES 4096
#define SP_JOB_HELPER_NAME  "skiff-image"
/* Images across hosts (spawner_fetch.c): each request to the server. */
#define SP_FETCH_CONNECT_TIMEOUT_MS 10000
#define SP_FETCH_STALL_BYTES_PER_S  1                      /* a transfer slower than this ... */
#define SP_FETCH_STALL_S            30                     /* ... for this long is given up */
#define SP_FETCH_MANIFEST_MAX_BYTES (512ULL * 1024 * 1024) /* a manifest's text (manifest.c) */
#define SP_FETCH_SECRET_MAX         256   /* the server takes no longer bearer token */
#define SP_LAYER_NOBODY             65534 /* owner of a layer's file whose host id maps to none */
/* Split mode: a blob no tree uses is dropped when space is short once it is this old (a fetch
 * or a push under way uses younger ones), as the server's gc does with its uploads. */
#define SP_STORE_BLOB_GRACE_S 3600

enum sp_job_kind { SP_JOB_TREE, SP_JOB_LAYER };

struct sp_job {
	struct sp_job *next;
	enum sp_job_kind kind;
	char digest[IMG_DIGEST_HEX]; /* SP_JOB_TREE: the image */
	struct sp_sandbox *s;        /* SP_JOB_LAYER: whose layer */
	json_t *req_id;              /* SP_JOB_LAYER: a snapshot's request; NULL: the end */
	uint64_t max_bytes;          /* SP_JOB_LAYER: what its files may hold (its disk limit) */
	pid_t pid;
	int pidfd, pipe_fd; /* -1: none, or closed */
	int reaped, exit_ok, eof;
	char buf[SP_JOB_ANSWER_BYTES];
	size_t len;
};

/* A create waiting for its image's tree; its spec is its own. */
struct sp_pending {
	struct sp_pending *next;
	char id[ID_MAX_BYTES];
	char digest[IMG_DIGEST_HEX];
	json_t *req_id;
	struct spec spec;
};

/* A create whose sandbox is on its way (rt_pool_start_begin): answered from the loop once its
 * command runs, while other requests are served. */
struct sp_starting {
	struct sp_starting *next;
	char id[ID_MAX_BYTES];
	json_t *req_id;
	struct spec spec; /* the start's, until it is done */
	struct rt_sandbox *sb;
	int pooled;
	int64_t begun_mono;
	json_t *held; /* requests naming it (and hellos), run once it is answered */
};

enum sp_state { SP_RUNNING, SP_EXITED, SP_TERMINATED, SP_TIMEOUT, SP_OOM, SP_LOST };

/* One output file: what was punched out of its start. */
struct sp_output {
	char path[SP_OUTPUT_PATH_BYTES];
	uint64_t dropped;
};

enum sp_stdin_kind { SP_STDIN_NONE, SP_STDIN_PIPE, SP_STDIN_PTY };

/* An exec's stdin (a pipe) or terminal (a pseudo-terminal's master). A holder process keeps it
 * open for as long as the exec runs, whatever happens to the spawner: the command never gets
 * EOF or SIGHUP because its starter died. The holder is a small program of its own
 * (stdin_holder.h) in the sandbox's cgroups; it holds the pipe's write end (and exits when nobody
 * reads it any more), or the master, whose output it copies into the exec's stdout file (and exits
 * when every slave is closed). The spawner writes through its own copy of the same fd; a restarted
 * spawner takes the fd back from the holder (pidfd_getfd). */
struct sp_stdin {
	enum sp_stdin_kind kind;
	int fd;  /* ours, O_NONBLOCK; -1: none, or closed */
	int eof; /* the client closed it (a pipe's: a terminal's never closes) */
	/* A terminal: the last byte written ended a line (or none was written yet), so that its
	 * end-of-file character makes a reader in canonical mode read end-of-file. */
	int at_line_start;
	pid_t holder;
	unsigned long long holder_start;
	int holder_pidfd; /* -1: none, or gone */
	int holder_child; /* forked by this spawner: ours to reap */
	/* The write in progress, answered once its bytes are in (or it failed). */
	json_t *req_id; /* NULL: none */
	unsigned char *buf;
	size_t len, off;
	size_t data_len; /* of len: the client's (a terminal's EOF character may follow) */
	int eof_after;   /* then close stdin (a pipe's) */
	int64_t deadline_mono;
};

struct sp_exec {
	struct sp_exec *next;
	char id[ID_MAX_BYTES];
	struct rt_exec ex;   /* pidfd -1 once ended */
	int running;         /* until exec_ended is sent */
	int64_t exited_mono; /* when its pidfd fired; 0: not yet */
	int64_t recheck_mono;
	int64_t deadline_mono; /* its timeout_s; 0: none */
	int64_t deadline_ms;   /* the same on the wall clock, for a restarted spawner */
	int timed_out;
	struct sp_output out[2];
	struct sp_stdin in;
	int status_known; /* its end is known, waiting for its terminal's output to drain */
	int capture;      /* its output goes with its end (?wait=true), when small */
	/* While init starts it, in its sandbox's `starting` list: the exec op is answered when
	 * the command has exec'd (or failed to), and the loop serves other requests meanwhile. */
	struct rt_exec_start *start;
	json_t *start_req; /* the op's "req" */
	int start_fds[3];  /* its stdout and stderr files, its stdin pipe's write end */
	enum sp_stdin_kind start_kind;
	int64_t start_timeout_ms; /* its timeout_s, counted from the start; 0: none */
	/* once ended (or status_known) */
	const char *end_state; /* "exited" or "lost" */
	int exit_code;
	int64_t ended_ms;
};

struct sp_sandbox {
	struct sp_sandbox *next;
	char id[ID_MAX_BYTES]; /* the API's */
	struct rt_sandbox *sb;
	enum sp_state state;
	int exit_code;
	int has_command;
	int64_t started_ms, ended_ms; /* wall clock */
	double timeout_s;
	int64_t deadline_mono;   /* timeout_s; 0: none */
	int64_t kill_mono;       /* terminate's SIGKILL; 0: none */
	int64_t term_check_mono; /* terminate of a sandbox without command */
	int64_t oom_recheck_mono;
	enum sp_state end_reason; /* what a kill we sent means; SP_RUNNING: none */
	struct cg_usage usage;    /* at the end */
	struct sp_output out[2];
	struct sp_exec *execs;
	int nexecs;
	struct sp_exec *starting; /* execs init is starting (sp_exec.start) */
	int nstarting;
	/* Exec requests waiting for one of the SPAWNER_MAX_STARTS_PER_SANDBOX starts, in
	 * order: [request, deadline (sp_now_mono)] pairs. They hold no fd. */
	json_t *exec_queue;
	json_t *waiters;            /* "req" values of terminates waiting for the end */
	struct sp_fop *fop_running; /* its helper, until reaped */
	char image[IMG_DIGEST_HEX]; /* the image it runs on (held); "": the default root */
	int capture_layer;          /* store its writable layer when its command ends */
	uint64_t disk_mib;          /* its disk limit: what its layer can hold (0: unknown) */
	struct sp_job *job;         /* its layer being stored (a snapshot, or its end) */
	char layer[IMG_DIGEST_HEX]; /* its end's layer, once stored */
	char *layer_error;          /* or why not */
	int events_wd; /* inotify watch on its events log while an exec's status is awaited; 0 */
};

struct spawner {
	const struct spawner_config *cfg;
	int fd;
	int64_t last_request_mono; /* the pool is refilled once requests have paused */
	struct rt rt;
	struct egress egress;
	int egress_ok;
	char rootfs[4096];
	struct spec pool_base;
	struct rt_pool pool;
	struct sp_sandbox *sandboxes;
	int attached;            /* hello re-attached the instance's sandboxes */
	json_t *events;          /* sent after the current reply */
	int64_t trim_mono;       /* next output trim */
	struct sp_fop *fops;     /* file ops, queued and running, in arrival order */
	struct sp_oread *oreads; /* output reads waiting for output */
	unsigned noreads;
	int ino_fd;        /* inotify on their files; -1: not made yet */
	int status_ino_fd; /* inotify on events logs: an exec's status, logged by init after
	                    * its pidfd fired (sp_exec_status_inotify); -1: not made yet */
	int oreads_due;    /* something they all wait for may have happened (an end) */
	int oreads_some;   /* some of them are due (their files changed, a cancel) */
	int reply_fd;      /* set by a handler: passed with its reply ("fd":true), then closed */
	char holder_path[4096]; /* the stdin holder program: next to our own binary */
	struct img_store store; /* rt_image_store_place's: <data_dir>/images or the disk's */
	int store_ok;
	int store_lock_fd; /* the disk's lock while the store is on it, else -1 */
	struct sp_job *jobs;
	int njobs;
	struct sp_pending *pending;   /* creates waiting for a tree */
	struct sp_starting *starting; /* creates whose sandbox is on its way */
	int nstarting;
};

int64_t sp_now_mono(void);
/* logfmt on stderr: level=… msg="…". */
void sp_log(const char *level, const char *fmt, ...) _printf_(2, 3);
/* Send one JSON object as a frame; logs a failure (the worker is gone: EOF comes next). */
void sp_send(struct spawner *sp, json_t *msg);
/* Write rec as dir/name through a rename (all or nothing). */
int sp_record_write(const char *dir, const char *name, json_t *rec);
/* Answer request req_id later (after the reply being made, if any): fields (taken) when err is
 * NULL, else err. */
void sp_answer(struct spawner *sp, json_t *req_id, json_t *fields, const struct sk_error *err);
/* The same with pass_fd (>= 0) attached; the caller still owns it. */
void sp_send_fd(struct spawner *sp, json_t *msg, int pass_fd);
/* Answer the request req_id of op, whose handler returned r: reply (r == 0), err (r < 0), or
 * nothing (r > 0: it answers later). Sent at once: before any event the handler queued. */
void sp_reply(struct spawner *sp, json_t *req_id, const char *op, int r, json_t *reply,
              struct sk_error *err);
/* Queue an event (takes the reference) to go out after the reply being made. */
void sp_event(struct spawner *sp, json_t *event);
/* An error reply body {"code","message"} for err. */
json_t *sp_error_json(const struct sk_error *err);

const char *sp_state_name(enum sp_state s);
struct sp_sandbox *sp_sandbox_find(struct spawner *sp, const char *id);
/* The request's "id" as a known sandbox, else fills err (-EINVAL / -ENOENT). */
int sp_sandbox_get(struct spawner *sp, json_t *req, struct sp_sandbox **ret, struct sk_error *err);
/* The sandbox's init exited: reap, release, record, send sandbox_ended, answer terminates. */
void sp_sandbox_end(struct spawner *sp, struct sp_sandbox *s);
/* Timers of every sandbox (deadline, grace, OOM recheck) that are due. */
void sp_sandbox_timers(struct spawner *sp, int64_t now);
void sp_sandbox_oom(struct spawner *sp, struct sp_sandbox *s);
void sp_sandbox_free(struct sp_sandbox *s);
int sp_sandboxes_attach(struct spawner *sp, struct sk_error *err);
/* Run a request held back (a terminate of a create on its way), once what it waited for is
 * answered: it is answered as if it came now. */
void sp_request_replay(struct spawner *sp, json_t *req);
/* A request about a sandbox whose create is on its way (a terminate, say) waits for the create's
 * answer, then runs as it would have then: a DELETE during the create ends the sandbox as
 * terminated, not as failed. A hello waits for every create on its way, so that what it lists
 * holds them (a worker registering again would otherwise have them failed). 1 if held, 0 if
 * not, or an error when too many wait already (SP_CREATE_MAX_HELD). */
int sp_create_hold(struct spawner *sp, json_t *req, const char *op, struct sk_error *err);
/* A create on its way: its sandbox's fd polled readable. */
void sp_create_step(struct spawner *sp, struct sp_starting *st);
/* At the spawner's end: creates on their way go, their sandboxes destroyed. */
void sp_creates_release(struct spawner *sp);
/* Start spec as sandbox id on rootfs; reply gets pooled and started_ms. spec stays the caller's. */
int sp_sandbox_create(struct spawner *sp, const char *id, const struct spec *spec,
                      const char *rootfs, json_t *reply, struct sk_error *err);
/* After a layer job of an ended sandbox: release it, record it, send sandbox_ended. */
void sp_sandbox_end_done(struct spawner *sp, struct sp_sandbox *s);

/* Images (spawner_image.c). */
/* on_disk: writable layers are not tmpfs (rt_image_store_place). */
void sp_images_open(struct spawner *sp, int on_disk);
void sp_images_close(struct spawner *sp);
/* A create of id waiting for its image's tree is dropped (its hold released, its create
 * answered with why: "was terminated"): 1, or 0 when none waits. A terminate or remove that
 * comes meanwhile finds no sandbox, and the create would otherwise start one nobody ends. */
int sp_pending_cancel(struct spawner *sp, const char *id, const char *why);
/* A create with spec->image_digest: 0 started (reply filled), 1 waiting for the tree (spec
 * taken), or an error. */
int sp_image_create(struct spawner *sp, const char *id, json_t *req, struct spec *spec,
                    json_t *reply, struct sk_error *err);
/* The holder name of sandbox id in the store. */
void sp_image_holder(const struct spawner *sp, const char *id, char *buf, size_t size);
/* s ended with capture_layer: start storing its layer (1: sp_sandbox_end_done follows), or 0
 * with s->layer_error set. */
int sp_layer_capture(struct spawner *sp, struct sp_sandbox *s);
/* Stop s's layer job (its sandbox goes or ends), answering a snapshot with why. */
void sp_job_cancel(struct spawner *sp, struct sp_sandbox *s, const char *why);
/* Release the holds of this instance's sandboxes that no longer exist. */
void sp_holds_gc(struct spawner *sp);
void sp_job_read(struct spawner *sp, struct sp_job *j);
void sp_job_reap(struct spawner *sp, struct sp_job *j);
/* Finish the jobs that are done (read and reaped) and free them. */
void sp_jobs_run(struct spawner *sp);
void sp_jobs_release(struct spawner *sp);
int sp_op_snapshot(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);

/* Handlers: 0 and fields in reply, 1 when the reply comes later, or a negative code in err. */
int sp_op_hello(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_create(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_terminate(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_remove(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_usage(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_timeout(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_exec(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_signal(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_exec_check(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_output(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
/* An ended exec's whole output, {"stdout": {...}, "stderr": {...}} in the output op's form with
 * the bytes inline, when each stream holds at most SP_EXEC_INLINE_OUTPUT_BYTES; else NULL (the
 * worker asks with the output op). */
json_t *sp_exec_output_inline(const struct sp_exec *e);
int sp_op_output_cancel(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_file_read(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_file_write(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_fs_stat(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_fs_list(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_fs_mkdir(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_fs_remove(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_fs_move(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
/* A TCP socket in the running sandbox's network namespace, passed with the reply. */
int sp_op_tunnel_socket(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);

struct sp_exec *sp_exec_find(struct sp_sandbox *s, const char *id);
/* The request's "id" (a known sandbox) and "exec" (an exec id, known or not); else err set. */
int sp_exec_request(struct spawner *sp, json_t *req, struct sp_sandbox **ret_s,
                    const char **ret_exid, struct sk_error *err);
/* Record what a restarted spawner needs of e (execs/<ex>.json): how to find it and its stdin
 * while it runs, its status once it ended. */
void sp_exec_record(struct sp_sandbox *s, struct sp_exec *e);
/* An events log being watched changed: execs waiting for their status look again. */
void sp_exec_status_inotify(struct spawner *sp, int64_t now);
/* The exec's pidfd fired, or its status recheck is due: report it once its status is known. */
void sp_exec_check(struct spawner *sp, struct sp_sandbox *s, struct sp_exec *e, int64_t now);
/* Deadlines of s's execs and of their starts; queued execs start as starts end. */
void sp_exec_timers(struct spawner *sp, struct sp_sandbox *s, int64_t now);
/* When the first of s's queued execs times out; 0: none queued. */
int64_t sp_exec_queue_deadline(const struct sp_sandbox *s);
/* An exec init is starting: its reply socket is readable (or its deadline passed). */
void sp_exec_start_step(struct spawner *sp, struct sp_sandbox *s, struct sp_exec *e);
/* Every exec s is starting or has queued ends (s ends or goes), its op answered unless sp is
 * NULL. */
void sp_exec_starts_cancel(struct spawner *sp, struct sp_sandbox *s);
void sp_exec_free(struct sp_exec *e);
/* A re-attached sandbox's execs, from their records (execs/<ex>.json): running ones watched
 * again, ended ones known with their status. */
void sp_execs_adopt(struct spawner *sp, struct sp_sandbox *s);

int sp_op_stdin(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
int sp_op_resize(struct spawner *sp, json_t *req, json_t *reply, struct sk_error *err);
/* Give e's stream (a pipe's write end, or a terminal's master; taken) to a new holder (the
 * program at sp->holder_path), and to e->in (out_fd: the stdout file the holder copies a
 * terminal's output to). */
int sp_stdin_start(struct spawner *sp, struct sp_sandbox *s, struct sp_exec *e,
                   enum sp_stdin_kind kind, int stream_fd, int out_fd, struct sk_error *err);
/* e's stdin is over (e ended, or its sandbox): answer its write in progress (conflict, why),
 * close ours, kill the holder. wait: also reap it now (the exec is freed next). */
void sp_stdin_end(struct spawner *sp, struct sp_exec *e, const char *why, int wait);
/* The spawner stops: close ours; the holder runs on. */
void sp_stdin_release(struct sp_stdin *in);
/* Polled: ours writable (a write in progress goes on), or the holder exited (reap it). */
void sp_stdin_writable(struct spawner *sp, struct sp_sandbox *s, struct sp_exec *e);
void sp_stdin_holder_exited(struct sp_exec *e);
/* Whether a terminal's output may still be on its way to the stdout file (its holder runs). */
int sp_stdin_draining(const struct sp_exec *e);
void sp_stdin_timers(struct spawner *sp, struct sp_exec *e, int64_t now);
/* e's stdin in its record, and back from it (the holder found again, its fd taken back). */
json_t *sp_stdin_record(const struct sp_exec *e);
void sp_stdin_adopt(struct sp_exec *e, json_t *rec);

void sp_output_init(struct sp_output *o, const char *dir, const char *name);
/* Punch out all but the last SPAWNER_OUTPUT_KEEP_BYTES of the file. */
void sp_output_trim(struct sp_output *o);
/* Every live output file of every sandbox. */
void sp_outputs_trim(struct spawner *sp);
/* Output reads waiting: the earliest time one must be looked at (0: none); inotify's fd was
 * readable; answer those that can be (when due or something happened); free them all. */
int64_t sp_oreads_next(const struct spawner *sp);
void sp_oreads_inotify(struct spawner *sp);
void sp_oreads_run(struct spawner *sp, int64_t now);
void sp_oreads_release(struct spawner *sp);

/* A file op's helper: its pipe or pidfd polled readable. Answers, but frees nothing. */
void sp_fop_read(struct spawner *sp, struct sp_fop *o);
void sp_fop_reap(struct spawner *sp, struct sp_fop *o);
/* Answer the file ops that are done or past their deadline, free those answered and reaped,
 * start those that may start. */
void sp_files_run(struct spawner *sp, int64_t now);
/* The earliest deadline of an unanswered file op; 0: none. */
int64_t sp_files_next_deadline(const struct spawner *sp);
/* s ended or is ending: answer its file ops (conflict), kill its helper. */
void sp_files_cancel(struct spawner *sp, struct sp_sandbox *s);
/* The spawner stops: kill every helper, free every op. */
void sp_files_release(struct spawner *sp);

/* Helper children (file ops, image jobs): in the child, write msg (taken) to fd and exit (0 once
 * all of it is written); in the spawner, once its pidfd fired, reap it: 1 when reaped (*pidfd
 * closed, *exit_ok: it exited with 0), 0 when not yet. */
/* A JSON string of n bytes of s; a byte that is not part of valid UTF-8 (a file name may hold
 * any) becomes U+FFFD. NULL when out of memory. */
/* spawner_fetch.c: what the store lacks of image digest (its manifest; then its files, within
 * the room the store has) fetched from cfg's server; a stored layer m (digest) pushed to it. */
int sp_image_fetch_manifest(const struct spawner_config *cfg, struct img_store *st,
                            const char *digest, struct sk_error *err);
int sp_image_fetch_files(const struct spawner_config *cfg, struct img_store *st, const char *digest,
                         struct sk_error *err);
struct img_manifest;
int sp_layer_push(const struct spawner_config *cfg, struct img_store *st,
                  const struct img_manifest *m, const char *digest, struct sk_error *err);
/* The bytes cfg keeps free on a store's filesystem of fs_bytes. */
uint64_t sp_image_min_free(const struct spawner_config *cfg, uint64_t fs_bytes);

json_t *sp_json_lossy(const char *s, size_t n);
_Noreturn void sp_child_answer(int fd, json_t *msg);
int sp_child_reap(int *pidfd, int *exit_ok);

/* JSON request fields: 0 and the value, -ENOENT when absent (or null), else err set. */
int sp_json_string(json_t *req, const char *key, const char **ret, struct sk_error *err);
int sp_json_int(json_t *req, const char *key, json_int_t min, json_int_t max, json_int_t *ret,
                struct sk_error *err);
