/* Reconciler: one thread that asks Komerce for the status of watched PENDING payments whose
 * callback has not arrived, and of those whose PAID callback waits for confirmation, and
 * records what it learns as source=reconcile events through the writer (same idempotency and
 * state machine as callbacks; the verdict on a held callback is the store's). Up to
 * max_in_flight requests run at once on libcurl's multi interface, which is also where the
 * thread sleeps. It owns a read-only store handle, the struct komerce_multi, the global token
 * bucket and window, and the circuit breaker. main.c creates it; the leader thread (leader.c)
 * runs and halts it as this instance wins or loses the "reconcile" job; reconcile_wake_at()
 * may be called from any thread, running or not (the store's poll hook, the admin API).
 * The schedule and breaker functions below it are pure and unit-tested with an injected
 * clock. */
#include "reconcile.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "komerce.h"
#include "log.h"
#include "metrics.h"
#include "payment.h"
#include "ratelimit.h"
#include "store.h"
#include "util.h"

#define BATCH		 64    /* due rows read per query */
#define GAUGE_MS	 5000  /* watched-payments gauge refresh, also when idle */
#define PENDING_GAUGE_MS 30000 /* pending-payments gauges: a scan of the payments table */
#define STORE_RETRY_MS	 1000  /* after a failed query or write */
#define MAX_TIMEOUT_MS	 5000  /* one status request, at most (stop aborts it at once) */
#define MAX_RESCAN_MS	 60000 /* longest sleep between two looks at the schedule */
#define RATE_FLOOR	 0.25  /* 429s slow the bucket down to a quarter at most ... */
#define RATE_DOWN	 0.8   /* ... by this factor per 429 ... */
#define RATE_UP		 1.05  /* ... and successes bring it back */
#define DEFAULT_RETRY_MS 5000  /* 429 without a usable Retry-After */

/* ---- schedule (pure) ---- */

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
	if (v < lo)
		return lo;
	if (v > hi)
		return hi;
	return v;
}

int64_t reconcile_next_poll_ms(const struct reconcile_sched *s)
{
	int64_t now = s->now_ms, min = s->min_interval_ms > 0 ? s->min_interval_ms : 0;
	int64_t give_up = s->give_up_ms > 0 ? s->give_up_ms : RECONCILE_GIVE_UP;
	int64_t give_up_unknown =
		s->give_up_unknown_ms > 0 ? s->give_up_unknown_ms : RECONCILE_GIVE_UP_UNKNOWN;
	int64_t step = RECONCILE_FIRST_BACKOFF, next;

	for (long a = 1; a < s->attempts && step < RECONCILE_MAX_UNKNOWN; a++)
		step *= 2;
	if (s->expires_at_s <= 0) {
		if (s->created_at_ms > 0 && now >= s->created_at_ms + give_up_unknown)
			return 0;
		next = now + clamp64(step, min, RECONCILE_MAX_UNKNOWN);
	} else {
		int64_t e = s->expires_at_s * 1000, final = e + RECONCILE_FINAL_DELAY;
		int64_t window = e - RECONCILE_NEAR_WINDOW;

		if (now >= final) {
			/* Komerce still says PENDING after the expiry: back off from it. */
			if (now >= e + give_up)
				return 0;
			next = now + clamp64(now - e, min, RECONCILE_MAX_UNKNOWN);
		} else {
			next = now + clamp64(step, min, RECONCILE_MAX_BACKOFF);
			if (now < window) {
				if (next > window)
					next = window;
			} else if (next > now + RECONCILE_NEAR_STEP) {
				next = now + RECONCILE_NEAR_STEP;
			}
			/* No poll so close to the confirming one that it would push it back. */
			if (next > final || final - next < min)
				next = final;
		}
	}
	if (s->last_polled_ms > 0 && next < s->last_polled_ms + min)
		next = s->last_polled_ms + min;
	if (next <= now)
		next = now + (min > 0 ? min : 1);
	return next;
}

int64_t reconcile_error_delay_ms(long streak, uint32_t rnd)
{
	int64_t d = 2000, half;

	for (long i = 1; i < streak && d < RECONCILE_MAX_BACKOFF; i++)
		d *= 2;
	if (d > RECONCILE_MAX_BACKOFF)
		d = RECONCILE_MAX_BACKOFF;
	half = d / 2;
	return half + (int64_t)((uint64_t)half * rnd / UINT32_MAX);
}

int64_t reconcile_retry_ms(const struct reconcile_sched *s, int64_t delay_ms, uint32_t rnd)
{
	int64_t next = reconcile_next_poll_ms(s), d, floor;

	if (next == 0)
		return 0;
	d = next - s->now_ms;
	d = d / 2 + (int64_t)((uint64_t)(d / 2) * rnd / UINT32_MAX);
	if (d < delay_ms)
		d = delay_ms;
	if (d < s->min_interval_ms)
		d = s->min_interval_ms;
	next = s->now_ms + d;
	floor = s->last_polled_ms > 0 ? s->last_polled_ms + s->min_interval_ms : 0;
	return next > floor ? next : floor;
}

/* ---- circuit breaker (pure) ---- */

void reconcile_breaker_init(struct reconcile_breaker *b)
{
	reconcile_breaker_configure(b, 0, 0, 0);
}

void reconcile_breaker_configure(struct reconcile_breaker *b, long threshold, int64_t open_ms,
				 int64_t max_open_ms)
{
	memset(b, 0, sizeof(*b));
	b->state = RECONCILE_BREAKER_CLOSED;
	b->threshold = threshold > 0 ? threshold : RECONCILE_BREAKER_THRESHOLD;
	b->base_open_ms = open_ms > 0 ? open_ms : RECONCILE_BREAKER_OPEN_MS;
	b->max_open_ms = max_open_ms > 0 ? max_open_ms : RECONCILE_BREAKER_MAX_OPEN_MS;
	if (b->max_open_ms < b->base_open_ms)
		b->max_open_ms = b->base_open_ms;
	b->open_ms = b->base_open_ms;
}

bool reconcile_breaker_allow(struct reconcile_breaker *b, int64_t now_ms)
{
	switch (b->state) {
	case RECONCILE_BREAKER_CLOSED:
		return true;
	case RECONCILE_BREAKER_OPEN:
		if (now_ms < b->open_until_ms)
			return false;
		b->state = RECONCILE_BREAKER_HALF_OPEN;
		return true;
	case RECONCILE_BREAKER_HALF_OPEN:
		return false;
	}
	return false;
}

int64_t reconcile_breaker_ready_ms(const struct reconcile_breaker *b, int64_t now_ms)
{
	if (b->state == RECONCILE_BREAKER_OPEN && b->open_until_ms > now_ms)
		return b->open_until_ms;
	if (b->state == RECONCILE_BREAKER_HALF_OPEN)
		return now_ms + 1000; /* the probe's outcome decides */
	return now_ms;
}

bool reconcile_breaker_success(struct reconcile_breaker *b, int64_t now_ms, int64_t sent_ms)
{
	(void)now_ms;
	if (b->failures > 0 && sent_ms <= b->streak_since_ms)
		return false; /* left before the failures were seen: says nothing about now */
	b->failures = 0;
	if (b->state == RECONCILE_BREAKER_CLOSED)
		return false;
	b->state = RECONCILE_BREAKER_CLOSED;
	b->open_ms = b->base_open_ms;
	return true;
}

bool reconcile_breaker_failure(struct reconcile_breaker *b, int64_t now_ms, int64_t sent_ms)
{
	(void)sent_ms;
	if (b->state == RECONCILE_BREAKER_OPEN)
		return false; /* sent before it opened: nothing new about Komerce */
	if (b->failures == 0)
		b->streak_since_ms = now_ms;
	b->failures++;
	switch (b->state) {
	case RECONCILE_BREAKER_CLOSED:
		if (b->failures < b->threshold)
			return false;
		b->state = RECONCILE_BREAKER_OPEN;
		b->opened_at_ms = now_ms;
		b->open_until_ms = now_ms + b->open_ms;
		return true;
	case RECONCILE_BREAKER_HALF_OPEN:
		/* The probe failed: stay open, twice as long. */
		b->open_ms = clamp64(b->open_ms * 2, b->base_open_ms, b->max_open_ms);
		b->state = RECONCILE_BREAKER_OPEN;
		b->open_until_ms = now_ms + b->open_ms;
		return false;
	case RECONCILE_BREAKER_OPEN:
		break;
	}
	return false;
}

/* ---- the thread ---- */

struct outgoing;

/* One status request in flight: the row it is about and when it left. */
struct flight {
	struct store_reconcile_row row;
	int64_t sent_ms; /* unix ms of its mark: last_polled_at as persisted before sending */
	bool busy;
};

struct reconcile {
	pthread_t thread;
	bool started;	     /* the thread runs (touched by the lifecycle's thread only) */
	int stop;	     /* atomic */
	int64_t wake_due;    /* atomic: earliest poll a commit announced since the last query */
	int64_t sleep_until; /* atomic: unix ms the thread sleeps until, 0 while it works */

	struct store *writer, *reader;
	struct komerce_multi *km;
	struct ratelimit_bucket bucket;
	struct ratelimit_window *window; /* max_requests_per_second in any 1 s (+ slack) */
	struct ratelimit_keys *keys;	 /* in-process guard of the per-payment interval */
	struct reconcile_breaker breaker;
	double rate, rate_now;
	int64_t min_ms;	   /* min_interval_seconds + safety */
	int64_t hold_ms;   /* next_poll_at written by a mark: a result that never lands */
	int64_t rescan_ms; /* longest sleep */
	int64_t give_up_ms, give_up_unknown_ms;
	bool watch; /* reconcile.enabled: poll PENDING payments, not only confirmations */
	uint32_t rnd;

	struct flight *flights;
	struct outgoing *outgoing; /* a batch being marked and sent */
	size_t max_in_flight;

	/* due rows read and not yet sent, and when to read again */
	struct store_reconcile_row rows[BATCH];
	size_t n_rows, next_row;
	int64_t next_query_ms;

	/* results and marks waiting to be written, each with the texts it borrows */
	struct store_reconcile_update *updates;
	char **raw;
	char (*errs)[STORE_DETAIL_MAX];
	size_t n_updates, cap_updates;

	int64_t next_gauge_ms;
	int64_t next_pending_ms; /* mono ms: next pending-payments scan */
	struct log_rl error_rl, store_rl, odd_rl, unconfirmed_rl;
};

static void update_gauges(struct reconcile *r, bool force)
{
	int64_t now = util_mono_ms(), watched = 0, due = 0;

	if (!force && now < r->next_gauge_ms)
		return;
	r->next_gauge_ms = now + GAUGE_MS;
	if (store_reconcile_watched(r->reader, &watched) == 0)
		metrics_set_gauge("hookd_reconcile_watched", (double)watched);
	/* How long the most overdue watched payment has waited for its poll: grows while the
	 * circuit is open or the rate budget is too small for the load. */
	if (store_reconcile_next_due(r->reader, &due) == 0)
		metrics_set_gauge("hookd_reconcile_lag_seconds",
				  due < util_now_ms() ? (double)(util_now_ms() - due) / 1000.0 : 0);
	else
		metrics_set_gauge("hookd_reconcile_lag_seconds", 0);
	if (force || now >= r->next_pending_ms) {
		int64_t pending, expired;

		r->next_pending_ms = now + PENDING_GAUGE_MS;
		if (store_reconcile_pending(r->reader, util_now_ms() / 1000, &pending, &expired) ==
		    0) {
			metrics_set_gauge("hookd_payments_pending", (double)pending);
			metrics_set_gauge("hookd_payments_pending_expired", (double)expired);
		}
	}
	metrics_set_gauge("hookd_reconcile_circuit_open",
			  r->breaker.state == RECONCILE_BREAKER_CLOSED ? 0 : 1);
	metrics_set_gauge("hookd_reconcile_in_flight", (double)komerce_multi_running(r->km));
}

static void release_updates(struct reconcile *r)
{
	for (size_t i = 0; i < r->n_updates; i++) {
		cJSON_free(r->raw[i]);
		r->raw[i] = NULL;
	}
	r->n_updates = 0;
}

/* The verdict on a PAID callback held for confirmation, once committed. */
static void report_verdict(struct reconcile *r, const struct store_reconcile_update *u,
			   const struct log_field *f, const char *q)
{
	unsigned long long sup = 0;

	if (u->verdict == STORE_CONFIRM_CONFIRMED) {
		metrics_inc(METRICS_CONFIRMED, 1);
		log_fields(
			LOG_PRIO_NOTICE, f,
			"PAID callback confirmed by Komerce payment_id=%s callback_event_id=%lld "
			"event_id=%lld",
			q, (long long)u->held_event_id, (long long)u->event_id);
		return;
	}
	metrics_inc(METRICS_UNCONFIRMED, 1);
	if (log_rl_allow(&r->unconfirmed_rl, 1000, &sup))
		log_fields(LOG_PRIO_WARNING, f,
			   "PAID callback not confirmed by Komerce: not applied, not forwarded "
			   "payment_id=%s callback_event_id=%lld komerce_status=%s http=%ld "
			   "conflict_event_id=%lld suppressed=%llu",
			   q, (long long)u->held_event_id,
			   u->outcome == STORE_POLL_OK ? payment_status_name(u->komerce_status)
						       : "none",
			   u->http_status, (long long)u->marker_event_id, sup);
}

/* After a commit: the resolved payments and the confirmation verdicts are logged and
 * counted. */
static void report_committed(struct reconcile *r)
{
	for (size_t i = 0; i < r->n_updates; i++) {
		const struct store_reconcile_update *u = &r->updates[i];
		char q[160], eid[24];
		const struct log_field f[] = {{"PAYMENT_ID", u->payment_id},
					      {"ORDER_ID", u->ev.order_id},
					      {"EVENT_ID", log_num(u->event_id, eid, sizeof(eid))},
					      {NULL, NULL}};

		log_quote(u->payment_id, q, sizeof(q));
		if (u->verdict != STORE_CONFIRM_NONE)
			report_verdict(r, u, f, q);
		if (!u->has_event || u->verdict == STORE_CONFIRM_CONFIRMED)
			continue;
		if (u->duplicate) {
			if (log_max_prio >= LOG_PRIO_DEBUG)
				log_fields(LOG_PRIO_DEBUG, f,
					   "reconcile status already known payment_id=%s status=%s "
					   "event_id=%lld",
					   q, payment_status_name(u->ev.status),
					   (long long)u->event_id);
			continue;
		}
		if (u->conflict) {
			log_fields(LOG_PRIO_WARNING, f,
				   "reconcile status conflicts with what is stored payment_id=%s "
				   "status=%s event_id=%lld",
				   q, payment_status_name(u->ev.status), (long long)u->event_id);
			continue;
		}
		if (payment_status_terminal(u->ev.status)) {
			metrics_inc(METRICS_RESOLVED_BY_RECONCILE, 1);
			log_fields(LOG_PRIO_NOTICE, f,
				   "payment resolved by reconciliation payment_id=%s status=%s "
				   "event_id=%lld polls=%ld",
				   q, payment_status_name(u->ev.status), (long long)u->event_id,
				   u->poll_attempts);
		}
	}
}

/* Writes the queued updates in one request (waiting for the commit). Returns 0 or -errno;
 * on failure nothing was written (results are learned again by the next polls). */
static int write_updates(struct reconcile *r)
{
	struct store_req req;
	unsigned long long sup = 0;
	int err;

	if (r->n_updates == 0)
		return 0;
	store_req_reconcile(&req, r->updates, r->n_updates);
	err = store_submit_wait(r->writer, &req);
	if (err < 0) {
		if (log_rl_allow(&r->store_rl, 10000, &sup))
			log_err("reconcile cannot record poll results updates=%zu err=%d "
				"suppressed=%llu",
				r->n_updates, err, sup);
	} else {
		report_committed(r);
	}
	return err;
}

static int flush(struct reconcile *r)
{
	int err = write_updates(r);

	release_updates(r);
	return err;
}

static struct store_reconcile_update *queue_update(struct reconcile *r, const char *payment_id)
{
	struct store_reconcile_update *u;

	if (r->n_updates >= r->cap_updates && flush(r) < 0)
		return NULL;
	u = &r->updates[r->n_updates];
	memset(u, 0, sizeof(*u));
	snprintf(u->payment_id, sizeof(u->payment_id), "%s", payment_id);
	u->poll_attempts = -1;
	u->komerce_status = PAYMENT_UNKNOWN;
	r->raw[r->n_updates] = NULL;
	r->errs[r->n_updates][0] = '\0';
	r->n_updates++;
	return u;
}

static size_t slot_of(const struct reconcile *r, const struct store_reconcile_update *u)
{
	return (size_t)(u - r->updates);
}

/* A row that is due but inside its minimum interval (written by an older version, a clock
 * step, or a failed result write): move it to the first allowed time. */
static void defer(struct reconcile *r, const struct store_reconcile_row *row, int64_t at)
{
	struct store_reconcile_update *u = queue_update(r, row->payment_id);

	if (u == NULL)
		return;
	u->set_next = true;
	u->next_poll_at = at;
}

static void on_breaker_success(struct reconcile *r, int64_t now, int64_t sent)
{
	int64_t open_for = now - r->breaker.opened_at_ms;

	if (reconcile_breaker_success(&r->breaker, now, sent)) {
		log_notice("reconcile circuit closed: Komerce answers again open_for_ms=%lld",
			   (long long)open_for);
		metrics_set_gauge("hookd_reconcile_circuit_open", 0);
	}
}

static void on_breaker_failure(struct reconcile *r, int64_t now, int64_t sent,
			       const struct komerce_result *res)
{
	char q[300];

	if (reconcile_breaker_failure(&r->breaker, now, sent)) {
		log_warn("reconcile circuit open: Komerce is failing, polls paused failures=%ld "
			 "retry_in_ms=%lld error=%s detail=%s",
			 r->breaker.failures, (long long)r->breaker.open_ms,
			 komerce_err_name(res->err), log_quote(res->message, q, sizeof(q)));
		metrics_set_gauge("hookd_reconcile_circuit_open", 1);
	}
}

static void fill_event(struct store_reconcile_update *u, const struct komerce_payment *p,
		       enum payment_status st, const struct store_reconcile_row *row)
{
	struct event *ev = &u->ev;

	memset(ev, 0, sizeof(*ev));
	snprintf(ev->payment_id, sizeof(ev->payment_id), "%s", row->payment_id);
	snprintf(ev->order_id, sizeof(ev->order_id), "%s", p->order_id);
	ev->status = st;
	ev->amount = p->amount;
	snprintf(ev->payment_type, sizeof(ev->payment_type), "%s", p->payment_type);
	snprintf(ev->channel_code, sizeof(ev->channel_code), "%s", p->channel_code);
	ev->expires_at = p->expires_at;
	ev->source = EVENT_SOURCE_RECONCILE;
}

/* Komerce's reply (its data, or the whole error envelope) as the raw text of u's event;
 * false when out of memory (the next poll learns it again). */
static bool keep_raw(struct reconcile *r, struct store_reconcile_update *u, const cJSON *j)
{
	size_t slot = slot_of(r, u);

	r->raw[slot] = j != NULL ? cJSON_PrintUnformatted(j) : NULL;
	if (r->raw[slot] == NULL)
		return false;
	u->ev.raw = r->raw[slot];
	u->ev.raw_len = strlen(u->ev.raw);
	return true;
}

/* Komerce told the status: record it (an event when it changed; the whole answer when a
 * PAID callback waits for it) and schedule the next poll. */
static void on_status(struct reconcile *r, const struct store_reconcile_row *row,
		      struct store_reconcile_update *u, struct komerce_result *res,
		      struct reconcile_sched *sched, const struct komerce_payment *p,
		      enum payment_status st)
{
	char q[160];

	metrics_inc(METRICS_POLLS_OK, 1);
	on_breaker_success(r, sched->now_ms, u->sent_at);
	if (r->rate_now < r->rate) {
		r->rate_now = r->rate_now * RATE_UP < r->rate ? r->rate_now * RATE_UP : r->rate;
		ratelimit_bucket_set_rate(&r->bucket, r->rate_now, util_mono_ms());
	}
	if (p->expires_at > 0) {
		u->expires_at = p->expires_at;
		if (sched->expires_at_s <= 0)
			sched->expires_at_s = p->expires_at;
	}
	u->outcome = STORE_POLL_OK;
	u->komerce_status = st;
	if (st != row->status || row->confirming) {
		fill_event(u, p, st, row);
		if (keep_raw(r, u, res->data))
			u->has_event = st != row->status;
		else
			u->outcome = STORE_POLL_FAILED; /* out of memory: learned again later */
	}
	if (u->has_event && payment_status_terminal(st))
		u->next_poll_at = 0;
	else
		u->next_poll_at = reconcile_next_poll_ms(sched);
	log_debug("reconcile polled payment_id=%s status=%s polls=%ld next_in_ms=%lld",
		  log_quote(row->payment_id, q, sizeof(q)), payment_status_name(st),
		  u->poll_attempts,
		  (long long)(u->next_poll_at > 0 ? u->next_poll_at - sched->now_ms : -1));
}

/* The next try after a poll that taught nothing, not before delay_ms: a PAID callback waiting
 * for confirmation is asked again as soon as that allows (a shop waits to ship), any other
 * payment keeps backing off along its schedule. */
static int64_t retry_at(struct reconcile *r, const struct store_reconcile_row *row,
			const struct reconcile_sched *sched, int64_t delay_ms)
{
	if (row->confirming)
		return sched->now_ms + (delay_ms > r->min_ms ? delay_ms : r->min_ms);
	return reconcile_retry_ms(sched, delay_ms, util_rand32(&r->rnd));
}

/* 429: honour Retry-After and slow the whole reconciler down. */
static void on_rate_limited(struct reconcile *r, const struct store_reconcile_row *row,
			    struct store_reconcile_update *u, const struct komerce_result *res,
			    const struct reconcile_sched *sched)
{
	int64_t next = res->retry_after_s > 0 && res->retry_after_s < 86400
			       ? res->retry_after_s * 1000
			       : DEFAULT_RETRY_MS;
	char q[160];

	metrics_inc(METRICS_POLLS_RATE_LIMITED, 1);
	on_breaker_success(r, sched->now_ms, u->sent_at);
	u->outcome = STORE_POLL_RATE_LIMITED;
	u->next_poll_at = retry_at(r, row, sched, next);
	r->rate_now = r->rate_now * RATE_DOWN > r->rate * RATE_FLOOR ? r->rate_now * RATE_DOWN
								     : r->rate * RATE_FLOOR;
	ratelimit_bucket_set_rate(&r->bucket, r->rate_now, util_mono_ms());
	log_debug("reconcile rate limited payment_id=%s retry_after_s=%ld rate=%.2f",
		  log_quote(row->payment_id, q, sizeof(q)), res->retry_after_s, r->rate_now);
}

/* Komerce answered but will not tell us about this payment (404, 400, other HTTP): keep the
 * sparse schedule (it gives up in the end), do not blame Komerce as a whole. For a PAID
 * callback waiting for confirmation a 404 is an answer: Komerce does not know the payment. */
static void on_refused(struct reconcile *r, const struct store_reconcile_row *row,
		       struct store_reconcile_update *u, const struct komerce_result *res,
		       const struct reconcile_sched *sched)
{
	const struct log_field pf[] = {{"PAYMENT_ID", row->payment_id}, {NULL, NULL}};
	unsigned long long sup = 0;
	char q[160], m[300];

	metrics_inc(METRICS_POLLS_ERROR, 1);
	on_breaker_success(r, sched->now_ms, u->sent_at);
	u->outcome = STORE_POLL_REFUSED;
	u->next_poll_at = reconcile_next_poll_ms(sched);
	if (row->confirming) {
		snprintf(u->ev.payment_id, sizeof(u->ev.payment_id), "%s", row->payment_id);
		keep_raw(r, u, res->root);
	}
	if (log_rl_allow(&r->odd_rl, 10000, &sup))
		log_fields(LOG_PRIO_WARNING, pf,
			   "reconcile status refused payment_id=%s http=%ld error=%s detail=%s "
			   "suppressed=%llu",
			   log_quote(row->payment_id, q, sizeof(q)), res->http_status,
			   komerce_err_name(res->err), log_quote(res->message, m, sizeof(m)), sup);
}

/* 5xx, timeouts, network, TLS, unusable replies, a refused api key: back off, and count it
 * against Komerce (the circuit breaker). */
static void on_failed(struct reconcile *r, const struct store_reconcile_row *row,
		      struct store_reconcile_update *u, const struct komerce_result *res,
		      const struct reconcile_sched *sched)
{
	const struct log_field pf[] = {{"PAYMENT_ID", row->payment_id}, {NULL, NULL}};
	unsigned long long sup = 0;
	char q[160], m[300];
	int64_t next;

	metrics_inc(METRICS_POLLS_ERROR, 1);
	on_breaker_failure(r, sched->now_ms, u->sent_at, res);
	u->outcome = STORE_POLL_FAILED;
	next = reconcile_error_delay_ms(r->breaker.failures > 0 ? r->breaker.failures : 1,
					util_rand32(&r->rnd));
	u->next_poll_at = retry_at(r, row, sched, next);
	if (log_rl_allow(&r->error_rl, 10000, &sup))
		log_fields(LOG_PRIO_WARNING, pf,
			   "reconcile poll failed payment_id=%s http=%ld error=%s detail=%s "
			   "retry_in_ms=%lld suppressed=%llu",
			   log_quote(row->payment_id, q, sizeof(q)), res->http_status,
			   komerce_err_name(res->err), log_quote(res->message, m, sizeof(m)),
			   (long long)(u->next_poll_at > 0 ? u->next_poll_at - sched->now_ms : -1),
			   sup);
}

/* The status a 2xx reply tells about row, or PAYMENT_UNKNOWN (then res says why). */
static enum payment_status reply_status(const struct store_reconcile_row *row,
					struct komerce_result *res, struct komerce_payment *p)
{
	enum payment_status st = PAYMENT_UNKNOWN;

	memset(p, 0, sizeof(*p));
	if (res->err != KOMERCE_OK)
		return st;
	if (komerce_payment_from_json(res->data, p) == 0 &&
	    strcmp(p->payment_id, row->payment_id) == 0)
		st = payment_status_parse(p->status);
	if (st == PAYMENT_UNKNOWN) {
		res->err = KOMERCE_E_BAD_RESPONSE;
		snprintf(res->message, sizeof(res->message),
			 "status reply without a usable payment (id or status)");
	}
	return st;
}

/* Turns a reply into the result update u (already holding id, last_polled_at, sent_at and
 * poll_attempts). */
static void handle_reply(struct reconcile *r, const struct store_reconcile_row *row,
			 struct store_reconcile_update *u, struct komerce_result *res, int64_t t)
{
	struct reconcile_sched sched = {
		.now_ms = t,
		.created_at_ms = row->created_at,
		.expires_at_s = row->expires_at,
		.last_polled_ms = t,
		.attempts = u->poll_attempts,
		.min_interval_ms = r->min_ms,
		.give_up_ms = r->give_up_ms,
		.give_up_unknown_ms = r->give_up_unknown_ms,
	};
	const struct log_field pf[] = {{"PAYMENT_ID", row->payment_id}, {NULL, NULL}};
	struct komerce_payment p;
	enum payment_status st = reply_status(row, res, &p);
	char q[160];

	u->set_next = true;
	u->http_status = res->http_status;
	u->confirming = row->confirming;
	if (res->err == KOMERCE_OK)
		on_status(r, row, u, res, &sched, &p, st);
	else if (res->err == KOMERCE_E_RATE_LIMITED)
		on_rate_limited(r, row, u, res, &sched);
	else if (res->err == KOMERCE_E_NOT_FOUND || res->err == KOMERCE_E_BAD_REQUEST ||
		 res->err == KOMERCE_E_HTTP)
		on_refused(r, row, u, res, &sched);
	else
		on_failed(r, row, u, res, &sched);
	if (u->outcome != STORE_POLL_OK) {
		snprintf(r->errs[slot_of(r, u)], STORE_DETAIL_MAX, "%s: %s",
			 komerce_err_name(res->err), res->message);
		u->error = r->errs[slot_of(r, u)];
	}
	/* Not watching (reconcile.enabled = false): poll only while a confirmation waits. */
	if (!r->watch && !(row->confirming && !store_confirm_decisive(u->outcome, u->http_status)))
		u->next_poll_at = 0;
	if (u->next_poll_at == 0 && !u->has_event && r->watch)
		log_fields(
			LOG_PRIO_INFO, pf,
			"reconcile stops watching a payment still PENDING payment_id=%s polls=%ld "
			"expires_at=%lld",
			log_quote(row->payment_id, q, sizeof(q)), u->poll_attempts,
			(long long)sched.expires_at_s);
}

/* ---- sending, in flight, receiving ---- */

static void probe_not_sent(struct reconcile *r)
{
	if (r->breaker.state == RECONCILE_BREAKER_HALF_OPEN)
		r->breaker.state = RECONCILE_BREAKER_OPEN; /* its period is over: next allow() */
}

static struct flight *in_flight(struct reconcile *r, const char *payment_id)
{
	for (size_t i = 0; i < r->max_in_flight; i++)
		if (r->flights[i].busy && strcmp(r->flights[i].row.payment_id, payment_id) == 0)
			return &r->flights[i];
	return NULL;
}

/* A request is over (answered, failed, or never sent): its result is queued for the writer. */
static void finish_flight(struct reconcile *r, struct flight *f, struct komerce_result *res)
{
	struct store_reconcile_update *u;
	int64_t t = util_now_ms();

	f->busy = false;
	ratelimit_keys_note(r->keys, f->row.payment_id, util_mono_ms());
	u = queue_update(r, f->row.payment_id);
	if (u == NULL)
		return;
	/* The reply came back at t: the request reached Komerce no later than that. */
	u->last_polled_at = t;
	u->poll_attempts = f->row.poll_attempts + 1;
	u->sent_at = f->sent_ms;
	u->elapsed_ms = (long)(t - f->sent_ms);
	handle_reply(r, &f->row, u, res, t);
}

/* Every finished request's result, queued. */
static void harvest(struct reconcile *r)
{
	struct komerce_result res;
	void *tag;

	while (komerce_multi_next(r->km, &tag, &res) == 1) {
		finish_flight(r, tag, &res);
		komerce_result_clear(&res);
	}
}

/* The next due row not yet sent: one read before, else from a new query when rows may be due
 * (the earliest due time came, or a commit announced a poll that is due: then the rows read
 * are read again, so that a confirmation waiting goes first). NULL with *ret_wait when none. */
static struct store_reconcile_row *next_row(struct reconcile *r, int64_t now, int64_t *ret_wait)
{
	int64_t announced = __atomic_load_n(&r->wake_due, __ATOMIC_SEQ_CST), next_due = 0;
	size_t n = 0;
	int err;

	if (announced <= now)
		r->n_rows = r->next_row = 0;
	else if (r->next_row < r->n_rows)
		return &r->rows[r->next_row];
	if (announced > now && now < r->next_query_ms) {
		*ret_wait = (announced < r->next_query_ms ? announced : r->next_query_ms) - now;
		return NULL;
	}
	/* Deferrals first, or the query returns their rows again. */
	if (r->n_updates > 0 && flush(r) < 0) {
		*ret_wait = STORE_RETRY_MS;
		return NULL;
	}
	__atomic_store_n(&r->wake_due, INT64_MAX, __ATOMIC_SEQ_CST);
	err = store_reconcile_due(r->reader, now, BATCH, r->rows, &n);
	if (err < 0) {
		unsigned long long sup = 0;

		if (log_rl_allow(&r->store_rl, 10000, &sup))
			log_err("reconcile cannot read due payments err=%d detail=\"%s\" "
				"suppressed=%llu",
				err, store_errmsg(r->reader), sup);
		r->next_query_ms = now + STORE_RETRY_MS;
		*ret_wait = STORE_RETRY_MS;
		return NULL;
	}
	r->n_rows = n;
	r->next_row = 0;
	r->next_query_ms = now; /* once these are sent, look again */
	if (n > 0)
		return &r->rows[0];
	/* Nothing due: sleep until the earliest due time, and look again now and then. */
	r->next_query_ms = now + (r->rescan_ms < GAUGE_MS ? r->rescan_ms : GAUGE_MS);
	if (store_reconcile_next_due(r->reader, &next_due) == 0 && next_due < r->next_query_ms)
		r->next_query_ms = next_due > now + 10 ? next_due : now + 10;
	*ret_wait = r->next_query_ms - now;
	return NULL;
}

/* Milliseconds until row may be sent by the budget and the breaker (0: now). */
static int64_t budget_wait(struct reconcile *r, int64_t now)
{
	int64_t mono = util_mono_ms(), wait, w;

	wait = reconcile_breaker_ready_ms(&r->breaker, now) - now;
	w = ratelimit_wait_ms(&r->bucket, mono);
	if (w > wait)
		wait = w;
	w = ratelimit_window_wait_ms(r->window, mono);
	return w > wait ? w : wait;
}

/* A request about to leave: its row and its mark (an index into updates). */
struct outgoing {
	struct store_reconcile_row row;
	size_t mark;
	bool probe, matched;
};

/* Queues the mark of row (last_polled_at = now, persisted before the request leaves, so that
 * a crash cannot make the next poll come early) and takes its share of the budget. */
static bool queue_mark(struct reconcile *r, const struct store_reconcile_row *row, int64_t now,
		       struct outgoing *o)
{
	struct store_reconcile_update *mark = queue_update(r, row->payment_id);
	int64_t mono = util_mono_ms();

	if (mark == NULL)
		return false;
	mark->only_if_watched = true;
	mark->last_polled_at = now;
	/* the store refuses the mark inside the minimum interval, whoever polled last (another
	 * instance that led before): then the request is not sent */
	mark->min_gap_ms = r->min_ms;
	mark->set_next = true;
	mark->next_poll_at = now + r->hold_ms;
	ratelimit_take(&r->bucket, mono);
	ratelimit_window_note(r->window, mono);
	o->row = *row;
	o->mark = slot_of(r, mark);
	o->probe = r->breaker.state == RECONCILE_BREAKER_HALF_OPEN;
	return true;
}

/* Sends the batch whose marks were just committed (matched: the payment is still watched). */
static void send_batch(struct reconcile *r, struct outgoing *out, size_t n, int64_t now)
{
	for (size_t i = 0; i < n; i++) {
		struct komerce_result res;
		struct flight *f = NULL;

		if (!out[i].matched) { /* settled meanwhile (a callback): nothing to ask */
			if (out[i].probe)
				probe_not_sent(r);
			continue;
		}
		for (size_t k = 0; k < r->max_in_flight && f == NULL; k++)
			if (!r->flights[k].busy)
				f = &r->flights[k];
		if (f == NULL)
			break; /* cannot happen: the batch was sized by the free slots */
		f->row = out[i].row;
		f->sent_ms = now;
		f->busy = true;
		if (komerce_multi_status(r->km, f->row.payment_id, f, &res) < 0) {
			finish_flight(r, f, &res); /* never left: a result like any other */
			komerce_result_clear(&res);
		}
	}
}

/* Skips the head row when it may not be polled now: in flight already, or inside its
 * minimum interval (then deferred to the first allowed time). True when skipped. */
static bool skip_row(struct reconcile *r, const struct store_reconcile_row *row, int64_t now)
{
	/* The 3 s rule, from the persisted last poll and from this process's memory. */
	int64_t guard = row->last_polled_at > 0 ? row->last_polled_at + r->min_ms : 0;
	int64_t wait = ratelimit_keys_wait_ms(r->keys, row->payment_id, util_mono_ms());

	if (in_flight(r, row->payment_id) != NULL) {
		r->next_row++;
		return true;
	}
	if (now < guard || wait > 0) {
		defer(r, row, guard > now + wait ? guard : now + wait);
		r->next_row++;
		return true;
	}
	return false;
}

/* Picks what may leave now from the rows read (the first one may come from a new query):
 * as many as the free slots, the budget and the breaker allow, their marks queued in out.
 * Returns their number; *ret_wait says how long nothing more may leave. */
static size_t pick(struct reconcile *r, int64_t now, struct outgoing *out, size_t room,
		   int64_t *ret_wait)
{
	struct store_reconcile_row *row = next_row(r, now, ret_wait);
	size_t n = 0;

	while (row != NULL && n < room) {
		if (!skip_row(r, row, now)) {
			*ret_wait = budget_wait(r, now);
			if (*ret_wait > 0)
				break;
			if (!reconcile_breaker_allow(&r->breaker, now)) {
				*ret_wait = 1000;
				break;
			}
			if (!queue_mark(r, row, now, &out[n]))
				break;
			r->next_row++;
			if (out[n++].probe)
				break; /* a half-open breaker lets one probe through */
		}
		row = r->next_row < r->n_rows ? &r->rows[r->next_row] : NULL;
		if (row == NULL)
			*ret_wait = 0; /* read again */
	}
	return n;
}

/* Sends what may be sent now, its marks committed first in one write. Returns how long to
 * wait before trying again (ms): a reply, a commit that announces a poll, or stop ends the
 * wait earlier. */
static int64_t dispatch(struct reconcile *r)
{
	while (!util_flag_get(&r->stop)) {
		size_t running = komerce_multi_running(r->km), n;
		int64_t now = util_now_ms(), wait = 0;

		if (running >= r->max_in_flight)
			return MAX_RESCAN_MS;
		/* Room for a whole batch of marks and deferrals without a flush in between. */
		if (r->n_updates + r->max_in_flight + BATCH + 1 > r->cap_updates && flush(r) < 0)
			return STORE_RETRY_MS;
		n = pick(r, now, r->outgoing, r->max_in_flight - running, &wait);
		if (n == 0 && wait > 0)
			return wait;
		if (n == 0)
			continue;
		if (flush(r) < 0) {
			if (r->outgoing[n - 1].probe)
				probe_not_sent(r);
			return STORE_RETRY_MS;
		}
		for (size_t i = 0; i < n; i++)
			r->outgoing[i].matched = r->updates[r->outgoing[i].mark].matched;
		/* They leave now, after their marks' commit: that is the time the window (what
		 * Komerce counts in a second) must see. */
		ratelimit_window_retime(r->window, n, util_mono_ms());
		send_batch(r, r->outgoing, n, now);
		komerce_multi_push(r->km);
	}
	return 0;
}

/* Sleeps up to delay_ms in the multi handle's poll: a reply, reconcile_wake_at() for a poll
 * due before the end of the sleep, and stop end it earlier. */
static void wait_for(struct reconcile *r, int64_t delay_ms)
{
	int64_t now = util_now_ms(), until, announced;

	if (delay_ms > GAUGE_MS)
		delay_ms = GAUGE_MS;
	until = now + delay_ms;
	__atomic_store_n(&r->sleep_until, until, __ATOMIC_SEQ_CST);
	announced = __atomic_load_n(&r->wake_due, __ATOMIC_SEQ_CST);
	if (announced < until)
		delay_ms = announced > now ? announced - now : 0;
	if (delay_ms > 0 && !util_flag_get(&r->stop))
		komerce_multi_wait(r->km, (long)delay_ms);
	else
		komerce_multi_wait(r->km, 0);
	__atomic_store_n(&r->sleep_until, 0, __ATOMIC_SEQ_CST);
}

static void *reconcile_main(void *arg)
{
	struct reconcile *r = arg;

	update_gauges(r, true);
	while (!util_flag_get(&r->stop)) {
		int64_t delay;

		harvest(r);
		delay = dispatch(r);
		/* Before sleeping, write what is queued: a learned status is not held back. */
		if (r->n_updates > 0 && flush(r) < 0 && delay > STORE_RETRY_MS)
			delay = STORE_RETRY_MS;
		update_gauges(r, false);
		if (!util_flag_get(&r->stop))
			wait_for(r, delay > 0 ? delay : 0);
	}
	/* Requests still in flight are abandoned: their marks keep them from coming early. */
	harvest(r);
	flush(r);
	return NULL;
}

void reconcile_wake_at(struct reconcile *r, int64_t due_ms)
{
	int64_t cur;

	if (r == NULL)
		return;
	cur = __atomic_load_n(&r->wake_due, __ATOMIC_SEQ_CST);
	while (due_ms < cur && !__atomic_compare_exchange_n(&r->wake_due, &cur, due_ms, false,
							    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		;
	if (due_ms < __atomic_load_n(&r->sleep_until, __ATOMIC_SEQ_CST))
		komerce_multi_wakeup(r->km);
}

void reconcile_wake(struct reconcile *r)
{
	reconcile_wake_at(r, 0);
}

static void reconcile_free(struct reconcile *r)
{
	if (r == NULL)
		return;
	if (r->updates != NULL)
		release_updates(r);
	komerce_multi_free(r->km);
	ratelimit_keys_free(r->keys);
	ratelimit_window_free(r->window);
	store_close(r->reader);
	free(r->flights);
	free(r->outgoing);
	free(r->updates);
	free(r->raw);
	free(r->errs);
	free(r);
}

/* A run starts with an empty budget and a full window, as if the previous leader (another
 * instance, perhaps) had just spent a second's worth: its first request waits one interval of
 * the global rate, so no second counts the requests of two leaders. */
static void fresh_budget(struct reconcile *r)
{
	int64_t mono = util_mono_ms();
	size_t per_window = r->rate >= 1 ? (size_t)r->rate : 1;

	ratelimit_bucket_init(&r->bucket, r->rate_now, clamp64((int64_t)(r->rate / 10), 1, 16),
			      mono);
	while (ratelimit_take(&r->bucket, mono) == 0)
		;
	for (size_t i = 0; i < per_window; i++)
		ratelimit_window_note(r->window, mono);
}

int reconcile_run(struct reconcile *r)
{
	int e;

	if (r->started)
		return 0;
	__atomic_store_n(&r->stop, 0, __ATOMIC_RELEASE);
	fresh_budget(r);
	r->n_rows = r->next_row = 0;
	r->next_query_ms = 0;
	r->next_gauge_ms = 0;
	e = pthread_create(&r->thread, NULL, reconcile_main, r);
	if (e != 0)
		return -e;
	r->started = true;
	log_info("reconcile running max_requests_per_second=%.2f max_in_flight=%zu "
		 "min_interval_ms=%lld watch=%s",
		 r->rate, r->max_in_flight, (long long)r->min_ms,
		 r->watch ? "pending" : "confirmations-only");
	return 0;
}

void reconcile_halt(struct reconcile *r)
{
	if (r == NULL || !r->started)
		return;
	util_flag_set(&r->stop);
	komerce_multi_wakeup(r->km);
	pthread_join(r->thread, NULL);
	r->started = false;
	/* Requests still in flight are aborted by the stop flag: collected here, so that a later
	 * run starts with none (their marks keep the payments from being polled early). */
	for (int i = 0; i < 50 && komerce_multi_running(r->km) > 0; i++) {
		komerce_multi_wait(r->km, 20);
		harvest(r);
	}
	flush(r);
	metrics_set_gauge("hookd_reconcile_circuit_open", 0);
	log_info("reconcile halted");
}

void reconcile_stop(struct reconcile *r)
{
	if (r == NULL)
		return;
	reconcile_halt(r);
	reconcile_free(r);
}

/* The knobs of cfg into r (no allocation). */
static void configure(struct reconcile *r, const struct config *cfg, struct komerce_opts *ko)
{
	r->rate = cfg->max_requests_per_second;
	r->rate_now = r->rate;
	r->watch = cfg->reconcile_enabled;
	r->min_ms = cfg->min_interval_seconds * 1000 + RECONCILE_SAFETY_MS;
	ko->timeout_ms = cfg->timeout_ms < MAX_TIMEOUT_MS ? cfg->timeout_ms : MAX_TIMEOUT_MS;
	ko->connect_timeout_ms =
		cfg->connect_timeout_ms < ko->timeout_ms ? cfg->connect_timeout_ms : ko->timeout_ms;
	r->hold_ms = ko->timeout_ms + r->min_ms + 1000;
	r->rescan_ms = clamp64(cfg->grace_seconds * 1000, 1000, MAX_RESCAN_MS);
	r->give_up_ms = cfg->give_up_after_expiry_seconds * 1000LL;
	r->give_up_unknown_ms = cfg->give_up_unknown_expiry_seconds * 1000LL;
	r->max_in_flight = cfg->max_in_flight > 0 ? (size_t)cfg->max_in_flight : 1;
	r->rnd = util_rand_seed(r);
	r->wake_due = INT64_MAX;
	reconcile_breaker_configure(&r->breaker, cfg->breaker_failures,
				    cfg->breaker_open_seconds * 1000LL,
				    cfg->breaker_max_open_seconds * 1000LL);
	/* A tenth of a second's worth of tokens: a late wake-up catches up instead of losing
	 * the rate; the window (allocate) caps what any one second sees. */
	ratelimit_bucket_init(&r->bucket, r->rate, clamp64((int64_t)(r->rate / 10), 1, 16),
			      util_mono_ms());
}

/* Everything r allocates: 0 or -ENOMEM. */
static int allocate(struct reconcile *r, const struct komerce_opts *ko)
{
	size_t cap = (size_t)(r->rate * (double)r->min_ms / 1000.0) + 64;
	size_t per_window = r->rate >= 1 ? (size_t)r->rate : 1;

	r->keys = ratelimit_keys_new(cap, r->min_ms);
	r->window = ratelimit_window_new(per_window, 1000 + RECONCILE_WINDOW_SLACK_MS);
	r->km = komerce_multi_new(ko, r->max_in_flight);
	r->flights = calloc(r->max_in_flight, sizeof(*r->flights));
	r->outgoing = calloc(r->max_in_flight, sizeof(*r->outgoing));
	/* every result in flight, and a batch of marks and deferrals, fit before a flush */
	r->cap_updates = 2 * r->max_in_flight + BATCH + 1;
	r->updates = calloc(r->cap_updates, sizeof(*r->updates));
	r->raw = calloc(r->cap_updates, sizeof(*r->raw));
	r->errs = calloc(r->cap_updates, sizeof(*r->errs));
	if (r->keys == NULL || r->window == NULL || r->km == NULL || r->flights == NULL ||
	    r->outgoing == NULL || r->updates == NULL || r->raw == NULL || r->errs == NULL)
		return -ENOMEM;
	return 0;
}

int reconcile_new(const struct config *cfg, struct store *writer, struct reconcile **ret, char *err,
		  size_t err_len)
{
	struct komerce_opts ko = {
		.base_url = cfg->base_url,
		.api_key = cfg->api_key,
	};
	struct reconcile *r;
	int e;

	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, err_len, "reconcile: out of memory");
		return -ENOMEM;
	}
	r->writer = writer;
	configure(r, cfg, &ko);
	ko.stop = &r->stop;
	if (allocate(r, &ko) < 0) {
		snprintf(err, err_len, "reconcile: out of memory");
		reconcile_free(r);
		return -ENOMEM;
	}
	e = store_open_like(writer, STORE_MODE_READER, &r->reader, err, err_len);
	if (e < 0) {
		reconcile_free(r);
		return e;
	}
	log_info("reconcile ready max_requests_per_second=%.2f max_in_flight=%zu "
		 "grace_seconds=%ld min_interval_ms=%lld timeout_ms=%ld watch=%s",
		 r->rate, r->max_in_flight, cfg->grace_seconds, (long long)r->min_ms, ko.timeout_ms,
		 r->watch ? "pending" : "confirmations-only");
	*ret = r;
	return 0;
}

int reconcile_start(const struct config *cfg, struct store *writer, struct reconcile **ret,
		    char *err, size_t err_len)
{
	struct reconcile *r;
	int e = reconcile_new(cfg, writer, &r, err, err_len);

	if (e < 0)
		return e;
	e = reconcile_run(r);
	if (e < 0) {
		snprintf(err, err_len, "reconcile: cannot start the thread");
		reconcile_free(r);
		return e;
	}
	*ret = r;
	return 0;
}
