/* What the files of the SQLite backend share: the store, its transaction object, the prepared
 * statements, and the functions one file gives the others. Not for users of the store. */
#pragma once

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>

#include "store.h"

#define STORE_ERRMSG_BYTES    512
#define STORE_BUSY_TIMEOUT_MS 5000

/* Every statement the backend runs, prepared once per connection at open. */
enum store_stmt {
	STMT_BEGIN,
	STMT_COMMIT,
	STMT_ROLLBACK,
	STMT_SAVEPOINT,
	STMT_RELEASE,
	STMT_ROLLBACK_TO,
	STMT_WORKSPACE_PUT,
	STMT_WORKSPACES_LOAD,
	STMT_TOKEN_PUT,
	STMT_TOKEN_DELETE,
	STMT_TOKENS_LOAD,
	STMT_SANDBOX_PUT,
	STMT_SANDBOX_GET,
	STMT_SANDBOXES_LOAD,
	STMT_EXEC_PUT,
	STMT_EXEC_GET,
	STMT_EXECS_LOAD,
	STMT_EXECS_LOAD_SANDBOX,
	STMT_WORKER_PUT,
	STMT_WORKERS_LOAD,
	STMT_IDEM_GET,
	STMT_IDEM_PUT,
	STMT_IDEM_EXPIRE,
	STMT_IMAGE_PUT,
	STMT_IMAGE_DELETE,
	STMT_IMAGES_LOAD,
	STMT_CACHE_GET,
	STMT_CACHE_PUT,
	STMT_CACHE_TOUCH,
	STMT_CACHE_DELETE,
	STMT_CACHE_LOAD,
	STMT_OWNER_PUT,
	STMT_OWNERS_LOAD,
	STMT_COUNT
};

struct store_tx {
	struct store *st;
	sqlite3 *db;
	sqlite3_stmt **stmts; /* st->stmts */
	char errmsg[STORE_ERRMSG_BYTES];
};

struct store_job; /* thread.c */
struct store_notifier;

struct store {
	/* The connection, its statements and the one transaction object: held by whoever runs a
	 * transaction (the store's thread for a batch, store_run_sync's caller). */
	pthread_mutex_t db_lock;
	sqlite3 *db;
	sqlite3_stmt *stmts[STMT_COUNT];
	struct store_tx tx;
	uint64_t commits; /* transactions committed (under db_lock) */

	/* Work submitted from the loop, taken in whole by the thread (under lock). */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct store_job *queue_head, *queue_tail;
	int stopping;
	int thread_started;
	pthread_t thread;

	/* The loop side, created by the first store_submit (touched on the loop's thread only). */
	uv_loop_t *loop;
	struct store_notifier *notifier;
};

/* migrations.c: bring db's schema up to date; refuse a database newer than we know. */
int store_migrate(sqlite3 *db, struct sk_error *err);
/* The schema version the migrations bring a database to. */
int store_schema_version(void);

/* rows.c: the SQL of every statement, by enum store_stmt. */
extern const char *const STORE_STMT_SQL[STMT_COUNT];

/* sqlite.c */
/* Run one of the transaction-control statements; maps and records errors like a row function. */
int store_tx_exec(struct store_tx *tx, enum store_stmt which, const char *what);
/* Record the connection's error for what, return its negative errno. */
int store_tx_fail(struct store_tx *tx, int rc, const char *what);
/* True when SQLite has rolled the whole transaction back on its own (I/O error, full disk). */
int store_tx_aborted(struct store_tx *tx);

/* thread.c */
int store_thread_start(struct store *st, struct sk_error *err);
/* Drain the queue, stop and join the thread; hand pending callbacks to the loop. */
void store_thread_stop(struct store *st);

/* Transactions committed so far (for tests: group commit is visible in it). */
uint64_t store_commit_count(struct store *st);
