/* The schema of the SQLite store as numbered migrations: migration N brings a database from
 * user_version N-1 to N. Never edit a migration that has shipped: add the next one. */
#include <stdio.h>
#include <string.h>

#include "sqlite_internal.h"

static const char *const MIGRATIONS[] = {
    /* 1: the control plane's first tables. Every row carries its workspace where the type has
     * one; ids sort by creation time, so ORDER BY id is creation order. */
    "CREATE TABLE workspaces ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  name TEXT NOT NULL UNIQUE,"
    "  created_ms INTEGER NOT NULL);"

    /* workspace_id NULL: a token of no workspace (stored for ""). */
    "CREATE TABLE tokens ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  workspace_id TEXT REFERENCES workspaces(id),"
    "  name TEXT NOT NULL,"
    "  role TEXT NOT NULL,"
    "  secret_hash TEXT NOT NULL UNIQUE,"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL);"
    "CREATE INDEX tokens_workspace ON tokens(workspace_id, id);"

    "CREATE TABLE sandboxes ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  workspace_id TEXT NOT NULL REFERENCES workspaces(id),"
    "  name TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  worker_id TEXT NOT NULL,"
    "  spec_json TEXT,"
    "  tags_json TEXT,"
    "  exit_code INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  started_ms INTEGER NOT NULL,"
    "  ended_ms INTEGER NOT NULL,"
    "  deadline_ms INTEGER NOT NULL);"
    /* A name is taken only while its sandbox has not ended. */
    "CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes(workspace_id, name)"
    "  WHERE name != '' AND state IN ('pending', 'running');"
    "CREATE INDEX sandboxes_workspace ON sandboxes(workspace_id, id);"
    "CREATE INDEX sandboxes_worker ON sandboxes(worker_id) WHERE worker_id != '';"

    "CREATE TABLE execs ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  sandbox_id TEXT NOT NULL REFERENCES sandboxes(id),"
    "  workspace_id TEXT NOT NULL REFERENCES workspaces(id),"
    "  state TEXT NOT NULL,"
    "  exit_code INTEGER NOT NULL,"
    "  command_json TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  started_ms INTEGER NOT NULL,"
    "  ended_ms INTEGER NOT NULL);"
    "CREATE INDEX execs_sandbox ON execs(sandbox_id, id);"

    "CREATE TABLE workers ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  name TEXT NOT NULL,"
    "  epoch INTEGER NOT NULL,"
    "  info_json TEXT,"
    "  registered_ms INTEGER NOT NULL,"
    "  last_seen_ms INTEGER NOT NULL);"

    "CREATE TABLE idempotency ("
    "  workspace_id TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  route TEXT NOT NULL,"
    "  body_hash TEXT NOT NULL,"
    "  status INTEGER NOT NULL,"
    "  response TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (workspace_id, key)) WITHOUT ROWID;"
    "CREATE INDEX idempotency_expires ON idempotency(expires_ms) WHERE expires_ms != 0;",

    /* 2: images, what their builds cached, and the image a sandbox was started on. A deleted
     * image's row goes, so its name is free again at once. */
    "CREATE TABLE images ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  workspace_id TEXT NOT NULL REFERENCES workspaces(id),"
    "  name TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  spec_json TEXT,"
    "  manifest TEXT NOT NULL,"
    "  config_json TEXT,"
    "  size_bytes INTEGER NOT NULL,"
    "  files INTEGER NOT NULL,"
    "  layers_json TEXT,"
    "  error TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  ready_ms INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX images_name ON images(workspace_id, name) WHERE name != '';"
    "CREATE INDEX images_workspace ON images(workspace_id, id);"

    /* A build step's key (the SHA-256 of its parent's key, the step and its inputs) to what
     * it made: shared by every workspace, since equal keys mean equal content. */
    "CREATE TABLE build_cache ("
    "  key TEXT PRIMARY KEY NOT NULL,"
    "  manifest TEXT NOT NULL,"
    "  config_json TEXT,"
    "  created_ms INTEGER NOT NULL) WITHOUT ROWID;"

    "ALTER TABLE sandboxes ADD COLUMN image_id TEXT NOT NULL DEFAULT '';",

    /* 3: which workspaces uploaded a blob. Blobs are stored once for all, but only these may
     * read one or name it in a build: a digest alone must not open another's bytes. */
    "CREATE TABLE blob_owners ("
    "  workspace_id TEXT NOT NULL,"
    "  digest TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (workspace_id, digest)) WITHOUT ROWID;",

    /* 4: the build cache is evicted (least recently used per workspace, and what was not used
     * for a while), so an entry says whose it is and when a build last used it. Rows from
     * before: workspace unknown ('', a group of their own), last used when made. */
    "ALTER TABLE build_cache ADD COLUMN workspace_id TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE build_cache ADD COLUMN used_ms INTEGER NOT NULL DEFAULT 0;"
    "UPDATE build_cache SET used_ms = created_ms;",
};

int store_schema_version(void)
{
	return (int)ARRAY_SIZE(MIGRATIONS);
}

static int db_fail(sqlite3 *db, struct sk_error *err, const char *what)
{
	return sk_error_set(err, -EIO, "%s: %s", what, sqlite3_errmsg(db));
}

static int user_version_get(sqlite3 *db, int *ret, struct sk_error *err)
{
	sqlite3_stmt *stmt = NULL;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, NULL) != SQLITE_OK)
		return db_fail(db, err, "read user_version");
	int rc = sqlite3_step(stmt);
	if (rc != SQLITE_ROW) {
		sqlite3_finalize(stmt);
		return db_fail(db, err, "read user_version");
	}
	*ret = sqlite3_column_int(stmt, 0);
	sqlite3_finalize(stmt);
	return 0;
}

/* Migrate in one transaction, taken before the version is read, so that two processes opening
 * one new database cannot both apply migration 1. */
int store_migrate(sqlite3 *db, struct sk_error *err)
{
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return db_fail(db, err, "begin migration");

	int version = 0, latest = store_schema_version();
	int r = user_version_get(db, &version, err);
	if (r < 0)
		goto rollback;
	if (version > latest) {
		r = sk_error_set(err, -EPROTO,
		                 "database schema version %d is newer than this skiff knows (%d): "
		                 "refusing to open it with an older skiff",
		                 version, latest);
		goto rollback;
	}
	if (version < 0) {
		r = sk_error_set(err, -EPROTO, "database schema version %d is invalid", version);
		goto rollback;
	}
	for (int v = version; v < latest; v++) {
		if (sqlite3_exec(db, MIGRATIONS[v], NULL, NULL, NULL) != SQLITE_OK) {
			r = sk_error_set(err, -EIO, "migration %d: %s", v + 1, sqlite3_errmsg(db));
			goto rollback;
		}
	}
	if (version < latest) {
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", latest);
		if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
			r = db_fail(db, err, "set user_version");
			goto rollback;
		}
	}
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		r = db_fail(db, err, "commit migration");
		goto rollback;
	}
	return 0;

rollback:
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return r;
}
