/* The PostgreSQL backend's event and track requests, on the writer thread inside its
 * group-commit transaction (chain lock held): the same decisions as the SQLite backend
 * (store_event_decide, the dedupe keys, store_event_hash_marked), in two round trips per event:
 * one lookup of the payment and of every key the fact may have (or none, when the batch's
 * read-ahead has it), then one statement that appends the event and writes the payment (or
 * holds a PAID callback for confirmation), the outbox rows and the receipt (or, for a fact
 * already stored, the receipt alone). Prepared once per connection. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

void store_pg_fact_keys(const struct event *ev, char keys[STORE_PG_KEYS][STORE_PG_KEY_MAX])
{
	const char *status = payment_status_name(ev->status);

	store_dedupe_key(ev->payment_id, status, false, ev->amount, keys[STORE_PG_KEY_AGREE],
			 STORE_PG_KEY_MAX);
	store_dedupe_key(ev->payment_id, status, true, ev->amount, keys[STORE_PG_KEY_CONTRA],
			 STORE_PG_KEY_MAX);
	store_dedupe_key_marked(ev->payment_id, status, STORE_MARK_HELD, ev->amount, 0,
				keys[STORE_PG_KEY_HELD], STORE_PG_KEY_MAX);
}

/* The sinks that get an outbox row, as a text[] literal: every sink, or for a conflict the
 * sinks that asked for conflicts, or none for a held callback. Sink names are letters,
 * digits, '-' and '_' (config). */
static void sink_array(const struct store *s, const struct store_event_decision *d, char *out,
		       size_t n)
{
	size_t o = 0;

	o += (size_t)snprintf(out + o, n - o, "{");
	for (size_t i = 0; i < s->opts.n_sinks && o < n && !d->hold; i++) {
		if (d->conflict && !s->opts.sinks[i].conflicts)
			continue;
		o += (size_t)snprintf(out + o, n - o, "%s%s", o > 1 ? "," : "",
				      s->opts.sinks[i].name);
	}
	if (o < n)
		snprintf(out + o, n - o, "}");
}

/* The payment part of a lookup row (columns 0-4). */
static void read_payment(PGresult *res, int row, struct store_event_payment *cur)
{
	memset(cur, 0, sizeof(*cur));
	cur->status = PAYMENT_UNKNOWN;
	cur->amount = cur->held_amount = -1;
	if (PQntuples(res) <= row || PQgetisnull(res, row, 0))
		return;
	cur->known = true;
	cur->status = payment_status_parse(PQgetvalue(res, row, 0));
	cur->amount = store_pg_i64(res, row, 1, -1);
	cur->confirmation =
		store_confirmation_parse(PQgetisnull(res, row, 2) ? NULL : PQgetvalue(res, row, 2));
	cur->held_event_id = store_pg_i64(res, row, 3, 0);
	cur->held_amount = store_pg_i64(res, row, 4, -1);
}

/* An event row (id, conflict, confirmation) at column col. */
static void read_dup(PGresult *res, int row, int col, struct store_pg_dup *dup)
{
	dup->id = store_pg_i64(res, row, col, 0);
	dup->conflict = store_pg_bool(res, row, col + 1);
	dup->held = !PQgetisnull(res, row, col + 2) &&
		    store_event_mark_parse(PQgetvalue(res, row, col + 2)) == STORE_MARK_HELD;
}

void store_pg_read_seen(PGresult *res, int row, struct store_pg_seen *seen)
{
	int64_t k = store_pg_i64(res, row, 5, -1);

	read_payment(res, row, &seen->cur); /* the same on each row of one request */
	if (k >= 0 && k < STORE_PG_KEYS)
		read_dup(res, row, 6, &seen->dup[k]);
}

static int lookup(struct store *s, const struct event *ev, struct store_pg_seen *ret)
{
	char keys[STORE_PG_KEYS][STORE_PG_KEY_MAX];
	const char *v[4] = {ev->payment_id, keys[0], keys[1], keys[2]};
	PGresult *res;
	int err;

	store_pg_fact_keys(ev, keys);
	err = store_pg_exec_stmt(s, PG_EVENT_LOOKUP, 4, v, NULL, NULL, false, &res);
	if (err < 0)
		return err;
	memset(ret, 0, sizeof(*ret));
	read_payment(res, 0, &ret->cur);
	for (int i = 0; i < PQntuples(res); i++)
		store_pg_read_seen(res, i, ret);
	PQclear(res);
	return 0;
}

int store_pg_payment_state(struct store *s, const char *payment_id, struct store_event_payment *ret)
{
	static const char sql[] = "SELECT p.status, p.amount, p.confirmation, p.held_event_id, "
				  "(SELECT e.amount FROM events e WHERE e.id = p.held_event_id), "
				  "p.confirmation_at FROM payments p WHERE payment_id = $1";
	const char *v[1] = {payment_id};
	PGresult *res;
	int err = store_pg_exec(s, sql, 1, v, &res, "payment lookup");

	if (err < 0)
		return err;
	read_payment(res, 0, ret);
	if (ret->known)
		ret->confirmation_at = store_pg_i64(res, 0, 5, 0);
	PQclear(res);
	return 0;
}

/* The event stored under d->key, if any. */
static int dup_by_key(struct store *s, const struct store_event_decision *d,
		      struct store_pg_dup *ret)
{
	const char *v[1] = {d->key};
	PGresult *res;
	int err = store_pg_exec_stmt(s, PG_EVENT_BY_KEY, 1, v, NULL, NULL, false, &res);

	if (err < 0)
		return err;
	memset(ret, 0, sizeof(*ret));
	if (PQntuples(res) > 0)
		read_dup(res, 0, 0, ret);
	PQclear(res);
	return 0;
}

/* The same fact stored before: one more receipt; a callback also marks the payment seen. */
static int absorb_duplicate(struct store *s, const struct event *ev, const struct store_pg_dup *dup,
			    int64_t now, bool last, struct store_pg_fact *ret)
{
	struct store_pg_num id, at;
	const char *v[7] = {
		store_pg_num(&id, dup->id),
		event_source_name(ev->source),
		store_pg_text_or_null(ev->remote_addr),
		store_pg_text_or_null(s->opts.instance),
		store_pg_num(&at, now),
		ev->payment_id,
		ev->source == EVENT_SOURCE_CALLBACK ? "t" : "f",
	};
	int err = store_pg_exec_stmt(s, PG_EVENT_DUPLICATE, 7, v, NULL, NULL, last, NULL);

	if (err < 0)
		return err;
	ret->event_id = dup->id;
	ret->conflict = dup->conflict;
	ret->held = dup->held;
	ret->duplicate = true;
	return 0;
}

/* Parameters of both insert statements. */
struct insert {
	struct store_pg_num id, amount, now, exp, seen, next, held, pay_amount;
	char sinks[STORE_MAX_SINKS * (STORE_SINK_NAME_MAX + 1) + 4];
	const char *v[27];
	int lens[27], fmts[27];
};

/* $1-$22: the event (hashed into hash), its outbox rows and receipt, the fields any fact may
 * fill in the payment, the event's mark. 0, or -ENOMEM (s->err set). */
static int event_params(struct store *s, const struct event *ev,
			const struct store_event_decision *d, int64_t id, int64_t now,
			uint8_t hash[STORE_HASH_LEN], struct insert *x)
{
	struct store_pg *q = store_pg_of(s);
	const char *status = payment_status_name(ev->status);
	const char *source = event_source_name(ev->source);
	const char *mark = store_event_mark_name(d->mark);

	if (store_event_hash_marked(q->tx_last_hash, id, ev->payment_id, ev->order_id, status,
				    ev->amount, source, d->conflict, d->key, ev->raw, ev->raw_len,
				    now, mark, d->held_event_id, hash) < 0) {
		snprintf(s->err, sizeof(s->err), "event hash: out of memory");
		return -ENOMEM;
	}
	sink_array(s, d, x->sinks, sizeof(x->sinks));
	memset(x->lens, 0, sizeof(x->lens));
	memset(x->fmts, 0, sizeof(x->fmts));
	x->v[0] = store_pg_num(&x->id, id);
	x->v[1] = ev->payment_id;
	x->v[2] = store_pg_text_or_null(ev->order_id);
	x->v[3] = status;
	x->v[4] = store_pg_num_or_null(&x->amount, ev->amount, -1);
	x->v[5] = source;
	x->v[6] = d->conflict ? "t" : "f";
	x->v[7] = d->key;
	/* raw_json, prev_hash and hash in binary form: no copy, no escaping */
	x->v[8] = ev->raw != NULL ? ev->raw : "";
	x->lens[8] = ev->raw != NULL ? (int)ev->raw_len : 0;
	x->v[9] = store_pg_num(&x->now, now);
	x->v[10] = (const char *)q->tx_last_hash;
	x->v[11] = (const char *)hash;
	x->lens[10] = x->lens[11] = STORE_HASH_LEN;
	x->fmts[8] = x->fmts[10] = x->fmts[11] = 1;
	x->v[12] = x->sinks;
	x->v[13] = store_pg_text_or_null(ev->remote_addr);
	x->v[14] = store_pg_text_or_null(s->opts.instance);
	/* a held claim fills nothing in the payment */
	x->v[15] = d->hold ? NULL : store_pg_text_or_null(ev->payment_type);
	x->v[16] = d->hold ? NULL : store_pg_text_or_null(ev->channel_code);
	x->v[17] = d->hold ? NULL : store_pg_num_or_null(&x->exp, ev->expires_at, 0);
	x->v[18] = ev->source == EVENT_SOURCE_CALLBACK ? store_pg_num(&x->seen, now) : NULL;
	x->v[20] = mark;
	x->v[21] = mark != NULL ? store_pg_num_or_null(&x->held, d->held_event_id, 0) : NULL;
	x->v[22] = d->hold ? "t" : "f";
	return 0;
}

/* A pending confirmation that the payment's reaching a terminal status some other way (a
 * cancel through the admin API) leaves nothing to wait for: its detail, or NULL. */
static const char *settle_detail(const struct event *ev, const struct store_event_decision *d,
				 const struct store_event_payment *cur, char *buf, size_t n)
{
	if (!d->apply || !d->terminal || cur->confirmation != STORE_CONFIRM_PENDING ||
	    d->mark == STORE_MARK_CONFIRMED)
		return NULL;
	snprintf(buf, n, "the payment became %s (%s) before a status call",
		 payment_status_name(ev->status), event_source_name(ev->source));
	return buf;
}

/* Appends the new fact as event id (head + 1) with its payment, outbox and receipt. */
static int insert_new(struct store *s, const struct event *ev, const struct store_event_decision *d,
		      const struct store_event_payment *cur, int64_t id, int64_t now, bool last,
		      uint8_t hash[STORE_HASH_LEN])
{
	char detail[STORE_DETAIL_MAX];
	struct insert x;

	if (event_params(s, ev, d, id, now, hash, &x) < 0)
		return -ENOMEM;
	if (!d->known) {
		x.v[19] = d->hold ? store_pg_num(&x.next, now)
			  : !d->terminal && s->opts.reconcile
				  ? store_pg_num(&x.next, now + s->opts.grace_seconds * 1000)
				  : NULL;
		x.v[23] = d->hold ? NULL : store_pg_text_or_null(ev->order_id);
		x.v[24] = d->hold ? NULL : store_pg_num_or_null(&x.pay_amount, ev->amount, -1);
		x.v[25] = payment_status_name(d->hold ? PAYMENT_PENDING : ev->status);
		return store_pg_exec_stmt(s, PG_EVENT_NEW_PAYMENT, 26, x.v, x.lens, x.fmts, last,
					  NULL);
	}
	x.v[19] = d->apply && d->terminal ? "t" : "f";
	/* the state machine's update, unless the fact is held or the marker of an
	 * unconfirmed one */
	x.v[23] = d->hold || d->mark == STORE_MARK_UNCONFIRMED ? "f" : "t";
	x.v[24] = payment_status_name(d->apply ? ev->status : cur->status);
	x.v[25] = store_pg_num_or_null(&x.pay_amount, d->conflict ? -1 : ev->amount, -1);
	x.v[26] = settle_detail(ev, d, cur, detail, sizeof(detail));
	return store_pg_exec_stmt(s, PG_EVENT_KNOWN_PAYMENT, 27, x.v, x.lens, x.fmts, last, NULL);
}

int store_pg_store_fact(struct store *s, const struct event *ev,
			const struct store_event_decision *d, const struct store_event_payment *cur,
			const struct store_pg_dup *dup, int64_t now, bool last,
			struct store_pg_fact *ret)
{
	struct store_pg *q = store_pg_of(s);
	uint8_t hash[STORE_HASH_LEN];
	struct store_pg_dup found;
	int64_t id;
	int err;

	memset(ret, 0, sizeof(*ret));
	ret->conflict = d->conflict;
	if (dup == NULL) {
		err = dup_by_key(s, d, &found);
		if (err < 0)
			return err;
		dup = &found;
	}
	if (dup->id > 0)
		return absorb_duplicate(s, ev, dup, now, last, ret);
	id = q->tx_last_id + 1;
	err = insert_new(s, ev, d, cur, id, now, last, hash);
	if (err < 0)
		return err;
	store_pg_touch(s, ev->payment_id);
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

int store_pg_set_confirmation(struct store *s, const char *payment_id, enum store_confirmation c,
			      const char *detail, int64_t now)
{
	static const char sql[] =
		"UPDATE payments SET confirmation = $2, confirmation_detail = $3, "
		"confirmation_at = COALESCE($4::bigint, confirmation_at) WHERE payment_id = $1";
	struct store_pg_num n_now;
	const char *v[4] = {payment_id, store_confirmation_name(c), store_pg_text_or_null(detail),
			    now != 0 ? store_pg_num(&n_now, now) : NULL};
	PGresult *res;
	int err = store_pg_exec(s, sql, 4, v, &res, "payment confirmation");

	if (err < 0)
		return err;
	PQclear(res);
	store_pg_touch(s, payment_id);
	return 0;
}

/* The key d chose among those a lookup read. */
static enum store_pg_key chosen_key(const struct store_event_decision *d)
{
	if (d->hold)
		return STORE_PG_KEY_HELD;
	return d->conflict ? STORE_PG_KEY_CONTRA : STORE_PG_KEY_AGREE;
}

int store_pg_apply_event(struct store *s, struct store_req *r)
{
	struct store_pg *q = store_pg_of(s);
	const struct event *ev = &r->ev;
	int64_t now = r->received_at != 0 ? r->received_at : util_now_ms();
	const struct store_pg_prefetch *p = store_pg_prefetched(s, r);
	struct store_event_decision d;
	struct store_pg_seen seen;
	struct store_pg_fact f;
	int err;

	err = store_pg_replan(s, q->tx_last_id);
	if (err == 0 && p != NULL)
		seen = p->seen;
	else if (err == 0)
		err = lookup(s, ev, &seen);
	if (err < 0)
		return err;
	store_event_decide(ev, &seen.cur, s->opts.confirm_paid, &d);
	err = store_pg_store_fact(s, ev, &d, &seen.cur, &seen.dup[chosen_key(&d)], now, true, &f);
	if (err < 0)
		return err;
	r->event_id = f.event_id;
	r->duplicate = f.duplicate;
	r->conflict = f.conflict;
	r->held = f.held;
	r->next_poll_at = f.next_poll_at;
	return 0;
}

int store_pg_apply_track(struct store *s, struct store_req *r)
{
	static const char sql[] =
		"INSERT INTO payments (payment_id, order_id, payment_type, channel_code, amount, "
		"status, expires_at, created_at, updated_at, next_poll_at, origin) "
		"VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, $7, $8, 'track') "
		"ON CONFLICT (payment_id) DO NOTHING";
	const struct event *ev = &r->ev;
	int64_t now = r->received_at != 0 ? r->received_at : util_now_ms();
	struct store_pg_num n_amount, n_exp, n_now, n_next;
	const char *v[8];
	PGresult *res;
	int err;

	if (ev->payment_id[0] == '\0')
		return -EINVAL;
	v[0] = ev->payment_id;
	v[1] = store_pg_text_or_null(ev->order_id);
	v[2] = store_pg_text_or_null(ev->payment_type);
	v[3] = store_pg_text_or_null(ev->channel_code);
	v[4] = store_pg_num_or_null(&n_amount, ev->amount, -1);
	v[5] = store_pg_num_or_null(&n_exp, ev->expires_at, 0);
	v[6] = store_pg_num(&n_now, now);
	v[7] = s->opts.reconcile ? store_pg_num(&n_next, now + s->opts.grace_seconds * 1000) : NULL;
	err = store_pg_exec(s, sql, 8, v, &res, "payment track");
	if (err < 0)
		return err == -EEXIST ? -EINVAL : err;
	store_pg_touch(s, ev->payment_id);
	err = store_pg_changed(res) == 0 ? -EEXIST : 0;
	PQclear(res);
	if (err == 0 && s->opts.reconcile)
		r->next_poll_at = now + (int64_t)s->opts.grace_seconds * 1000;
	return err;
}
