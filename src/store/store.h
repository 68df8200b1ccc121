/* The state store: everything durable of the control plane (workspaces, tokens, sandboxes,
 * execs, workers, idempotency keys), every row carrying its workspace.
 *
 * One interface, one backend for now (SQLite, WAL, in <data dir>/skiff.db). SQLite runs on a
 * thread of its own, never on the event loop: the loop submits work (store_submit) and gets a
 * callback on the loop when that work is durable. Work submitted while a transaction is being
 * committed is gathered into the next one (group commit): writes that arrive together are
 * committed together, and every callback runs only after its transaction has committed
 * (synchronous=FULL). Each submitted function runs inside its own savepoint: one that fails is
 * rolled back alone, the rest of the batch commits.
 *
 * The row functions (store_*_put, _get, _load, ...) run on the store's thread, inside a
 * submitted function, with the struct store_tx it was given. Strings in rows are NUL-terminated;
 * fields that are char * are malloc'ed and freed by store_*_release. */
#pragma once

#include <stdint.h>
#include <uv.h>

#include "../lib/error.h"
#include "../lib/id.h"

#define STORE_NAME_BYTES     64 /* names of workspaces, tokens, sandboxes, workers (63 + NUL) */
#define STORE_ROLE_BYTES     16
#define STORE_STATE_BYTES    16
#define STORE_HASH_BYTES     65 /* SHA-256 hex + NUL */
#define STORE_IDEM_KEY_BYTES 256

struct store;
struct store_tx; /* a connection inside the current transaction */

/* Open (creating) the database at path and bring its schema up to date through the numbered
 * migrations (PRAGMA user_version); start the store's thread. A database from a newer version
 * (user_version above ours) is refused. */
int store_open(const char *path, struct store **ret, struct sk_error *err);
/* Finish submitted work (their callbacks must still be delivered by running the loop: call this
 * after the loop has stopped submitting), stop the thread, close the database. Accepts NULL.
 * Call it on the loop's thread (from a callback, or once uv_run has returned). When store_submit
 * was ever called, it closes the store's uv_async_t: run the loop again (uv_run(loop,
 * UV_RUN_DEFAULT) returns once that is closed) before uv_loop_close; every done still pending
 * runs then, exactly once. A done may call store_close; none may submit after it. */
void store_close(struct store *st);

typedef int (*store_fn)(struct store_tx *tx, void *ud);
typedef void (*store_done_fn)(void *ud, int rc);
/* Run fn(tx, ud) on the store's thread inside a savepoint of the next transaction, then
 * done(ud, rc) on loop once that transaction has committed (rc: fn's return, or a negative errno
 * when the commit failed: then fn's writes are lost and rc says so). loop must be the same for
 * every submit of one store. Returns 0 or -ENOMEM. Call it on the loop's thread; done may be
 * NULL. While work is outstanding the store keeps the loop alive (uv_run returns only once every
 * done has run); otherwise its handle does not. */
int store_submit(struct store *st, uv_loop_t *loop, store_fn fn, store_done_fn done, void *ud);
/* Run fn now, on the calling thread, in a transaction of its own, and wait for the commit (for
 * start-up loading and for tests; not from the loop once it serves requests). fn returning a
 * negative errno rolls the transaction back; returns fn's return, or a negative errno when the
 * commit failed. Not from inside a store_fn (it would wait for itself). */
int store_run_sync(struct store *st, store_fn fn, void *ud);
/* The error message of the last failing row function on this tx (for logs). */
const char *store_tx_errmsg(struct store_tx *tx);

/* Milliseconds since the epoch; 0 means unset in every *_ms field. */

struct store_workspace {
	char id[ID_MAX_BYTES]; /* ws-… */
	char name[STORE_NAME_BYTES];
	int64_t created_ms;
};

struct store_token {
	char id[ID_MAX_BYTES]; /* tk-… */
	char workspace_id[ID_MAX_BYTES];
	char name[STORE_NAME_BYTES];
	char role[STORE_ROLE_BYTES]; /* admin owner developer viewer sandbox-agent */
	char secret_hash[STORE_HASH_BYTES];
	int64_t created_ms;
	int64_t expires_ms; /* 0: never */
};

struct store_sandbox {
	char id[ID_MAX_BYTES]; /* sb-… */
	char workspace_id[ID_MAX_BYTES];
	char name[STORE_NAME_BYTES]; /* "" when none */
	char state[STORE_STATE_BYTES];
	char worker_id[ID_MAX_BYTES]; /* "" until placed */
	char *spec_json;              /* the create body as accepted (normalized) */
	char *tags_json;              /* {"k":"v"} */
	int exit_code;                /* -1 while none */
	int64_t created_ms, started_ms, ended_ms;
	int64_t deadline_ms;         /* when timeout_s ends it; 0: none */
	char image_id[ID_MAX_BYTES]; /* im-… it was started on; "" for busybox */
};

struct store_exec {
	char id[ID_MAX_BYTES]; /* ex-… */
	char sandbox_id[ID_MAX_BYTES];
	char workspace_id[ID_MAX_BYTES];
	char state[STORE_STATE_BYTES]; /* running exited failed lost */
	int exit_code;                 /* -1 while none */
	char *command_json;            /* the exec body as accepted */
	int64_t created_ms, started_ms, ended_ms;
};

struct store_worker {
	char id[ID_MAX_BYTES]; /* wk-… */
	char name[STORE_NAME_BYTES];
	int64_t epoch;   /* incremented at each registration */
	char *info_json; /* capacity, labels, what it said at registration */
	int64_t registered_ms, last_seen_ms;
};

struct store_idem {
	char workspace_id[ID_MAX_BYTES];
	char key[STORE_IDEM_KEY_BYTES];
	char route[64];                   /* e.g. "POST /v1/sandboxes" */
	char body_hash[STORE_HASH_BYTES]; /* SHA-256 hex of the request body */
	int status;                       /* the reply's status */
	char *response;                   /* the reply's body */
	int64_t created_ms, expires_ms;
};

#define STORE_IMAGE_NAME_BYTES 129 /* [a-z0-9._-]{1,128} + NUL */

struct store_image {
	char id[ID_MAX_BYTES]; /* im-… */
	char workspace_id[ID_MAX_BYTES];
	char name[STORE_IMAGE_NAME_BYTES]; /* "" when none; unique in its workspace */
	char state[STORE_STATE_BYTES];     /* building ready failed */
	char *spec_json;                   /* the build body as accepted */
	char manifest[STORE_HASH_BYTES];   /* its manifest's digest; "" until ready */
	char *config_json;                 /* {env, workdir, entrypoint} */
	int64_t size_bytes, files;
	char *layers_json; /* [{step, key, cached, layer, seconds}] */
	char *error;       /* why it failed; NULL otherwise */
	int64_t created_ms, ready_ms;
};

/* What a build step made, by its key (SHA-256 hex of its parent's key, the step and inputs). */
struct store_cache {
	char key[STORE_HASH_BYTES];
	char manifest[STORE_HASH_BYTES];
	char *config_json;
	int64_t created_ms;
	char workspace_id[ID_MAX_BYTES]; /* whose builds use it; "": shared, or unknown */
	int64_t used_ms;                 /* a build last used it (roughly: see builder.c) */
};

/* A workspace that uploaded a blob (SHA-256 hex): it may read the blob and name it in builds. */
struct store_blob_owner {
	char workspace_id[ID_MAX_BYTES];
	char digest[STORE_HASH_BYTES];
	int64_t created_ms;
};

void store_sandbox_release(struct store_sandbox *s);
void store_image_release(struct store_image *i);
void store_cache_release(struct store_cache *c);
void store_exec_release(struct store_exec *e);
void store_worker_release(struct store_worker *w);
void store_idem_release(struct store_idem *i);

/* Row functions. Each returns 0 or a negative errno (-ENOENT: no such row, -EEXIST: a unique
 * constraint refused it, -EIO: anything else from SQLite). put = insert or replace whole row.
 * _load calls cb for every row (in id order, i.e. creation order); cb returning nonzero stops
 * and is returned.
 *
 * Also: a put whose row refers to a row that does not exist (a foreign key: the workspace of a
 * token, sandbox or exec; the sandbox of an exec) returns -ENOENT. A token's workspace_id may be
 * "" (a token of no workspace). A sandbox name is taken only while its sandbox's state is
 * "pending" or "running". A field without its NUL is refused (-EINVAL); a stored value too long
 * for its field fails the load (-EIO), never truncated. The row passed to a _load cb is freed
 * when cb returns: copy what you keep. A _get fills ret only on success. */
int store_workspace_put(struct store_tx *tx, const struct store_workspace *w);
int store_workspaces_load(struct store_tx *tx, int (*cb)(const struct store_workspace *w, void *ud),
                          void *ud);

int store_token_put(struct store_tx *tx, const struct store_token *t);
int store_token_delete(struct store_tx *tx, const char *id);
int store_tokens_load(struct store_tx *tx, int (*cb)(const struct store_token *t, void *ud),
                      void *ud);

int store_sandbox_put(struct store_tx *tx, const struct store_sandbox *s);
int store_sandbox_get(struct store_tx *tx, const char *id, struct store_sandbox *ret);
int store_sandboxes_load(struct store_tx *tx, int (*cb)(const struct store_sandbox *s, void *ud),
                         void *ud);

int store_exec_put(struct store_tx *tx, const struct store_exec *e);
int store_exec_get(struct store_tx *tx, const char *id, struct store_exec *ret);
/* Execs of one sandbox (sandbox_id NULL: all). */
int store_execs_load(struct store_tx *tx, const char *sandbox_id,
                     int (*cb)(const struct store_exec *e, void *ud), void *ud);

int store_worker_put(struct store_tx *tx, const struct store_worker *w);
int store_workers_load(struct store_tx *tx, int (*cb)(const struct store_worker *w, void *ud),
                       void *ud);

/* Idempotency keys: get the live one for (workspace, key) (-ENOENT when none or expired), put a
 * new one, and drop those expired before now_ms (returns how many). A key is expired once
 * expires_ms <= now_ms; expires_ms 0 never expires. */
int store_idem_get(struct store_tx *tx, const char *workspace_id, const char *key, int64_t now_ms,
                   struct store_idem *ret);
int store_idem_put(struct store_tx *tx, const struct store_idem *i);
int store_idem_expire(struct store_tx *tx, int64_t now_ms);

/* Images: a name is unique in its workspace (-EEXIST); delete removes the row (-ENOENT when
 * none), which frees its name. */
int store_image_put(struct store_tx *tx, const struct store_image *i);
int store_image_delete(struct store_tx *tx, const char *id);
int store_images_load(struct store_tx *tx, int (*cb)(const struct store_image *i, void *ud),
                      void *ud);
/* The build cache: get (-ENOENT when the key is not there), put (replacing), touch (used_ms
 * set, only forward; a key not there is no error), delete (-ENOENT when none), load (least
 * recently used first, then by key). */
int store_cache_get(struct store_tx *tx, const char *key, struct store_cache *ret);
int store_cache_put(struct store_tx *tx, const struct store_cache *c);
int store_cache_touch(struct store_tx *tx, const char *key, int64_t used_ms);
int store_cache_delete(struct store_tx *tx, const char *key);
int store_cache_load(struct store_tx *tx, int (*cb)(const struct store_cache *c, void *ud),
                     void *ud);
/* Blob owners: put (a pair stored already is kept as it was), load (by workspace, digest). */
int store_blob_owner_put(struct store_tx *tx, const struct store_blob_owner *o);
int store_blob_owners_load(struct store_tx *tx,
                           int (*cb)(const struct store_blob_owner *o, void *ud), void *ud);
