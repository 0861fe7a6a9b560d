/* The SQLite backend's schema versions: the embedded migrations (sql/sqlite/NNN_*.sql, version
 * in PRAGMA user_version) applied when the daemon's writer handle opens, each in its own
 * transaction after an online backup of the existing database; and the check that a read-only
 * handle looks at a komerce-hookd database this binary knows. Runs once, at open. */
#include "store_sqlite_int.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "util.h"

extern const char *const store_sqlite_migrations[];
extern const size_t store_sqlite_migrations_count;

/* Reads the integer PRAGMA `name` into *ret: 0, or -errno with s->err set. Reading does not
 * write to the file. */
static int pragma_int(struct store *s, const char *name, int *ret)
{
	sqlite3_stmt *st = NULL;
	char sql[64];
	int rc;

	snprintf(sql, sizeof(sql), "PRAGMA %s", name);
	rc = sqlite3_prepare_v2(store_sqlite_db(s), sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		store_sqlite_set_err(s, sql);
		sqlite3_finalize(st);
		return store_sqlite_errno_or_eio(rc);
	}
	*ret = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return 0;
}

/* Reads PRAGMA user_version into *ret_version: 0, or -errno with a line in err. */
static int schema_version(struct store *s, int *ret_version, char *err, size_t err_len)
{
	int r = pragma_int(s, "user_version", ret_version);

	if (r < 0)
		snprintf(err, err_len, "store: cannot read schema version of %s: %s", s->path,
			 s->err);
	return r;
}

/* A database written by a newer komerce-hookd is refused before anything writes to it (not
 * even the journal mode), so that the newer binary can still use it. */
static int refuse_newer(struct store *s, int version, char *err, size_t err_len)
{
	if (version <= (int)store_sqlite_migrations_count)
		return 0;
	snprintf(err, err_len,
		 "store: %s has schema version %d, newer than this binary knows (%zu); "
		 "refusing to touch it",
		 s->path, version, store_sqlite_migrations_count);
	return -EPROTO;
}

/* Before a migration changes an existing database, copies it to <path>.v<version>.bak with
 * the online backup (one snapshot, fsynced, a single file without -wal) and keeps it. Written
 * as <bak>.new and renamed, so that a backup left by an earlier attempt at the same upgrade is
 * replaced only by a complete newer copy of the same schema version. Costs one full read and
 * write of the database, once per upgrade. No backup, no migration: the caller refuses to
 * start with the reason. */
static int backup_before_migrate(struct store *s, int version, char *err, size_t err_len)
{
	char dest[4096], tmp[4096 + 8], why[512];
	int64_t bytes = 0;
	int r;

	if ((size_t)snprintf(dest, sizeof(dest), "%s.v%d.bak", s->path, version) >= sizeof(dest))
		return -ENAMETOOLONG;
	snprintf(tmp, sizeof(tmp), "%s.new", dest);
	unlink(tmp); /* left over from an interrupted attempt */
	r = store_sqlite_backup(s, tmp, &bytes, why, sizeof(why));
	if (r == 0 && rename(tmp, dest) < 0) {
		r = -errno;
		snprintf(why, sizeof(why), "cannot rename %s to %s", tmp, dest);
		unlink(tmp);
	}
	if (r == 0)
		r = util_fsync_dir(dest);
	if (r < 0)
		snprintf(err, err_len,
			 "store: cannot back up %s (schema version %d) before migrating it, "
			 "nothing was changed: %s",
			 s->path, version, why);
	return r;
}

/* Increments PRAGMA schema_version (the schema cookie) so that every connection, this one too,
 * reparses the schema: a migration that edits sqlite_schema's text directly (005) changes
 * nothing SQLite would notice by itself. For the others, whose DDL has bumped it already, one
 * more is harmless. Inside the migration's transaction. */
static int bump_schema_cookie(struct store *s)
{
	char sql[64];
	int cookie, r = pragma_int(s, "schema_version", &cookie);

	if (r < 0)
		return r;
	snprintf(sql, sizeof(sql), "PRAGMA schema_version = %d", cookie + 1);
	return store_sqlite_exec(s, sql);
}

/* Brings a database at schema version `version` (already checked not to be newer) up to
 * date: an existing database is backed up first, then each migration runs in its own
 * transaction together with the version bump, so a failure leaves the last good version. */
static int run_migrations(struct store *s, int version, char *err, size_t err_len)
{
	int r;

	if (version >= 1 && version < (int)store_sqlite_migrations_count) {
		r = backup_before_migrate(s, version, err, err_len);
		if (r < 0)
			return r;
	}
	for (size_t v = (size_t)version; v < store_sqlite_migrations_count; v++) {
		char pragma[64];

		snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %zu", v + 1);
		r = store_sqlite_exec(s, "BEGIN IMMEDIATE");
		if (r == 0)
			r = store_sqlite_exec(s, store_sqlite_migrations[v]);
		if (r == 0)
			r = bump_schema_cookie(s);
		if (r == 0)
			r = store_sqlite_exec(s, pragma);
		if (r == 0)
			r = store_sqlite_exec(s, "COMMIT");
		if (r < 0) {
			snprintf(err, err_len, "store: migration %zu of %s failed: %s", v + 1,
				 s->path, s->err);
			if (!sqlite3_get_autocommit(store_sqlite_db(s)))
				sqlite3_exec(store_sqlite_db(s), "ROLLBACK", NULL, NULL, NULL);
			return r;
		}
	}
	return 0;
}

int store_sqlite_migrate(struct store *s, char *err, size_t err_len)
{
	char sql[64];
	int version = 0, r;

	r = schema_version(s, &version, err, err_len);
	if (r == 0)
		r = refuse_newer(s, version, err, err_len);
	if (r < 0)
		return r;
	r = store_sqlite_exec(s, "PRAGMA journal_mode = WAL");
	if (r == 0) {
		snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s",
			 s->opts.synchronous_full ? "FULL" : "NORMAL");
		r = store_sqlite_exec(s, sql);
	}
	if (r < 0) {
		snprintf(err, err_len, "store: cannot use %s: %s", s->path, s->err);
		return r;
	}
	r = run_migrations(s, version, err, err_len);
	if (r == 0)
		store_sqlite_of(s)->version = (int)store_sqlite_migrations_count;
	return r;
}

int store_sqlite_check_schema(struct store *s, char *err, size_t err_len)
{
	int version = -1, r;

	r = schema_version(s, &version, err, err_len);
	if (r < 0 && r != -EAGAIN) {
		snprintf(err, err_len, "store: %s is not a komerce-hookd database (%s)", s->path,
			 sqlite3_errmsg(store_sqlite_db(s)));
		return -EBADMSG;
	}
	if (r < 0)
		return r;
	if (version > (int)store_sqlite_migrations_count) {
		snprintf(err, err_len,
			 "store: %s has schema version %d, newer than this binary knows (%zu)",
			 s->path, version, store_sqlite_migrations_count);
		return -EPROTO;
	}
	if (version <= 0) {
		snprintf(err, err_len, "store: %s is not a komerce-hookd database (no schema)",
			 s->path);
		return -ENOENT;
	}
	store_sqlite_of(s)->version = version;
	return 0;
}
