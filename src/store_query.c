/* Read queries of the store module: payments, events with filters and cursor, counts, and the
 * hash-chain verifier. Used by the admin API, the reconciler and komerce-hookctl, each on its
 * own (usually read-only) handle. */
#include "store_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int store_payment_get(struct store *s, const char *payment_id, struct store_payment *ret)
{
	static const char sql[] =
		"SELECT " STORE_PAYMENT_COLUMNS " FROM payments WHERE payment_id = ?1";
	sqlite3_stmt *st;
	int rc, r = -ENOENT;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		store_set_err(s, "payment get");
		return -EIO;
	}
	sqlite3_bind_text(st, 1, payment_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		struct store_payment p;

		store_payment_read(st, &p);
		*ret = p;
		r = 0;
	} else if (rc != SQLITE_DONE) {
		store_set_err(s, "payment get");
		r = store_errno(rc);
	}
	sqlite3_finalize(st);
	return r;
}

int store_events_query(struct store *s, const struct store_event_filter *f,
		       int (*fn)(void *arg, const struct store_event *e), void *arg)
{
	char sql[1024];
	size_t o;
	sqlite3_stmt *st;
	int rc, r = 0;

	o = (size_t)snprintf(sql, sizeof(sql),
			     "SELECT e.id, e.payment_id, e.order_id, e.status, e.amount, e.source, "
			     "e.conflict, e.received_at, e.raw_json, e.hash, "
			     "(SELECT count(*) FROM receipts r WHERE r.event_id = e.id) "
			     "FROM events e WHERE %se.id > ?1",
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
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		store_set_err(s, "events query");
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
		const void *h;

		memset(&e, 0, sizeof(e));
		e.id = sqlite3_column_int64(st, 0);
		store_col_copy(st, 1, e.payment_id, sizeof(e.payment_id));
		store_col_copy(st, 2, e.order_id, sizeof(e.order_id));
		e.status = payment_status_parse((const char *)sqlite3_column_text(st, 3));
		e.amount = store_col_i64(st, 4, -1);
		store_col_copy(st, 5, e.source, sizeof(e.source));
		e.conflict = sqlite3_column_int(st, 6) != 0;
		e.received_at = sqlite3_column_int64(st, 7);
		e.raw_json = (char *)sqlite3_column_text(st, 8);
		h = sqlite3_column_blob(st, 9);
		if (h != NULL && sqlite3_column_bytes(st, 9) == STORE_HASH_LEN)
			memcpy(e.hash, h, STORE_HASH_LEN);
		e.receipts = (long)sqlite3_column_int64(st, 10);
		r = fn(arg, &e);
		if (r != 0)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE) {
		store_set_err(s, "events query");
		r = store_errno(rc);
	}
	sqlite3_finalize(st);
	return r;
}

int store_count(struct store *s, const char *table, int64_t *ret)
{
	static const char *const allowed[] = {"events", "payments", "receipts", "outbox"};
	char sql[64];
	sqlite3_stmt *st;
	int rc, r = 0;
	bool ok = false;

	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
		ok |= strcmp(table, allowed[i]) == 0;
	if (!ok)
		return -EINVAL;
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		store_set_err(s, "count");
		return -EIO;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	else
		r = store_errno_or_eio(rc);
	sqlite3_finalize(st);
	return r;
}

int store_verify(struct store *s, int64_t *ret_checked, int64_t *ret_bad_id, char *why,
		 size_t why_len)
{
	static const char sql[] = "SELECT id, payment_id, order_id, status, amount, source, "
				  "conflict, dedupe_key, raw_json, received_at, prev_hash, hash "
				  "FROM events ORDER BY id";
	uint8_t prev[STORE_HASH_LEN] = {0}, h[STORE_HASH_LEN];
	int64_t checked = 0, expect_id = 1;
	sqlite3_stmt *st;
	int rc, r = 0;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		store_set_err(s, "verify");
		return -EIO;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(st, 0);
		const void *ph = sqlite3_column_blob(st, 10), *hh = sqlite3_column_blob(st, 11);

		if (id != expect_id) {
			snprintf(why, why_len, "id %lld follows %lld: %s", (long long)id,
				 (long long)(expect_id - 1),
				 id > expect_id ? "rows missing (deleted)" : "ids out of order");
			*ret_bad_id = id;
			r = -EBADMSG;
			break;
		}
		if (ph == NULL || sqlite3_column_bytes(st, 10) != STORE_HASH_LEN ||
		    memcmp(ph, prev, STORE_HASH_LEN) != 0) {
			snprintf(why, why_len, "prev_hash does not match the hash of event %lld",
				 (long long)(id - 1));
			*ret_bad_id = id;
			r = -EBADMSG;
			break;
		}
		store_event_hash(
			prev, id, (const char *)sqlite3_column_text(st, 1),
			(const char *)sqlite3_column_text(st, 2),
			(const char *)sqlite3_column_text(st, 3), store_col_i64(st, 4, -1),
			(const char *)sqlite3_column_text(st, 5), sqlite3_column_int(st, 6) != 0,
			(const char *)sqlite3_column_text(st, 7),
			(const char *)sqlite3_column_text(st, 8),
			(size_t)sqlite3_column_bytes(st, 8), sqlite3_column_int64(st, 9), h);
		if (hh == NULL || sqlite3_column_bytes(st, 11) != STORE_HASH_LEN ||
		    memcmp(hh, h, STORE_HASH_LEN) != 0) {
			snprintf(why, why_len, "content does not match its hash (row was altered)");
			*ret_bad_id = id;
			r = -EBADMSG;
			break;
		}
		memcpy(prev, h, STORE_HASH_LEN);
		checked++;
		expect_id++;
	}
	if (r == 0 && rc != SQLITE_DONE) {
		store_set_err(s, "verify");
		r = store_errno(rc);
	}
	sqlite3_finalize(st);
	*ret_checked = checked;
	return r;
}
