/* The rows of the SQLite store: their SQL, binding structs to statements and loading rows back
 * into structs. Strings are bound with their lengths; loading copies into the fixed arrays and
 * refuses a value that does not fit rather than cut it. */
#include <stdio.h>
#include <string.h>

#include "sqlite_internal.h"

#define WORKSPACE_COLS "id, name, created_ms"
#define TOKEN_COLS     "id, workspace_id, name, role, secret_hash, created_ms, expires_ms"
#define SANDBOX_COLS                                                                               \
	"id, workspace_id, name, state, worker_id, spec_json, tags_json, exit_code, created_ms, "  \
	"started_ms, ended_ms, deadline_ms, image_id"
#define EXEC_COLS                                                                                  \
	"id, sandbox_id, workspace_id, state, exit_code, command_json, created_ms, started_ms, "   \
	"ended_ms"
#define WORKER_COLS "id, name, epoch, info_json, registered_ms, last_seen_ms"
#define IDEM_COLS   "workspace_id, key, route, body_hash, status, response, created_ms, expires_ms"
#define IMAGE_COLS                                                                                 \
	"id, workspace_id, name, state, spec_json, manifest, config_json, size_bytes, files, "     \
	"layers_json, error, created_ms, ready_ms"
#define CACHE_COLS "key, manifest, config_json, created_ms, workspace_id, used_ms"

/* put replaces a row in place (an upsert on its key), never with INSERT OR REPLACE: that would
 * delete whatever other row a unique index finds in the way instead of refusing. */
const char *const STORE_STMT_SQL[STMT_COUNT] = {
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_SAVEPOINT] = "SAVEPOINT job",
    [STMT_RELEASE] = "RELEASE job",
    [STMT_ROLLBACK_TO] = "ROLLBACK TO job",

    [STMT_WORKSPACE_PUT] = "INSERT INTO workspaces (" WORKSPACE_COLS ") VALUES (?1, ?2, ?3)"
                           " ON CONFLICT (id) DO UPDATE SET name = ?2, created_ms = ?3",
    [STMT_WORKSPACES_LOAD] = "SELECT " WORKSPACE_COLS " FROM workspaces ORDER BY id",

    [STMT_TOKEN_PUT] = "INSERT INTO tokens (" TOKEN_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                       " ON CONFLICT (id) DO UPDATE SET workspace_id = ?2, name = ?3, role = ?4,"
                       " secret_hash = ?5, created_ms = ?6, expires_ms = ?7",
    [STMT_TOKEN_DELETE] = "DELETE FROM tokens WHERE id = ?1",
    [STMT_TOKENS_LOAD] = "SELECT " TOKEN_COLS " FROM tokens ORDER BY id",

    [STMT_SANDBOX_PUT] =
        "INSERT INTO sandboxes (" SANDBOX_COLS ")"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        " ON CONFLICT (id) DO UPDATE SET workspace_id = ?2, name = ?3, state = ?4,"
        " worker_id = ?5, spec_json = ?6, tags_json = ?7, exit_code = ?8, created_ms = ?9,"
        " started_ms = ?10, ended_ms = ?11, deadline_ms = ?12, image_id = ?13",
    [STMT_SANDBOX_GET] = "SELECT " SANDBOX_COLS " FROM sandboxes WHERE id = ?1",
    [STMT_SANDBOXES_LOAD] = "SELECT " SANDBOX_COLS " FROM sandboxes ORDER BY id",

    [STMT_EXEC_PUT] =
        "INSERT INTO execs (" EXEC_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        " ON CONFLICT (id) DO UPDATE SET sandbox_id = ?2, workspace_id = ?3,"
        " state = ?4, exit_code = ?5, command_json = ?6, created_ms = ?7,"
        " started_ms = ?8, ended_ms = ?9",
    [STMT_EXEC_GET] = "SELECT " EXEC_COLS " FROM execs WHERE id = ?1",
    [STMT_EXECS_LOAD] = "SELECT " EXEC_COLS " FROM execs ORDER BY id",
    [STMT_EXECS_LOAD_SANDBOX] = "SELECT " EXEC_COLS " FROM execs WHERE sandbox_id = ?1 ORDER BY id",

    [STMT_WORKER_PUT] = "INSERT INTO workers (" WORKER_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                        " ON CONFLICT (id) DO UPDATE SET name = ?2, epoch = ?3, info_json = ?4,"
                        " registered_ms = ?5, last_seen_ms = ?6",
    [STMT_WORKERS_LOAD] = "SELECT " WORKER_COLS " FROM workers ORDER BY id",

    /* Live: expires_ms is 0 (never) or still ahead of now. */
    [STMT_IDEM_GET] = "SELECT " IDEM_COLS " FROM idempotency WHERE workspace_id = ?1 AND key = ?2"
                      " AND (expires_ms = 0 OR expires_ms > ?3)",
    [STMT_IDEM_PUT] = "INSERT INTO idempotency (" IDEM_COLS ")"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                      " ON CONFLICT (workspace_id, key) DO UPDATE SET route = ?3, body_hash = ?4,"
                      " status = ?5, response = ?6, created_ms = ?7, expires_ms = ?8",
    [STMT_IDEM_EXPIRE] = "DELETE FROM idempotency WHERE expires_ms != 0 AND expires_ms <= ?1",

    [STMT_IMAGE_PUT] =
        "INSERT INTO images (" IMAGE_COLS ")"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        " ON CONFLICT (id) DO UPDATE SET workspace_id = ?2, name = ?3, state = ?4,"
        " spec_json = ?5, manifest = ?6, config_json = ?7, size_bytes = ?8, files = ?9,"
        " layers_json = ?10, error = ?11, created_ms = ?12, ready_ms = ?13",
    [STMT_IMAGE_DELETE] = "DELETE FROM images WHERE id = ?1",
    [STMT_IMAGES_LOAD] = "SELECT " IMAGE_COLS " FROM images ORDER BY id",

    [STMT_CACHE_GET] = "SELECT " CACHE_COLS " FROM build_cache WHERE key = ?1",
    [STMT_CACHE_PUT] = "INSERT INTO build_cache (" CACHE_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                       " ON CONFLICT (key) DO UPDATE SET manifest = ?2, config_json = ?3,"
                       " created_ms = ?4, workspace_id = ?5, used_ms = ?6",
    /* Never back in time: two touches of one entry may commit out of order. */
    [STMT_CACHE_TOUCH] = "UPDATE build_cache SET used_ms = ?2 WHERE key = ?1 AND used_ms < ?2",
    [STMT_CACHE_DELETE] = "DELETE FROM build_cache WHERE key = ?1",
    [STMT_CACHE_LOAD] = "SELECT " CACHE_COLS " FROM build_cache ORDER BY used_ms, key",

    [STMT_OWNER_PUT] = "INSERT OR IGNORE INTO blob_owners (workspace_id, digest, created_ms)"
                       " VALUES (?1, ?2, ?3)",
    [STMT_OWNERS_LOAD] = "SELECT workspace_id, digest, created_ms FROM blob_owners"
                         " ORDER BY workspace_id, digest",
};

static void stmt_resetp(sqlite3_stmt **stmt)
{
	if (*stmt) {
		sqlite3_reset(*stmt);
		sqlite3_clear_bindings(*stmt);
	}
}
#define _cleanup_stmt_ _cleanup_(stmt_resetp)

/* ---- binding: positional, the first error sticks ---- */

struct binder {
	struct store_tx *tx;
	sqlite3_stmt *stmt;
	int idx;
	int r;
};

static struct binder binder_new(struct store_tx *tx, sqlite3_stmt *stmt)
{
	return (struct binder){.tx = tx, .stmt = stmt, .idx = 1, .r = 0};
}

static void bind_check(struct binder *b, int rc, const char *field)
{
	if (rc != SQLITE_OK) {
		char what[96];
		snprintf(what, sizeof(what), "bind %s", field);
		b->r = store_tx_fail(b->tx, rc, what);
	}
}

/* A string of at most len bytes; NULL binds SQL NULL. */
static void bind_text_len(struct binder *b, const char *s, size_t len, const char *field)
{
	if (b->r < 0)
		return;
	int idx = b->idx++;
	int rc = s ? sqlite3_bind_text64(b->stmt, idx, s, len, SQLITE_STATIC, SQLITE_UTF8)
	           : sqlite3_bind_null(b->stmt, idx);
	bind_check(b, rc, field);
}

/* A fixed array field: it must hold its NUL. */
static void bind_array(struct binder *b, const char *s, size_t size, const char *field)
{
	if (b->r < 0)
		return;
	size_t len = strnlen(s, size);
	if (len == size) {
		snprintf(b->tx->errmsg, sizeof(b->tx->errmsg), "%s is not NUL-terminated", field);
		b->r = -EINVAL;
		return;
	}
	bind_text_len(b, s, len, field);
}
#define bind_field(b, s, field) bind_array(b, s, sizeof(s), field)

static void bind_cstr(struct binder *b, const char *s, const char *field)
{
	bind_text_len(b, s, s ? strlen(s) : 0, field);
}

static void bind_i64(struct binder *b, int64_t v, const char *field)
{
	if (b->r < 0)
		return;
	bind_check(b, sqlite3_bind_int64(b->stmt, b->idx++, v), field);
}

/* ---- loading: column by column, the first error sticks ---- */

struct reader {
	struct store_tx *tx;
	sqlite3_stmt *stmt;
	int col;
	int r;
};

static struct reader reader_new(struct store_tx *tx, sqlite3_stmt *stmt)
{
	return (struct reader){.tx = tx, .stmt = stmt, .col = 0, .r = 0};
}

static int reader_fail(struct reader *rd, int r, const char *field, const char *why)
{
	snprintf(rd->tx->errmsg, sizeof(rd->tx->errmsg), "load %s: %s", field, why);
	rd->r = r;
	return r;
}

/* The column's text and length; *ret NULL for SQL NULL. */
static int col_text(struct reader *rd, const char *field, const char **ret, size_t *ret_len)
{
	int col = rd->col++;
	*ret = NULL;
	*ret_len = 0;
	if (rd->r < 0)
		return rd->r;
	if (sqlite3_column_type(rd->stmt, col) == SQLITE_NULL)
		return 0;
	const char *p = (const char *)sqlite3_column_text(rd->stmt, col);
	if (!p)
		return reader_fail(rd, -ENOMEM, field, "out of memory");
	*ret = p;
	*ret_len = (size_t)sqlite3_column_bytes(rd->stmt, col);
	return 0;
}

static void col_array(struct reader *rd, char *dst, size_t size, const char *field)
{
	const char *p;
	size_t len;
	if (col_text(rd, field, &p, &len) < 0)
		return;
	if (len >= size) {
		char why[64];
		snprintf(why, sizeof(why), "%zu bytes do not fit in %zu", len, size - 1);
		reader_fail(rd, -EIO, field, why);
		return;
	}
	if (len)
		memcpy(dst, p, len);
	dst[len] = '\0';
}
#define col_field(rd, dst, field) col_array(rd, dst, sizeof(dst), field)

static void col_dup(struct reader *rd, char **dst, const char *field)
{
	const char *p;
	size_t len;
	if (col_text(rd, field, &p, &len) < 0 || !p)
		return;
	char *s = malloc(len + 1);
	if (!s) {
		reader_fail(rd, -ENOMEM, field, "out of memory");
		return;
	}
	memcpy(s, p, len);
	s[len] = '\0';
	*dst = s;
}

static void col_i64(struct reader *rd, int64_t *dst)
{
	int col = rd->col++;
	if (rd->r == 0)
		*dst = sqlite3_column_int64(rd->stmt, col);
}

static void col_int(struct reader *rd, int *dst)
{
	int col = rd->col++;
	if (rd->r == 0)
		*dst = sqlite3_column_int(rd->stmt, col);
}

/* Step a statement that returns no row. */
static int stmt_done(struct store_tx *tx, sqlite3_stmt *stmt, const char *what)
{
	int rc = sqlite3_step(stmt);
	return rc == SQLITE_DONE ? 0 : store_tx_fail(tx, rc, what);
}

/* Step a statement that returns rows: 1 for a row, 0 at the end, or a negative errno. */
static int stmt_row(struct store_tx *tx, sqlite3_stmt *stmt, const char *what)
{
	int rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : store_tx_fail(tx, rc, what);
}

static int not_found(struct store_tx *tx, const char *what, const char *id)
{
	snprintf(tx->errmsg, sizeof(tx->errmsg), "%s %s: not found", what, id);
	return -ENOENT;
}

/* Delete the row the statement names by key; -ENOENT when there was none. */
static int delete_row(struct store_tx *tx, enum store_stmt which, const char *what, const char *key)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[which];
	struct binder b = binder_new(tx, stmt);
	char label[64];
	snprintf(label, sizeof(label), "delete %s", what);
	bind_cstr(&b, key, label);
	int r = b.r < 0 ? b.r : stmt_done(tx, stmt, label);
	if (r < 0)
		return r;
	return sqlite3_changes(tx->db) == 0 ? not_found(tx, what, key) : 0;
}

/* ---- release ---- */

void store_sandbox_release(struct store_sandbox *s)
{
	if (!s)
		return;
	free(s->spec_json);
	free(s->tags_json);
	s->spec_json = s->tags_json = NULL;
}

void store_exec_release(struct store_exec *e)
{
	if (!e)
		return;
	free(e->command_json);
	e->command_json = NULL;
}

void store_worker_release(struct store_worker *w)
{
	if (!w)
		return;
	free(w->info_json);
	w->info_json = NULL;
}

void store_idem_release(struct store_idem *i)
{
	if (!i)
		return;
	free(i->response);
	i->response = NULL;
}

/* ---- workspaces ---- */

int store_workspace_put(struct store_tx *tx, const struct store_workspace *w)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_WORKSPACE_PUT];
	struct binder b = binder_new(tx, stmt);
	bind_field(&b, w->id, "workspace id");
	bind_field(&b, w->name, "workspace name");
	bind_i64(&b, w->created_ms, "created_ms");
	return b.r < 0 ? b.r : stmt_done(tx, stmt, "put workspace");
}

static int workspace_read(struct store_tx *tx, sqlite3_stmt *stmt, struct store_workspace *w)
{
	struct reader rd = reader_new(tx, stmt);
	*w = (struct store_workspace){0};
	col_field(&rd, w->id, "workspace id");
	col_field(&rd, w->name, "workspace name");
	col_i64(&rd, &w->created_ms);
	return rd.r;
}

int store_workspaces_load(struct store_tx *tx, int (*cb)(const struct store_workspace *w, void *ud),
                          void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_WORKSPACES_LOAD];
	int r;
	while ((r = stmt_row(tx, stmt, "load workspaces")) > 0) {
		struct store_workspace w;
		r = workspace_read(tx, stmt, &w);
		if (r == 0)
			r = cb(&w, ud);
		if (r != 0)
			return r;
	}
	return r;
}

/* ---- tokens ---- */

int store_token_put(struct store_tx *tx, const struct store_token *t)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_TOKEN_PUT];
	struct binder b = binder_new(tx, stmt);
	bind_field(&b, t->id, "token id");
	/* A token of no workspace is stored with NULL, which the foreign key lets through. */
	if (t->workspace_id[0])
		bind_field(&b, t->workspace_id, "token workspace_id");
	else
		bind_text_len(&b, NULL, 0, "token workspace_id");
	bind_field(&b, t->name, "token name");
	bind_field(&b, t->role, "token role");
	bind_field(&b, t->secret_hash, "token secret_hash");
	bind_i64(&b, t->created_ms, "created_ms");
	bind_i64(&b, t->expires_ms, "expires_ms");
	return b.r < 0 ? b.r : stmt_done(tx, stmt, "put token");
}

int store_token_delete(struct store_tx *tx, const char *id)
{
	return delete_row(tx, STMT_TOKEN_DELETE, "token", id);
}

static int token_read(struct store_tx *tx, sqlite3_stmt *stmt, struct store_token *t)
{
	struct reader rd = reader_new(tx, stmt);
	*t = (struct store_token){0};
	col_field(&rd, t->id, "token id");
	col_field(&rd, t->workspace_id, "token workspace_id");
	col_field(&rd, t->name, "token name");
	col_field(&rd, t->role, "token role");
	col_field(&rd, t->secret_hash, "token secret_hash");
	col_i64(&rd, &t->created_ms);
	col_i64(&rd, &t->expires_ms);
	return rd.r;
}

int store_tokens_load(struct store_tx *tx, int (*cb)(const struct store_token *t, void *ud),
                      void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_TOKENS_LOAD];
	int r;
	while ((r = stmt_row(tx, stmt, "load tokens")) > 0) {
		struct store_token t;
		r = token_read(tx, stmt, &t);
		if (r == 0)
			r = cb(&t, ud);
		if (r != 0)
			return r;
	}
	return r;
}

/* ---- sandboxes ---- */

int store_sandbox_put(struct store_tx *tx, const struct store_sandbox *s)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_SANDBOX_PUT];
	struct binder b = binder_new(tx, stmt);
	bind_field(&b, s->id, "sandbox id");
	bind_field(&b, s->workspace_id, "sandbox workspace_id");
	bind_field(&b, s->name, "sandbox name");
	bind_field(&b, s->state, "sandbox state");
	bind_field(&b, s->worker_id, "sandbox worker_id");
	bind_cstr(&b, s->spec_json, "sandbox spec_json");
	bind_cstr(&b, s->tags_json, "sandbox tags_json");
	bind_i64(&b, s->exit_code, "exit_code");
	bind_i64(&b, s->created_ms, "created_ms");
	bind_i64(&b, s->started_ms, "started_ms");
	bind_i64(&b, s->ended_ms, "ended_ms");
	bind_i64(&b, s->deadline_ms, "deadline_ms");
	bind_field(&b, s->image_id, "sandbox image_id");
	return b.r < 0 ? b.r : stmt_done(tx, stmt, "put sandbox");
}

static int sandbox_read(struct store_tx *tx, sqlite3_stmt *stmt, struct store_sandbox *s)
{
	struct reader rd = reader_new(tx, stmt);
	*s = (struct store_sandbox){0};
	col_field(&rd, s->id, "sandbox id");
	col_field(&rd, s->workspace_id, "sandbox workspace_id");
	col_field(&rd, s->name, "sandbox name");
	col_field(&rd, s->state, "sandbox state");
	col_field(&rd, s->worker_id, "sandbox worker_id");
	col_dup(&rd, &s->spec_json, "sandbox spec_json");
	col_dup(&rd, &s->tags_json, "sandbox tags_json");
	col_int(&rd, &s->exit_code);
	col_i64(&rd, &s->created_ms);
	col_i64(&rd, &s->started_ms);
	col_i64(&rd, &s->ended_ms);
	col_i64(&rd, &s->deadline_ms);
	col_field(&rd, s->image_id, "sandbox image_id");
	if (rd.r < 0)
		store_sandbox_release(s);
	return rd.r;
}

int store_sandbox_get(struct store_tx *tx, const char *id, struct store_sandbox *ret)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_SANDBOX_GET];
	struct binder b = binder_new(tx, stmt);
	bind_cstr(&b, id, "sandbox id");
	if (b.r < 0)
		return b.r;
	int r = stmt_row(tx, stmt, "get sandbox");
	if (r <= 0)
		return r < 0 ? r : not_found(tx, "sandbox", id);
	struct store_sandbox s;
	r = sandbox_read(tx, stmt, &s);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

int store_sandboxes_load(struct store_tx *tx, int (*cb)(const struct store_sandbox *s, void *ud),
                         void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_SANDBOXES_LOAD];
	int r;
	while ((r = stmt_row(tx, stmt, "load sandboxes")) > 0) {
		struct store_sandbox s;
		r = sandbox_read(tx, stmt, &s);
		if (r == 0) {
			r = cb(&s, ud);
			store_sandbox_release(&s);
		}
		if (r != 0)
			return r;
	}
	return r;
}

/* ---- execs ---- */

int store_exec_put(struct store_tx *tx, const struct store_exec *e)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_EXEC_PUT];
	struct binder b = binder_new(tx, stmt);
	bind_field(&b, e->id, "exec id");
	bind_field(&b, e->sandbox_id, "exec sandbox_id");
	bind_field(&b, e->workspace_id, "exec workspace_id");
	bind_field(&b, e->state, "exec state");
	bind_i64(&b, e->exit_code, "exit_code");
	bind_cstr(&b, e->command_json, "exec command_json");
	bind_i64(&b, e->created_ms, "created_ms");
	bind_i64(&b, e->started_ms, "started_ms");
	bind_i64(&b, e->ended_ms, "ended_ms");
	return b.r < 0 ? b.r : stmt_done(tx, stmt, "put exec");
}

static int exec_read(struct store_tx *tx, sqlite3_stmt *stmt, struct store_exec *e)
{
	struct reader rd = reader_new(tx, stmt);
	*e = (struct store_exec){0};
	col_field(&rd, e->id, "exec id");
	col_field(&rd, e->sandbox_id, "exec sandbox_id");
	col_field(&rd, e->workspace_id, "exec workspace_id");
	col_field(&rd, e->state, "exec state");
	col_int(&rd, &e->exit_code);
	col_dup(&rd, &e->command_json, "exec command_json");
	col_i64(&rd, &e->created_ms);
	col_i64(&rd, &e->started_ms);
	col_i64(&rd, &e->ended_ms);
	if (rd.r < 0)
		store_exec_release(e);
	return rd.r;
}

int store_exec_get(struct store_tx *tx, const char *id, struct store_exec *ret)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_EXEC_GET];
	struct binder b = binder_new(tx, stmt);
	bind_cstr(&b, id, "exec id");
	if (b.r < 0)
		return b.r;
	int r = stmt_row(tx, stmt, "get exec");
	if (r <= 0)
		return r < 0 ? r : not_found(tx, "exec", id);
	struct store_exec e;
	r = exec_read(tx, stmt, &e);
	if (r < 0)
		return r;
	*ret = e;
	return 0;
}

int store_execs_load(struct store_tx *tx, const char *sandbox_id,
                     int (*cb)(const struct store_exec *e, void *ud), void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *stmt =
	    tx->stmts[sandbox_id ? STMT_EXECS_LOAD_SANDBOX : STMT_EXECS_LOAD];
	if (sandbox_id) {
		struct binder b = binder_new(tx, stmt);
		bind_cstr(&b, sandbox_id, "exec sandbox_id");
		if (b.r < 0)
			return b.r;
	}
	int r;
	while ((r = stmt_row(tx, stmt, "load execs")) > 0) {
		struct store_exec e;
		r = exec_read(tx, stmt, &e);
		if (r == 0) {
			r = cb(&e, ud);
			store_exec_release(&e);
		}
		if (r != 0)
			return r;
	}
	return r;
}

/* ---- workers ---- */

int store_worker_put(struct store_tx *tx, const struct store_worker *w)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_WORKER_PUT];
	struct binder b = binder_new(tx, stmt);
	bind_field(&b, w->id, "worker id");
	bind_field(&b, w->name, "worker name");
	bind_i64(&b, w->epoch, "epoch");
	bind_cstr(&b, w->info_json, "worker info_json");
	bind_i64(&b, w->registered_ms, "registered_ms");
	bind_i64(&b, w->last_seen_ms, "last_seen_ms");
	return b.r < 0 ? b.r : stmt_done(tx, stmt, "put worker");
}

static int worker_read(struct store_tx *tx, sqlite3_stmt *stmt, struct store_worker *w)
{
	struct reader rd = reader_new(tx, stmt);
	*w = (struct store_worker){0};
	col_field(&rd, w->id, "worker id");
	col_field(&rd, w->name, "worker name");
	col_i64(&rd, &w->epoch);
	col_dup(&rd, &w->info_json, "worker info_json");
	col_i64(&rd, &w->registered_ms);
	col_i64(&rd, &w->last_seen_ms);
	if (rd.r < 0)
		store_worker_release(w);
	return rd.r;
}

int store_workers_load(struct store_tx *tx, int (*cb)(const struct store_worker *w, void *ud),
                       void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_WORKERS_LOAD];
	int r;
	while ((r = stmt_row(tx, stmt, "load workers")) > 0) {
		struct store_worker w;
		r = worker_read(tx, stmt, &w);
		if (r == 0) {
			r = cb(&w, ud);
			store_worker_release(&w);
		}
		if (r != 0)
			return r;
	}
	return r;
}

/* ---- idempotency keys ---- */

int store_idem_get(struct store_tx *tx, const char *workspace_id, const char *key, int64_t now_ms,
                   struct store_idem *ret)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_IDEM_GET];
	struct binder b = binder_new(tx, stmt);
	bind_cstr(&b, workspace_id, "idempotency workspace_id");
	bind_cstr(&b, key, "idempotency key");
	bind_i64(&b, now_ms, "now_ms");
	if (b.r < 0)
		return b.r;
	int r = stmt_row(tx, stmt, "get idempotency key");
	if (r <= 0)
		return r < 0 ? r : not_found(tx, "idempotency key", key);

	struct store_idem i = {0};
	struct reader rd = reader_new(tx, stmt);
	col_field(&rd, i.workspace_id, "idempotency workspace_id");
	col_field(&rd, i.key, "idempotency key");
	col_field(&rd, i.route, "idempotency route");
	col_field(&rd, i.body_hash, "idempotency body_hash");
	col_int(&rd, &i.status);
	col_dup(&rd, &i.response, "idempotency response");
	col_i64(&rd, &i.created_ms);
	col_i64(&rd, &i.expires_ms);
	if (rd.r < 0) {
		store_idem_release(&i);
		return rd.r;
	}
	*ret = i;
	return 0;
}

int store_idem_put(struct store_tx *tx, const struct store_idem *i)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_IDEM_PUT];
	struct binder b = binder_new(tx, stmt);
	bind_field(&b, i->workspace_id, "idempotency workspace_id");
	bind_field(&b, i->key, "idempotency key");
	bind_field(&b, i->route, "idempotency route");
	bind_field(&b, i->body_hash, "idempotency body_hash");
	bind_i64(&b, i->status, "status");
	bind_cstr(&b, i->response, "idempotency response");
	bind_i64(&b, i->created_ms, "created_ms");
	bind_i64(&b, i->expires_ms, "expires_ms");
	return b.r < 0 ? b.r : stmt_done(tx, stmt, "put idempotency key");
}

int store_idem_expire(struct store_tx *tx, int64_t now_ms)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_IDEM_EXPIRE];
	struct binder b = binder_new(tx, stmt);
	bind_i64(&b, now_ms, "now_ms");
	int r = b.r < 0 ? b.r : stmt_done(tx, stmt, "expire idempotency keys");
	return r < 0 ? r : sqlite3_changes(tx->db);
}

/* ---- images and the build cache ---- */

void store_image_release(struct store_image *i)
{
	free(i->spec_json);
	free(i->config_json);
	free(i->layers_json);
	free(i->error);
	i->spec_json = i->config_json = i->layers_json = i->error = NULL;
}

void store_cache_release(struct store_cache *c)
{
	free(c->config_json);
	c->config_json = NULL;
}

int store_image_put(struct store_tx *tx, const struct store_image *i)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_IMAGE_PUT];
	struct binder b = binder_new(tx, stmt);
	bind_field(&b, i->id, "image id");
	bind_field(&b, i->workspace_id, "image workspace_id");
	bind_field(&b, i->name, "image name");
	bind_field(&b, i->state, "image state");
	bind_cstr(&b, i->spec_json, "image spec_json");
	bind_field(&b, i->manifest, "image manifest");
	bind_cstr(&b, i->config_json, "image config_json");
	bind_i64(&b, i->size_bytes, "size_bytes");
	bind_i64(&b, i->files, "files");
	bind_cstr(&b, i->layers_json, "image layers_json");
	bind_cstr(&b, i->error, "image error");
	bind_i64(&b, i->created_ms, "created_ms");
	bind_i64(&b, i->ready_ms, "ready_ms");
	return b.r < 0 ? b.r : stmt_done(tx, stmt, "put image");
}

int store_image_delete(struct store_tx *tx, const char *id)
{
	return delete_row(tx, STMT_IMAGE_DELETE, "image", id);
}

static int image_read(struct store_tx *tx, sqlite3_stmt *stmt, struct store_image *i)
{
	struct reader rd = reader_new(tx, stmt);
	*i = (struct store_image){0};
	col_field(&rd, i->id, "image id");
	col_field(&rd, i->workspace_id, "image workspace_id");
	col_field(&rd, i->name, "image name");
	col_field(&rd, i->state, "image state");
	col_dup(&rd, &i->spec_json, "image spec_json");
	col_field(&rd, i->manifest, "image manifest");
	col_dup(&rd, &i->config_json, "image config_json");
	col_i64(&rd, &i->size_bytes);
	col_i64(&rd, &i->files);
	col_dup(&rd, &i->layers_json, "image layers_json");
	col_dup(&rd, &i->error, "image error");
	col_i64(&rd, &i->created_ms);
	col_i64(&rd, &i->ready_ms);
	if (rd.r < 0)
		store_image_release(i);
	return rd.r;
}

int store_images_load(struct store_tx *tx, int (*cb)(const struct store_image *i, void *ud),
                      void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_IMAGES_LOAD];
	int r;
	while ((r = stmt_row(tx, stmt, "load images")) > 0) {
		struct store_image i;
		r = image_read(tx, stmt, &i);
		if (r == 0) {
			r = cb(&i, ud);
			store_image_release(&i);
		}
		if (r != 0)
			return r;
	}
	return r;
}

static int cache_read(struct store_tx *tx, sqlite3_stmt *stmt, struct store_cache *c)
{
	struct reader rd = reader_new(tx, stmt);
	*c = (struct store_cache){0};
	col_field(&rd, c->key, "build cache key");
	col_field(&rd, c->manifest, "build cache manifest");
	col_dup(&rd, &c->config_json, "build cache config_json");
	col_i64(&rd, &c->created_ms);
	col_field(&rd, c->workspace_id, "build cache workspace_id");
	col_i64(&rd, &c->used_ms);
	if (rd.r < 0)
		store_cache_release(c);
	return rd.r;
}

int store_cache_get(struct store_tx *tx, const char *key, struct store_cache *ret)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_CACHE_GET];
	struct binder b = binder_new(tx, stmt);
	bind_cstr(&b, key, "build cache key");
	if (b.r < 0)
		return b.r;
	int r = stmt_row(tx, stmt, "get build cache entry");
	if (r <= 0)
		return r < 0 ? r : not_found(tx, "build cache entry", key);
	struct store_cache c;
	r = cache_read(tx, stmt, &c);
	if (r < 0)
		return r;
	*ret = c;
	return 0;
}

int store_cache_put(struct store_tx *tx, const struct store_cache *c)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_CACHE_PUT];
	struct binder b = binder_new(tx, stmt);
	bind_field(&b, c->key, "build cache key");
	bind_field(&b, c->manifest, "build cache manifest");
	bind_cstr(&b, c->config_json, "build cache config_json");
	bind_i64(&b, c->created_ms, "created_ms");
	bind_field(&b, c->workspace_id, "build cache workspace_id");
	bind_i64(&b, c->used_ms, "used_ms");
	return b.r < 0 ? b.r : stmt_done(tx, stmt, "put build cache entry");
}

int store_cache_touch(struct store_tx *tx, const char *key, int64_t used_ms)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_CACHE_TOUCH];
	struct binder b = binder_new(tx, stmt);
	bind_cstr(&b, key, "build cache key");
	bind_i64(&b, used_ms, "used_ms");
	return b.r < 0 ? b.r : stmt_done(tx, stmt, "touch build cache entry");
}

int store_cache_delete(struct store_tx *tx, const char *key)
{
	return delete_row(tx, STMT_CACHE_DELETE, "build cache entry", key);
}

int store_cache_load(struct store_tx *tx, int (*cb)(const struct store_cache *c, void *ud),
                     void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_CACHE_LOAD];
	int r;
	while ((r = stmt_row(tx, stmt, "load build cache")) > 0) {
		struct store_cache c;
		r = cache_read(tx, stmt, &c);
		if (r == 0) {
			r = cb(&c, ud);
			store_cache_release(&c);
		}
		if (r != 0)
			return r;
	}
	return r;
}

int store_blob_owner_put(struct store_tx *tx, const struct store_blob_owner *o)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_OWNER_PUT];
	struct binder b = binder_new(tx, stmt);
	bind_field(&b, o->workspace_id, "blob owner workspace_id");
	bind_field(&b, o->digest, "blob owner digest");
	bind_i64(&b, o->created_ms, "created_ms");
	return b.r < 0 ? b.r : stmt_done(tx, stmt, "put blob owner");
}

int store_blob_owners_load(struct store_tx *tx,
                           int (*cb)(const struct store_blob_owner *o, void *ud), void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *stmt = tx->stmts[STMT_OWNERS_LOAD];
	int r;
	while ((r = stmt_row(tx, stmt, "load blob owners")) > 0) {
		struct reader rd = reader_new(tx, stmt);
		struct store_blob_owner o = {0};
		col_field(&rd, o.workspace_id, "blob owner workspace_id");
		col_field(&rd, o.digest, "blob owner digest");
		col_i64(&rd, &o.created_ms);
		if ((r = rd.r) < 0 || (r = cb(&o, ud)) != 0)
			return r;
	}
	return r;
}
