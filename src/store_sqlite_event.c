/* The SQLite backend's event and track requests, on the writer thread inside its group-commit
 * transaction: dedupe by key, append to the hash chain, move the payment through the state
 * machine, one outbox row per sink and one receipt per delivery. The hot path of ingest: every
 * statement is a cached one (store_sqlite_stmt). */
#include "store_sqlite_int.h"

#include <errno.h>
#include <string.h>

#include "util.h"

static int insert_receipt(struct store *s, int64_t event_id, const struct event *ev, int64_t now)
{
	sqlite3_stmt *st = store_sqlite_stmt(s, SQ_RECEIPT_INSERT);

	if (st == NULL)
		return -EIO;
	sqlite3_bind_int64(st, 1, event_id);
	sqlite3_bind_text(st, 2, event_source_name(ev->source), -1, SQLITE_STATIC);
	store_sqlite_bind_text_or_null(st, 3, ev->remote_addr);
	sqlite3_bind_int64(st, 4, now);
	return store_sqlite_step_done(s, st);
}

/* Looks up the payment: 0 and its status/amount, -ENOENT if unknown, or -errno. */
static int payment_lookup(struct store *s, const char *payment_id, enum payment_status *ret_status,
			  long long *ret_amount)
{
	sqlite3_stmt *st = store_sqlite_stmt(s, SQ_PAYMENT_GET);
	int rc, r = -ENOENT;

	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, payment_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*ret_status = payment_status_parse((const char *)sqlite3_column_text(st, 0));
		*ret_amount = store_sqlite_col_i64(st, 1, -1);
		r = 0;
	} else if (rc != SQLITE_DONE) {
		store_sqlite_set_err(s, "payment lookup");
		r = store_sqlite_errno_or_eio(rc);
	}
	sqlite3_reset(st);
	return r;
}

/* The same fact stored before: 1 with its id and flag in r (and one more receipt written),
 * 0 when new, or -errno. */
static int absorb_duplicate(struct store *s, struct store_req *r, const char *key, int64_t now)
{
	const struct event *ev = &r->ev;
	sqlite3_stmt *st = store_sqlite_stmt(s, SQ_EVENT_BY_KEY);
	int rc, err;

	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		if (rc == SQLITE_DONE)
			return 0;
		store_sqlite_set_err(s, "dedupe lookup");
		return store_sqlite_errno_or_eio(rc);
	}
	r->event_id = sqlite3_column_int64(st, 0);
	r->conflict = sqlite3_column_int(st, 1) != 0;
	r->duplicate = true;
	sqlite3_reset(st);
	if (ev->source == EVENT_SOURCE_CALLBACK) {
		st = store_sqlite_stmt(s, SQ_PAYMENT_SEEN);
		if (st == NULL)
			return -EIO;
		sqlite3_bind_text(st, 1, ev->payment_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, now);
		err = store_sqlite_step_done(s, st);
		if (err < 0)
			return err;
	}
	err = insert_receipt(s, r->event_id, ev, now);
	return err < 0 ? err : 1;
}

/* Appends the event as id = head + 1 with its chain hash into hash. */
static int insert_event(struct store *s, const struct event *ev,
			const struct store_event_decision *d, int64_t id, int64_t now,
			uint8_t hash[STORE_HASH_LEN])
{
	struct store_sqlite *q = store_sqlite_of(s);
	const char *status = payment_status_name(ev->status);
	const char *source = event_source_name(ev->source);
	sqlite3_stmt *st;

	store_event_hash(q->tx_last_hash, id, ev->payment_id, ev->order_id, status, ev->amount,
			 source, d->conflict, d->key, ev->raw, ev->raw_len, now, hash);
	st = store_sqlite_stmt(s, SQ_EVENT_INSERT);
	if (st == NULL)
		return -EIO;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, ev->payment_id, -1, SQLITE_STATIC);
	store_sqlite_bind_text_or_null(st, 3, ev->order_id);
	sqlite3_bind_text(st, 4, status, -1, SQLITE_STATIC);
	store_sqlite_bind_int_or_null(st, 5, ev->amount, -1);
	sqlite3_bind_text(st, 6, source, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 7, d->conflict ? 1 : 0);
	sqlite3_bind_text(st, 8, d->key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 9, ev->raw != NULL ? ev->raw : "", (int)ev->raw_len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 10, now);
	sqlite3_bind_blob(st, 11, q->tx_last_hash, STORE_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 12, hash, STORE_HASH_LEN, SQLITE_STATIC);
	return store_sqlite_step_done(s, st);
}

static int insert_payment(struct store *s, const struct event *ev,
			  const struct store_event_decision *d, int64_t now)
{
	const char *source = event_source_name(ev->source);
	sqlite3_stmt *st = store_sqlite_stmt(s, SQ_PAYMENT_INSERT);

	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, ev->payment_id, -1, SQLITE_STATIC);
	store_sqlite_bind_text_or_null(st, 2, ev->order_id);
	store_sqlite_bind_text_or_null(st, 3, ev->payment_type);
	store_sqlite_bind_text_or_null(st, 4, ev->channel_code);
	store_sqlite_bind_int_or_null(st, 5, ev->amount, -1);
	sqlite3_bind_text(st, 6, payment_status_name(ev->status), -1, SQLITE_STATIC);
	store_sqlite_bind_int_or_null(st, 7, ev->expires_at, 0);
	sqlite3_bind_int64(st, 8, now);
	store_sqlite_bind_int_or_null(st, 9, ev->source == EVENT_SOURCE_CALLBACK ? now : 0, 0);
	if (!d->terminal && s->opts.reconcile)
		sqlite3_bind_int64(st, 10, now + s->opts.grace_seconds * 1000);
	else
		sqlite3_bind_null(st, 10);
	sqlite3_bind_text(st, 11, source, -1, SQLITE_STATIC);
	return store_sqlite_step_done(s, st);
}

/* A conflict never moves the payment (status, amount, watch schedule); any fact may fill in
 * fields that were unknown. */
static int update_payment(struct store *s, const struct event *ev,
			  const struct store_event_decision *d, enum payment_status cur,
			  int64_t now)
{
	sqlite3_stmt *st = store_sqlite_stmt(s, SQ_PAYMENT_UPDATE);

	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, ev->payment_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, payment_status_name(d->apply ? ev->status : cur), -1,
			  SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now);
	store_sqlite_bind_text_or_null(st, 4, ev->order_id);
	store_sqlite_bind_text_or_null(st, 5, ev->payment_type);
	store_sqlite_bind_text_or_null(st, 6, ev->channel_code);
	store_sqlite_bind_int_or_null(st, 7, d->conflict ? -1 : ev->amount, -1);
	store_sqlite_bind_int_or_null(st, 8, ev->source == EVENT_SOURCE_CALLBACK ? now : 0, 0);
	sqlite3_bind_int(st, 9, d->apply && d->terminal);
	store_sqlite_bind_int_or_null(st, 10, ev->expires_at, 0);
	return store_sqlite_step_done(s, st);
}

/* One outbox row per sink. A conflict goes only to sinks that asked for conflicts
 * (sink.NAME.conflicts): a consumer that reads "status" alone never sees a contradicted PAID. */
static int insert_outbox(struct store *s, int64_t id, const char *payment_id, bool conflict,
			 int64_t now)
{
	for (size_t i = 0; i < s->opts.n_sinks; i++) {
		sqlite3_stmt *st;
		int err;

		if (conflict && !s->opts.sinks[i].conflicts)
			continue;
		st = store_sqlite_stmt(s, SQ_OUTBOX_INSERT);
		if (st == NULL)
			return -EIO;
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_text(st, 2, payment_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, s->opts.sinks[i].name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, now);
		err = store_sqlite_step_done(s, st);
		if (err < 0)
			return err;
	}
	return 0;
}

int store_sqlite_apply_event(struct store *s, struct store_req *r)
{
	struct store_sqlite *q = store_sqlite_of(s);
	const struct event *ev = &r->ev;
	int64_t now = r->received_at != 0 ? r->received_at : util_now_ms();
	enum payment_status cur = PAYMENT_UNKNOWN;
	struct store_event_decision d;
	uint8_t hash[STORE_HASH_LEN];
	long long cur_amount = -1;
	int64_t id;
	int err;

	err = payment_lookup(s, ev->payment_id, &cur, &cur_amount);
	if (err < 0 && err != -ENOENT)
		return err;
	store_event_decide(ev, err == 0, cur, cur_amount, &d);
	r->conflict = d.conflict;
	err = absorb_duplicate(s, r, d.key, now);
	if (err != 0)
		return err < 0 ? err : 0;

	id = q->tx_last_id + 1;
	err = insert_event(s, ev, &d, id, now, hash);
	if (err == 0)
		err = d.known ? update_payment(s, ev, &d, cur, now)
			      : insert_payment(s, ev, &d, now);
	if (err == 0)
		err = insert_outbox(s, id, ev->payment_id, d.conflict, now);
	if (err == 0)
		err = insert_receipt(s, id, ev, now);
	if (err < 0)
		return err;
	q->tx_last_id = id;
	memcpy(q->tx_last_hash, hash, STORE_HASH_LEN);
	r->event_id = id;
	r->duplicate = false;
	return 0;
}

/* A plain prepare per request: tracking is rare, and the statement cache belongs to the
 * ingest path. */
int store_sqlite_apply_track(struct store *s, struct store_req *r)
{
	static const char sql[] =
		"INSERT INTO payments (payment_id, order_id, payment_type, channel_code, amount, "
		"status, expires_at, created_at, updated_at, next_poll_at, origin) "
		"VALUES (?1, ?2, ?3, ?4, ?5, 'PENDING', ?6, ?7, ?7, ?8, 'track') "
		"ON CONFLICT (payment_id) DO NOTHING";
	const struct event *ev = &r->ev;
	int64_t now = r->received_at != 0 ? r->received_at : util_now_ms();
	sqlite3_stmt *st;
	int rc, err;

	if (ev->payment_id[0] == '\0')
		return -EINVAL;
	err = store_sqlite_prepare(s, sql, &st, "payment track");
	if (err < 0)
		return err;
	sqlite3_bind_text(st, 1, ev->payment_id, -1, SQLITE_STATIC);
	store_sqlite_bind_text_or_null(st, 2, ev->order_id);
	store_sqlite_bind_text_or_null(st, 3, ev->payment_type);
	store_sqlite_bind_text_or_null(st, 4, ev->channel_code);
	store_sqlite_bind_int_or_null(st, 5, ev->amount, -1);
	store_sqlite_bind_int_or_null(st, 6, ev->expires_at, 0);
	sqlite3_bind_int64(st, 7, now);
	if (s->opts.reconcile)
		sqlite3_bind_int64(st, 8, now + (int64_t)s->opts.grace_seconds * 1000);
	else
		sqlite3_bind_null(st, 8);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		err = sqlite3_changes(store_sqlite_db(s)) == 0 ? -EEXIST : 0;
	} else {
		store_sqlite_set_err(s, "payment track");
		err = store_sqlite_errno_or_eio(rc);
		/* A CHECK failure maps to -EEXIST; it is bad input here. */
		if ((rc & 0xff) == SQLITE_CONSTRAINT)
			err = -EINVAL;
	}
	sqlite3_finalize(st);
	return err;
}
