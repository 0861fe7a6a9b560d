/* The SQLite backend's event and track requests, on the writer thread inside its group-commit
 * transaction: dedupe by key, append to the hash chain, move the payment through the state
 * machine (or hold a PAID callback for confirmation), one outbox row per sink and one receipt
 * per delivery. The hot path of ingest: every statement is a cached one (store_sqlite_stmt). */
#include "store_sqlite_int.h"

#include <errno.h>
#include <stdio.h>
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
	store_sqlite_bind_text_or_null(st, 5, s->opts.instance);
	return store_sqlite_step_done(s, st);
}

int store_sqlite_payment_state(struct store *s, const char *payment_id,
			       struct store_event_payment *ret)
{
	sqlite3_stmt *st = store_sqlite_stmt(s, SQ_PAYMENT_GET);
	int rc, r = 0;

	memset(ret, 0, sizeof(*ret));
	ret->status = PAYMENT_UNKNOWN;
	ret->amount = ret->held_amount = -1;
	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, payment_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		ret->known = true;
		ret->status = payment_status_parse((const char *)sqlite3_column_text(st, 0));
		ret->amount = store_sqlite_col_i64(st, 1, -1);
		ret->confirmation =
			store_confirmation_parse((const char *)sqlite3_column_text(st, 2));
		ret->held_event_id = store_sqlite_col_i64(st, 3, 0);
		ret->held_amount = store_sqlite_col_i64(st, 4, -1);
		ret->confirmation_at = store_sqlite_col_i64(st, 5, 0);
	} else if (rc != SQLITE_DONE) {
		store_sqlite_set_err(s, "payment lookup");
		r = store_sqlite_errno_or_eio(rc);
	}
	sqlite3_reset(st);
	return r;
}

/* The same fact stored before: 1 with its id and flags in ret (and one more receipt written),
 * 0 when new, or -errno. */
static int absorb_duplicate(struct store *s, const struct event *ev, const char *key, int64_t now,
			    struct store_sqlite_fact *ret)
{
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
	ret->event_id = sqlite3_column_int64(st, 0);
	ret->conflict = sqlite3_column_int(st, 1) != 0;
	ret->held =
		store_event_mark_parse((const char *)sqlite3_column_text(st, 2)) == STORE_MARK_HELD;
	ret->duplicate = true;
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
	err = insert_receipt(s, ret->event_id, ev, now);
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
	const char *mark = store_event_mark_name(d->mark);
	sqlite3_stmt *st;

	if (store_event_hash_marked(q->tx_last_hash, id, ev->payment_id, ev->order_id, status,
				    ev->amount, source, d->conflict, d->key, ev->raw, ev->raw_len,
				    now, mark, d->held_event_id, hash) < 0) {
		snprintf(s->err, sizeof(s->err), "event hash: out of memory");
		return -ENOMEM;
	}
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
	if (mark != NULL) {
		sqlite3_bind_text(st, 13, mark, -1, SQLITE_STATIC);
		store_sqlite_bind_int_or_null(st, 14, d->held_event_id, 0);
	}
	return store_sqlite_step_done(s, st);
}

/* A new payment. A held PAID claim creates it PENDING with nothing else of the claim (not
 * even order or amount: a forged amount would make the true PAID a conflict). */
static int insert_payment(struct store *s, const struct event *ev,
			  const struct store_event_decision *d, int64_t now)
{
	const char *source = event_source_name(ev->source);
	sqlite3_stmt *st = store_sqlite_stmt(s, SQ_PAYMENT_INSERT);

	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, ev->payment_id, -1, SQLITE_STATIC);
	if (!d->hold) {
		store_sqlite_bind_text_or_null(st, 2, ev->order_id);
		store_sqlite_bind_text_or_null(st, 3, ev->payment_type);
		store_sqlite_bind_text_or_null(st, 4, ev->channel_code);
		store_sqlite_bind_int_or_null(st, 5, ev->amount, -1);
		store_sqlite_bind_int_or_null(st, 7, ev->expires_at, 0);
	}
	sqlite3_bind_text(st, 6, payment_status_name(d->hold ? PAYMENT_PENDING : ev->status), -1,
			  SQLITE_STATIC);
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

static int hold_payment(struct store *s, const char *payment_id, int64_t event_id, int64_t now)
{
	sqlite3_stmt *st = store_sqlite_stmt(s, SQ_PAYMENT_HOLD);

	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, payment_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, event_id);
	sqlite3_bind_int64(st, 3, now);
	return store_sqlite_step_done(s, st);
}

int store_sqlite_set_confirmation(struct store *s, const char *payment_id,
				  enum store_confirmation c, const char *detail, int64_t now)
{
	sqlite3_stmt *st = store_sqlite_stmt(s, SQ_PAYMENT_CONFIRM);

	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, payment_id, -1, SQLITE_STATIC);
	if (store_confirmation_name(c) != NULL)
		sqlite3_bind_text(st, 2, store_confirmation_name(c), -1, SQLITE_STATIC);
	store_sqlite_bind_text_or_null(st, 3, detail);
	store_sqlite_bind_int_or_null(st, 4, now, 0);
	return store_sqlite_step_done(s, st);
}

/* A confirmation still pending when the payment reaches a terminal status some other way (a
 * cancel through the admin API) has nothing left to wait for. */
static int settle_confirmation(struct store *s, const struct event *ev,
			       const struct store_event_decision *d,
			       const struct store_event_payment *cur, int64_t now)
{
	char detail[STORE_DETAIL_MAX];

	if (!d->apply || !d->terminal || cur->confirmation != STORE_CONFIRM_PENDING ||
	    d->mark == STORE_MARK_CONFIRMED)
		return 0;
	snprintf(detail, sizeof(detail), "the payment became %s (%s) before a status call",
		 payment_status_name(ev->status), event_source_name(ev->source));
	return store_sqlite_set_confirmation(s, ev->payment_id, STORE_CONFIRM_UNCONFIRMED, detail,
					     now);
}

/* One outbox row per sink. A conflict goes only to sinks that asked for conflicts
 * (sink.NAME.conflicts): a consumer that reads "status" alone never sees a contradicted PAID.
 * A held callback goes nowhere. */
static int insert_outbox(struct store *s, int64_t id, const char *payment_id,
			 const struct store_event_decision *d, int64_t now)
{
	for (size_t i = 0; i < s->opts.n_sinks && !d->hold; i++) {
		sqlite3_stmt *st;
		int err;

		if (d->conflict && !s->opts.sinks[i].conflicts)
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

/* The payment's side of a new fact. */
static int payment_side(struct store *s, const struct event *ev,
			const struct store_event_decision *d, const struct store_event_payment *cur,
			int64_t id, int64_t now)
{
	int err;

	if (!d->known)
		err = insert_payment(s, ev, d, now);
	else if (d->hold || d->mark == STORE_MARK_UNCONFIRMED)
		err = 0;
	else
		err = update_payment(s, ev, d, cur->status, now);
	if (err == 0 && d->hold)
		err = hold_payment(s, ev->payment_id, id, now);
	if (err == 0)
		err = settle_confirmation(s, ev, d, cur, now);
	return err;
}

int store_sqlite_store_fact(struct store *s, const struct event *ev,
			    const struct store_event_decision *d,
			    const struct store_event_payment *cur, int64_t now,
			    struct store_sqlite_fact *ret)
{
	struct store_sqlite *q = store_sqlite_of(s);
	uint8_t hash[STORE_HASH_LEN];
	int64_t id;
	int err;

	memset(ret, 0, sizeof(*ret));
	ret->conflict = d->conflict;
	err = absorb_duplicate(s, ev, d->key, now, ret);
	if (err != 0)
		return err < 0 ? err : 0;

	id = q->tx_last_id + 1;
	err = insert_event(s, ev, d, id, now, hash);
	if (err == 0)
		err = payment_side(s, ev, d, cur, id, now);
	if (err == 0)
		err = insert_outbox(s, id, ev->payment_id, d, now);
	if (err == 0)
		err = insert_receipt(s, id, ev, now);
	if (err < 0)
		return err;
	q->tx_last_id = id;
	memcpy(q->tx_last_hash, hash, STORE_HASH_LEN);
	ret->event_id = id;
	ret->held = d->hold;
	if (d->hold)
		ret->next_poll_at = now;
	else if (!d->known && !d->terminal && s->opts.reconcile)
		ret->next_poll_at = now + s->opts.grace_seconds * 1000;
	return 0;
}

int store_sqlite_apply_event(struct store *s, struct store_req *r)
{
	const struct event *ev = &r->ev;
	int64_t now = r->received_at != 0 ? r->received_at : util_now_ms();
	struct store_event_payment cur;
	struct store_event_decision d;
	struct store_sqlite_fact f;
	int err;

	err = store_sqlite_payment_state(s, ev->payment_id, &cur);
	if (err < 0)
		return err;
	store_event_decide(ev, &cur, s->opts.confirm_paid, &d);
	err = store_sqlite_store_fact(s, ev, &d, &cur, now, &f);
	if (err < 0)
		return err;
	r->event_id = f.event_id;
	r->duplicate = f.duplicate;
	r->conflict = f.conflict;
	r->held = f.held;
	r->next_poll_at = f.next_poll_at;
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
		if (err == 0 && s->opts.reconcile)
			r->next_poll_at = now + (int64_t)s->opts.grace_seconds * 1000;
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
