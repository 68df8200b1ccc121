/* The control plane: REST API, authentication and authorization, the in-memory view of what the
 * store holds, and the server's end of the worker link. One struct server per daemon, passed to
 * every handler through its route (no globals). Everything runs on the event loop; the store
 * runs on its own thread (src/store/store.h).
 *
 * The store is the truth; the server keeps every workspace, token, sandbox and exec in memory
 * too (loaded at start) so that reads and the per-request authentication never wait on the
 * store. A write changes memory and is submitted to the store; the reply is sent when the store
 * says it is durable. */
#pragma once

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <uv.h>

#include "../http/http.h"
#include "../image/store.h"
#include "../lib/error.h"
#include "../lib/map.h"
#include "../lib/prioq.h"
#include "../store/store.h"

#define SERVER_MAX_JSON_BODY_BYTES    (256 * 1024)
#define SERVER_MAX_LIST_LIMIT         1000
#define SERVER_DEFAULT_LIST_LIMIT     100
#define SERVER_MAX_WAIT_S             3600.0 /* one wait call; the client calls again */
#define SERVER_CREATE_TIMEOUT_MS      60000  /* a create not running by then has failed */
#define SERVER_EXEC_START_TIMEOUT_MS  30000
#define SERVER_POLL_HOLD_MS           20000 /* a worker's long-poll is answered after this at most */
#define SERVER_WORKER_LOST_MS         15000 /* no word from a worker for this long: it is lost */
#define SERVER_HEARTBEAT_MS           2000  /* what workers are told to keep to */
#define SERVER_IDEM_TTL_MS            (24 * 3600 * 1000LL)
#define SERVER_MAX_TOKENS             10000
#define SERVER_MAX_WORKSPACES         1000
#define SERVER_MAX_SANDBOXES          100000 /* kept in memory: the oldest ended ones go first */
#define SERVER_MAX_LIVE_SANDBOXES     10000  /* pending or running, all workspaces */
#define SERVER_MAX_LIVE_PER_WORKSPACE 1000
#define SERVER_MAX_EXECS_PER_SANDBOX  10000
#define SERVER_MAX_PENDING_COMMANDS   100000
#define EXEC_WAIT_MAX_OUTPUT_BYTES    (1024 * 1024) /* per stream, in ?wait=true replies */
#define LINK_VERSION                  1
#define SERVER_MAX_FILE_BYTES         (8 * 1024 * 1024) /* one file read or written by the API */
#define SERVER_FILE_TIMEOUT_MS        60000
#define OUTPUT_MAX_READ_BYTES         (1024 * 1024) /* one output read */
#define EXEC_STDIN_MAX_WRITE_BYTES    (1024 * 1024) /* one stdin write (the spawner's limit) */
#define EXEC_PTY_MAX_SIZE             1000          /* rows and columns of a terminal */
#define OUTPUT_FOLLOW_WAIT_MS         5000 /* a follower's read waits this long on the worker */
#define OUTPUT_FOLLOW_RETRY_MS        50   /* after a read that brought nothing */
/* stdin bytes on their way to executions, all workers together: more waits for room (429). A
 * write waits in the spawner until the process reads it (SP_STDIN_WRITE_TIMEOUT_MS). */
#define SERVER_MAX_STDIN_INFLIGHT_BYTES (64 * 1024 * 1024)
#define OUTPUT_EXIT_WAIT_MS             5000        /* output ended: its exit code comes within */
#define LINK_OUTPUT_MAX_META_BYTES      (64 * 1024) /* the JSON line before an output's bytes */
/* At a sandbox's deadline (timeout_s, idle_timeout_s) the server has its worker end it like the
 * spawner's own timeout does (SIGKILL at once); with no end reported this much later (a slow
 * or stopped worker), it records the timeout itself. */
#define SERVER_TIMEOUT_GRACE_MS  0
#define SERVER_TIMEOUT_MARGIN_MS 2000
/* Tunnels to sandbox ports (api_ports.c). */
#define SERVER_MAX_TUNNELS        1024 /* open at once, all sandboxes */
#define SERVER_MAX_TUNNELS_PER_WS 256  /* of one workspace: no tenant takes all */
/* A chunked request to a port, read whole (one of known length is streamed). */
#define SERVER_PORT_MAX_BODY_BYTES (16 * 1024 * 1024)
#define SERVER_MAX_BODIES_BYTES    (256 * 1024 * 1024) /* request bodies held at once, all calls */
#define SERVER_TUNNEL_CONNECT_MS   10000               /* the worker connects back within */
#define SERVER_TUNNEL_IDLE_MS      (10 * 60 * 1000)    /* nothing either way: closed */
#define SERVER_TUNNEL_BUFFER_BYTES (1024 * 1024)       /* queued per direction */
#define LINK_TUNNEL_PROTOCOL       "skiff-tunnel"      /* the worker's Upgrade */
/* Images (api_blobs.c, images.c, builder.c). */
#define SERVER_MAX_BLOB_BYTES         (4ULL << 30) /* one upload: SKIFF_MAX_BLOB_BYTES lowers it */
#define SERVER_MAX_CHUNKED_BLOB_BYTES (64 * 1024 * 1024) /* a chunked upload is held whole */
#define SERVER_MAX_UPLOADS            256 /* streamed PUT /v1/blobs at once, all workspaces */
#define SERVER_MAX_UPLOADS_PER_WS     16  /* of one workspace: a slow one holds a socket, a */
                                          /* tmp file and its buffer for as long as it trickles */
/* Workers' pushes (PUT /internal/v1/blobs) at once, all workers: a share apart from the clients'
 * uploads, which can't take it from them. */
#define SERVER_MAX_WORKER_UPLOADS 256

#define SERVER_MAX_IMAGES        100000
#define SERVER_MAX_IMAGES_PER_WS 1000 /* SKIFF_WORKSPACE_MAX_IMAGES lowers it */
/* What a workspace's uploads may hold in the store at once (blobs it uploaded that are still
 * there, and its uploads under way): SKIFF_WORKSPACE_BLOB_BYTES changes it. */
#define SERVER_WS_BLOB_BYTES     (32ULL << 30)
#define SERVER_MAX_BUILDS_PER_WS 8 /* building at once (snapshots too): each may hold a */
                                   /* build sandbox, a thread's work, gc off */
#define SERVER_MAX_IMAGE_BODY_BYTES (1024 * 1024) /* a build spec */
#define SERVER_APT_SOURCES_MAX      8   /* sources.list lines of apt steps (--apt-source) */
#define SERVER_APT_SOURCE_MAX_BYTES 512 /* one of them, and the Debian mirror's URL */
#define IMAGE_MAX_STEPS             256
#define IMAGE_MAX_APT_PACKAGES      512
#define IMAGE_MAX_RUN_BYTES         (64 * 1024)
#define IMAGE_MAX_ENTRYPOINT_ARGS   256
#define IMAGE_MAX_LOG_BYTES         (8 * 1024 * 1024) /* a build's log: the rest is cut */
#define IMAGE_BLOB_GRACE_S          3600 /* gc leaves younger unreferenced blobs (uploads) */
/* The build cache: an entry no build used for this long goes at the next gc
 * (SKIFF_BUILD_CACHE_TTL_S changes it), and a workspace keeps at most this many, its least
 * recently used going first (SKIFF_BUILD_CACHE_MAX_PER_WORKSPACE lowers it). */
#define SERVER_BUILD_CACHE_TTL_S      (7 * 24 * 3600)
#define SERVER_BUILD_CACHE_MAX_PER_WS 10000

enum role {
	ROLE_NONE = 0,
	ROLE_SANDBOX_AGENT,
	ROLE_VIEWER,
	ROLE_DEVELOPER,
	ROLE_OWNER,
	ROLE_ADMIN,
};

/* What a route needs (struct http_route.flags). */
enum {
	PERM_PUBLIC = 1u << 0,  /* no token (healthz) */
	PERM_READ = 1u << 1,    /* viewer and up */
	PERM_WRITE = 1u << 2,   /* developer and up */
	PERM_SANDBOX = 1u << 3, /* a sandbox route: sandbox-agent may too */
	PERM_OWNER = 1u << 4,   /* tokens of one's workspace */
	PERM_ADMIN = 1u << 5,   /* every workspace */
	PERM_WORKER = 1u << 6,  /* the worker link: the worker secret */
	PERM_ANY = 1u << 7,     /* any valid token (whoami) */
};

struct workspace_rec {
	struct store_workspace row;
};

struct token_rec {
	struct store_token row;
};

struct worker_rec;
struct exec_rec;
struct waiter;

struct sandbox_rec {
	struct store_sandbox row;
	json_t *spec; /* the create body as accepted */
	json_t *tags;
	struct worker_rec *worker;
	struct map execs;       /* ex-id → exec_rec */
	struct waiter *waiters; /* wait calls and the create call, answered when it changes */
	int terminating;
	int removed; /* the worker was told to remove it */

	struct api_call *patch_call;
	/* Its timeouts (timeouts.c), while it runs. */
	struct prioq_node timer; /* in srv->timeouts: wakes no later than its next deadline */
	int64_t active_ms;       /* the idle clock counts from here: the last I/O or exec end */
	size_t execs_live;       /* execs pending or running: while any, it is not idle */
	size_t tunnels_live;     /* tunnels to its ports, set up or relaying: likewise */
	int64_t timeout_end_ms;  /* its deadline passed: the end is a timeout, recorded by then */
	/* A build step's sandbox (builder.c): its build, and the layer the worker captured. */
	struct build *build;
	char layer[65];
	char layer_error[256];
	/* why a create failed, for the create call */
	int fail_status;
	char fail_code[32];
	char fail_message[512];
};

struct exec_rec {
	struct store_exec row;
	struct sandbox_rec *sb;
	json_t *output; /* stdout/stderr (or _b64) and truncated, when it ran with ?wait=true */
	int capture;
	struct waiter *waiters;
};

struct command {
	struct command *next;
	char id[ID_MAX_BYTES];
	json_t *body; /* {"id","op",…} as sent to the worker */
};

struct worker_rec {
	struct store_worker row;
	int connected;
	struct command *queue, **queue_tail; /* not yet acknowledged */
	size_t nqueue;
	struct http_request *poll; /* a long-poll waiting for commands */
	uv_timer_t *poll_timer;
	int64_t last_seen_ms;
	json_t *capacity;
};

struct server_config {
	const char *data_dir;
	/* The image store's directory (rt_image_store_place); NULL: <data_dir>/images. */
	const char *images_root;
	const char *listen;        /* "ADDR:PORT" */
	const char *worker_secret; /* what the worker link's callers must present */
	int worker_lost_ms;        /* 0: SERVER_WORKER_LOST_MS */
	/* Limits a test can lower to reach them quickly (0: the SERVER_MAX_… default). */
	size_t max_tunnels_per_ws;       /* SERVER_MAX_TUNNELS_PER_WS */
	size_t max_stdin_inflight_bytes; /* SERVER_MAX_STDIN_INFLIGHT_BYTES */
	size_t max_bodies_bytes;         /* SERVER_MAX_BODIES_BYTES */
	uint64_t max_blob_bytes;         /* SERVER_MAX_BLOB_BYTES */
	uint64_t ws_blob_bytes;          /* SERVER_WS_BLOB_BYTES */
	size_t max_images_per_ws;        /* SERVER_MAX_IMAGES_PER_WS */
	int64_t build_cache_ttl_s;       /* SERVER_BUILD_CACHE_TTL_S */
	size_t build_cache_max_per_ws;   /* SERVER_BUILD_CACHE_MAX_PER_WS */
	/* The sources.list lines apt steps use instead of the image's own sources (none: the
	 * image's), each checked with builder_apt_source_check. */
	const char *apt_sources[SERVER_APT_SOURCES_MAX];
	size_t napt_sources;
	/* The mirror mmdebstrap makes the Debian bases' tarballs from (NULL: mmdebstrap's own,
	 * deb.debian.org), checked with builder_debian_mirror_check. */
	const char *debian_mirror;
};

struct build;
struct log_follower;
struct blob_upload;

struct image_rec {
	struct store_image row;
	json_t *spec;                   /* the build body as accepted */
	json_t *config;                 /* {env, workdir, entrypoint} */
	json_t *layers;                 /* [{step, key, cached, layer, seconds}] */
	struct build *build;            /* while it builds */
	struct log_follower *followers; /* GET …/logs?follow=true, until the build ends */
	int deleting;
	int interrupted; /* loaded as building: failed now, to be stored so */
};

#define METRICS_MAX_ROUTES 64 /* routes counted one by one; one more slot is "unmatched" */
#define METRICS_NSTATUS    19 /* statuses counted one by one, and "other" */
#define METRICS_NBUCKETS   16

struct metrics_histogram {
	uint64_t buckets[METRICS_NBUCKETS]; /* cumulative, like Prometheus's */
	uint64_t count;
	double sum;
};

struct metrics {
	uint64_t requests[METRICS_MAX_ROUTES + 1][METRICS_NSTATUS];
	struct metrics_histogram latency[METRICS_MAX_ROUTES + 1];
	struct metrics_histogram start;
};

struct close_ctx;

struct server {
	uv_loop_t *loop;
	struct store *store;
	struct http_server *http;
	struct server_config cfg;
	char worker_secret_hash[65];
	struct map workspaces;    /* ws-id → workspace_rec */
	struct map tokens;        /* secret hash → token_rec */
	struct map sandboxes;     /* sb-id → sandbox_rec */
	struct map workers;       /* wk-id → worker_rec */
	struct map idem_inflight; /* "ws/key" → strdup'ed key (a create with this key is running) */
	struct map file_calls;    /* fr-id → file_call waiting for the worker */
	struct map tunnels;       /* tn-id → tunnel_rec, waiting for the worker or relaying */
	struct map images;        /* im-id → image_rec */
	struct img_store imgs;    /* <data_dir>/images: blobs, manifests, trees */
	int imgs_open;
	struct build *builds;        /* running builds (builder.c) */
	unsigned gc_running;         /* an image gc on a thread */
	int gc_again;                /* asked for while one ran */
	struct blob_upload *uploads; /* PUT /v1/blobs in progress (api_blobs.c) */
	struct map build_cache;      /* step key → struct cache_entry (builder.c) */
	struct map build_cache_ws;   /* workspace id → struct cache_ws: its entries by last use */
	struct map blob_owners;      /* "<ws>/<hex>" → struct blob_owner: who uploaded a blob */
	struct map blob_usage;       /* ws id → its uploads' bytes in the store (api_blobs.c) */
	unsigned blobs_gen;          /* bumped when blobs left the store: blob_usage is stale */
	unsigned tasks_inflight;     /* image work on the thread pool (builder.c) */
	size_t stdin_bytes;          /* stdin writes sent to workers and not answered yet */
	uv_timer_t tick;             /* worker liveness, expired idempotency keys */
	struct prioq timeouts;     /* running sandboxes with a deadline, by when to look at them */
	uv_timer_t timeouts_timer; /* at the first of them */
	unsigned long ticks;
	struct metrics metrics;
	int stopping;
	int store_closed;                /* set by the owner once store_close ran */
	unsigned persists_inflight;      /* submitted to the store, not answered yet */
	struct close_ctx *closing;       /* set by server_close while it waits for them */
	struct close_ctx *closing_tasks; /* ... and for the thread pool's image work */
	void (*log)(const char *line);   /* one logfmt line per event; NULL: stderr */
};

/* The authenticated caller of one request. */
struct principal {
	const struct token_rec *token; /* NULL for the worker link */
	enum role role;
	char workspace_id[ID_MAX_BYTES];
};

/* One API call in flight: made by the gate, passed to the handler in req->data, freed when the
 * reply is sent (api_reply*). */
struct api_call {
	struct server *srv;
	struct http_request *req;
	struct principal who;
	int aborted;
	/* what a handler carries across store callbacks */
	void *obj;

	struct waiter *waiter; /* while it waits */
	void *stream;          /* a streamed reply's state (api_output.c) */
	size_t stdin_bytes;    /* what it counts in srv->stdin_bytes while it waits */
	char idem_key[STORE_IDEM_KEY_BYTES];
	char idem_hash[65];
	char inflight_key[ID_MAX_BYTES + STORE_IDEM_KEY_BYTES + 2];
};

/* A call waiting for a sandbox or exec to change (create, wait, exec ?wait). */
struct waiter {
	struct waiter *next;
	struct api_call *call;
	uv_timer_t *timer;
	int kind; /* WAIT_* */
	void *obj;
	struct waiter **list; /* the list it is on */
};
enum { WAIT_CREATE = 1, WAIT_ENDED, WAIT_EXEC_STARTED, WAIT_EXEC_ENDED, WAIT_TERMINATE };

/* server.c */
int server_new(uv_loop_t *loop, struct store *store, const struct server_config *cfg,
               struct server **ret, struct sk_error *err);
/* Shutting down, first step: answer every call that waits (with 503) and every worker poll;
 * new requests get 503. Persisted writes still complete: close the store after this. */
void server_shutdown(struct server *srv);
/* Last step, once the store is closed: close the HTTP server and free everything; done runs
 * when every handle is closed. */
void server_close(struct server *srv, void (*done)(void *), void *ud);
int server_port(const struct server *srv);
/* The routing table (for `skiffd routes` and the OpenAPI check). */
const struct http_route *server_routes(size_t *ret_n);
void server_logf(struct server *srv, const char *fmt, ...) _printf_(2, 3);
/* A timer of its own (malloc'ed) that runs cb once, ms from now, with data; NULL when out of
 * memory. Closed and freed by server_timer_free (which accepts NULL). */
uv_timer_t *server_timer_new(struct server *srv, uv_timer_cb cb, uint64_t ms, void *data);
void server_timer_free(uv_timer_t *t);
/* s made safe to put between quotes in a logfmt line (quotes, backslashes and control
 * characters become '_'), cut to fit buf. Returns buf. */
const char *log_safe(const char *s, char *buf, size_t size);
/* Persist fn's writes, then run done; logs and keeps going when the store fails. */
int server_persist(struct server *srv, store_fn fn, store_done_fn done, void *ud);

/* api.c: replies and errors, shared by the api_*.c files */
void api_reply_json(struct api_call *call, int status, json_t *body); /* steals body */
void api_reply_error(struct api_call *call, int status, const char *code, const char *fmt, ...)
    _printf_(4, 5);
void api_reply_verror(struct api_call *call, int status, const char *code, const char *fmt,
                      va_list ap) _printf_(4, 0);
void api_reply_sk_error(struct api_call *call, const struct sk_error *err);
void api_call_free(struct api_call *call);
/* Parse the request's body as a JSON object (depth and size limited); replies 400 and returns
 * NULL when it is not one. */
json_t *api_body_object(struct api_call *call);
/* Query parameter key as true/1 or false/0 (0 when absent) in ret; -1 after a 400 reply. */
int api_query_bool(struct api_call *call, const char *key, int *ret);
/* The request's raw body as a base64 JSON string; replies 503 and returns NULL when out of
 * memory. */
json_t *api_body_base64(struct api_call *call);
/* Whether the caller may see objects of workspace ws. */
int api_can_see(const struct api_call *call, const char *workspace_id);
/* Parse ?limit= and ?cursor=; replies 400 and returns -1 on bad values. */
int api_list_params(struct api_call *call, size_t *ret_limit, char *cursor, size_t cursor_size);
json_t *api_time(int64_t ms); /* RFC 3339 string, or null for 0 */
/* Reply with one page of a list: items (n of them, already filtered, those after the cursor
 * only) sorted by id, the first limit as JSON, and next_cursor when more remain. */
void api_reply_page(struct api_call *call, const void **items, size_t n, size_t limit,
                    const char *(*id_of)(const void *item), json_t *(*to_json)(const void *item));
/* The same for every item of m the caller may see (workspace_of gives an item's workspace),
 * taking ?limit= and ?cursor= from the request. */
void api_reply_map_page(struct api_call *call, const struct map *m,
                        const char *(*id_of)(const void *item),
                        const char *(*workspace_of)(const void *item),
                        json_t *(*to_json)(const void *item));
struct workspace_rec *api_workspace_find(struct server *srv, const char *id_or_name);
/* The sandbox named by the route's first parameter, if the caller may see it; else replies 404
 * and returns NULL. */
struct sandbox_rec *api_sandbox_of_call(struct api_call *call);
/* The same, running on a connected worker; else replies (404, 409 with why, 503). */
struct sandbox_rec *api_sandbox_running(struct api_call *call, const char *why);

/* auth.c */
enum role role_parse(const char *s);
const char *role_name(enum role r);
int auth_gate(struct http_request *req, void *gate_ud);
int auth_token_add(struct server *srv, const struct store_token *row);

/* api_*.c: route handlers */
void api_healthz(struct http_request *req);
void api_metrics(struct http_request *req);
/* metrics.c */
void metrics_request(struct server *srv, size_t route, int status, uint64_t duration_ns);
void metrics_sandbox_started(struct server *srv, double seconds);
void api_whoami(struct http_request *req);
void api_workspaces_create(struct http_request *req);
void api_workspaces_list(struct http_request *req);
void api_tokens_create(struct http_request *req);
void api_tokens_list(struct http_request *req);
void api_tokens_delete(struct http_request *req);
void api_sandboxes_create(struct http_request *req);
void api_sandboxes_list(struct http_request *req);
void api_sandboxes_get(struct http_request *req);
void api_sandboxes_patch(struct http_request *req);
void api_sandboxes_wait(struct http_request *req);
void api_sandboxes_delete(struct http_request *req);
void api_sandboxes_exec(struct http_request *req);
void api_execs_get(struct http_request *req);
/* The exec of the route's two parameters (sandbox, exec), if the caller may see it; else
 * replies 404 and returns NULL. */
struct exec_rec *exec_of_call(struct api_call *call);
/* {"rows", "cols"}, each from 1 to EXEC_PTY_MAX_SIZE, and nothing else. */
int pty_size_valid(json_t *o);
/* api_exec_io.c: an exec's stdin, signals and terminal size */
void api_exec_stdin(struct http_request *req);
void api_exec_signal(struct http_request *req);
void api_exec_resize(struct http_request *req);
void api_workers_list(struct http_request *req);
void api_files_get(struct http_request *req);
void api_files_put(struct http_request *req);
void api_fs_list(struct http_request *req);
void api_fs_stat(struct http_request *req);
void api_fs_mkdir(struct http_request *req);
void api_fs_remove(struct http_request *req);
void api_fs_move(struct http_request *req);
void file_calls_cancel_all(struct server *srv);
/* A file call: op with args (taken) sent to sb's worker; done runs once, with the worker's
 * result (borrowed) or with NULL and an error (status, code, message: the worker's error, its
 * loss, the deadline, 499 when the client went away). done must answer or end the call. */
/* Raw bytes that an answer carries beside its result (output reads, which the worker posts
 * without JSON): stdout's then stderr's, or one stream's in [0]. */
struct file_bytes {
	const char *data[2];
	size_t len[2];
};
typedef void (*file_call_done_fn)(struct api_call *call, json_t *result,
                                  const struct file_bytes *bytes, int status, const char *code,
                                  const char *msg);
void file_call_send(struct api_call *call, struct sandbox_rec *sb, const char *op, json_t *args,
                    file_call_done_fn done);
/* done for most calls: the result as the JSON reply, or the error. */
void file_done_json(struct api_call *call, json_t *result, const struct file_bytes *bytes,
                    int status, const char *code, const char *msg);
/* The sandbox of the route's first parameter if the caller may see it, it runs and its worker
 * is connected; else replies (404, 409, 503) and returns NULL. */
struct sandbox_rec *running_sandbox(struct api_call *call);
/* done for reads: the bytes as the raw reply, with X-Skiff-Offset/-Size/-Eof. */
void file_done_raw(struct api_call *call, json_t *result, const struct file_bytes *bytes,
                   int status, const char *code, const char *msg);
/* The one stream's bytes of an output answer: raw (bytes) or decoded from result's data_b64
 * into *ret_owned (to free). -EBADMSG when neither is readable. */
int file_result_bytes(json_t *part, const struct file_bytes *bytes, int i, const char **ret,
                      size_t *ret_len, char **ret_owned);
void file_calls_worker_lost(struct server *srv, struct worker_rec *w);
void api_exec_output(struct http_request *req);
void api_sandbox_logs(struct http_request *req);
/* A worker's file_done event: answer the file call it belongs to. */
void link_file_done(struct server *srv, struct worker_rec *w, json_t *ev);
/* POST /internal/v1/workers/{wk}/output: an output read's answer, raw. */
void link_output(struct http_request *req);

/* api_ports.c: the ports a sandbox serves, and tunnels to them */
void api_ports_list(struct http_request *req);
void api_ports_proxy(struct http_request *req);
/* POST /internal/v1/workers/{wk}/tunnels/{tn}: the worker's end of a tunnel. */
void link_tunnel(struct http_request *req);
/* A worker's tunnel_failed event: answer the request waiting for that tunnel. */
void link_tunnel_failed(struct server *srv, struct worker_rec *w, json_t *ev);
/* Close the tunnels of sandbox (NULL: any) on worker w (NULL: any): relays are cut, requests
 * still waiting for their worker are answered status with why. */
void tunnels_close(struct server *srv, const char *sandbox, const struct worker_rec *w, int status,
                   const char *why);
/* Close the tunnels opened with the token token_id (deleted), or with NULL those whose token
 * has expired by now_ms: a revoked credential keeps nothing open. */
void tunnels_close_token(struct server *srv, const char *token_id, int64_t now_ms);

/* api_blobs.c: /v1/blobs/sha256:{hex} */
void api_blobs_put(struct http_request *req);
void api_blobs_get(struct http_request *req);
/* Shutting down: uploads in progress are dropped (their connections closed). */
void blobs_shutdown(struct server *srv);
/* Make a stored blob as new as now for gc's grace (uploaded again, named by a build). */
void blob_touch(struct server *srv, const char *digest);
/* Blobs are stored once for all workspaces, but a workspace reads one (GET, HEAD) or names it in
 * a build only if it uploaded it, or it is the manifest of one of its images; admins, who see
 * every workspace, read any. Without this a digest (which image JSON and logs show freely) would
 * open another workspace's bytes, and HEAD would confirm a guess at them. */
int blob_readable(struct api_call *call, const char *digest);
int blob_readable_by(struct server *srv, const char *ws, int admin, const char *digest);
int blob_owner_load(const struct store_blob_owner *o, void *ud);
void blob_owners_free(struct server *srv);
/* Blobs left the store (a gc removed some): each workspace's uploads' bytes are counted again
 * at its next upload. */
void blobs_removed(struct server *srv);

/* images.c: the images of every workspace, and their routes */
int image_load(const struct store_image *row, void *ud);
json_t *image_json(const struct image_rec *im);
/* An image of any state by id or by name in workspace ws, or NULL. */
struct image_rec *image_lookup(struct server *srv, const char *ws, const char *id_or_name);
/* A ready image by id or by name in workspace ws (NULL if none, or not ready). */
struct image_rec *image_find(struct server *srv, const char *ws, const char *id_or_name);
void image_rec_free(struct image_rec *im);
/* Persist im's row as it is in memory, then run then (may be NULL). */
int image_persist(struct server *srv, struct image_rec *im,
                  void (*then)(struct server *srv, struct image_rec *im, int rc));
void api_images_create(struct http_request *req);
void api_images_list(struct http_request *req);
void api_images_get(struct http_request *req);
void api_images_logs(struct http_request *req);
void api_images_delete(struct http_request *req);
void api_sandboxes_snapshot(struct http_request *req);
/* Append to an image's build log (file <data>/build-logs/<id>.log) and pass it to followers. */
void image_log(struct server *srv, struct image_rec *im, const char *data, size_t len);
void image_logf(struct server *srv, struct image_rec *im, const char *fmt, ...) _printf_(3, 4);
/* The build ended: followers get the end of their stream. */
void image_log_end(struct server *srv, struct image_rec *im);

/* image_spec.c: validating a build spec (every field checked before anything is made) */
/* 0, or -EINVAL with err naming the bad field (-EPERM for a dir: base of a non-admin). */
int image_name_valid(const char *s);
int image_spec_check(struct server *srv, const char *ws, json_t *spec, int admin,
                     struct sk_error *err);

/* builder.c: builds, one step at a time; slow work on the thread pool */
int builder_start(struct server *srv, struct image_rec *im, struct sk_error *err);
/* A snapshot: im's base (its spec's) with layer applied; call gets 201 {id} once it is ready,
 * or the error. */
int builder_start_snapshot(struct server *srv, struct image_rec *im, const char *layer,
                           struct api_call *call, struct sk_error *err);
/* A build's sandbox ended (sandbox_set_ended): its output goes to the log, its step on. */
void builder_sandbox_ended(struct server *srv, struct sandbox_rec *sb);
/* At the end: the builds' memory (their images stay "building" in the store, which the next
 * start marks failed). */
void builder_free_all(struct server *srv);
/* Shutting down: snapshot calls waiting for their image get 503. */
void builder_shutdown(struct server *srv);
int build_cache_load(const struct store_cache *c, void *ud);
void build_cache_free(struct server *srv);
/* 0 when line is a sources.list line apt steps can use (one line of printable ASCII: deb or
 * deb-src, [options], a URI, a suite, components); -EINVAL with err saying why not. */
int builder_apt_source_check(const char *line, struct sk_error *err);
/* 0 when url can be the Debian mirror (http://, https:// or file:///, no quote, space or
 * control character); -EINVAL with err saying why not. */
int builder_debian_mirror_check(const char *url, struct sk_error *err);
/* server.c: a task of the thread pool ended (the server waits for them when closing). */
void server_task_done(struct server *srv);
/* Remove unreferenced blobs on a thread: every image's manifest and the build cache live. */
void images_gc(struct server *srv);

/* link.c: the worker link, server side */
void link_register(struct http_request *req);
void link_poll(struct http_request *req);
void link_events(struct http_request *req);
/* The worker a link call comes from, its epoch in body checked; or NULL after an error reply. */
struct worker_rec *link_worker_of(struct api_call *call, json_t *body);
/* Queue a command for a worker; body gets "id" and "op". Returns 0 or -ENOSPC. */
int link_command(struct server *srv, struct worker_rec *w, const char *op, json_t *body);
/* A worker that can take a new sandbox, or NULL. */
struct worker_rec *link_pick_worker(struct server *srv);
void link_check_workers(struct server *srv);
void link_release_polls(struct server *srv);

/* timeouts.c: every running sandbox's deadline (timeout_s from its start, moved by PATCH) and
 * idle deadline (idle_timeout_s after its last I/O, while no exec runs), enforced by the server
 * whatever its worker does. */
/* Queue every running sandbox loaded from the store and start the timer. A deadline that passed
 * while the server was down ends its sandbox at once; idle clocks start again now. */
void timeouts_start(struct server *srv);
/* At shutdown: nothing ends from here on. */
void timeouts_stop(struct server *srv);
/* I/O on sb through the API (an exec created, output read, a file or fs route): its idle clock
 * starts again. */
void sandbox_touch(struct server *srv, struct sandbox_rec *sb);
/* sb's deadlines changed (it started or ended, PATCH, its last exec ended): look again. */
void sandbox_timeouts_update(struct server *srv, struct sandbox_rec *sb);

/* sandboxes.c: the model */
json_t *sandbox_json(const struct sandbox_rec *sb);
json_t *exec_json(const struct exec_rec *ex);
int sandbox_ended(const struct sandbox_rec *sb);
/* The worker said how a sandbox or exec changed: update, persist, answer waiters. */
void sandbox_set_running(struct server *srv, struct sandbox_rec *sb, int64_t started_ms);
void sandbox_set_ended(struct server *srv, struct sandbox_rec *sb, const char *state, int exit_code,
                       int64_t ended_ms);
void sandbox_create_failed(struct server *srv, struct sandbox_rec *sb, int status, const char *code,
                           const char *message);
void exec_set_started(struct server *srv, struct exec_rec *ex, int64_t started_ms);
void exec_set_ended(struct server *srv, struct exec_rec *ex, const char *state, int exit_code,
                    int64_t ended_ms, json_t *output);
void waiter_add(struct server *srv, struct waiter **list, struct api_call *call, int kind,
                void *obj, double timeout_s);
/* Answer (and free) the waiters of list of the given kind (0: all). */
void waiters_wake(struct server *srv, struct waiter **list, int kind);
struct sandbox_rec *sandbox_find(struct server *srv, const char *id);
int sandbox_persist(struct server *srv, struct sandbox_rec *sb,
                    void (*then)(struct server *srv, struct sandbox_rec *sb, int rc));
int exec_persist(struct server *srv, struct exec_rec *ex,
                 void (*then)(struct server *srv, struct exec_rec *ex, int rc));
void waiters_cancel_all(struct server *srv);
/* Reply to a create with status and body, recording it under the call's idempotency key first
 * (when it has one). Steals body. */
void idem_record(struct api_call *call, int status, json_t *body);
/* Queue a new sandbox's create (sb->spec) for its worker. */
void sandbox_create_command(struct server *srv, struct sandbox_rec *sb);
void sandbox_rec_free(struct sandbox_rec *sb);
