/* The worker: the node agent. It registers with a server over the worker link (HTTP + JSON,
 * docs/WORKER.md), long-polls for commands, carries them out through the spawner (the runtime's
 * single-threaded helper process, spawner.h) and reports what happens as events, which also
 * serve as its heartbeat. Everything runs on one event loop. */
#pragma once

#include <uv.h>

#include "../lib/error.h"

#define WORKER_RETRY_MS              1000 /* after the server could not be reached */
#define WORKER_REQUEST_TIMEOUT_MS    30000
#define WORKER_MAX_EVENTS_QUEUED     100000
#define WORKER_RECENT_COMMANDS       1024  /* command ids remembered, so a replay is harmless */
#define WORKER_TUNNEL_SETUP_MS       10000 /* a tunnel not relaying by then is given up */
#define WORKER_TUNNEL_MAX_HEAD_BYTES 4096  /* the server's answer to a tunnel's upgrade */
#define WORKER_EVENTS_BATCH_BYTES                                                                  \
	(4 * 1024 * 1024) /* per events post, unless one event is more                             \
	                   */

struct worker_config {
	const char *server_host; /* "127.0.0.1" */
	int server_port;
	const char *secret; /* the worker link's bearer secret */
	const char *name;   /* stable across restarts: the server knows the worker by it */
	int spawner_fd;     /* the worker's end of the spawner's socket (taken over) */
	void (*log)(const char *line); /* NULL: stderr */
};

struct worker;

int worker_new(uv_loop_t *loop, const struct worker_config *cfg, struct worker **ret,
               struct sk_error *err);
/* Stop polling and reporting; free the worker once its handles are closed, then call done. The
 * spawner and the sandboxes are left running. */
void worker_close(struct worker *w, void (*done)(void *), void *ud);
