/* The PostgreSQL backend's event and track requests, on the writer thread inside its
 * group-commit transaction (chain lock held): the same decisions as the SQLite backend
 * (store_event_decide, store_dedupe_key, store_event_hash), in two round trips per event: one
 * lookup of the payment and of both keys the fact may have, then one statement that appends
 * the event and writes the payment, the outbox rows and the receipt (or, for a fact already
 * stored, the receipt alone). Prepared once per connection. */
#include "store_pg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* The sinks that get an outbox row, as a text[] literal: every sink, or for a conflict the
 * sinks that asked for conflicts. Sink names are letters, digits, '-' and '_' (config). */
static void sink_array(const struct store *s, bool conflict, char *out, size_t n)
{
	size_t o = 0;

	o += (size_t)snprintf(out + o, n - o, "{");
	for (size_t i = 0; i < s->opts.n_sinks && o < n; i++) {
		if (conflict && !s->opts.sinks[i].conflicts)
			continue;
		o += (size_t)snprintf(out + o, n - o, "%s%s", o > 1 ? "," : "",
				      s->opts.sinks[i].name);
	}
	if (o < n)
		snprintf(out + o, n - o, "}");
}

struct lookup {
	bool known;
	enum payment_status cur;
	long long cur_amount;
	struct store_event_decision d;
	int64_t dup_id; /* 0: the fact is new */
	bool dup_conflict;
};

static int lookup(struct store *s, const struct event *ev, struct lookup *ret)
{
	const char *status = payment_status_name(ev->status);
	char agree[EVENT_ID_MAX + 48], contra[EVENT_ID_MAX + 48];
	const char *v[3] = {ev->payment_id, agree, contra};
	PGresult *res;
	int err;

	store_dedupe_key(ev->payment_id, status, false, ev->amount, agree, sizeof(agree));
	store_dedupe_key(ev->payment_id, status, true, ev->amount, contra, sizeof(contra));
	err = store_pg_exec_stmt(s, PG_EVENT_LOOKUP, 3, v, NULL, NULL, false, &res);
	if (err < 0)
		return err;
	memset(ret, 0, sizeof(*ret));
	ret->cur = PAYMENT_UNKNOWN;
	ret->cur_amount = -1;
	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
		ret->known = true;
		ret->cur = payment_status_parse(PQgetvalue(res, 0, 0));
		ret->cur_amount = store_pg_i64(res, 0, 1, -1);
	}
	store_event_decide(ev, ret->known, ret->cur, ret->cur_amount, &ret->d);
	for (int i = 0; i < PQntuples(res); i++) {
		if (!PQgetisnull(res, i, 2) && strcmp(PQgetvalue(res, i, 2), ret->d.key) == 0) {
			ret->dup_id = store_pg_i64(res, i, 3, 0);
			ret->dup_conflict = store_pg_bool(res, i, 4);
		}
	}
	PQclear(res);
	return 0;
}

/* The lookup from the batch's read-ahead: the same decision on the same data, no round trip. */
static void from_prefetch(const struct event *ev, const struct store_pg_prefetch *p,
			  struct lookup *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->known = p->known;
	ret->cur = p->known ? p->cur : PAYMENT_UNKNOWN;
	ret->cur_amount = p->known ? p->cur_amount : -1;
	store_event_decide(ev, ret->known, ret->cur, ret->cur_amount, &ret->d);
	ret->dup_id = ret->d.conflict ? p->contra_id : p->agree_id;
	ret->dup_conflict = ret->d.conflict ? p->contra_conflict : p->agree_conflict;
}

/* The same fact stored before: one more receipt; a callback also marks the payment seen. */
static int absorb_duplicate(struct store *s, struct store_req *r, const struct lookup *l,
			    int64_t now)
{
	struct store_pg_num id, at;
	const char *v[7] = {
		store_pg_num(&id, l->dup_id),
		event_source_name(r->ev.source),
		store_pg_text_or_null(r->ev.remote_addr),
		store_pg_text_or_null(s->opts.instance),
		store_pg_num(&at, now),
		r->ev.payment_id,
		r->ev.source == EVENT_SOURCE_CALLBACK ? "t" : "f",
	};
	int err = store_pg_exec_stmt(s, PG_EVENT_DUPLICATE, 7, v, NULL, NULL,
				     r->kind == STORE_REQ_EVENT, NULL);

	if (err < 0)
		return err;
	r->event_id = l->dup_id;
	r->conflict = l->dup_conflict;
	r->duplicate = true;
	return 0;
}

/* Appends the new fact as event id (head + 1) with its payment, outbox and receipt. */
/* last: this is the request's last statement (an event request, not a reconcile update's). */
static int insert_new(struct store *s, const struct event *ev, const struct lookup *l, int64_t id,
		      int64_t now, bool last, uint8_t hash[STORE_HASH_LEN])
{
	struct store_pg *q = store_pg_of(s);
	const struct store_event_decision *d = &l->d;
	const char *status = payment_status_name(ev->status);
	const char *source = event_source_name(ev->source);
	struct store_pg_num n_id, n_amount, n_now, n_exp, n_seen, n_next, n_fill;
	char sinks[STORE_MAX_SINKS * (STORE_SINK_NAME_MAX + 1) + 4];
	const char *v[22];
	int lens[22] = {0}, fmts[22] = {0};
	bool callback = ev->source == EVENT_SOURCE_CALLBACK;

	store_event_hash(q->tx_last_hash, id, ev->payment_id, ev->order_id, status, ev->amount,
			 source, d->conflict, d->key, ev->raw, ev->raw_len, now, hash);
	sink_array(s, d->conflict, sinks, sizeof(sinks));
	v[0] = store_pg_num(&n_id, id);
	v[1] = ev->payment_id;
	v[2] = store_pg_text_or_null(ev->order_id);
	v[3] = status;
	v[4] = store_pg_num_or_null(&n_amount, ev->amount, -1);
	v[5] = source;
	v[6] = d->conflict ? "t" : "f";
	v[7] = d->key;
	/* raw_json, prev_hash and hash in binary form: no copy, no escaping */
	v[8] = ev->raw != NULL ? ev->raw : "";
	lens[8] = ev->raw != NULL ? (int)ev->raw_len : 0;
	fmts[8] = 1;
	v[9] = store_pg_num(&n_now, now);
	v[10] = (const char *)q->tx_last_hash;
	v[11] = (const char *)hash;
	lens[10] = lens[11] = STORE_HASH_LEN;
	fmts[10] = fmts[11] = 1;
	v[12] = sinks;
	v[13] = store_pg_text_or_null(ev->remote_addr);
	v[14] = store_pg_text_or_null(s->opts.instance);
	v[15] = store_pg_text_or_null(ev->payment_type);
	v[16] = store_pg_text_or_null(ev->channel_code);
	v[17] = store_pg_num_or_null(&n_exp, ev->expires_at, 0);
	v[18] = callback ? store_pg_num(&n_seen, now) : NULL;
	if (!d->known) {
		v[19] = !d->terminal && s->opts.reconcile
				? store_pg_num(&n_next, now + s->opts.grace_seconds * 1000)
				: NULL;
		return store_pg_exec_stmt(s, PG_EVENT_NEW_PAYMENT, 20, v, lens, fmts, last, NULL);
	}
	v[19] = d->apply && d->terminal ? "t" : "f";
	v[20] = payment_status_name(d->apply ? ev->status : l->cur);
	v[21] = store_pg_num_or_null(&n_fill, d->conflict ? -1 : ev->amount, -1);
	return store_pg_exec_stmt(s, PG_EVENT_KNOWN_PAYMENT, 22, v, lens, fmts, last, NULL);
}

int store_pg_apply_event(struct store *s, struct store_req *r)
{
	struct store_pg *q = store_pg_of(s);
	const struct event *ev = &r->ev;
	int64_t now = r->received_at != 0 ? r->received_at : util_now_ms();
	uint8_t hash[STORE_HASH_LEN];
	const struct store_pg_prefetch *p = store_pg_prefetched(s, r);
	struct lookup l;
	int64_t id;
	int err;

	err = store_pg_replan(s, q->tx_last_id);
	if (err == 0 && p != NULL)
		from_prefetch(ev, p, &l);
	else if (err == 0)
		err = lookup(s, ev, &l);
	if (err < 0)
		return err;
	r->conflict = l.d.conflict;
	if (l.dup_id > 0)
		return absorb_duplicate(s, r, &l, now);
	id = q->tx_last_id + 1;
	err = insert_new(s, ev, &l, id, now, r->kind == STORE_REQ_EVENT, hash);
	if (err < 0)
		return err;
	store_pg_touch(s, ev->payment_id);
	q->tx_last_id = id;
	memcpy(q->tx_last_hash, hash, STORE_HASH_LEN);
	r->event_id = id;
	r->duplicate = false;
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
	return err;
}
