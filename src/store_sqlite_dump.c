/* The SQLite backend's dump for copies into another store (komerce-hookctl migrate-to): every
 * row of the four tables, in one read transaction so that they agree, as text (hashes in
 * lowercase hex). Runs on the caller's (read-only) handle. */
#include "store_sqlite_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The select list of t: hashes as hex; receipts.instance as NULL in a database that has not
 * been migrated to version 2 yet (a reader does not migrate). */
static void select_list(struct store *s, const struct store_table *t, char *sql, size_t n)
{
	size_t o = (size_t)snprintf(sql, n, "SELECT ");
	sqlite3_stmt *probe = NULL;
	bool has_instance = true;

	if (strcmp(t->name, "receipts") == 0) {
		has_instance = sqlite3_prepare_v2(store_sqlite_db(s),
						  "SELECT instance FROM receipts LIMIT 0", -1,
						  &probe, NULL) == SQLITE_OK;
		sqlite3_finalize(probe);
	}
	for (size_t i = 0; i < t->n_cols && o < n; i++) {
		const char *c = t->cols[i];

		if (strcmp(c, "hash") == 0 || strcmp(c, "prev_hash") == 0)
			o += (size_t)snprintf(sql + o, n - o, "%slower(hex(%s))", i ? ", " : "", c);
		else if (strcmp(c, "instance") == 0 && !has_instance)
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
	const char *vals[16];
	sqlite3_stmt *st;
	char sql[1024];
	int rc, r;

	select_list(s, t, sql, sizeof(sql));
	r = store_sqlite_prepare(s, sql, &st, "dump");
	if (r < 0)
		return r;
	r = sink->table(sink->arg, t);
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

	for (size_t i = 0; i < 4 && r == 0; i++)
		r = dump_table(s, &store_tables[i], sink);
	if (!sqlite3_get_autocommit(store_sqlite_db(s)))
		sqlite3_exec(store_sqlite_db(s), "COMMIT", NULL, NULL, NULL);
	return r;
}
