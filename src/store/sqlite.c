/* The SQLite connection of the store: open (pragmas, migrations, prepared statements), close,
 * transactions run on the caller's thread, and the mapping of SQLite errors to errnos. The
 * store's thread and its batches are in thread.c, the rows in rows.c. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "sqlite_internal.h"

int store_tx_fail(struct store_tx *tx, int rc, const char *what)
{
	snprintf(tx->errmsg, sizeof(tx->errmsg), "%s: %s", what, sqlite3_errmsg(tx->db));
	switch (rc) {
	case SQLITE_CONSTRAINT_UNIQUE:
	case SQLITE_CONSTRAINT_PRIMARYKEY: return -EEXIST;
	case SQLITE_CONSTRAINT_FOREIGNKEY: return -ENOENT; /* the row it refers to is missing */
	}
	if ((rc & 0xff) == SQLITE_NOMEM)
		return -ENOMEM;
	return -EIO;
}

int store_tx_exec(struct store_tx *tx, enum store_stmt which, const char *what)
{
	sqlite3_stmt *stmt = tx->stmts[which];
	int rc = sqlite3_step(stmt);
	int r = rc == SQLITE_DONE ? 0 : store_tx_fail(tx, rc, what);
	sqlite3_reset(stmt);
	return r;
}

int store_tx_aborted(struct store_tx *tx)
{
	return sqlite3_get_autocommit(tx->db);
}

const char *store_tx_errmsg(struct store_tx *tx)
{
	return tx->errmsg;
}

uint64_t store_commit_count(struct store *st)
{
	pthread_mutex_lock(&st->db_lock);
	uint64_t n = st->commits;
	pthread_mutex_unlock(&st->db_lock);
	return n;
}

/* Run fn in a transaction of its own; db_lock is held. */
static int store_run_locked(struct store *st, store_fn fn, void *ud)
{
	struct store_tx *tx = &st->tx;
	tx->errmsg[0] = '\0';
	int r = store_tx_exec(tx, STMT_BEGIN, "begin");
	if (r < 0)
		return r;
	int rc = fn(tx, ud);
	if (rc < 0) {
		if (!store_tx_aborted(tx))
			store_tx_exec(tx, STMT_ROLLBACK, "rollback");
		return rc;
	}
	r = store_tx_exec(tx, STMT_COMMIT, "commit");
	if (r < 0) {
		if (!store_tx_aborted(tx))
			store_tx_exec(tx, STMT_ROLLBACK, "rollback");
		return r;
	}
	st->commits++;
	return rc;
}

int store_run_sync(struct store *st, store_fn fn, void *ud)
{
	pthread_mutex_lock(&st->db_lock);
	int rc = store_run_locked(st, fn, ud);
	pthread_mutex_unlock(&st->db_lock);
	return rc;
}

static int db_pragma(sqlite3 *db, const char *sql, const char *expect, struct sk_error *err)
{
	sqlite3_stmt *stmt = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
		return sk_error_set(err, -EIO, "%s: %s", sql, sqlite3_errmsg(db));
	int rc = sqlite3_step(stmt);
	int r = 0;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		r = sk_error_set(err, -EIO, "%s: %s", sql, sqlite3_errmsg(db));
	} else if (expect) {
		const char *got =
		    rc == SQLITE_ROW ? (const char *)sqlite3_column_text(stmt, 0) : NULL;
		if (!got || strcmp(got, expect) != 0)
			r = sk_error_set(err, -EIO, "%s: got %s, not %s", sql,
			                 got ? got : "nothing", expect);
	}
	sqlite3_finalize(stmt);
	return r;
}

static void store_free(struct store *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < STMT_COUNT; i++)
		sqlite3_finalize(st->stmts[i]);
	sqlite3_close(st->db);
	pthread_cond_destroy(&st->cond);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->db_lock);
	free(st);
}

static int store_connect(struct store *st, const char *path, struct sk_error *err)
{
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
	            SQLITE_OPEN_EXRESCODE;
	/* Our db_lock serializes every use of the connection: SQLite's own mutex is not needed. */
	if (sqlite3_open_v2(path, &st->db, flags, NULL) != SQLITE_OK) {
		if (!st->db)
			return sk_error_set(err, -ENOMEM, "sqlite3_open");
		return sk_error_set(err, -EIO, "%s", sqlite3_errmsg(st->db));
	}
	sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
	int r = db_pragma(st->db, "PRAGMA journal_mode = WAL", "wal", err);
	if (r < 0)
		return r;
	r = db_pragma(st->db, "PRAGMA synchronous = FULL", NULL, err);
	if (r < 0)
		return r;
	r = db_pragma(st->db, "PRAGMA foreign_keys = ON", NULL, err);
	if (r < 0)
		return r;
	r = store_migrate(st->db, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < STMT_COUNT; i++) {
		assert(STORE_STMT_SQL[i]);
		if (sqlite3_prepare_v3(st->db, STORE_STMT_SQL[i], -1, SQLITE_PREPARE_PERSISTENT,
		                       &st->stmts[i], NULL) != SQLITE_OK)
			return sk_error_set(err, -EIO, "prepare %s: %s", STORE_STMT_SQL[i],
			                    sqlite3_errmsg(st->db));
	}
	st->tx.st = st;
	st->tx.db = st->db;
	st->tx.stmts = st->stmts;
	return 0;
}

int store_open(const char *path, struct store **ret, struct sk_error *err)
{
	struct store *st = calloc(1, sizeof(*st));
	if (!st)
		return sk_error_set(err, -ENOMEM, "open store %s: out of memory", path);
	pthread_mutex_init(&st->db_lock, NULL);
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->cond, NULL);

	int r = store_connect(st, path, err);
	if (r == 0)
		r = store_thread_start(st, err);
	if (r < 0) {
		store_free(st);
		return sk_error_prefix(err, "open store %s", path);
	}
	*ret = st;
	return 0;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	store_thread_stop(st);
	store_free(st);
}
