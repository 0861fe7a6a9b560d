/* The PostgreSQL backend's console queries (store_console.h): payment search and listings, a
 * payment's receipts and deliveries, the newest event id; the same statements as the SQLite
 * backend's. Called by the admin API's per-connection threads, each on its own READER handle.
 * Cost: like SQLite's, a search also scans payments and every event's raw JSON (strpos first,
 * the JSON parse only on a hit); an indexed va_number column would replace that scan. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "store_console.h"

/* The ids of a payment's events: the dedupe_key index as a "<payment_id>:" prefix range. */
#define EVENTS_OF_PAYMENT(p)                                                            \
	"SELECT id FROM events WHERE dedupe_key >= (" p " || ':') AND dedupe_key < (" p \
	" || ';') AND payment_id = " p

/* The VA number of an event's raw JSON, top level or in "data"; NULL when absent or not JSON.
 * A number reads as its digits. */
#define VA_OF(col)                                                                           \
	"coalesce(json_or_null(" col ")->>'va_number', json_or_null(" col ")->'data'->>'va_" \
	"number')"

struct payment_rows {
	int (*fn)(void *arg, const struct store_console_payment *p);
	void *arg;
};

static int payment_row(void *arg, PGresult *res)
{
	struct payment_rows *x = arg;
	struct store_console_payment cp;

	memset(&cp, 0, sizeof(cp));
	store_pg_payment_read(res, 0, &cp.p);
	cp.conflicts = (long)store_pg_i64(res, 0, STORE_PG_PAYMENT_NCOLS, 0);
	cp.match = (enum store_console_match)store_pg_i64(res, 0, STORE_PG_PAYMENT_NCOLS + 1, 0);
	return x->fn(x->arg, &cp);
}

/* The filters of f after the select list (parameters $1..$6 as store_pg_console_payments
 * binds them). */
static size_t payments_where(const struct store_console_payment_filter *f, char *sql, size_t n)
{
	size_t o = 0;

	if (f->q != NULL)
		o += (size_t)snprintf(sql + o, n - o,
				      " AND p.payment_id IN (SELECT $1::text"
				      " UNION SELECT payment_id FROM payments WHERE order_id = $1"
				      " UNION SELECT payment_id FROM events WHERE order_id = $1"
				      " UNION SELECT payment_id FROM events WHERE"
				      " strpos(raw_json, $1) > 0 AND " VA_OF("raw_json") " = $1)");
	if (f->status != PAYMENT_UNKNOWN)
		o += (size_t)snprintf(sql + o, n - o, " AND p.status = $2");
	if (f->stale)
		o += (size_t)snprintf(sql + o, n - o,
				      " AND p.status = 'PENDING' AND p.expires_at IS NOT NULL"
				      " AND p.expires_at < $3");
	if (f->conflict)
		o += (size_t)snprintf(sql + o, n - o,
				      " AND p.payment_id IN (SELECT payment_id FROM events"
				      " WHERE conflict)");
	if (f->after_payment_id != NULL)
		o += (size_t)snprintf(sql + o, n - o,
				      " AND (p.created_at < $4 OR (p.created_at = $4"
				      " AND p.payment_id < $5))");
	o += (size_t)snprintf(sql + o, n - o, " ORDER BY p.created_at DESC, p.payment_id DESC");
	if (f->limit > 0)
		o += (size_t)snprintf(sql + o, n - o, " LIMIT $6");
	return o;
}

int store_pg_console_payments(struct store *s, const struct store_console_payment_filter *f,
			      int (*fn)(void *arg, const struct store_console_payment *p),
			      void *arg)
{
	struct store_pg_num n_now, n_after, n_limit;
	struct payment_rows x = {fn, arg};
	const char *v[6] = {f->q,
			    f->status != PAYMENT_UNKNOWN ? payment_status_name(f->status) : NULL,
			    store_pg_num(&n_now, f->now_ms / 1000),
			    store_pg_num(&n_after, f->after_created_at),
			    f->after_payment_id,
			    store_pg_num(&n_limit, f->limit)};
	char sql[2048];
	size_t o;

	/* Every parameter appears in the statement, so that its type is known, used or not. */
	o = (size_t)snprintf(
		sql, sizeof(sql),
		"SELECT " STORE_PG_PAYMENT_COLUMNS ", "
		"(SELECT count(*) FROM events e WHERE e.dedupe_key >= (p.payment_id || ':') "
		"AND e.dedupe_key < (p.payment_id || ';') AND e.payment_id = p.payment_id "
		"AND e.conflict), "
		"CASE WHEN $1::text IS NULL THEN 0 WHEN p.payment_id = $1 THEN 1 "
		"WHEN p.order_id = $1 OR EXISTS (SELECT 1 FROM events e WHERE e.order_id = $1 "
		"AND e.payment_id = p.payment_id) THEN 2 ELSE 3 END "
		"FROM payments p WHERE ($2::text IS NULL OR true) AND ($3::bigint IS NULL OR true) "
		"AND ($4::bigint IS NULL OR true) AND ($5::text IS NULL OR true) "
		"AND ($6::bigint IS NULL OR true)");
	o += payments_where(f, sql + o, sizeof(sql) - o);
	if (o >= sizeof(sql)) {
		snprintf(s->err, sizeof(s->err), "console payments: query too long");
		return -EIO;
	}
	return store_pg_stream(s, sql, 6, v, payment_row, &x, "console payments");
}

/* ---- one payment ---- */

struct receipt_rows {
	int (*fn)(void *arg, const struct store_console_receipt *r);
	void *arg;
};

static int receipt_row(void *arg, PGresult *res)
{
	struct receipt_rows *x = arg;
	struct store_console_receipt rec;

	memset(&rec, 0, sizeof(rec));
	rec.id = store_pg_i64(res, 0, 0, 0);
	rec.event_id = store_pg_i64(res, 0, 1, 0);
	store_pg_copy(res, 0, 2, rec.source, sizeof(rec.source));
	store_pg_copy(res, 0, 3, rec.remote_addr, sizeof(rec.remote_addr));
	rec.received_at = store_pg_i64(res, 0, 4, 0);
	return x->fn(x->arg, &rec);
}

int store_pg_console_receipts(struct store *s, const char *payment_id, long limit,
			      int (*fn)(void *arg, const struct store_console_receipt *r),
			      void *arg)
{
	static const char sql[] =
		"SELECT r.id, r.event_id, r.source, r.remote_addr, r.received_at FROM receipts r "
		"WHERE r.event_id IN (" EVENTS_OF_PAYMENT("$1") ") ORDER BY r.id LIMIT $2";
	struct store_pg_num n_limit;
	struct receipt_rows x = {fn, arg};
	const char *v[2] = {payment_id, limit > 0 ? store_pg_num(&n_limit, limit) : NULL};

	return store_pg_stream(s, sql, 2, v, receipt_row, &x, "console receipts");
}

struct delivery_rows {
	int (*fn)(void *arg, const struct store_outbox_row *r);
	void *arg;
	const char *payment_id;
};

static int delivery_row(void *arg, PGresult *res)
{
	struct delivery_rows *x = arg;
	struct store_outbox_row row;

	memset(&row, 0, sizeof(row));
	row.id = store_pg_i64(res, 0, 0, 0);
	row.event_id = store_pg_i64(res, 0, 1, 0);
	store_pg_copy(res, 0, 2, row.sink, sizeof(row.sink));
	row.state = store_outbox_state_parse(PQgetvalue(res, 0, 3));
	row.attempts = (long)store_pg_i64(res, 0, 4, 0);
	row.next_attempt_at = store_pg_i64(res, 0, 5, 0);
	row.created_at = store_pg_i64(res, 0, 6, 0);
	row.delivered_at = store_pg_i64(res, 0, 7, 0);
	store_pg_copy(res, 0, 8, row.last_error, sizeof(row.last_error));
	row.replayed_at = store_pg_i64(res, 0, 9, 0);
	store_pg_copy(res, 0, 10, row.replayed_by, sizeof(row.replayed_by));
	snprintf(row.payment_id, sizeof(row.payment_id), "%s", x->payment_id);
	row.amount = -1;
	return x->fn(x->arg, &row);
}

int store_pg_console_deliveries(struct store *s, const char *payment_id,
				int (*fn)(void *arg, const struct store_outbox_row *r), void *arg)
{
	static const char sql[] =
		"SELECT o.id, o.event_id, o.sink, o.state, o.attempts, o.next_attempt_at, "
		"o.created_at, o.delivered_at, o.last_error, o.replayed_at, o.replayed_by "
		"FROM outbox o WHERE o.event_id IN (" EVENTS_OF_PAYMENT("$1") ") ORDER BY o.id";
	struct delivery_rows x = {fn, arg, payment_id};
	const char *v[1] = {payment_id};

	return store_pg_stream(s, sql, 1, v, delivery_row, &x, "console deliveries");
}

/* ---- events ---- */

int store_pg_console_last_event_id(struct store *s, int64_t *ret)
{
	PGresult *res;
	int r = store_pg_exec(s, "SELECT max(id) FROM events", 0, NULL, &res, "last event");

	if (r < 0)
		return r;
	*ret = store_pg_i64(res, 0, 0, 0);
	PQclear(res);
	return 0;
}
