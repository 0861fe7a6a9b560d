/* Copies in and out of the PostgreSQL backend (komerce-hookctl migrate-to): the dump streams
 * the five tables from one REPEATABLE READ snapshot; the load takes rows into the writer's
 * transaction with COPY FROM STDIN (text format, through libpq's copy API), ids and hashes as
 * they were, and then moves the receipts', outbox's and polls' id counters past the copied ids. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COPY_BUF (256 * 1024)

static bool is_hash(const char *col)
{
	return strcmp(col, "hash") == 0 || strcmp(col, "prev_hash") == 0;
}

/* ---- dump ---- */

struct dump_rows {
	const struct store_table *t;
	const struct store_dump_sink *sink;
};

static int dump_row(void *arg, PGresult *res)
{
	struct dump_rows *x = arg;
	const char *vals[24];

	for (size_t i = 0; i < x->t->n_cols; i++)
		vals[i] = PQgetisnull(res, 0, (int)i) ? NULL : PQgetvalue(res, 0, (int)i);
	return x->sink->row(x->sink->arg, x->t, vals);
}

static int dump_table(struct store *s, const struct store_table *t,
		      const struct store_dump_sink *sink)
{
	struct dump_rows x = {t, sink};
	char sql[1024];
	size_t o = (size_t)snprintf(sql, sizeof(sql), "SELECT ");
	int r;

	for (size_t i = 0; i < t->n_cols && o < sizeof(sql); i++) {
		const char *c = t->cols[i];

		if (is_hash(c))
			o += (size_t)snprintf(sql + o, sizeof(sql) - o, "%sencode(%s, 'hex')",
					      i ? ", " : "", c);
		else if (strcmp(c, "conflict") == 0 || strcmp(c, "confirming") == 0)
			o += (size_t)snprintf(sql + o, sizeof(sql) - o, "%s%s::int", i ? ", " : "",
					      c);
		else
			o += (size_t)snprintf(sql + o, sizeof(sql) - o, "%s%s", i ? ", " : "", c);
	}
	if (o < sizeof(sql))
		snprintf(sql + o, sizeof(sql) - o, " FROM %s ORDER BY %s", t->name, t->order_by);
	r = sink->table(sink->arg, t);
	if (r == 0)
		r = store_pg_stream(s, sql, 0, NULL, dump_row, &x, "dump");
	return r;
}

int store_pg_dump(struct store *s, const struct store_dump_sink *sink)
{
	int r = store_pg_exec_simple(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL,
				     "dump");

	for (size_t i = 0; i < STORE_TABLES && r == 0; i++)
		r = dump_table(s, &store_tables[i], sink);
	(void)store_pg_exec_simple(s, r == 0 ? "COMMIT" : "ROLLBACK", NULL, "dump");
	return r;
}

/* ---- load ---- */

static int flush(struct store *s)
{
	struct store_pg *q = store_pg_of(s);

	if (q->copy_len == 0)
		return 0;
	if (PQputCopyData(q->conn, q->copy_buf, (int)q->copy_len) != 1)
		return store_pg_fail(s, NULL, "copy");
	q->copy_len = 0;
	return 0;
}

/* Appends v to the row buffer as a COPY text field: backslash, tab, newline and carriage
 * return escaped. */
static int put_field(struct store *s, const char *v, size_t len)
{
	struct store_pg *q = store_pg_of(s);

	for (size_t i = 0; i < len; i++) {
		char c = v[i], esc = c == '\\'	 ? '\\'
				     : c == '\t' ? 't'
				     : c == '\n' ? 'n'
				     : c == '\r' ? 'r'
						 : 0;

		if (q->copy_len + 2 > COPY_BUF && flush(s) < 0)
			return -ECONNRESET;
		if (esc != 0) {
			q->copy_buf[q->copy_len++] = '\\';
			q->copy_buf[q->copy_len++] = esc;
		} else {
			q->copy_buf[q->copy_len++] = c;
		}
	}
	return 0;
}

int store_pg_load_begin(struct store *s, const struct store_table *t)
{
	struct store_pg *q = store_pg_of(s);
	char sql[512];
	size_t o = (size_t)snprintf(sql, sizeof(sql), "COPY %s (", t->name);
	PGresult *res;

	for (size_t i = 0; i < t->n_cols && o < sizeof(sql); i++)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, "%s%s", i ? ", " : "", t->cols[i]);
	if (o < sizeof(sql))
		snprintf(sql + o, sizeof(sql) - o, ") FROM STDIN");
	if (q->copy_buf == NULL) {
		q->copy_buf = malloc(COPY_BUF);
		if (q->copy_buf == NULL)
			return -ENOMEM;
	}
	q->copy_len = 0;
	res = PQexec(q->conn, sql);
	if (PQresultStatus(res) != PGRES_COPY_IN)
		return store_pg_fail(s, res, "copy");
	PQclear(res);
	return 0;
}

int store_pg_load_row(struct store *s, const struct store_table *t, const char *const *vals)
{
	struct store_pg *q = store_pg_of(s);
	int r = 0;

	for (size_t i = 0; i < t->n_cols && r == 0; i++) {
		if (q->copy_len + 4 > COPY_BUF && flush(s) < 0)
			return -ECONNRESET;
		if (i > 0)
			q->copy_buf[q->copy_len++] = '\t';
		if (vals[i] == NULL) {
			memcpy(q->copy_buf + q->copy_len, "\\N", 2);
			q->copy_len += 2;
		} else if (is_hash(t->cols[i])) {
			r = put_field(s, "\\x", 2); /* bytea's hex input */
			if (r == 0)
				r = put_field(s, vals[i], strlen(vals[i]));
		} else {
			r = put_field(s, vals[i], strlen(vals[i]));
		}
	}
	if (r == 0 && q->copy_len + 1 > COPY_BUF && flush(s) < 0)
		return -ECONNRESET;
	if (r == 0)
		q->copy_buf[q->copy_len++] = '\n';
	return r;
}

int store_pg_load_end(struct store *s, const struct store_table *t)
{
	struct store_pg *q = store_pg_of(s);
	char sql[256];
	PGresult *res;
	int r = flush(s);

	if (r < 0)
		return r;
	if (PQputCopyEnd(q->conn, NULL) != 1)
		return store_pg_fail(s, NULL, "copy");
	res = PQgetResult(q->conn);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return store_pg_fail(s, res, "copy");
	PQclear(res);
	while ((res = PQgetResult(q->conn)) != NULL)
		PQclear(res);
	if (strcmp(t->name, "payments") == 0 || strcmp(t->name, "events") == 0)
		return 0; /* no id counter: payment ids are Komerce's, event ids the chain's */
	snprintf(sql, sizeof(sql),
		 "SELECT setval(pg_get_serial_sequence('%s', 'id'), COALESCE(max(id), 0) + 1, "
		 "false) FROM %s",
		 t->name, t->name);
	return store_pg_exec_simple(s, sql, NULL, "copy");
}
