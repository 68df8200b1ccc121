/* The state store (src/store): schema and migrations, every row type put and loaded back, the
 * unique constraints, and the store's thread driven from a real libuv loop: done runs only once
 * the work is committed (seen from a second connection), a failing function is rolled back alone,
 * work submitted together is committed together, and closing delivers every callback once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/lib/fsutil.h"
#include "../../src/store/sqlite_internal.h"
#include "../../src/store/store.h"

struct fixture {
	char dir[64];
	char path[128];
	struct store *st;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/skiff-unit-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/skiff.db", f->dir);
	struct sk_error err = {0};
	int r = store_open(f->path, &f->st, &err);
	if (r < 0)
		print_error("store_open: %s\n", err.msg);
	assert_int_equal(r, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	store_close(f->st);
	assert_int_equal(fs_rm_rf_at(AT_FDCWD, f->dir), 0);
	free(f);
	return 0;
}

/* ---- helpers ---- */

static sqlite3 *raw_open(const char *path)
{
	sqlite3 *db = NULL;
	assert_int_equal(
	    sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
	    SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

/* The single integer a query returns, with ?1 bound to arg when given. */
static int64_t raw_int(sqlite3 *db, const char *sql, const char *arg)
{
	sqlite3_stmt *stmt = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
	if (arg)
		sqlite3_bind_text(stmt, 1, arg, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return v;
}

static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = raw_open(path);
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK)
		print_error("%s: %s\n", sql, msg);
	sqlite3_free(msg);
	assert_int_equal(rc, SQLITE_OK);
	sqlite3_close(db);
}

static struct store_workspace ws_make(const char *id, const char *name)
{
	struct store_workspace w = {.created_ms = 1000};
	snprintf(w.id, sizeof(w.id), "%s", id);
	snprintf(w.name, sizeof(w.name), "%s", name);
	return w;
}

static struct store_sandbox sb_make(const char *id, const char *ws, const char *name,
                                    const char *state)
{
	struct store_sandbox s = {.exit_code = -1, .created_ms = 5};
	snprintf(s.id, sizeof(s.id), "%s", id);
	snprintf(s.workspace_id, sizeof(s.workspace_id), "%s", ws);
	snprintf(s.name, sizeof(s.name), "%s", name);
	snprintf(s.state, sizeof(s.state), "%s", state);
	return s;
}

static int fn_ws_put(struct store_tx *tx, void *ud)
{
	return store_workspace_put(tx, ud);
}

static int fn_sb_put(struct store_tx *tx, void *ud)
{
	return store_sandbox_put(tx, ud);
}

static void ws_put(struct store *st, const char *id, const char *name)
{
	struct store_workspace w = ws_make(id, name);
	assert_int_equal(store_run_sync(st, fn_ws_put, &w), 0);
}

static int sb_put(struct store *st, const char *id, const char *ws, const char *name,
                  const char *state)
{
	struct store_sandbox s = sb_make(id, ws, name, state);
	return store_run_sync(st, fn_sb_put, &s);
}

/* ---- open, migrate, reopen ---- */

struct ws_list {
	int n;
	struct store_workspace w[8];
};

static int ws_collect(const struct store_workspace *w, void *ud)
{
	struct ws_list *l = ud;
	assert_true(l->n < 8);
	l->w[l->n++] = *w;
	return 0;
}

static int fn_ws_load(struct store_tx *tx, void *ud)
{
	return store_workspaces_load(tx, ws_collect, ud);
}

static void test_open_migrate_reopen(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db = raw_open(f->path);
	assert_int_equal(raw_int(db, "PRAGMA user_version", NULL), store_schema_version());
	assert_true(store_schema_version() >= 1);
	sqlite3_stmt *stmt = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "wal");
	sqlite3_finalize(stmt);
	sqlite3_close(db);

	ws_put(f->st, "ws-1", "one");
	store_close(f->st);
	f->st = NULL;

	/* Reopening migrates nothing and keeps the rows; twice, to be sure. */
	for (int i = 0; i < 2; i++) {
		struct sk_error err = {0};
		assert_int_equal(store_open(f->path, &f->st, &err), 0);
		struct ws_list l = {0};
		assert_int_equal(store_run_sync(f->st, fn_ws_load, &l), 0);
		assert_int_equal(l.n, 1);
		assert_string_equal(l.w[0].name, "one");
		store_close(f->st);
		f->st = NULL;
	}
	db = raw_open(f->path);
	assert_int_equal(raw_int(db, "PRAGMA user_version", NULL), store_schema_version());
	sqlite3_close(db);

	struct sk_error err = {0};
	assert_int_equal(store_open(f->path, &f->st, &err), 0);
}

static void test_newer_version_refused(void **state)
{
	struct fixture *f = *state;
	char path[192], sql[64];
	snprintf(path, sizeof(path), "%s/newer.db", f->dir);
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", store_schema_version() + 1);
	raw_exec(path, sql);

	struct store *st = NULL;
	struct sk_error err = {0};
	int r = store_open(path, &st, &err);
	assert_true(r < 0);
	assert_int_equal(err.code, r);
	assert_null(st);
	assert_non_null(strstr(err.msg, "newer"));
	assert_non_null(strstr(err.msg, path));

	/* It was left as it was. */
	sqlite3 *db = raw_open(path);
	assert_int_equal(raw_int(db, "PRAGMA user_version", NULL), store_schema_version() + 1);
	sqlite3_close(db);
}

/* ---- rows ---- */

struct errmsg_probe {
	int r;
	char msg[STORE_ERRMSG_BYTES];
	const void *row;
};

static int fn_ws_put_msg(struct store_tx *tx, void *ud)
{
	struct errmsg_probe *p = ud;
	p->r = store_workspace_put(tx, p->row);
	snprintf(p->msg, sizeof(p->msg), "%s", store_tx_errmsg(tx));
	return p->r;
}

static void test_workspaces(void **state)
{
	struct fixture *f = *state;
	ws_put(f->st, "ws-2", "two");
	ws_put(f->st, "ws-1", "one");
	ws_put(f->st, "ws-1", "uno"); /* put replaces */

	struct store_workspace dup = ws_make("ws-3", "two");
	struct errmsg_probe p = {.row = &dup};
	assert_int_equal(store_run_sync(f->st, fn_ws_put_msg, &p), -EEXIST);
	assert_int_equal(p.r, -EEXIST);
	assert_non_null(strstr(p.msg, "UNIQUE"));

	struct ws_list l = {0};
	assert_int_equal(store_run_sync(f->st, fn_ws_load, &l), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.w[0].id, "ws-1");
	assert_string_equal(l.w[0].name, "uno");
	assert_int_equal(l.w[0].created_ms, 1000);
	assert_string_equal(l.w[1].id, "ws-2");

	/* A field without its NUL is refused, not read past. */
	struct store_workspace bad = ws_make("ws-4", "x");
	memset(bad.name, 'a', sizeof(bad.name));
	p = (struct errmsg_probe){.row = &bad};
	assert_int_equal(store_run_sync(f->st, fn_ws_put_msg, &p), -EINVAL);

	/* A value too long for its field is an error, not a truncation. */
	char sql[256];
	snprintf(sql, sizeof(sql), "INSERT INTO workspaces VALUES ('ws-5', '%0*d', 1)",
	         STORE_NAME_BYTES, 7);
	raw_exec(f->path, sql);
	l = (struct ws_list){0};
	assert_int_equal(store_run_sync(f->st, fn_ws_load, &l), -EIO);
	snprintf(sql, sizeof(sql), "UPDATE workspaces SET name = '%0*d' WHERE id = 'ws-5'",
	         STORE_NAME_BYTES - 1, 7);
	raw_exec(f->path, sql);
	l = (struct ws_list){0};
	assert_int_equal(store_run_sync(f->st, fn_ws_load, &l), 0);
	assert_int_equal(l.n, 3);
	assert_int_equal(strlen(l.w[2].name), STORE_NAME_BYTES - 1);
}

struct tk_list {
	int n;
	struct store_token t[8];
};

static int tk_collect(const struct store_token *t, void *ud)
{
	struct tk_list *l = ud;
	assert_true(l->n < 8);
	l->t[l->n++] = *t;
	return 0;
}

static int fn_tk_load(struct store_tx *tx, void *ud)
{
	return store_tokens_load(tx, tk_collect, ud);
}

static int fn_tk_put(struct store_tx *tx, void *ud)
{
	return store_token_put(tx, ud);
}

static int fn_tk_delete(struct store_tx *tx, void *ud)
{
	return store_token_delete(tx, ud);
}

static struct store_token tk_make(const char *id, const char *ws, const char *hash)
{
	struct store_token t = {.created_ms = 7, .expires_ms = 99};
	snprintf(t.id, sizeof(t.id), "%s", id);
	snprintf(t.workspace_id, sizeof(t.workspace_id), "%s", ws);
	snprintf(t.name, sizeof(t.name), "ci");
	snprintf(t.role, sizeof(t.role), "developer");
	snprintf(t.secret_hash, sizeof(t.secret_hash), "%s", hash);
	return t;
}

static void test_tokens(void **state)
{
	struct fixture *f = *state;
	ws_put(f->st, "ws-1", "one");
	struct store_token a = tk_make("tk-a", "ws-1", "aaaa"), b = tk_make("tk-b", "", "bbbb");
	memset(a.secret_hash, 'f', STORE_HASH_BYTES - 1);
	assert_int_equal(store_run_sync(f->st, fn_tk_put, &a), 0);
	assert_int_equal(store_run_sync(f->st, fn_tk_put, &b), 0);

	struct store_token dup = tk_make("tk-c", "ws-1", "bbbb");
	assert_int_equal(store_run_sync(f->st, fn_tk_put, &dup), -EEXIST);
	struct store_token orphan = tk_make("tk-d", "ws-nope", "dddd");
	assert_int_equal(store_run_sync(f->st, fn_tk_put, &orphan), -ENOENT);

	struct tk_list l = {0};
	assert_int_equal(store_run_sync(f->st, fn_tk_load, &l), 0);
	assert_int_equal(l.n, 2);
	assert_memory_equal(&l.t[0], &a, sizeof(a));
	assert_string_equal(l.t[1].workspace_id, "");
	assert_string_equal(l.t[1].role, "developer");
	assert_int_equal(l.t[1].expires_ms, 99);

	assert_int_equal(store_run_sync(f->st, fn_tk_delete, "tk-a"), 0);
	assert_int_equal(store_run_sync(f->st, fn_tk_delete, "tk-a"), -ENOENT);
	l = (struct tk_list){0};
	assert_int_equal(store_run_sync(f->st, fn_tk_load, &l), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.t[0].id, "tk-b");
}

struct sb_get {
	const char *id;
	struct store_sandbox s;
};

static int fn_sb_get(struct store_tx *tx, void *ud)
{
	struct sb_get *g = ud;
	return store_sandbox_get(tx, g->id, &g->s);
}

struct id_list {
	int n;
	char id[8][ID_MAX_BYTES];
	char json[8][64];
};

static int sb_collect(const struct store_sandbox *s, void *ud)
{
	struct id_list *l = ud;
	assert_true(l->n < 8);
	snprintf(l->id[l->n], ID_MAX_BYTES, "%s", s->id);
	snprintf(l->json[l->n], 64, "%s", s->tags_json ? s->tags_json : "(null)");
	l->n++;
	return 0;
}

static int sb_stop_at_two(const struct store_sandbox *s, void *ud)
{
	sb_collect(s, ud);
	return ((struct id_list *)ud)->n == 2 ? 42 : 0;
}

static int fn_sb_load(struct store_tx *tx, void *ud)
{
	return store_sandboxes_load(tx, sb_collect, ud);
}

static int fn_sb_load_stop(struct store_tx *tx, void *ud)
{
	return store_sandboxes_load(tx, sb_stop_at_two, ud);
}

static void test_sandboxes(void **state)
{
	struct fixture *f = *state;
	ws_put(f->st, "ws-1", "one");
	struct store_sandbox s = sb_make("sb-2", "ws-1", "web", "running");
	snprintf(s.worker_id, sizeof(s.worker_id), "wk-1");
	s.spec_json = "{\"image\":\"busybox\"}";
	s.tags_json = "{\"k\":\"v\"}";
	s.exit_code = 3;
	s.started_ms = 6;
	s.ended_ms = 7;
	s.deadline_ms = INT64_MAX;
	snprintf(s.image_id, sizeof(s.image_id), "im-7");
	assert_int_equal(store_run_sync(f->st, fn_sb_put, &s), 0);
	assert_int_equal(sb_put(f->st, "sb-1", "ws-1", "", "pending"), 0);
	assert_int_equal(sb_put(f->st, "sb-3", "ws-1", "", "pending"), 0);
	assert_int_equal(sb_put(f->st, "sb-9", "ws-nope", "", "pending"), -ENOENT);

	struct sb_get g = {.id = "sb-2"};
	assert_int_equal(store_run_sync(f->st, fn_sb_get, &g), 0);
	assert_string_equal(g.s.id, "sb-2");
	assert_string_equal(g.s.workspace_id, "ws-1");
	assert_string_equal(g.s.name, "web");
	assert_string_equal(g.s.state, "running");
	assert_string_equal(g.s.worker_id, "wk-1");
	assert_string_equal(g.s.spec_json, s.spec_json);
	assert_string_equal(g.s.tags_json, s.tags_json);
	assert_int_equal(g.s.exit_code, 3);
	assert_int_equal(g.s.created_ms, 5);
	assert_int_equal(g.s.started_ms, 6);
	assert_int_equal(g.s.ended_ms, 7);
	assert_true(g.s.deadline_ms == INT64_MAX);
	assert_string_equal(g.s.image_id, "im-7");
	store_sandbox_release(&g.s);
	assert_null(g.s.spec_json);
	store_sandbox_release(&g.s); /* twice is harmless */
	store_sandbox_release(NULL);

	g = (struct sb_get){.id = "sb-1"};
	assert_int_equal(store_run_sync(f->st, fn_sb_get, &g), 0);
	assert_null(g.s.spec_json);
	assert_int_equal(g.s.exit_code, -1);
	store_sandbox_release(&g.s);

	/* A missing row leaves ret untouched. */
	g = (struct sb_get){.id = "sb-404"};
	memset(&g.s, 0x5a, sizeof(g.s));
	assert_int_equal(store_run_sync(f->st, fn_sb_get, &g), -ENOENT);
	assert_int_equal(g.s.id[0], 0x5a);

	struct id_list l = {0};
	assert_int_equal(store_run_sync(f->st, fn_sb_load, &l), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.id[0], "sb-1");
	assert_string_equal(l.id[1], "sb-2");
	assert_string_equal(l.json[1], "{\"k\":\"v\"}");
	assert_string_equal(l.id[2], "sb-3");

	l = (struct id_list){0};
	assert_int_equal(store_run_sync(f->st, fn_sb_load_stop, &l), 42);
	assert_int_equal(l.n, 2);
}

static void test_sandbox_names(void **state)
{
	struct fixture *f = *state;
	ws_put(f->st, "ws-1", "one");
	ws_put(f->st, "ws-2", "two");
	assert_int_equal(sb_put(f->st, "sb-1", "ws-1", "web", "running"), 0);
	assert_int_equal(sb_put(f->st, "sb-2", "ws-1", "web", "running"), -EEXIST);
	assert_int_equal(sb_put(f->st, "sb-2", "ws-1", "web", "pending"), -EEXIST);
	/* Another workspace, and sandboxes without a name, are not concerned. */
	assert_int_equal(sb_put(f->st, "sb-3", "ws-2", "web", "running"), 0);
	assert_int_equal(sb_put(f->st, "sb-4", "ws-1", "", "running"), 0);
	assert_int_equal(sb_put(f->st, "sb-5", "ws-1", "", "running"), 0);
	/* An ended sandbox gives its name up; a refused put changed nothing. */
	assert_int_equal(sb_put(f->st, "sb-2", "ws-1", "web", "exited"), 0);
	assert_int_equal(sb_put(f->st, "sb-1", "ws-1", "web", "exited"), 0);
	assert_int_equal(sb_put(f->st, "sb-6", "ws-1", "web", "pending"), 0);
	assert_int_equal(sb_put(f->st, "sb-7", "ws-1", "web", "running"), -EEXIST);
	/* Updating the live one in place is no conflict with itself. */
	assert_int_equal(sb_put(f->st, "sb-6", "ws-1", "web", "running"), 0);
	struct sb_get g = {.id = "sb-1"};
	assert_int_equal(store_run_sync(f->st, fn_sb_get, &g), 0);
	assert_string_equal(g.s.state, "exited");
	store_sandbox_release(&g.s);
}

struct ex_list {
	int n;
	char id[8][ID_MAX_BYTES];
};

static int ex_collect(const struct store_exec *e, void *ud)
{
	struct ex_list *l = ud;
	assert_true(l->n < 8);
	snprintf(l->id[l->n++], ID_MAX_BYTES, "%s", e->id);
	return 0;
}

struct ex_load {
	const char *sandbox_id;
	struct ex_list l;
};

static int fn_ex_load(struct store_tx *tx, void *ud)
{
	struct ex_load *x = ud;
	return store_execs_load(tx, x->sandbox_id, ex_collect, &x->l);
}

static int fn_ex_put(struct store_tx *tx, void *ud)
{
	return store_exec_put(tx, ud);
}

struct ex_get {
	const char *id;
	struct store_exec e;
};

static int fn_ex_get(struct store_tx *tx, void *ud)
{
	struct ex_get *g = ud;
	return store_exec_get(tx, g->id, &g->e);
}

static void ex_put(struct store *st, const char *id, const char *sb, int expect)
{
	struct store_exec e = {.exit_code = -1, .created_ms = 1, .started_ms = 2, .ended_ms = 3};
	snprintf(e.id, sizeof(e.id), "%s", id);
	snprintf(e.sandbox_id, sizeof(e.sandbox_id), "%s", sb);
	snprintf(e.workspace_id, sizeof(e.workspace_id), "ws-1");
	snprintf(e.state, sizeof(e.state), "running");
	e.command_json = "[\"sh\",\"-c\",\"true\"]";
	assert_int_equal(store_run_sync(st, fn_ex_put, &e), expect);
}

static void test_execs(void **state)
{
	struct fixture *f = *state;
	ws_put(f->st, "ws-1", "one");
	assert_int_equal(sb_put(f->st, "sb-1", "ws-1", "", "running"), 0);
	assert_int_equal(sb_put(f->st, "sb-2", "ws-1", "", "running"), 0);
	ex_put(f->st, "ex-3", "sb-1", 0);
	ex_put(f->st, "ex-1", "sb-2", 0);
	ex_put(f->st, "ex-2", "sb-1", 0);
	ex_put(f->st, "ex-4", "sb-nope", -ENOENT);
	/* A sandbox's row can be replaced while execs refer to it. */
	assert_int_equal(sb_put(f->st, "sb-1", "ws-1", "", "exited"), 0);

	struct ex_get g = {.id = "ex-2"};
	assert_int_equal(store_run_sync(f->st, fn_ex_get, &g), 0);
	assert_string_equal(g.e.sandbox_id, "sb-1");
	assert_string_equal(g.e.workspace_id, "ws-1");
	assert_string_equal(g.e.state, "running");
	assert_string_equal(g.e.command_json, "[\"sh\",\"-c\",\"true\"]");
	assert_int_equal(g.e.exit_code, -1);
	assert_int_equal(g.e.created_ms + g.e.started_ms + g.e.ended_ms, 6);
	store_exec_release(&g.e);
	g = (struct ex_get){.id = "ex-9"};
	assert_int_equal(store_run_sync(f->st, fn_ex_get, &g), -ENOENT);

	struct ex_load x = {.sandbox_id = "sb-1"};
	assert_int_equal(store_run_sync(f->st, fn_ex_load, &x), 0);
	assert_int_equal(x.l.n, 2);
	assert_string_equal(x.l.id[0], "ex-2");
	assert_string_equal(x.l.id[1], "ex-3");
	x = (struct ex_load){.sandbox_id = NULL};
	assert_int_equal(store_run_sync(f->st, fn_ex_load, &x), 0);
	assert_int_equal(x.l.n, 3);
	assert_string_equal(x.l.id[0], "ex-1");
}

struct wk_list {
	int n;
	struct store_worker w[4];
};

static int wk_collect(const struct store_worker *w, void *ud)
{
	struct wk_list *l = ud;
	assert_true(l->n < 4);
	l->w[l->n] = *w;
	l->w[l->n].info_json = w->info_json ? strdup(w->info_json) : NULL;
	l->n++;
	return 0;
}

static int fn_wk_load(struct store_tx *tx, void *ud)
{
	return store_workers_load(tx, wk_collect, ud);
}

static int fn_wk_put(struct store_tx *tx, void *ud)
{
	return store_worker_put(tx, ud);
}

struct owner_list {
	int n;
	struct store_blob_owner o[4];
};

static int owner_collect(const struct store_blob_owner *o, void *ud)
{
	struct owner_list *l = ud;
	assert_true(l->n < 4);
	l->o[l->n++] = *o;
	return 0;
}

static int fn_owner_load(struct store_tx *tx, void *ud)
{
	return store_blob_owners_load(tx, owner_collect, ud);
}

static int fn_owner_put(struct store_tx *tx, void *ud)
{
	return store_blob_owner_put(tx, ud);
}

/* Who uploaded a blob: a pair once, kept as first stored; loaded by workspace, digest. */
static void test_blob_owners(void **state)
{
	struct fixture *f = *state;
	char a[STORE_HASH_BYTES], b[STORE_HASH_BYTES];
	memset(a, 'a', 64), a[64] = '\0';
	memset(b, 'b', 64), b[64] = '\0';
	struct store_blob_owner o = {.workspace_id = "ws-2", .created_ms = 5};
	memcpy(o.digest, b, sizeof(b));
	assert_int_equal(store_run_sync(f->st, fn_owner_put, &o), 0);
	o.created_ms = 6; /* again: ignored */
	assert_int_equal(store_run_sync(f->st, fn_owner_put, &o), 0);
	memcpy(o.digest, a, sizeof(a));
	assert_int_equal(store_run_sync(f->st, fn_owner_put, &o), 0);
	struct store_blob_owner p = {.workspace_id = "ws-1", .created_ms = 7};
	memcpy(p.digest, b, sizeof(b));
	assert_int_equal(store_run_sync(f->st, fn_owner_put, &p), 0);
	struct owner_list l = {0};
	assert_int_equal(store_run_sync(f->st, fn_owner_load, &l), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.o[0].workspace_id, "ws-1");
	assert_string_equal(l.o[1].digest, a);
	assert_string_equal(l.o[2].workspace_id, "ws-2");
	assert_string_equal(l.o[2].digest, b);
	assert_int_equal(l.o[2].created_ms, 5);
}

static void test_workers(void **state)
{
	struct fixture *f = *state;
	struct store_worker w = {
	    .id = "wk-1", .name = "host-a", .epoch = 1, .registered_ms = 10, .last_seen_ms = 11};
	w.info_json = "{\"cpus\":16}";
	assert_int_equal(store_run_sync(f->st, fn_wk_put, &w), 0);
	w.epoch = 2;
	w.last_seen_ms = 20;
	assert_int_equal(store_run_sync(f->st, fn_wk_put, &w), 0);
	struct store_worker w2 = {.id = "wk-0", .name = "host-b"};
	assert_int_equal(store_run_sync(f->st, fn_wk_put, &w2), 0);

	struct wk_list l = {0};
	assert_int_equal(store_run_sync(f->st, fn_wk_load, &l), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.w[0].id, "wk-0");
	assert_null(l.w[0].info_json);
	assert_string_equal(l.w[1].name, "host-a");
	assert_int_equal(l.w[1].epoch, 2);
	assert_int_equal(l.w[1].registered_ms, 10);
	assert_int_equal(l.w[1].last_seen_ms, 20);
	assert_string_equal(l.w[1].info_json, "{\"cpus\":16}");
	for (int i = 0; i < l.n; i++)
		store_worker_release(&l.w[i]);
}

struct idem_op {
	const char *ws, *key;
	int64_t now_ms;
	struct store_idem i;
};

static int fn_idem_get(struct store_tx *tx, void *ud)
{
	struct idem_op *o = ud;
	return store_idem_get(tx, o->ws, o->key, o->now_ms, &o->i);
}

static int fn_idem_put(struct store_tx *tx, void *ud)
{
	return store_idem_put(tx, ud);
}

static int fn_idem_expire(struct store_tx *tx, void *ud)
{
	return store_idem_expire(tx, *(int64_t *)ud);
}

static void idem_put(struct store *st, const char *ws, const char *key, int64_t expires_ms,
                     const char *response)
{
	struct store_idem i = {.status = 201, .created_ms = 100, .expires_ms = expires_ms};
	snprintf(i.workspace_id, sizeof(i.workspace_id), "%s", ws);
	snprintf(i.key, sizeof(i.key), "%s", key);
	snprintf(i.route, sizeof(i.route), "POST /v1/sandboxes");
	snprintf(i.body_hash, sizeof(i.body_hash), "%064d", 0);
	i.response = (char *)response;
	assert_int_equal(store_run_sync(st, fn_idem_put, &i), 0);
}

static void test_idempotency(void **state)
{
	struct fixture *f = *state;
	char longkey[STORE_IDEM_KEY_BYTES];
	memset(longkey, 'k', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 1] = '\0';
	idem_put(f->st, "ws-1", "a", 1000, "{\"id\":\"sb-1\"}");
	idem_put(f->st, "ws-2", "a", 2000, NULL); /* same key, other workspace */
	idem_put(f->st, "ws-1", longkey, 0, "");  /* never expires */

	struct idem_op o = {.ws = "ws-1", .key = "a", .now_ms = 999};
	assert_int_equal(store_run_sync(f->st, fn_idem_get, &o), 0);
	assert_string_equal(o.i.workspace_id, "ws-1");
	assert_string_equal(o.i.route, "POST /v1/sandboxes");
	assert_int_equal(strlen(o.i.body_hash), 64);
	assert_int_equal(o.i.status, 201);
	assert_string_equal(o.i.response, "{\"id\":\"sb-1\"}");
	assert_int_equal(o.i.created_ms, 100);
	assert_int_equal(o.i.expires_ms, 1000);
	store_idem_release(&o.i);

	o = (struct idem_op){.ws = "ws-1", .key = "a", .now_ms = 1000};
	assert_int_equal(store_run_sync(f->st, fn_idem_get, &o), -ENOENT);
	o = (struct idem_op){.ws = "ws-2", .key = "a", .now_ms = 1500};
	assert_int_equal(store_run_sync(f->st, fn_idem_get, &o), 0);
	assert_null(o.i.response);
	o = (struct idem_op){.ws = "ws-1", .key = longkey, .now_ms = INT64_MAX};
	assert_int_equal(store_run_sync(f->st, fn_idem_get, &o), 0);
	assert_string_equal(o.i.key, longkey);
	assert_string_equal(o.i.response, "");
	store_idem_release(&o.i);
	o = (struct idem_op){.ws = "ws-1", .key = "b", .now_ms = 0};
	assert_int_equal(store_run_sync(f->st, fn_idem_get, &o), -ENOENT);

	/* An expired key can be put again before it is dropped. */
	idem_put(f->st, "ws-1", "a", 3000, "again");
	o = (struct idem_op){.ws = "ws-1", .key = "a", .now_ms = 1500};
	assert_int_equal(store_run_sync(f->st, fn_idem_get, &o), 0);
	assert_string_equal(o.i.response, "again");
	store_idem_release(&o.i);

	int64_t now = 2500;
	assert_int_equal(store_run_sync(f->st, fn_idem_expire, &now), 1);
	assert_int_equal(store_run_sync(f->st, fn_idem_expire, &now), 0);
	now = INT64_MAX;
	assert_int_equal(store_run_sync(f->st, fn_idem_expire, &now), 1);
	o = (struct idem_op){.ws = "ws-1", .key = longkey, .now_ms = 0};
	assert_int_equal(store_run_sync(f->st, fn_idem_get, &o), 0);
	store_idem_release(&o.i);
}

/* ---- the store's thread, from a loop ---- */

struct job {
	struct fixture *f;
	sqlite3 *reader; /* a second connection: what it sees is committed */
	struct store_workspace w;
	int fail;  /* fn puts its row, then returns this when nonzero */
	int block; /* fn waits for the loop to let it go */
	sem_t *started, *go;
	int done_calls;
	int done_rc;
	int visible; /* the row as the second connection saw it from done */
	uv_loop_t *loop;
	struct job *chain; /* submitted from done */
	int close_in_done; /* store_close from done */
};

static int job_fn(struct store_tx *tx, void *ud)
{
	struct job *j = ud;
	if (j->block) {
		sem_post(j->started);
		sem_wait(j->go);
	}
	int r = store_workspace_put(tx, &j->w);
	if (r < 0)
		return r;
	return j->fail ? j->fail : 7;
}

static void job_done(void *ud, int rc)
{
	struct job *j = ud;
	j->done_calls++;
	j->done_rc = rc;
	if (j->reader)
		j->visible = (int)raw_int(j->reader,
		                          "SELECT count(*) FROM workspaces WHERE id = ?1", j->w.id);
	if (j->chain)
		assert_int_equal(store_submit(j->f->st, j->loop, job_fn, job_done, j->chain), 0);
	if (j->close_in_done) {
		store_close(j->f->st);
		j->f->st = NULL;
	}
}

static void blocker_name(struct job *blocker)
{
	snprintf(blocker->w.id, sizeof(blocker->w.id), "ws-blocker");
	snprintf(blocker->w.name, sizeof(blocker->w.name), "blocker");
}

static struct job *jobs_new(struct fixture *f, uv_loop_t *loop, sqlite3 *reader, int n)
{
	struct job *jobs = calloc(n, sizeof(*jobs));
	assert_non_null(jobs);
	for (int i = 0; i < n; i++) {
		char id[32], name[32];
		snprintf(id, sizeof(id), "ws-%04d", i);
		snprintf(name, sizeof(name), "name-%d", i);
		jobs[i].f = f;
		jobs[i].loop = loop;
		jobs[i].reader = reader;
		jobs[i].w = ws_make(id, name);
		jobs[i].visible = -1;
	}
	return jobs;
}

static void loop_finish(uv_loop_t *loop)
{
	assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(loop), 0);
}

static void test_submit_done_after_commit(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	sqlite3 *reader = raw_open(f->path);
	enum { N = 200 };
	struct job *jobs = jobs_new(f, &loop, reader, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(store_submit(f->st, &loop, job_fn, job_done, &jobs[i]), 0);
	/* The loop runs until every done has: the store keeps it alive while work is out. */
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(jobs[i].done_calls, 1);
		assert_int_equal(jobs[i].done_rc, 7);
		assert_int_equal(jobs[i].visible, 1);
	}
	assert_int_equal(raw_int(reader, "SELECT count(*) FROM workspaces", NULL), N);

	/* A done that submits more keeps the loop running until that is done too. */
	struct job *more = jobs_new(f, &loop, reader, 3);
	for (int i = 0; i < 3; i++) {
		snprintf(more[i].w.id, sizeof(more[i].w.id), "ws-more-%d", i);
		snprintf(more[i].w.name, sizeof(more[i].w.name), "more-%d", i);
	}
	more[0].chain = &more[1];
	more[1].chain = &more[2];
	assert_int_equal(store_submit(f->st, &loop, job_fn, job_done, &more[0]), 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(more[i].done_calls, 1);
		assert_int_equal(more[i].visible, 1);
	}

	store_close(f->st);
	f->st = NULL;
	loop_finish(&loop);
	sqlite3_close(reader);
	free(jobs);
	free(more);
}

/* Submit a job that blocks inside its transaction, wait until it does, then submit the others:
 * they all queue behind it and make exactly one batch. */
static void batch_submit(struct fixture *f, uv_loop_t *loop, struct job *blocker, struct job *jobs,
                         int n)
{
	sem_t started, go;
	sem_init(&started, 0, 0);
	sem_init(&go, 0, 0);
	blocker->block = 1;
	blocker->started = &started;
	blocker->go = &go;
	assert_int_equal(store_submit(f->st, loop, job_fn, job_done, blocker), 0);
	sem_wait(&started);
	for (int i = 0; i < n; i++)
		assert_int_equal(store_submit(f->st, loop, job_fn, job_done, &jobs[i]), 0);
	sem_post(&go);
	assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
	sem_destroy(&started);
	sem_destroy(&go);
}

static void test_submit_failure_isolated(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	sqlite3 *reader = raw_open(f->path);
	struct job *blocker = jobs_new(f, &loop, reader, 1);
	blocker_name(blocker);
	struct job *jobs = jobs_new(f, &loop, reader, 5);
	jobs[1].fail = -EINVAL;                                     /* wrote its row, then failed */
	snprintf(jobs[3].w.name, sizeof(jobs[3].w.name), "name-0"); /* taken by jobs[0] */

	uint64_t before = store_commit_count(f->st);
	batch_submit(f, &loop, blocker, jobs, 5);
	assert_int_equal(store_commit_count(f->st) - before, 2);

	int expect_rc[5] = {7, -EINVAL, 7, -EEXIST, 7};
	for (int i = 0; i < 5; i++) {
		assert_int_equal(jobs[i].done_calls, 1);
		assert_int_equal(jobs[i].done_rc, expect_rc[i]);
		assert_int_equal(jobs[i].visible, expect_rc[i] == 7);
	}
	store_close(f->st);
	f->st = NULL;
	loop_finish(&loop);
	sqlite3_close(reader);
	free(blocker);
	free(jobs);
}

static void test_group_commit(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	enum { N = 100 };
	struct job *blocker = jobs_new(f, &loop, NULL, 1);
	blocker_name(blocker);
	struct job *jobs = jobs_new(f, &loop, NULL, N);

	uint64_t before = store_commit_count(f->st);
	batch_submit(f, &loop, blocker, jobs, N);
	/* One transaction for the blocker, one for all that queued behind it. */
	assert_int_equal(store_commit_count(f->st) - before, 2);
	for (int i = 0; i < N; i++) {
		assert_int_equal(jobs[i].done_calls, 1);
		assert_int_equal(jobs[i].done_rc, 7);
	}
	/* run_sync commits a transaction of its own. */
	before = store_commit_count(f->st);
	ws_put(f->st, "ws-sync", "sync");
	assert_int_equal(store_commit_count(f->st) - before, 1);

	store_close(f->st);
	f->st = NULL;
	loop_finish(&loop);
	free(blocker);
	free(jobs);
}

/* A constraint deferred to COMMIT makes the commit fail: every done of the batch hears it. */
static int job_fn_deferred_orphan(struct store_tx *tx, void *ud)
{
	(void)ud;
	if (sqlite3_exec(tx->db, "PRAGMA defer_foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK)
		return -EIO;
	struct store_sandbox s = sb_make("sb-orphan", "ws-nope", "", "pending");
	return store_sandbox_put(tx, &s);
}

static void test_commit_failure(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	sqlite3 *reader = raw_open(f->path);
	struct job *blocker = jobs_new(f, &loop, reader, 1);
	blocker_name(blocker);
	struct job *jobs = jobs_new(f, &loop, reader, 3);

	sem_t started, go;
	sem_init(&started, 0, 0);
	sem_init(&go, 0, 0);
	blocker->block = 1;
	blocker->started = &started;
	blocker->go = &go;
	struct job orphan = {.visible = -1};
	assert_int_equal(store_submit(f->st, &loop, job_fn, job_done, blocker), 0);
	sem_wait(&started);
	assert_int_equal(store_submit(f->st, &loop, job_fn, job_done, &jobs[0]), 0);
	assert_int_equal(store_submit(f->st, &loop, job_fn_deferred_orphan, job_done, &orphan), 0);
	assert_int_equal(store_submit(f->st, &loop, job_fn, job_done, &jobs[1]), 0);
	sem_post(&go);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);

	assert_int_equal(blocker->done_rc, 7);
	assert_int_equal(blocker->visible, 1);
	assert_int_equal(orphan.done_calls, 1);
	assert_true(orphan.done_rc < 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(jobs[i].done_calls, 1);
		assert_true(jobs[i].done_rc < 0);
		assert_int_equal(jobs[i].visible, 0);
	}
	/* The store goes on after a failed commit. */
	assert_int_equal(store_submit(f->st, &loop, job_fn, job_done, &jobs[2]), 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(jobs[2].done_rc, 7);
	assert_int_equal(jobs[2].visible, 1);

	sem_destroy(&started);
	sem_destroy(&go);
	store_close(f->st);
	f->st = NULL;
	loop_finish(&loop);
	sqlite3_close(reader);
	free(blocker);
	free(jobs);
}

static void test_close_delivers_pending(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	enum { N = 50 };
	struct job *jobs = jobs_new(f, &loop, NULL, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(store_submit(f->st, &loop, job_fn, job_done, &jobs[i]), 0);
	/* Closed before the loop ran at all: the work is committed, the dones come with the next
	 * run of the loop. */
	store_close(f->st);
	f->st = NULL;
	for (int i = 0; i < N; i++)
		assert_int_equal(jobs[i].done_calls, 0);
	loop_finish(&loop);
	for (int i = 0; i < N; i++) {
		assert_int_equal(jobs[i].done_calls, 1);
		assert_int_equal(jobs[i].done_rc, 7);
	}
	sqlite3 *db = raw_open(f->path);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM workspaces", NULL), N);
	sqlite3_close(db);
	free(jobs);
}

static void test_close_from_done(void **state)
{
	struct fixture *f = *state;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	enum { N = 30 };
	struct job *jobs = jobs_new(f, &loop, NULL, N);
	jobs[0].close_in_done = 1;
	for (int i = 0; i < N; i++)
		assert_int_equal(store_submit(f->st, &loop, job_fn, job_done, &jobs[i]), 0);
	loop_finish(&loop);
	assert_null(f->st);
	for (int i = 0; i < N; i++) {
		assert_int_equal(jobs[i].done_calls, 1);
		assert_int_equal(jobs[i].done_rc, 7);
	}
	free(jobs);
}

/* ---- images and the build cache ---- */

static int fn_img_put(struct store_tx *tx, void *ud)
{
	return store_image_put(tx, ud);
}

static int fn_img_delete(struct store_tx *tx, void *ud)
{
	return store_image_delete(tx, ud);
}

struct img_list {
	int n;
	struct store_image i[4];
};

static int img_collect(const struct store_image *i, void *ud)
{
	struct img_list *l = ud;
	assert_true(l->n < 4);
	struct store_image *c = &l->i[l->n++];
	*c = *i;
	c->spec_json = i->spec_json ? strdup(i->spec_json) : NULL;
	c->config_json = i->config_json ? strdup(i->config_json) : NULL;
	c->layers_json = i->layers_json ? strdup(i->layers_json) : NULL;
	c->error = i->error ? strdup(i->error) : NULL;
	return 0;
}

static int fn_img_load(struct store_tx *tx, void *ud)
{
	return store_images_load(tx, img_collect, ud);
}

static struct store_image img_make(const char *id, const char *ws, const char *name)
{
	struct store_image i = {.created_ms = 3};
	snprintf(i.id, sizeof(i.id), "%s", id);
	snprintf(i.workspace_id, sizeof(i.workspace_id), "%s", ws);
	snprintf(i.name, sizeof(i.name), "%s", name);
	snprintf(i.state, sizeof(i.state), "building");
	return i;
}

static void test_images(void **state)
{
	struct fixture *f = *state;
	ws_put(f->st, "ws-1", "one");
	ws_put(f->st, "ws-2", "two");
	struct store_image i = img_make("im-1", "ws-1", "app");
	i.spec_json = "{\"base\":\"busybox\"}";
	snprintf(i.state, sizeof(i.state), "ready");
	memset(i.manifest, 'a', 64);
	i.config_json = "{\"env\":{}}";
	i.size_bytes = 1LL << 40;
	i.files = 12;
	i.layers_json = "[]";
	i.error = "none";
	i.ready_ms = 9;
	assert_int_equal(store_run_sync(f->st, fn_img_put, &i), 0);

	/* Names: unique in a workspace, free in another, "" never taken. */
	struct store_image dup = img_make("im-2", "ws-1", "app");
	assert_int_equal(store_run_sync(f->st, fn_img_put, &dup), -EEXIST);
	dup = img_make("im-2", "ws-2", "app");
	assert_int_equal(store_run_sync(f->st, fn_img_put, &dup), 0);
	struct store_image anon = img_make("im-3", "ws-1", "");
	assert_int_equal(store_run_sync(f->st, fn_img_put, &anon), 0);
	anon = img_make("im-4", "ws-1", "");
	assert_int_equal(store_run_sync(f->st, fn_img_put, &anon), 0);
	anon = img_make("im-5", "ws-nope", "");
	assert_int_equal(store_run_sync(f->st, fn_img_put, &anon), -ENOENT);

	struct img_list l = {0};
	assert_int_equal(store_run_sync(f->st, fn_img_load, &l), 0);
	assert_int_equal(l.n, 4);
	assert_string_equal(l.i[0].id, "im-1");
	assert_string_equal(l.i[0].name, "app");
	assert_string_equal(l.i[0].state, "ready");
	assert_string_equal(l.i[0].spec_json, i.spec_json);
	assert_string_equal(l.i[0].manifest, i.manifest);
	assert_string_equal(l.i[0].config_json, i.config_json);
	assert_true(l.i[0].size_bytes == 1LL << 40);
	assert_int_equal(l.i[0].files, 12);
	assert_string_equal(l.i[0].layers_json, "[]");
	assert_string_equal(l.i[0].error, "none");
	assert_int_equal(l.i[0].created_ms, 3);
	assert_int_equal(l.i[0].ready_ms, 9);
	assert_null(l.i[2].error);
	for (int k = 0; k < l.n; k++)
		store_image_release(&l.i[k]);

	/* Deleting frees the name. */
	assert_int_equal(store_run_sync(f->st, fn_img_delete, "im-1"), 0);
	assert_int_equal(store_run_sync(f->st, fn_img_delete, "im-1"), -ENOENT);
	dup = img_make("im-6", "ws-1", "app");
	assert_int_equal(store_run_sync(f->st, fn_img_put, &dup), 0);
}

struct cache_op {
	const char *key;
	struct store_cache c;
	int n;
};

static int fn_cache_put(struct store_tx *tx, void *ud)
{
	return store_cache_put(tx, ud);
}

static int fn_cache_get(struct store_tx *tx, void *ud)
{
	struct cache_op *o = ud;
	return store_cache_get(tx, o->key, &o->c);
}

static int cache_count(const struct store_cache *c, void *ud)
{
	(void)c;
	((struct cache_op *)ud)->n++;
	return 0;
}

static int fn_cache_load(struct store_tx *tx, void *ud)
{
	return store_cache_load(tx, cache_count, ud);
}

struct cache_list {
	int n;
	struct store_cache c[4];
};

static int cache_collect(const struct store_cache *c, void *ud)
{
	struct cache_list *l = ud;
	assert_true(l->n < 4);
	l->c[l->n] = *c;
	l->c[l->n++].config_json = NULL; /* freed when cb returns */
	return 0;
}

static int fn_cache_collect(struct store_tx *tx, void *ud)
{
	return store_cache_load(tx, cache_collect, ud);
}

struct cache_touch {
	const char *key;
	int64_t used_ms;
};

static int fn_cache_touch(struct store_tx *tx, void *ud)
{
	struct cache_touch *t = ud;
	return store_cache_touch(tx, t->key, t->used_ms);
}

static int fn_cache_delete(struct store_tx *tx, void *ud)
{
	return store_cache_delete(tx, ud);
}

static void test_build_cache(void **state)
{
	struct fixture *f = *state;
	struct store_cache c = {.created_ms = 4,
	                        .used_ms = 5,
	                        .workspace_id = "ws-1",
	                        .config_json = "{\"workdir\":\"/app\"}"};
	memset(c.key, 'b', 64);
	memset(c.manifest, 'c', 64);
	assert_int_equal(store_run_sync(f->st, fn_cache_put, &c), 0);
	memset(c.manifest, 'd', 64);
	c.config_json = NULL;
	assert_int_equal(store_run_sync(f->st, fn_cache_put, &c), 0); /* replaces */

	struct cache_op o = {.key = c.key};
	assert_int_equal(store_run_sync(f->st, fn_cache_get, &o), 0);
	assert_string_equal(o.c.manifest, c.manifest);
	assert_null(o.c.config_json);
	assert_int_equal(o.c.created_ms, 4);
	assert_string_equal(o.c.workspace_id, "ws-1");
	assert_int_equal(o.c.used_ms, 5);
	store_cache_release(&o.c);

	/* A touch moves used_ms forward only (touches may commit out of order); of a key that is
	 * not there, it is no error and makes no row. */
	struct cache_touch t = {.key = c.key, .used_ms = 90};
	assert_int_equal(store_run_sync(f->st, fn_cache_touch, &t), 0);
	t.used_ms = 50;
	assert_int_equal(store_run_sync(f->st, fn_cache_touch, &t), 0);
	o = (struct cache_op){.key = c.key};
	assert_int_equal(store_run_sync(f->st, fn_cache_get, &o), 0);
	assert_int_equal(o.c.used_ms, 90);
	assert_int_equal(o.c.created_ms, 4);
	store_cache_release(&o.c);
	t = (struct cache_touch){.key = "nope", .used_ms = 1};
	assert_int_equal(store_run_sync(f->st, fn_cache_touch, &t), 0);

	o = (struct cache_op){.key = "nope"};
	assert_int_equal(store_run_sync(f->st, fn_cache_get, &o), -ENOENT);
	assert_int_equal(store_run_sync(f->st, fn_cache_load, &o), 0);
	assert_int_equal(o.n, 1);

	/* A field without its NUL is refused. */
	struct store_cache bad = c;
	memset(bad.workspace_id, 'w', sizeof(bad.workspace_id));
	assert_int_equal(store_run_sync(f->st, fn_cache_put, &bad), -EINVAL);

	assert_int_equal(store_run_sync(f->st, fn_cache_delete, c.key), 0);
	assert_int_equal(store_run_sync(f->st, fn_cache_delete, c.key), -ENOENT);
	o = (struct cache_op){.key = c.key};
	assert_int_equal(store_run_sync(f->st, fn_cache_get, &o), -ENOENT);
	o.n = 0;
	assert_int_equal(store_run_sync(f->st, fn_cache_load, &o), 0);
	assert_int_equal(o.n, 0);
}

/* A database of schema 3 (the build cache without workspace and last use) is migrated: its rows
 * are kept, of no known workspace, last used when they were made. */
static void test_build_cache_migration(void **state)
{
	struct fixture *f = *state;
	char path[192];
	snprintf(path, sizeof(path), "%s/v3.db", f->dir);
	/* A database of today, its build cache put back as migration 2 made it (migration 4
	 * touches no other table). */
	struct store *st = NULL;
	struct sk_error err = {0};
	assert_int_equal(store_open(path, &st, &err), 0);
	store_close(st);
	st = NULL;
	raw_exec(path, "DROP TABLE build_cache;"
	               "CREATE TABLE build_cache ("
	               "  key TEXT PRIMARY KEY NOT NULL,"
	               "  manifest TEXT NOT NULL,"
	               "  config_json TEXT,"
	               "  created_ms INTEGER NOT NULL) WITHOUT ROWID;"
	               "INSERT INTO build_cache VALUES ('k1', 'm1', '{}', 1000);"
	               "INSERT INTO build_cache VALUES ('k2', 'm2', NULL, 2000);"
	               "PRAGMA user_version = 3;");
	assert_int_equal(store_schema_version(), 4); /* else: a database of 3 made otherwise */
	int r = store_open(path, &st, &err);
	if (r < 0)
		print_error("store_open: %s\n", err.msg);
	assert_int_equal(r, 0);
	struct cache_list l = {0};
	assert_int_equal(store_run_sync(st, fn_cache_collect, &l), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.c[0].key, "k1");
	assert_string_equal(l.c[0].manifest, "m1");
	assert_string_equal(l.c[0].workspace_id, "");
	assert_int_equal(l.c[0].created_ms, 1000);
	assert_int_equal(l.c[0].used_ms, 1000);
	assert_string_equal(l.c[1].key, "k2");
	assert_int_equal(l.c[1].used_ms, 2000);
	/* New rows take the new columns; rows load least recently used first. */
	struct store_cache c = {
	    .key = "k3", .manifest = "m3", .workspace_id = "ws-9", .created_ms = 7, .used_ms = 8};
	assert_int_equal(store_run_sync(st, fn_cache_put, &c), 0);
	l = (struct cache_list){0};
	assert_int_equal(store_run_sync(st, fn_cache_collect, &l), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.c[0].key, "k3");
	assert_string_equal(l.c[0].workspace_id, "ws-9");
	assert_int_equal(l.c[0].used_ms, 8);
	assert_string_equal(l.c[1].key, "k1");
	assert_string_equal(l.c[2].key, "k2");
	store_close(st);
	sqlite3 *db = raw_open(path);
	assert_int_equal(raw_int(db, "PRAGMA user_version", NULL), store_schema_version());
	sqlite3_close(db);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_open_migrate_reopen),
	    T(test_newer_version_refused),
	    T(test_workspaces),
	    T(test_tokens),
	    T(test_sandboxes),
	    T(test_sandbox_names),
	    T(test_execs),
	    T(test_workers),
	    T(test_blob_owners),
	    T(test_idempotency),
	    T(test_images),
	    T(test_build_cache),
	    T(test_build_cache_migration),
	    T(test_submit_done_after_commit),
	    T(test_submit_failure_isolated),
	    T(test_group_commit),
	    T(test_commit_failure),
	    T(test_close_delivers_pending),
	    T(test_close_from_done),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
