/* The PostgreSQL backend's schema versions: the embedded migrations (sql/postgresql/NNN_*.sql,
 * the version in table schema_version) applied when a daemon's writer handle opens, under a
 * session advisory lock so that instances starting together migrate once, each migration in
 * its own transaction (DDL is transactional in PostgreSQL: a failure leaves the previous
 * version whole); and the check that other handles look at a schema this binary knows. Runs
 * once, at open. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

extern const char *const store_pg_migrations[];
extern const size_t store_pg_migrations_count;

/* The schema version: 0 for a database without komerce-hookd's tables. Reads only. */
static int schema_version(struct store *s, int *ret_version)
{
	PGresult *res;
	int r;

	r = store_pg_exec_simple(s, "SELECT to_regclass('schema_version') IS NOT NULL", &res,
				 "schema version");
	if (r < 0)
		return r;
	*ret_version = 0;
	if (!store_pg_bool(res, 0, 0)) {
		PQclear(res);
		return 0;
	}
	PQclear(res);
	r = store_pg_exec_simple(s, "SELECT max(version) FROM schema_version", &res,
				 "schema version");
	if (r < 0)
		return r;
	*ret_version = (int)store_pg_i64(res, 0, 0, 0);
	PQclear(res);
	return 0;
}

static int refuse_newer(int version, char *err, size_t err_len)
{
	if (version <= (int)store_pg_migrations_count)
		return 0;
	snprintf(err, err_len,
		 "store: the PostgreSQL database has schema version %d, newer than this binary "
		 "knows (%zu); refusing to touch it",
		 version, store_pg_migrations_count);
	return -EPROTO;
}

static int run_one(struct store *s, size_t v)
{
	char bump[80];
	int r;

	snprintf(bump, sizeof(bump), "UPDATE schema_version SET version = %zu", v + 1);
	r = store_pg_exec_simple(s, "BEGIN", NULL, "migration");
	if (r == 0)
		r = store_pg_exec_simple(s, store_pg_migrations[v], NULL, "migration");
	if (r == 0)
		r = store_pg_exec_simple(s, bump, NULL, "migration");
	if (r == 0)
		r = store_pg_exec_simple(s, "COMMIT", NULL, "migration");
	if (r < 0) {
		char why[sizeof(s->err)];

		memcpy(why, s->err, sizeof(why));
		(void)store_pg_exec_simple(s, "ROLLBACK", NULL, "migration");
		memcpy(s->err, why, sizeof(why));
	}
	return r;
}

/* Under the lock: the version again (another instance may have migrated meanwhile), then
 * what is missing. */
static int migrate_locked(struct store *s, char *err, size_t err_len)
{
	int version = 0, r;

	r = schema_version(s, &version);
	if (r < 0) {
		snprintf(err, err_len, "store: cannot read the schema version: %s", s->err);
		return r;
	}
	r = refuse_newer(version, err, err_len);
	for (size_t v = (size_t)version; r == 0 && v < store_pg_migrations_count; v++) {
		r = run_one(s, v);
		if (r < 0)
			snprintf(err, err_len, "store: PostgreSQL migration %zu failed: %s", v + 1,
				 s->err);
	}
	return r;
}

int store_pg_migrate(struct store *s, char *err, size_t err_len)
{
	char lock[96];
	int version = 0, r;

	r = schema_version(s, &version);
	if (r < 0) {
		snprintf(err, err_len, "store: cannot read the schema version: %s", s->err);
		return r;
	}
	r = refuse_newer(version, err, err_len);
	if (r < 0 || version == (int)store_pg_migrations_count)
		return r;
	snprintf(lock, sizeof(lock), "SELECT pg_advisory_lock(%d, %d)",
		 (int)store_pg_of(s)->lock_class, STORE_PG_LOCK_MIGRATE);
	r = store_pg_exec_simple(s, lock, NULL, "migration lock");
	if (r < 0) {
		snprintf(err, err_len, "store: cannot take the migration lock: %s", s->err);
		return r;
	}
	r = migrate_locked(s, err, err_len);
	snprintf(lock, sizeof(lock), "SELECT pg_advisory_unlock(%d, %d)",
		 (int)store_pg_of(s)->lock_class, STORE_PG_LOCK_MIGRATE);
	(void)store_pg_exec_simple(s, lock, NULL, "migration unlock");
	return r;
}

int store_pg_check_schema(struct store *s, char *err, size_t err_len)
{
	int version = 0, r;

	r = schema_version(s, &version);
	if (r < 0) {
		snprintf(err, err_len, "store: cannot read the schema version: %s", s->err);
		return r;
	}
	if (version > (int)store_pg_migrations_count) {
		snprintf(err, err_len,
			 "store: the PostgreSQL database has schema version %d, newer than this "
			 "binary knows (%zu)",
			 version, store_pg_migrations_count);
		return -EPROTO;
	}
	if (version <= 0) {
		snprintf(err, err_len,
			 "store: the PostgreSQL database has no komerce-hookd schema (start the "
			 "daemon once to create it)");
		return -ENOENT;
	}
	return 0;
}
