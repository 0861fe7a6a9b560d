/* The SQLite backend's dump for copies into another store (komerce-hookctl migrate-to): every
 * row of the four tables, in one read transaction so that they agree, as text (hashes in
 * lowercase hex). Runs on the caller's (read-only) handle. */
#include "store_sqlite_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The schema version that added column c of table t (1: the first). */
static int added_in(const struct store_table *t, const char *c)
{
	if (strcmp(t->name, "polls") == 0 || strcmp(c, "confirmation") == 0 ||
	    strcmp(c, "confirmation_detail") == 0 || strcmp(c, "confirmation_at") == 0 ||
	    strcmp(c, "held_event_id") == 0)
		return 3;
	if (strcmp(c, "instance") == 0)
		return 4;
	return 1;
}

/* The select list of t: hashes as hex; columns a database that has not been migrated yet
 * lacks (a reader does not migrate) as NULL. */
static void select_list(struct store *s, const struct store_table *t, char *sql, size_t n)
{
	size_t o = (size_t)snprintf(sql, n, "SELECT ");

	for (size_t i = 0; i < t->n_cols && o < n; i++) {
		const char *c = t->cols[i];

		if (strcmp(c, "hash") == 0 || strcmp(c, "prev_hash") == 0)
			o += (size_t)snprintf(sql + o, n - o, "%slower(hex(%s))", i ? ", " : "", c);
		else if (added_in(t, c) > store_sqlite_of(s)->version)
			o += (size_t)snprintf(sql + o, n - o, "%sNULL", i ? ", " : "");
		else
			o += (size_t)snprintf(sql + o, n - o, "%s%s", i ? ", " : "", c);
	}
	if (o < n)
		snprintf(sql + o, n - o, " FROM %s ORDER BY %s", t->name, t->order_by);
}

static int dump_table(struct store *s, const struct store_table *t,
		      const struct store_dump_sink *sink)
{
	const char *vals[24];
	sqlite3_stmt *st;
	char sql[1024];
	int rc, r;

	r = sink->table(sink->arg, t);
	if (r != 0 || added_in(t, "") > store_sqlite_of(s)->version)
		return r; /* the table does not exist yet: no rows */
	select_list(s, t, sql, sizeof(sql));
	r = store_sqlite_prepare(s, sql, &st, "dump");
	if (r < 0)
		return r;
	while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (size_t i = 0; i < t->n_cols; i++)
			vals[i] = (const char *)sqlite3_column_text(st, (int)i);
		r = sink->row(sink->arg, t, vals);
	}
	if (r != 0) {
		sqlite3_finalize(st);
		return r;
	}
	return store_sqlite_finish(s, st, rc, "dump");
}

int store_sqlite_dump(struct store *s, const struct store_dump_sink *sink)
{
	int r = store_sqlite_exec(s, "BEGIN");

	for (size_t i = 0; i < STORE_TABLES && r == 0; i++)
		r = dump_table(s, &store_tables[i], sink);
	if (!sqlite3_get_autocommit(store_sqlite_db(s)))
		sqlite3_exec(store_sqlite_db(s), "COMMIT", NULL, NULL, NULL);
	return r;
}
