/* Reconciler: one thread that asks Komerce for the status of watched PENDING payments whose
 * callback has not arrived, and records what it learns as source=reconcile events through the
 * writer (same idempotency and state machine as callbacks). It owns a read-only store handle,
 * a struct komerce, the global token bucket and the circuit breaker. main.c starts and stops
 * it; reconcile_wake() may be called from any thread (admin API). The schedule and breaker
 * functions below it are pure and unit-tested with an injected clock. */
#include "reconcile.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
#define MAX_RESCAN_MS	 60000 /* payments seen in callbacks do not wake us: look again */
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
	int64_t step = RECONCILE_FIRST_BACKOFF, next;

	for (long a = 1; a < s->attempts && step < RECONCILE_MAX_UNKNOWN; a++)
		step *= 2;
	if (s->expires_at_s <= 0) {
		if (s->created_at_ms > 0 && now >= s->created_at_ms + RECONCILE_GIVE_UP_UNKNOWN)
			return 0;
		next = now + clamp64(step, min, RECONCILE_MAX_UNKNOWN);
	} else {
		int64_t e = s->expires_at_s * 1000, final = e + RECONCILE_FINAL_DELAY;
		int64_t window = e - RECONCILE_NEAR_WINDOW;

		if (now >= final) {
			/* Komerce still says PENDING after the expiry: back off from it. */
			if (now >= e + RECONCILE_GIVE_UP)
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
	memset(b, 0, sizeof(*b));
	b->state = RECONCILE_BREAKER_CLOSED;
	b->open_ms = RECONCILE_BREAKER_OPEN_MS;
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

bool reconcile_breaker_success(struct reconcile_breaker *b, int64_t now_ms)
{
	(void)now_ms;
	b->failures = 0;
	if (b->state == RECONCILE_BREAKER_CLOSED)
		return false;
	b->state = RECONCILE_BREAKER_CLOSED;
	b->open_ms = RECONCILE_BREAKER_OPEN_MS;
	return true;
}

bool reconcile_breaker_failure(struct reconcile_breaker *b, int64_t now_ms)
{
	b->failures++;
	switch (b->state) {
	case RECONCILE_BREAKER_CLOSED:
		if (b->failures < RECONCILE_BREAKER_THRESHOLD)
			return false;
		b->state = RECONCILE_BREAKER_OPEN;
		b->opened_at_ms = now_ms;
		b->open_until_ms = now_ms + b->open_ms;
		return true;
	case RECONCILE_BREAKER_HALF_OPEN:
		/* The probe failed: stay open, twice as long. */
		b->open_ms = clamp64(b->open_ms * 2, RECONCILE_BREAKER_OPEN_MS,
				     RECONCILE_BREAKER_MAX_OPEN_MS);
		b->state = RECONCILE_BREAKER_OPEN;
		b->open_until_ms = now_ms + b->open_ms;
		return false;
	case RECONCILE_BREAKER_OPEN:
		return false;
	}
	return false;
}

/* ---- the thread ---- */

struct reconcile {
	pthread_mutex_t mu;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	uint64_t gen;	     /* bumped by reconcile_wake */
	int stop;	     /* atomic */
	pthread_t thread;
	bool started;

	struct store *writer, *reader;
	struct komerce *k;
	struct ratelimit_bucket bucket;
	struct ratelimit_keys *keys; /* in-process guard of the per-payment interval */
	struct reconcile_breaker breaker;
	double rate, rate_now;
	int64_t min_ms;	   /* min_interval_seconds + safety */
	int64_t hold_ms;   /* next_poll_at written by a mark: a result that never lands */
	int64_t rescan_ms; /* longest sleep */
	uint32_t rnd;

	/* results waiting to be written, plus room for one mark */
	struct store_reconcile_update updates[BATCH + 1];
	char *raw[BATCH + 1];
	size_t n_updates;
	struct store_reconcile_row rows[BATCH];

	int64_t next_gauge_ms;
	int64_t next_pending_ms; /* mono ms: next pending-payments scan */
	struct log_rl error_rl, store_rl, odd_rl;
};

static uint64_t current_gen(struct reconcile *r)
{
	uint64_t g;

	pthread_mutex_lock(&r->mu);
	g = r->gen;
	pthread_mutex_unlock(&r->mu);
	return g;
}

/* Sleeps until delay_ms passes, stop, or (when wake is true) reconcile_wake after gen. */
static void sleep_for(struct reconcile *r, int64_t delay_ms, bool wake, uint64_t gen)
{
	struct timespec ts;
	int64_t deadline;

	if (delay_ms <= 0)
		return;
	if (delay_ms > MAX_RESCAN_MS)
		delay_ms = MAX_RESCAN_MS;
	deadline = util_mono_ms() + delay_ms;
	ts.tv_sec = deadline / 1000;
	ts.tv_nsec = (long)(deadline % 1000) * 1000000L;
	pthread_mutex_lock(&r->mu);
	while (!util_flag_get(&r->stop) && !(wake && r->gen != gen) && util_mono_ms() < deadline) {
		if (pthread_cond_timedwait(&r->cond, &r->mu, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&r->mu);
}

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
}

static void release_updates(struct reconcile *r)
{
	for (size_t i = 0; i < r->n_updates; i++) {
		cJSON_free(r->raw[i]);
		r->raw[i] = NULL;
	}
	r->n_updates = 0;
}

/* After a commit: the resolved payments are logged and counted. */
static void report_committed(struct reconcile *r)
{
	for (size_t i = 0; i < r->n_updates; i++) {
		const struct store_reconcile_update *u = &r->updates[i];
		char q[160], eid[24];
		const struct log_field f[] = {{"PAYMENT_ID", u->payment_id},
					      {"ORDER_ID", u->ev.order_id},
					      {"EVENT_ID", log_num(u->event_id, eid, sizeof(eid))},
					      {NULL, NULL}};

		if (!u->has_event)
			continue;
		log_quote(u->payment_id, q, sizeof(q));
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

	if (r->n_updates >= BATCH && flush(r) < 0)
		return NULL;
	u = &r->updates[r->n_updates];
	memset(u, 0, sizeof(*u));
	snprintf(u->payment_id, sizeof(u->payment_id), "%s", payment_id);
	u->poll_attempts = -1;
	r->raw[r->n_updates] = NULL;
	r->n_updates++;
	return u;
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

static void on_breaker_success(struct reconcile *r, int64_t now)
{
	int64_t open_for = now - r->breaker.opened_at_ms;

	if (reconcile_breaker_success(&r->breaker, now)) {
		log_notice("reconcile circuit closed: Komerce answers again open_for_ms=%lld",
			   (long long)open_for);
		metrics_set_gauge("hookd_reconcile_circuit_open", 0);
	}
}

static void on_breaker_failure(struct reconcile *r, int64_t now, const struct komerce_result *res)
{
	char q[300];

	if (reconcile_breaker_failure(&r->breaker, now)) {
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
	u->has_event = true;
}

/* Turns a status reply into the result update u (already holding id, last_polled_at and
 * poll_attempts). */
/* Komerce told the status: record it (an event when it changed) and schedule the next poll. */
static void on_status(struct reconcile *r, const struct store_reconcile_row *row,
		      struct store_reconcile_update *u, struct komerce_result *res,
		      struct reconcile_sched *sched, const struct komerce_payment *p,
		      enum payment_status st)
{
	size_t slot = (size_t)(u - r->updates);
	char q[160];

	metrics_inc(METRICS_POLLS_OK, 1);
	on_breaker_success(r, sched->now_ms);
	if (r->rate_now < r->rate) {
		r->rate_now = r->rate_now * RATE_UP < r->rate ? r->rate_now * RATE_UP : r->rate;
		ratelimit_bucket_set_rate(&r->bucket, r->rate_now, util_mono_ms());
	}
	if (p->expires_at > 0) {
		u->expires_at = p->expires_at;
		if (sched->expires_at_s <= 0)
			sched->expires_at_s = p->expires_at;
	}
	if (st != row->status) {
		fill_event(u, p, st, row);
		r->raw[slot] = cJSON_PrintUnformatted(res->data);
		if (r->raw[slot] != NULL) {
			u->ev.raw = r->raw[slot];
			u->ev.raw_len = strlen(u->ev.raw);
		} else {
			u->has_event = false; /* out of memory: the next poll learns it again */
		}
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
	on_breaker_success(r, sched->now_ms);
	u->next_poll_at = reconcile_retry_ms(sched, next, util_rand32(&r->rnd));
	r->rate_now = r->rate_now * RATE_DOWN > r->rate * RATE_FLOOR ? r->rate_now * RATE_DOWN
								     : r->rate * RATE_FLOOR;
	ratelimit_bucket_set_rate(&r->bucket, r->rate_now, util_mono_ms());
	log_debug("reconcile rate limited payment_id=%s retry_after_s=%ld rate=%.2f",
		  log_quote(row->payment_id, q, sizeof(q)), res->retry_after_s, r->rate_now);
}

/* Komerce answered but will not tell us about this payment (404, 400, other HTTP): keep the
 * sparse schedule (it gives up in the end), do not blame Komerce as a whole. */
static void on_refused(struct reconcile *r, const struct store_reconcile_row *row,
		       struct store_reconcile_update *u, const struct komerce_result *res,
		       const struct reconcile_sched *sched)
{
	const struct log_field pf[] = {{"PAYMENT_ID", row->payment_id}, {NULL, NULL}};
	unsigned long long sup = 0;
	char q[160], m[300];

	metrics_inc(METRICS_POLLS_ERROR, 1);
	on_breaker_success(r, sched->now_ms);
	u->next_poll_at = reconcile_next_poll_ms(sched);
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
	on_breaker_failure(r, sched->now_ms, res);
	next = reconcile_error_delay_ms(r->breaker.failures > 0 ? r->breaker.failures : 1,
					util_rand32(&r->rnd));
	u->next_poll_at = reconcile_retry_ms(sched, next, util_rand32(&r->rnd));
	if (log_rl_allow(&r->error_rl, 10000, &sup))
		log_fields(LOG_PRIO_WARNING, pf,
			   "reconcile poll failed payment_id=%s http=%ld error=%s detail=%s "
			   "retry_in_ms=%lld suppressed=%llu",
			   log_quote(row->payment_id, q, sizeof(q)), res->http_status,
			   komerce_err_name(res->err), log_quote(res->message, m, sizeof(m)),
			   (long long)(u->next_poll_at > 0 ? u->next_poll_at - sched->now_ms : -1),
			   sup);
}

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
	};
	const struct log_field pf[] = {{"PAYMENT_ID", row->payment_id}, {NULL, NULL}};
	enum payment_status st = PAYMENT_UNKNOWN;
	struct komerce_payment p;
	char q[160];

	memset(&p, 0, sizeof(p));
	if (res->err == KOMERCE_OK) {
		if (komerce_payment_from_json(res->data, &p) == 0 &&
		    strcmp(p.payment_id, row->payment_id) == 0)
			st = payment_status_parse(p.status);
		if (st == PAYMENT_UNKNOWN) {
			res->err = KOMERCE_E_BAD_RESPONSE;
			snprintf(res->message, sizeof(res->message),
				 "status reply without a usable payment (id or status)");
		}
	}
	u->set_next = true;
	if (res->err == KOMERCE_OK)
		on_status(r, row, u, res, &sched, &p, st);
	else if (res->err == KOMERCE_E_RATE_LIMITED)
		on_rate_limited(r, row, u, res, &sched);
	else if (res->err == KOMERCE_E_NOT_FOUND || res->err == KOMERCE_E_BAD_REQUEST ||
		 res->err == KOMERCE_E_HTTP)
		on_refused(r, row, u, res, &sched);
	else
		on_failed(r, row, u, res, &sched);
	if (u->next_poll_at == 0 && !u->has_event)
		log_fields(
			LOG_PRIO_INFO, pf,
			"reconcile stops watching a payment still PENDING payment_id=%s polls=%ld "
			"expires_at=%lld",
			log_quote(row->payment_id, q, sizeof(q)), u->poll_attempts,
			(long long)sched.expires_at_s);
}

enum outcome {
	POLLED,	 /* sent, or deferred, or no longer watched: go on with the next row */
	BLOCKED, /* breaker open: stop this round */
	FAILED,	 /* a store write failed: back off */
};

static void probe_not_sent(struct reconcile *r)
{
	if (r->breaker.state == RECONCILE_BREAKER_HALF_OPEN)
		r->breaker.state = RECONCILE_BREAKER_OPEN; /* its period is over: next allow() */
}

/* Waits (stop-aware) until the bucket has a token and takes it. False when stopping. */
static bool take_token(struct reconcile *r)
{
	for (;;) {
		int64_t now = util_mono_ms(), wait;

		if (util_flag_get(&r->stop))
			return false;
		if (ratelimit_take(&r->bucket, now) == 0)
			return true;
		wait = ratelimit_wait_ms(&r->bucket, now);
		/* Before sleeping, write what is queued: a learned status is not held back. */
		if (r->n_updates > 0 && wait > 5)
			flush(r);
		sleep_for(r, wait > 0 ? wait : 1, false, 0);
	}
}

static enum outcome poll_one(struct reconcile *r, const struct store_reconcile_row *row)
{
	struct store_reconcile_update *mark, *u;
	struct komerce_result res;
	int64_t now = util_now_ms(), guard, wait, t;
	int err;

	/* The 3 s rule, from the persisted last poll and from this process's own memory. */
	guard = row->last_polled_at > 0 ? row->last_polled_at + r->min_ms : 0;
	wait = ratelimit_keys_wait_ms(r->keys, row->payment_id, util_mono_ms());
	if (now < guard || wait > 0) {
		defer(r, row, guard > now + wait ? guard : now + wait);
		return POLLED;
	}
	if (reconcile_breaker_ready_ms(&r->breaker, now) > now)
		return BLOCKED;
	if (!take_token(r))
		return BLOCKED;
	now = util_now_ms();
	if (!reconcile_breaker_allow(&r->breaker, now))
		return BLOCKED;
	/* From here on a half-open breaker's probe is this request: if it is not sent, give the
	 * probe back. */

	/* Mark first, committed together with the queued results: once the request may have
	 * left, a crash cannot make the next poll of this payment come early. */
	mark = queue_update(r, row->payment_id);
	if (mark == NULL) {
		probe_not_sent(r);
		return FAILED;
	}
	mark->only_if_watched = true;
	mark->last_polled_at = now;
	mark->set_next = true;
	mark->next_poll_at = now + r->hold_ms;
	err = flush(r);
	if (err < 0 || !mark->matched) {
		/* A failed write, or the payment became terminal meanwhile (a callback). */
		probe_not_sent(r);
		return err < 0 ? FAILED : POLLED;
	}

	komerce_payment_status(r->k, row->payment_id, &res);
	t = util_now_ms();
	ratelimit_keys_note(r->keys, row->payment_id, util_mono_ms());

	u = queue_update(r, row->payment_id);
	if (u == NULL) {
		komerce_result_clear(&res);
		return FAILED;
	}
	/* The reply came back at t: the request reached Komerce no later than that. */
	u->last_polled_at = t;
	u->poll_attempts = row->poll_attempts + 1;
	handle_reply(r, row, u, &res, t);
	komerce_result_clear(&res);
	return POLLED;
}

/* One pass over what is due. Returns the delay before the next pass (ms). */
static int64_t round_once(struct reconcile *r)
{
	int64_t now = util_now_ms(), next_due = 0, delay;
	size_t n = 0, i;
	enum outcome o = POLLED;
	int err;

	update_gauges(r, false);
	if (r->rate <= 0)
		return MAX_RESCAN_MS;
	err = store_reconcile_due(r->reader, now, BATCH, r->rows, &n);
	if (err < 0) {
		unsigned long long sup = 0;

		if (log_rl_allow(&r->store_rl, 10000, &sup))
			log_err("reconcile cannot read due payments err=%d detail=\"%s\" "
				"suppressed=%llu",
				err, store_errmsg(r->reader), sup);
		return STORE_RETRY_MS;
	}
	for (i = 0; i < n && !util_flag_get(&r->stop); i++) {
		o = poll_one(r, &r->rows[i]);
		if (o != POLLED)
			break;
	}
	if (flush(r) < 0 || o == FAILED)
		return STORE_RETRY_MS;
	if (util_flag_get(&r->stop))
		return 0;
	now = util_now_ms();
	if (o == BLOCKED)
		return reconcile_breaker_ready_ms(&r->breaker, now) - now;
	if (n == BATCH)
		return 0; /* more may be due */
	delay = r->rescan_ms < GAUGE_MS ? r->rescan_ms : GAUGE_MS;
	err = store_reconcile_next_due(r->reader, &next_due);
	if (err == 0 && next_due - now < delay)
		delay = next_due - now;
	return delay > 10 ? delay : 10;
}

static void *reconcile_main(void *arg)
{
	struct reconcile *r = arg;

	update_gauges(r, true);
	while (!util_flag_get(&r->stop)) {
		uint64_t gen = current_gen(r);
		int64_t delay = round_once(r);

		if (delay > 0)
			sleep_for(r, delay, true, gen);
	}
	flush(r);
	return NULL;
}

void reconcile_wake(struct reconcile *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	r->gen++;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

static void reconcile_free(struct reconcile *r)
{
	if (r == NULL)
		return;
	release_updates(r);
	komerce_free(r->k);
	ratelimit_keys_free(r->keys);
	store_close(r->reader);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

void reconcile_stop(struct reconcile *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	util_flag_set(&r->stop);
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
	if (r->started)
		pthread_join(r->thread, NULL);
	reconcile_free(r);
}

int reconcile_start(const struct config *cfg, struct store *writer, struct reconcile **ret,
		    char *err, size_t err_len)
{
	struct komerce_opts ko = {
		.base_url = cfg->base_url,
		.api_key = cfg->api_key,
	};
	pthread_condattr_t ca;
	struct reconcile *r;
	size_t cap;
	int e;

	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, err_len, "reconcile: out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&r->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cond, &ca);
	pthread_condattr_destroy(&ca);
	r->writer = writer;
	r->rate = cfg->max_requests_per_second;
	r->rate_now = r->rate;
	r->min_ms = cfg->min_interval_seconds * 1000 + RECONCILE_SAFETY_MS;
	ko.timeout_ms = cfg->timeout_ms < MAX_TIMEOUT_MS ? cfg->timeout_ms : MAX_TIMEOUT_MS;
	ko.connect_timeout_ms =
		cfg->connect_timeout_ms < ko.timeout_ms ? cfg->connect_timeout_ms : ko.timeout_ms;
	r->hold_ms = ko.timeout_ms + r->min_ms + 1000;
	r->rescan_ms = clamp64(cfg->grace_seconds * 1000, 1000, MAX_RESCAN_MS);
	r->rnd = util_rand_seed(r);
	reconcile_breaker_init(&r->breaker);
	/* Burst 1: requests are spread evenly, never bunched after an idle spell. */
	ratelimit_bucket_init(&r->bucket, r->rate, 1, util_mono_ms());
	cap = (size_t)(r->rate * (double)r->min_ms / 1000.0) + 64;
	r->keys = ratelimit_keys_new(cap, r->min_ms);
	ko.stop = &r->stop;
	r->k = komerce_new(&ko);
	if (r->keys == NULL || r->k == NULL) {
		snprintf(err, err_len, "reconcile: out of memory");
		reconcile_free(r);
		return -ENOMEM;
	}
	e = store_open_like(writer, STORE_MODE_READER, &r->reader, err, err_len);
	if (e < 0) {
		reconcile_free(r);
		return e;
	}
	if (r->rate <= 0)
		log_warn("reconcile max_requests_per_second = 0: no status polls will be sent");
	e = pthread_create(&r->thread, NULL, reconcile_main, r);
	if (e != 0) {
		snprintf(err, err_len, "reconcile: cannot start the thread");
		reconcile_free(r);
		return -e;
	}
	r->started = true;
	log_info("reconcile started max_requests_per_second=%.2f grace_seconds=%ld "
		 "min_interval_ms=%lld timeout_ms=%ld",
		 r->rate, cfg->grace_seconds, (long long)r->min_ms, ko.timeout_ms);
	*ret = r;
	return 0;
}
