/* The SQLite backend's console queries (store_console.h): payment search and listings, a
 * payment's receipts and deliveries, the newest event id.
 * Called by the admin API's per-connection threads, each on its own READER handle. */
#include "store_sqlite_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The ids of a payment's events: the dedupe_key index as a "<payment_id>:" prefix range. */
#define EVENTS_OF_PAYMENT(p)                                                            \
	"SELECT id FROM events WHERE dedupe_key >= (" p " || ':') AND dedupe_key < (" p \
	" || ';') AND payment_id = " p

/* The VA number of an event's raw JSON, top level or in "data"; NULL when absent or not JSON.
 * A number is compared as its digits. */
#define VA_OF(col)                                             \
	"CASE WHEN json_valid(" col ") THEN coalesce("         \
	"CAST(json_extract(" col ", '$.va_number') AS TEXT), " \
	"CAST(json_extract(" col ", '$.data.va_number') AS TEXT)) END"

static enum store_outbox_state state_of(sqlite3_stmt *st, int col)
{
	return store_outbox_state_parse((const char *)sqlite3_column_text(st, col));
}

/* ---- payments ---- */

int store_sqlite_console_payments(struct store *s, const struct store_console_payment_filter *f,
				  int (*fn)(void *arg, const struct store_console_payment *p),
				  void *arg)
{
	char sql[2048];
	size_t o;
	sqlite3_stmt *st;
	int rc, r;

	o = (size_t)snprintf(
		sql, sizeof(sql),
		"SELECT %s, "
		"(SELECT count(*) FROM events e WHERE e.dedupe_key >= (p.payment_id || ':') "
		"AND e.dedupe_key < (p.payment_id || ';') AND e.payment_id = p.payment_id "
		"AND e.conflict), "
		"CASE WHEN ?1 IS NULL THEN 0 WHEN p.payment_id = ?1 THEN 1 "
		"WHEN p.order_id = ?1 OR EXISTS (SELECT 1 FROM events e WHERE e.order_id = ?1 "
		"AND e.payment_id = p.payment_id) THEN 2 ELSE 3 END "
		"FROM payments p WHERE 1",
		STORE_SQLITE_PAYMENT_COLUMNS(s));
	if (f->q != NULL)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o,
				      " AND p.payment_id IN (SELECT ?1"
				      " UNION SELECT payment_id FROM payments WHERE order_id = ?1"
				      " UNION SELECT payment_id FROM events WHERE order_id = ?1"
				      " UNION SELECT payment_id FROM events WHERE"
				      " instr(raw_json, ?1) > 0 AND " VA_OF("raw_json") " = ?1)");
	if (f->status != PAYMENT_UNKNOWN)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND p.status = ?2");
	if (f->stale)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o,
				      " AND p.status = 'PENDING' AND p.expires_at IS NOT NULL"
				      " AND p.expires_at < ?3");
	if (f->conflict)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o,
				      " AND p.payment_id IN (SELECT payment_id FROM events"
				      " WHERE conflict)");
	if (f->after_payment_id != NULL)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o,
				      " AND (p.created_at < ?4 OR (p.created_at = ?4"
				      " AND p.payment_id < ?5))");
	o += (size_t)snprintf(sql + o, sizeof(sql) - o,
			      " ORDER BY p.created_at DESC, p.payment_id DESC");
	if (f->limit > 0)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, " LIMIT ?6");
	if (o >= sizeof(sql)) {
		snprintf(s->err, sizeof(s->err), "console payments: query too long");
		return -EIO;
	}
	r = store_sqlite_prepare(s, sql, &st, "console payments");
	if (r < 0)
		return r;
	if (f->q != NULL)
		sqlite3_bind_text(st, 1, f->q, -1, SQLITE_STATIC);
	if (f->status != PAYMENT_UNKNOWN)
		sqlite3_bind_text(st, 2, payment_status_name(f->status), -1, SQLITE_STATIC);
	if (f->stale)
		sqlite3_bind_int64(st, 3, f->now_ms / 1000);
	if (f->after_payment_id != NULL) {
		sqlite3_bind_int64(st, 4, f->after_created_at);
		sqlite3_bind_text(st, 5, f->after_payment_id, -1, SQLITE_STATIC);
	}
	if (f->limit > 0)
		sqlite3_bind_int64(st, 6, f->limit);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_console_payment cp;

		memset(&cp, 0, sizeof(cp));
		store_sqlite_payment_read(st, &cp.p);
		cp.conflicts = (long)sqlite3_column_int64(st, STORE_SQLITE_PAYMENT_NCOLS);
		cp.match = (enum store_console_match)sqlite3_column_int(
			st, STORE_SQLITE_PAYMENT_NCOLS + 1);
		r = fn(arg, &cp);
		if (r != 0) {
			sqlite3_finalize(st);
			return r;
		}
	}
	return store_sqlite_finish(s, st, rc, "console payments");
}

/* ---- one payment ---- */

int store_sqlite_console_receipts(struct store *s, const char *payment_id, long limit,
				  int (*fn)(void *arg, const struct store_console_receipt *r),
				  void *arg)
{
	static const char sql[] =
		"SELECT r.id, r.event_id, r.source, r.remote_addr, r.received_at FROM receipts r "
		"WHERE r.event_id IN (" EVENTS_OF_PAYMENT("?1") ") ORDER BY r.id LIMIT ?2";
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, sql, &st, "console receipts");
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, payment_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, limit > 0 ? limit : -1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_console_receipt rec;

		memset(&rec, 0, sizeof(rec));
		rec.id = sqlite3_column_int64(st, 0);
		rec.event_id = sqlite3_column_int64(st, 1);
		store_sqlite_col_copy(st, 2, rec.source, sizeof(rec.source));
		store_sqlite_col_copy(st, 3, rec.remote_addr, sizeof(rec.remote_addr));
		rec.received_at = sqlite3_column_int64(st, 4);
		r = fn(arg, &rec);
		if (r != 0) {
			sqlite3_finalize(st);
			return r;
		}
	}
	return store_sqlite_finish(s, st, rc, "console receipts");
}

int store_sqlite_console_deliveries(struct store *s, const char *payment_id,
				    int (*fn)(void *arg, const struct store_outbox_row *r),
				    void *arg)
{
	static const char sql[] =
		"SELECT o.id, o.event_id, o.sink, o.state, o.attempts, o.next_attempt_at, "
		"o.created_at, o.delivered_at, o.last_error, o.replayed_at, o.replayed_by "
		"FROM outbox o "
		"WHERE o.event_id IN (" EVENTS_OF_PAYMENT("?1") ") ORDER BY o.id";
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, sql, &st, "console deliveries");
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, payment_id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_outbox_row row;

		memset(&row, 0, sizeof(row));
		row.id = sqlite3_column_int64(st, 0);
		row.event_id = sqlite3_column_int64(st, 1);
		store_sqlite_col_copy(st, 2, row.sink, sizeof(row.sink));
		row.state = state_of(st, 3);
		row.attempts = (long)sqlite3_column_int64(st, 4);
		row.next_attempt_at = sqlite3_column_int64(st, 5);
		row.created_at = sqlite3_column_int64(st, 6);
		row.delivered_at = store_sqlite_col_i64(st, 7, 0);
		store_sqlite_col_copy(st, 8, row.last_error, sizeof(row.last_error));
		row.replayed_at = store_sqlite_col_i64(st, 9, 0);
		store_sqlite_col_copy(st, 10, row.replayed_by, sizeof(row.replayed_by));
		snprintf(row.payment_id, sizeof(row.payment_id), "%s", payment_id);
		row.amount = -1;
		r = fn(arg, &row);
		if (r != 0) {
			sqlite3_finalize(st);
			return r;
		}
	}
	return store_sqlite_finish(s, st, rc, "console deliveries");
}

/* ---- events ---- */

int store_sqlite_console_last_event_id(struct store *s, int64_t *ret)
{
	sqlite3_stmt *st;
	int rc, r;

	r = store_sqlite_prepare(s, "SELECT max(id) FROM events", &st, "last event");
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = store_sqlite_col_i64(st, 0, 0);
	else if (rc == SQLITE_DONE)
		rc = SQLITE_ERROR;
	return store_sqlite_finish(s, st, rc, "last event");
}
