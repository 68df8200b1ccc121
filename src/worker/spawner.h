/* The spawner: the runtime's single-threaded helper process. The worker runs libuv (and a
 * thread for the store in `skiffd dev`), and user namespaces can't be made or entered from a
 * threaded process; so every sandbox is made, entered and ended by the spawner, which the worker
 * forks before it starts any thread. It keeps the runtime's pool of ready sandboxes, refilled
 * whenever it has nothing else to do.
 *
 * Protocol: a SOCK_STREAM unix socket pair; each message is a 4-byte big-endian length followed by
 * that many bytes of one JSON object (at most SPAWNER_MAX_MSG_BYTES). The worker sends requests
 * {"op":…, "req":N, …}; the spawner answers each with {"req":N, "ok":true, …} or
 * {"req":N, "ok":false, "error":{"code":"invalid_argument"|"not_found"|"conflict"|
 * "resource_exhausted"|"internal", "message":"…"}}, in any order, and sends events
 * {"event":…, …} whenever something happens. See docs/WORKER.md for every op and event.
 *
 * Sandboxes are named by the API's id (sb-…) given in "create"; the runtime's own id may differ
 * (a pooled sandbox was made before its API id was known) and is recorded in the sandbox's state,
 * so a restarted spawner finds every sandbox of its instance again under its API id. Sandboxes
 * are detached: they keep running when the spawner or the worker exits, and their output goes to
 * files. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../lib/error.h"
#include "../net/net.h"

#define SPAWNER_MAX_MSG_BYTES              (2 * 1024 * 1024)
#define SPAWNER_DEFAULT_POOL               2 /* ready sandboxes kept for the default image */
#define SPAWNER_OUTPUT_KEEP_BYTES          (16 * 1024 * 1024) /* per output file: older bytes dropped */
#define SPAWNER_OUTPUT_CHECK_MS            1000
#define SPAWNER_EXEC_DRAIN_MS              1000 /* after an exec exits, how long its output may lag */
#define SP_EXEC_INLINE_OUTPUT_BYTES        (64 * 1024) /* per stream, sent with a waited exec's end */
#define SPAWNER_DEFAULT_KILL_GRACE_MS      3000 /* terminate: SIGTERM, then SIGKILL after this */
#define SPAWNER_MAX_EXECS_PER_SANDBOX      1024 /* running at once */
#define SPAWNER_MAX_STARTS_PER_SANDBOX     16   /* on their way to init at once; more wait */
#define SPAWNER_DEFAULT_IMAGE_MIN_FREE_PCT 10   /* of the store's filesystem, kept free */

struct spawner_config {
	const char *instance; /* runtime instance id (1-4 [a-z0-9]) */
	const char *run_dir;  /* NULL: RT_DEFAULT_RUN_DIR */
	const char *data_dir; /* images (the busybox root) live under it */
	const char
	    *busybox;  /* the static busybox the default root is made from; NULL: the default */
	int pool_size; /* ready sandboxes for the default image and limits; 0: none */
	/* Network egress: its subnet and resolvers; NULL: the defaults without DNS. */
	const struct egress_config *egress;
	/* The server, when this worker's data directory is not the server's (skiffd worker):
	 * images and blobs the store lacks are fetched from it, layers pushed to it
	 * (spawner_fetch.c), with the worker secret. NULL: the store is the server's (skiffd dev).
	 */
	const char *server_url; /* http://HOST:PORT */
	const char *server_secret;
	/* Before a tree is materialized, the least recently used trees nothing holds are dropped
	 * until the store's filesystem has this much free: image_min_free_pct percent of its size
	 * or image_min_free_bytes, whichever is larger (both 0: nothing is dropped). */
	unsigned image_min_free_pct;
	uint64_t image_min_free_bytes;
	/* The stdin holder program (stdin_holder.h); NULL: skiff-stdin next to our own binary. */
	const char *stdin_holder;
	/* Called in the spawner right after the fork, optional: e.g. to blank the daemon's command
	 * line, which sandboxes (forks of the spawner) would show as their /proc/1/cmdline. The
	 * strings above must not live in what it blanks. */
	void (*in_child)(void);
};

struct spawner_proc {
	pid_t pid;
	int fd; /* the worker's end of the socket */
};

/* Fork the spawner. Call before the process starts any thread. The child closes every fd but
 * its end of the socket and stdio, runs until its socket reaches EOF (the worker is gone), and
 * exits; sandboxes keep running. */
int spawner_start(const struct spawner_config *cfg, struct spawner_proc *ret, struct sk_error *err);
/* Close the worker's end and reap the spawner (it exits at EOF). */
void spawner_stop(struct spawner_proc *sp);

/* The spawner's main loop (spawner_start's child runs it; tests may run it in a forked child of
 * their own). Returns the process's exit status. */
int spawner_main(const struct spawner_config *cfg, int fd);

/* Framing helpers shared by both ends (blocking fd I/O; the worker's side on the loop does its
 * own reading with spawner_frame_parse). */
int spawner_send(int fd, const char *json, size_t len);
/* The same with pass_fd (>= 0) attached to the frame's first byte (SCM_RIGHTS). */
int spawner_send_fd(int fd, const char *json, size_t len, int pass_fd);
/* Parse one frame from buf (len bytes): 0 when incomplete, -EMSGSIZE when too large, else the
 * frame's total size with *ret_msg and *ret_len pointing at its JSON. */
ssize_t spawner_frame_parse(const char *buf, size_t len, const char **ret_msg, size_t *ret_len);
