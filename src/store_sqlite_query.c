/* The SQLite backend's read queries: a payment, payments by status or staleness, events with
 * filters and cursor, and counts. Used by the admin API, the reconciler and komerce-hookctl,
 * each on its own (usually read-only) handle. */
#include "store_sqlite_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int store_sqlite_payment_get(struct store *s, const char *payment_id, struct store_payment *ret)
{
	char sql[512];
	sqlite3_stmt *st;
	int rc, r = -ENOENT;

	snprintf(sql, sizeof(sql), "SELECT %s FROM payments WHERE payment_id = ?1",
		 STORE_SQLITE_PAYMENT_COLUMNS(s));
	if (sqlite3_prepare_v2(store_sqlite_db(s), sql, -1, &st, NULL) != SQLITE_OK) {
		store_sqlite_set_err(s, "payment get");
		return -EIO;
	}
	sqlite3_bind_text(st, 1, payment_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		struct store_payment p;

		store_sqlite_payment_read(st, &p);
		*ret = p;
		r = 0;
	} else if (rc != SQLITE_DONE) {
		store_sqlite_set_err(s, "payment get");
		r = store_sqlite_errno(rc);
	}
	sqlite3_finalize(st);
	return r;
}

/* A row of the events query (raw_json valid until the next step). */
static void read_event(sqlite3_stmt *st, struct store_event *e)
{
	const void *h;

	memset(e, 0, sizeof(*e));
	e->id = sqlite3_column_int64(st, 0);
	store_sqlite_col_copy(st, 1, e->payment_id, sizeof(e->payment_id));
	store_sqlite_col_copy(st, 2, e->order_id, sizeof(e->order_id));
	e->status = payment_status_parse((const char *)sqlite3_column_text(st, 3));
	e->amount = store_sqlite_col_i64(st, 4, -1);
	store_sqlite_col_copy(st, 5, e->source, sizeof(e->source));
	e->conflict = sqlite3_column_int(st, 6) != 0;
	e->received_at = sqlite3_column_int64(st, 7);
	e->raw_json = (const char *)sqlite3_column_text(st, 8);
	h = sqlite3_column_blob(st, 9);
	if (h != NULL && sqlite3_column_bytes(st, 9) == STORE_HASH_LEN)
		memcpy(e->hash, h, STORE_HASH_LEN);
	e->receipts = (long)sqlite3_column_int64(st, 10);
	e->mark = store_event_mark_parse((const char *)sqlite3_column_text(st, 11));
	e->held_event_id = store_sqlite_col_i64(st, 12, 0);
}

int store_sqlite_events_query(struct store *s, const struct store_event_filter *f,
			      int (*fn)(void *arg, const struct store_event *e), void *arg)
{
	char sql[1024];
	size_t o;
	sqlite3_stmt *st;
	int rc, r = 0;

	o = (size_t)snprintf(sql, sizeof(sql),
			     "SELECT e.id, e.payment_id, e.order_id, e.status, e.amount, e.source, "
			     "e.conflict, e.received_at, e.raw_json, e.hash, "
			     "(SELECT count(*) FROM receipts r WHERE r.event_id = e.id), %s "
			     "FROM events e WHERE %se.id > ?1",
			     STORE_SQLITE_EVENT_V2(s, "e."),
			     /* unary +: the rowid range must not win over the dedupe_key range */
			     f->payment_id != NULL ? "+" : "");
	if (f->payment_id != NULL)
		/* The dedupe_key index ("<payment_id>:<status>") serves lookups by payment. */
		o += (size_t)snprintf(
			sql + o, sizeof(sql) - o,
			" AND e.dedupe_key >= (?2 || ':') AND e.dedupe_key < (?2 || ';')"
			" AND e.payment_id = ?2");
	if (f->order_id != NULL)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND e.order_id = ?3");
	if (f->source != NULL)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND e.source = ?4");
	if (f->status != PAYMENT_UNKNOWN)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND e.status = ?5");
	if (f->since_ms != 0)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND e.received_at >= ?6");
	if (f->until_ms != 0)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND e.received_at < ?7");
	o += (size_t)snprintf(sql + o, sizeof(sql) - o, " ORDER BY e.id");
	if (f->limit > 0)
		snprintf(sql + o, sizeof(sql) - o, " LIMIT ?8");
	if (sqlite3_prepare_v2(store_sqlite_db(s), sql, -1, &st, NULL) != SQLITE_OK) {
		store_sqlite_set_err(s, "events query");
		return -EIO;
	}
	sqlite3_bind_int64(st, 1, f->after_id);
	if (f->payment_id != NULL)
		sqlite3_bind_text(st, 2, f->payment_id, -1, SQLITE_STATIC);
	if (f->order_id != NULL)
		sqlite3_bind_text(st, 3, f->order_id, -1, SQLITE_STATIC);
	if (f->source != NULL)
		sqlite3_bind_text(st, 4, f->source, -1, SQLITE_STATIC);
	if (f->status != PAYMENT_UNKNOWN)
		sqlite3_bind_text(st, 5, payment_status_name(f->status), -1, SQLITE_STATIC);
	if (f->since_ms != 0)
		sqlite3_bind_int64(st, 6, f->since_ms);
	if (f->until_ms != 0)
		sqlite3_bind_int64(st, 7, f->until_ms);
	if (f->limit > 0)
		sqlite3_bind_int64(st, 8, f->limit);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_event e;

		read_event(st, &e);
		r = fn(arg, &e);
		if (r != 0)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE) {
		store_sqlite_set_err(s, "events query");
		r = store_sqlite_errno(rc);
	}
	sqlite3_finalize(st);
	return r;
}

int store_sqlite_count(struct store *s, const char *table, int64_t *ret)
{
	char sql[64];
	sqlite3_stmt *st;
	int rc, r;

	/* table is one of store_count()'s allowed names. */
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
	r = store_sqlite_prepare(s, sql, &st, "count");
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		rc = SQLITE_ERROR;
	return store_sqlite_finish(s, st, rc, "count");
}

int store_sqlite_payments_list(struct store *s, const struct store_payment_filter *f,
			       int (*fn)(void *arg, const struct store_payment *p), void *arg)
{
	char sql[768];
	size_t o;
	sqlite3_stmt *st;
	int rc, r;

	o = (size_t)snprintf(sql, sizeof(sql), "SELECT %s FROM payments WHERE 1",
			     STORE_SQLITE_PAYMENT_COLUMNS(s));
	if (f->status != PAYMENT_UNKNOWN)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND status = ?1");
	if (f->stale)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o,
				      " AND status = 'PENDING' AND expires_at IS NOT NULL"
				      " AND expires_at < ?2");
	o += (size_t)snprintf(sql + o, sizeof(sql) - o, " ORDER BY created_at, payment_id");
	if (f->limit > 0)
		snprintf(sql + o, sizeof(sql) - o, " LIMIT ?3");
	r = store_sqlite_prepare(s, sql, &st, "payments");
	if (r < 0)
		return r;
	if (f->status != PAYMENT_UNKNOWN)
		sqlite3_bind_text(st, 1, payment_status_name(f->status), -1, SQLITE_STATIC);
	if (f->stale)
		sqlite3_bind_int64(st, 2, f->now_ms / 1000);
	if (f->limit > 0)
		sqlite3_bind_int64(st, 3, f->limit);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_payment p;

		store_sqlite_payment_read(st, &p);
		r = fn(arg, &p);
		if (r != 0) {
			sqlite3_finalize(st);
			return r;
		}
	}
	return store_sqlite_finish(s, st, rc, "payments");
}
