/* The store's common layer: handles (open/close, dispatch to the backend), the writer thread
 * that applies queued requests in group-committed transactions, and its statistics. HTTP
 * threads, the forwarder, the reconciler and the admin API call store_submit(); only the writer
 * thread (or an ADMIN handle's caller, store_apply_now) runs the backend's write functions.
 * Queries are passed straight to the backend on the caller's own handle. */
#include "store_backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

const double store_commit_bucket_ms[STORE_COMMIT_BUCKETS] = {0.5, 1,   2,   5,	 10,  25,
							     50,  100, 250, 500, 1000};
const double store_batch_bucket[STORE_BATCH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

#define DEFAULT_BATCH_MAX 512
#define DEFAULT_QUEUE_MAX 65536

/* ---- handles ---- */

static const struct store_backend *backend_for(enum store_backend_kind k)
{
	switch (k) {
	case STORE_BACKEND_SQLITE:
		return &store_backend_sqlite;
	case STORE_BACKEND_POSTGRESQL:
		return &store_backend_pg;
	}
	return NULL;
}

/* Copies the caller's strings into the handle, so that o may go away after open. */
static int copy_opts(struct store *s, const struct store_opts *o)
{
	s->opts = *o;
	if (s->opts.batch_max <= 0)
		s->opts.batch_max = DEFAULT_BATCH_MAX;
	if (s->opts.queue_max <= 0)
		s->opts.queue_max = DEFAULT_QUEUE_MAX;
	s->path = strdup(o->path != NULL ? o->path : "");
	s->url = strdup(o->url != NULL ? o->url : "");
	s->instance = strdup(o->instance != NULL ? o->instance : "");
	if (s->path == NULL || s->url == NULL || s->instance == NULL)
		return -ENOMEM;
	s->opts.path = s->path;
	s->opts.url = s->url;
	s->opts.instance = s->instance;
	if (o->n_sinks > STORE_MAX_SINKS)
		return -E2BIG;
	for (size_t i = 0; i < o->n_sinks; i++) {
		snprintf(s->sink_names[i], sizeof(s->sink_names[i]), "%s", o->sinks[i].name);
		s->sinks[i].name = s->sink_names[i];
		s->sinks[i].conflicts = o->sinks[i].conflicts;
	}
	s->opts.sinks = s->sinks;
	return 0;
}

int store_open(const struct store_opts *o, struct store **ret, char *err, size_t err_len)
{
	struct store *s = calloc(1, sizeof(*s));
	int r;

	if (s == NULL) {
		snprintf(err, err_len, "store: out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->be = backend_for(o->backend);
	r = s->be == NULL ? -EINVAL : copy_opts(s, o);
	if (r < 0) {
		snprintf(err, err_len, "store: %s",
			 r == -E2BIG	? "too many sinks"
			 : r == -EINVAL ? "unknown backend"
					: "out of memory");
		store_close(s);
		return r;
	}
	r = s->be->open(s, err, err_len);
	if (r < 0) {
		store_close(s);
		return r;
	}
	*ret = s;
	return 0;
}

int store_open_like(struct store *s, enum store_mode mode, struct store **ret, char *err,
		    size_t err_len)
{
	struct store_opts o = s->opts;

	o.mode = mode;
	return store_open(&o, ret, err, err_len);
}

void store_close(struct store *s)
{
	if (s == NULL)
		return;
	store_writer_stop(s);
	if (s->be != NULL)
		s->be->close(s);
	free(s->path);
	if (s->url != NULL)
		explicit_bzero(s->url, strlen(s->url));
	free(s->url);
	free(s->instance);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cond);
	free(s);
}

const char *store_errmsg(struct store *s)
{
	return s->err;
}

const char *store_backend_name(const struct store *s)
{
	return s->be->name;
}

/* ---- request constructors ---- */

static void req_init(struct store_req *r, enum store_req_kind kind)
{
	memset(r, 0, sizeof(*r));
	r->kind = kind;
}

void store_req_event(struct store_req *r, const struct event *ev)
{
	req_init(r, STORE_REQ_EVENT);
	r->ev = *ev;
}

void store_req_track(struct store_req *r, const struct event *ev)
{
	req_init(r, STORE_REQ_TRACK);
	r->ev = *ev;
}

void store_req_outcomes(struct store_req *r, const struct store_outbox_outcome *o, size_t n)
{
	req_init(r, STORE_REQ_OUTCOMES);
	r->u.outcomes.list = o;
	r->u.outcomes.n = n;
}

void store_req_outcome(struct store_req *r, int64_t outbox_id, enum store_outbox_verdict v,
		       int64_t at, const char *error)
{
	req_init(r, STORE_REQ_OUTCOMES);
	r->u.outcomes.one = (struct store_outbox_outcome){
		.outbox_id = outbox_id, .verdict = v, .at = at, .error = error};
	r->u.outcomes.list = &r->u.outcomes.one;
	r->u.outcomes.n = 1;
}

void store_req_replay(struct store_req *r, int64_t event_id, const char *sink, const char *by)
{
	req_init(r, STORE_REQ_REPLAY);
	r->u.replay.event_id = event_id;
	if (sink != NULL)
		snprintf(r->u.replay.sink, sizeof(r->u.replay.sink), "%s", sink);
	snprintf(r->u.replay.by, sizeof(r->u.replay.by), "%s", by != NULL ? by : "");
}

void store_req_reconcile(struct store_req *r, struct store_reconcile_update *u, size_t n)
{
	req_init(r, STORE_REQ_RECONCILE);
	r->u.reconcile.list = u;
	r->u.reconcile.n = n;
}

void store_req_prune(struct store_req *r, int64_t before_ms, long limit)
{
	req_init(r, STORE_REQ_PRUNE);
	r->u.prune.before_ms = before_ms;
	r->u.prune.limit = limit;
}

/* ---- the writer ---- */

/* Per-transaction tallies, added to the statistics after a successful commit. */
struct tally {
	size_t events, dups, conflicts;
	uint64_t by[4][EVENT_SOURCE_COUNT];
	int64_t first_poll; /* earliest poll an event or track request scheduled, 0 */
};

static void tally_event(struct tally *t, enum payment_status st, enum event_source src,
			bool duplicate, bool conflict)
{
	if (duplicate) {
		t->dups++;
		return;
	}
	t->events++;
	t->conflicts += conflict;
	if (st >= PAYMENT_PENDING && st <= PAYMENT_CANCELED && (int)src >= 0 &&
	    (int)src < EVENT_SOURCE_COUNT)
		t->by[st][src]++;
}

static void tally_req(struct tally *t, const struct store_req *r)
{
	if (r->result != 0)
		return;
	if ((r->kind == STORE_REQ_EVENT || r->kind == STORE_REQ_TRACK) && r->next_poll_at > 0 &&
	    (t->first_poll == 0 || r->next_poll_at < t->first_poll))
		t->first_poll = r->next_poll_at;
	if (r->kind == STORE_REQ_EVENT) {
		tally_event(t, r->ev.status, r->ev.source, r->duplicate, r->conflict);
	} else if (r->kind == STORE_REQ_RECONCILE) {
		for (size_t i = 0; i < r->u.reconcile.n; i++) {
			const struct store_reconcile_update *u = &r->u.reconcile.list[i];

			if (u->has_event && u->event_id > 0)
				tally_event(t, u->ev.status, EVENT_SOURCE_RECONCILE, u->duplicate,
					    u->conflict);
			if (u->marker_event_id > 0)
				tally_event(t,
					    u->komerce_status != PAYMENT_UNKNOWN ? u->komerce_status
										 : PAYMENT_PENDING,
					    EVENT_SOURCE_RECONCILE, false, true);
		}
	}
}

static bool storage_error(int err)
{
	/* Errors that poison the whole transaction rather than one request. */
	return err == -ENOSPC || err == -EIO || err == -EAGAIN || err == -ENOMEM ||
	       err == -EBADMSG || err == -EACCES || err == -ECONNRESET || err == -ENOTCONN;
}

static void observe(uint64_t *buckets, const double *bounds, size_t n, double v)
{
	size_t i = 0;

	while (i < n && v > bounds[i])
		i++;
	__atomic_fetch_add(&buckets[i], 1, __ATOMIC_RELAXED);
}

/* One request, inside the open transaction: the backend's apply(), or its optional prune(). */
static int apply_one(struct store *s, struct store_req *r)
{
	if (r->kind == STORE_REQ_PRUNE)
		return s->be->prune != NULL ? s->be->prune(s, r) : -ENOTSUP;
	return s->be->apply(s, r);
}

/* Runs each request of the batch in a savepoint of one open transaction. Returns 0, or the
 * storage error that stopped it (the caller rolls back). */
static int apply_batch(struct store *s, struct store_req *batch)
{
	const struct store_backend *be = s->be;
	int err = 0;

	for (struct store_req *r = batch; r != NULL && err == 0; r = r->next) {
		int e;

		err = be->savepoint(s);
		if (err < 0)
			break;
		e = apply_one(s, r);
		if (e < 0 && storage_error(e))
			return e;
		if (e < 0) {
			r->result = e;
			r->event_id = 0; /* an optimistic first pass may have set it */
			err = be->rollback_to(s);
			if (err < 0)
				break;
		}
		err = be->release(s);
	}
	return err;
}

/* A batch of callback events only (the ingest path), which the backend lets us try without
 * savepoints. */
static bool optimistic(const struct store *s, const struct store_req *batch)
{
	if (!s->be->optimistic_events)
		return false;
	for (const struct store_req *r = batch; r != NULL; r = r->next) {
		if (r->kind != STORE_REQ_EVENT)
			return false;
	}
	return true;
}

/* The whole batch without savepoints. 0 with *redo set when a request failed on its own (the
 * transaction now holds part of it: the caller rolls back and applies it again with
 * savepoints), or a storage error. */
static int apply_batch_optimistic(struct store *s, struct store_req *batch, bool *redo)
{
	*redo = false;
	for (struct store_req *r = batch; r != NULL; r = r->next) {
		int e = apply_one(s, r);

		if (e < 0 && storage_error(e))
			return e;
		if (e < 0) {
			*redo = true;
			return 0;
		}
	}
	return 0;
}

/* begin() and the backend's prefetch. */
static int begin_batch(struct store *s, struct store_req *batch)
{
	int err = s->be->begin(s);

	if (err == 0 && s->be->prefetch != NULL)
		err = s->be->prefetch(s, batch);
	return err;
}

/* Applies the batch inside a transaction begun by begin_batch(): optimistically when it can,
 * and again request by request (a savepoint each) when that found a request in error. */
static int apply_all(struct store *s, struct store_req *batch)
{
	bool redo;
	int err;

	if (!optimistic(s, batch))
		return apply_batch(s, batch);
	err = apply_batch_optimistic(s, batch, &redo);
	if (err < 0 || !redo)
		return err;
	__atomic_fetch_add(&s->stats.batch_retries, 1, __ATOMIC_RELAXED);
	s->be->rollback(s);
	err = begin_batch(s, batch);
	return err < 0 ? err : apply_batch(s, batch);
}

static void add_stats(struct store *s, const struct tally *t, size_t n, int64_t us, bool ok)
{
	struct store_writer_stats *st = &s->stats;

	if (ok) {
		__atomic_fetch_add(&st->commits, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&st->events, t->events, __ATOMIC_RELAXED);
		__atomic_fetch_add(&st->duplicates, t->dups, __ATOMIC_RELAXED);
		__atomic_fetch_add(&st->conflicts, t->conflicts, __ATOMIC_RELAXED);
		for (size_t a = 0; a < 4; a++)
			for (size_t b = 0; b < EVENT_SOURCE_COUNT; b++)
				if (t->by[a][b] != 0)
					__atomic_fetch_add(&st->events_by[a][b], t->by[a][b],
							   __ATOMIC_RELAXED);
	} else {
		__atomic_fetch_add(&st->commit_failures, 1, __ATOMIC_RELAXED);
	}
	__atomic_fetch_add(&st->commit_us_total, (uint64_t)us, __ATOMIC_RELAXED);
	__atomic_fetch_add(&st->batch_total, n, __ATOMIC_RELAXED);
	observe(st->commit_us_bucket, store_commit_bucket_ms, STORE_COMMIT_BUCKETS,
		(double)us / 1000.0);
	observe(st->batch_bucket, store_batch_bucket, STORE_BATCH_BUCKETS, (double)n);
}

/* Applies one batch in one transaction. A request that fails on its own (bad input) leaves
 * nothing behind while the others commit; a storage error (disk full, I/O, busy past the
 * timeout) rolls the whole batch back and fails every request in it, so nothing is
 * acknowledged that is not durable. Then every done() runs, after the commit. */
static void run_batch(struct store *s, struct store_req *batch, size_t n)
{
	int64_t t0 = util_mono_us();
	struct tally t;
	int err;

	memset(&t, 0, sizeof(t));
	err = begin_batch(s, batch);
	if (err == 0)
		err = apply_all(s, batch);
	if (err == 0)
		err = s->be->commit(s);
	if (err < 0) {
		s->be->rollback(s);
		for (struct store_req *r = batch; r != NULL; r = r->next) {
			r->result = err;
			r->event_id = 0;
		}
	} else {
		for (struct store_req *r = batch; r != NULL; r = r->next)
			tally_req(&t, r);
	}
	add_stats(s, &t, n, util_mono_us() - t0, err == 0);
	if (err == 0 && t.events > 0 && s->commit_hook != NULL)
		s->commit_hook(s->commit_hook_arg, t.events);
	if (err == 0 && t.first_poll > 0) {
		/* Under the lock: once store_set_poll_hook() returns, the old hook is not running
		 * (its owner may be freed). The hook only wakes a thread. */
		pthread_mutex_lock(&s->mu);
		if (s->poll_hook != NULL)
			s->poll_hook(s->poll_hook_arg, t.first_poll);
		pthread_mutex_unlock(&s->mu);
	}

	/* done() may free or reuse r (the HTTP layer resumes the connection): read next first. */
	for (struct store_req *r = batch, *next; r != NULL; r = next) {
		next = r->next;
		r->next = NULL;
		r->done(r);
	}
}

static void *writer_main(void *arg)
{
	struct store *s = arg;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct store_req *batch, *last;
		size_t n = 1;

		while (s->head == NULL && !s->stopping)
			pthread_cond_wait(&s->cond, &s->mu);
		if (s->head == NULL)
			break; /* stopping and drained */
		batch = last = s->head;
		/* A prune batch runs in a transaction of its own (and ends the batch before it),
		 * so that no callback's commit carries its deletes. */
		while (last->next != NULL && (long)n < s->opts.batch_max &&
		       last->kind != STORE_REQ_PRUNE && last->next->kind != STORE_REQ_PRUNE) {
			last = last->next;
			n++;
		}
		s->head = last->next;
		if (s->head == NULL)
			s->tail = NULL;
		last->next = NULL;
		s->queue_len -= (long)n;
		pthread_mutex_unlock(&s->mu);

		run_batch(s, batch, n);

		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

int store_writer_start(struct store *s)
{
	int r;

	if (s->opts.mode != STORE_MODE_WRITER)
		return -EROFS;
	s->stopping = false;
	r = pthread_create(&s->thread, NULL, writer_main, s);
	if (r != 0)
		return -r;
	s->running = true;
	return 0;
}

void store_writer_stop(struct store *s)
{
	if (s == NULL || !s->running)
		return;
	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	s->running = false;
}

int store_submit(struct store *s, struct store_req *r)
{
	int ret = 0;

	r->next = NULL;
	r->result = 0;
	pthread_mutex_lock(&s->mu);
	if (!s->running || s->stopping) {
		ret = -ESHUTDOWN;
	} else if (s->queue_len >= s->opts.queue_max) {
		ret = -EAGAIN;
	} else {
		if (s->tail != NULL)
			s->tail->next = r;
		else
			s->head = r;
		s->tail = r;
		s->queue_len++;
		pthread_cond_signal(&s->cond);
	}
	pthread_mutex_unlock(&s->mu);
	return ret;
}

struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool done;
};

static void wait_done(struct store_req *r)
{
	struct waiter *w = r->priv;

	pthread_mutex_lock(&w->mu);
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->mu);
}

int store_submit_wait(struct store *s, struct store_req *r)
{
	struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	int ret;

	r->done = wait_done;
	r->priv = &w;
	ret = store_submit(s, r);
	if (ret < 0) {
		r->result = ret;
		return ret;
	}
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.mu);
	pthread_mutex_unlock(&w.mu);
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cond);
	return r->result;
}

int store_apply_now(struct store *s, struct store_req *r)
{
	int err;

	if (s->opts.mode == STORE_MODE_READER || s->running)
		return r->result = -EROFS;
	r->next = NULL;
	r->result = 0;
	err = s->be->begin(s);
	if (err == 0) {
		int e = apply_one(s, r);

		if (e < 0 && storage_error(e))
			err = e;
		else if (e < 0)
			r->result = e;
	}
	if (err == 0 && r->result == 0)
		err = s->be->commit(s);
	if (err < 0 || r->result < 0)
		s->be->rollback(s);
	if (err < 0)
		r->result = err;
	return r->result;
}

void store_set_commit_hook(struct store *s, void (*fn)(void *arg, size_t new_events), void *arg)
{
	s->commit_hook = fn;
	s->commit_hook_arg = arg;
}

void store_set_poll_hook(struct store *s, void (*fn)(void *arg, int64_t due_ms), void *arg)
{
	pthread_mutex_lock(&s->mu);
	s->poll_hook = fn;
	s->poll_hook_arg = arg;
	pthread_mutex_unlock(&s->mu);
}

void store_writer_stats_get(struct store *s, struct store_writer_stats *ret)
{
	memcpy(ret, &s->stats, sizeof(*ret));
	pthread_mutex_lock(&s->mu);
	ret->queue_len = s->queue_len;
	pthread_mutex_unlock(&s->mu);
}

/* ---- queries: the backend's, on the caller's handle ---- */

int store_payment_get(struct store *s, const char *payment_id, struct store_payment *ret)
{
	return s->be->payment_get(s, payment_id, ret);
}

int store_payments_list(struct store *s, const struct store_payment_filter *f,
			int (*fn)(void *arg, const struct store_payment *p), void *arg)
{
	return s->be->payments_list(s, f, fn, arg);
}

int store_events_query(struct store *s, const struct store_event_filter *f,
		       int (*fn)(void *arg, const struct store_event *e), void *arg)
{
	return s->be->events_query(s, f, fn, arg);
}

int store_events_plan(struct store *s, const struct store_event_filter *f, char *out,
		      size_t out_len)
{
	if (s->be->events_plan == NULL)
		return -ENOTSUP;
	return s->be->events_plan(s, f, out, out_len);
}

int store_count(struct store *s, const char *table, int64_t *ret)
{
	static const char *const allowed[] = {"events", "payments", "receipts", "outbox", "polls"};

	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
		if (strcmp(table, allowed[i]) == 0)
			return s->be->count(s, allowed[i], ret);
	return -EINVAL;
}

int store_chain_head(struct store *s, int64_t *ret_id, uint8_t ret_hash[STORE_HASH_LEN])
{
	if (s->be->chain_head == NULL)
		return -ENOTSUP;
	return s->be->chain_head(s, ret_id, ret_hash);
}

int store_verify(struct store *s, int64_t *ret_checked, int64_t *ret_bad_id, char *why,
		 size_t why_len)
{
	return s->be->verify(s, ret_checked, ret_bad_id, why, why_len);
}

int store_orphans(struct store *s, int64_t *ret_bad_id, char *why, size_t why_len)
{
	return s->be->orphans(s, ret_bad_id, why, why_len);
}

int store_stats(struct store *s, int64_t now_ms, struct store_stats *ret)
{
	return s->be->stats(s, now_ms, ret);
}

int store_backup(struct store *s, const char *dest, int64_t *ret_bytes, char *err, size_t err_len)
{
	if (s->be->backup == NULL) {
		snprintf(err, err_len,
			 "backup: the %s backend is backed up with its own tools (pg_dump "
			 "--format=custom; see README \"Several instances\")",
			 s->be->name);
		return -ENOTSUP;
	}
	return s->be->backup(s, dest, ret_bytes, err, err_len);
}

int store_outbox_next(struct store *s, const char *sink, int64_t now_ms, long limit,
		      struct store_outbox_row **ret_rows, size_t *ret_n)
{
	if (limit <= 0)
		return -EINVAL;
	return s->be->outbox_next(s, sink, now_ms, limit, ret_rows, ret_n);
}

void store_outbox_rows_free(struct store_outbox_row *rows, size_t n)
{
	if (rows == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(rows[i].raw_json);
	free(rows);
}

int store_outbox_count(struct store *s, const char *sink, enum store_outbox_state state,
		       int64_t *ret)
{
	return s->be->outbox_count(s, sink, state, ret);
}

int store_outbox_list(struct store *s, const struct store_outbox_filter *f,
		      int (*fn)(void *arg, const struct store_outbox_row *r), void *arg)
{
	return s->be->outbox_list(s, f, fn, arg);
}

int store_outbox_summaries(struct store *s,
			   int (*fn)(void *arg, const struct store_outbox_summary *sum), void *arg)
{
	return s->be->outbox_summaries(s, fn, arg);
}

int store_reconcile_due(struct store *s, int64_t now_ms, size_t max,
			struct store_reconcile_row *rows, size_t *ret_n)
{
	if (max == 0 || rows == NULL)
		return -EINVAL;
	return s->be->reconcile_due(s, now_ms, max, rows, ret_n);
}

int store_reconcile_next_due(struct store *s, int64_t *ret_ms)
{
	return s->be->reconcile_next_due(s, ret_ms);
}

int store_reconcile_watched(struct store *s, int64_t *ret)
{
	return s->be->reconcile_watched(s, ret);
}

int store_reconcile_pending(struct store *s, int64_t now_s, int64_t *ret_pending,
			    int64_t *ret_expired)
{
	return s->be->reconcile_pending(s, now_s, ret_pending, ret_expired);
}

int store_polls_list(struct store *s, const char *payment_id, long limit,
		     int (*fn)(void *arg, const struct store_poll *p), void *arg)
{
	if (payment_id == NULL || limit < 0)
		return -EINVAL;
	return s->be->polls_list(s, payment_id, limit, fn, arg);
}

/* ---- copies ---- */

static const char *const payment_cols[] = {
	"payment_id",	   "order_id",	       "payment_type",	 "channel_code",
	"amount",	   "status",	       "expires_at",	 "created_at",
	"updated_at",	   "callback_seen_at", "last_polled_at", "next_poll_at",
	"poll_attempts",   "origin",	       "confirmation",	 "confirmation_detail",
	"confirmation_at", "held_event_id"};
static const char *const event_cols[] = {"id",		 "payment_id",	 "order_id",  "status",
					 "amount",	 "source",	 "conflict",  "dedupe_key",
					 "raw_json",	 "received_at",	 "prev_hash", "hash",
					 "confirmation", "held_event_id"};
static const char *const receipt_cols[] = {"id",	  "event_id",	 "source",
					   "remote_addr", "received_at", "instance"};
static const char *const outbox_cols[] = {
	"id",	       "event_id",	  "payment_id", "sink",	      "state",
	"attempts",    "next_attempt_at", "last_error", "created_at", "delivered_at",
	"replayed_at", "replayed_by",	  "replay_of"};
static const char *const poll_cols[] = {"id",	   "payment_id",  "polled_at",	    "elapsed_ms",
					"outcome", "http_status", "komerce_status", "confirming",
					"error"};

#define COLS(a) a, sizeof(a) / sizeof(a[0])
const struct store_table store_tables[STORE_TABLES] = {
	{"payments", COLS(payment_cols), "payment_id"},
	{"events", COLS(event_cols), "id"},
	{"receipts", COLS(receipt_cols), "id"},
	{"outbox", COLS(outbox_cols), "id"},
	{"polls", COLS(poll_cols), "id"},
};
#undef COLS

struct copy {
	struct store *dst;
	void (*progress)(void *arg, const char *table, int64_t rows);
	void *arg;
	const struct store_table *open; /* the table being loaded */
	int64_t rows[STORE_TABLES];
};

static int copy_end_table(struct copy *c)
{
	int r;

	if (c->open == NULL)
		return 0;
	r = c->dst->be->load_end(c->dst, c->open);
	if (r == 0 && c->progress != NULL)
		c->progress(c->arg, c->open->name, c->rows[c->open - store_tables]);
	c->open = NULL;
	return r;
}

static int copy_table(void *arg, const struct store_table *t)
{
	struct copy *c = arg;
	int r = copy_end_table(c);

	if (r == 0)
		r = c->dst->be->load_begin(c->dst, t);
	if (r == 0)
		c->open = t;
	return r;
}

static int copy_row(void *arg, const struct store_table *t, const char *const *vals)
{
	struct copy *c = arg;

	c->rows[t - store_tables]++;
	return c->dst->be->load_row(c->dst, t, vals);
}

/* The copy inside dst's transaction: src's dump streamed into dst's bulk load. */
static int copy_all(struct store *src, struct copy *c, char *err, size_t err_len)
{
	struct store_dump_sink sink = {copy_table, copy_row, c};
	int r = src->be->dump(src, &sink);

	if (r < 0) {
		/* the side that failed left its reason */
		snprintf(err, err_len, "copy: %s",
			 src->err[0] != '\0' ? store_errmsg(src) : store_errmsg(c->dst));
		return r;
	}
	r = copy_end_table(c);
	if (r < 0)
		snprintf(err, err_len, "copy: %s", store_errmsg(c->dst));
	return r;
}

int store_copy(struct store *src, struct store *dst,
	       void (*progress)(void *arg, const char *table, int64_t rows), void *arg,
	       int64_t ret_rows[STORE_TABLES], char *err, size_t err_len)
{
	struct copy c = {.dst = dst, .progress = progress, .arg = arg};
	int64_t n_events = 0, n_payments = 0;
	int r;

	if (dst->be->load_begin == NULL || src->be->dump == NULL || dst->running) {
		snprintf(err, err_len, "copy: the %s backend cannot take a copy", dst->be->name);
		return -ENOTSUP;
	}
	r = store_count(dst, "events", &n_events);
	if (r == 0)
		r = store_count(dst, "payments", &n_payments);
	if (r < 0) {
		snprintf(err, err_len, "copy: %s", store_errmsg(dst));
		return r;
	}
	if (n_events > 0 || n_payments > 0) {
		snprintf(err, err_len,
			 "copy: the destination is not empty (%lld events, %lld payments)",
			 (long long)n_events, (long long)n_payments);
		return -ENOTEMPTY;
	}
	src->err[0] = '\0';
	r = dst->be->begin(dst);
	if (r < 0)
		snprintf(err, err_len, "copy: %s", store_errmsg(dst));
	if (r == 0)
		r = copy_all(src, &c, err, err_len);
	if (r == 0) {
		r = dst->be->commit(dst);
		if (r < 0)
			snprintf(err, err_len, "copy: %s", store_errmsg(dst));
	}
	if (r < 0) {
		dst->be->rollback(dst);
		return r;
	}
	memcpy(ret_rows, c.rows, sizeof(c.rows));
	return 0;
}

/* ---- leadership ---- */

int store_leader_try(struct store *s, const char *job)
{
	if (s->be->leader_try == NULL)
		return 1;
	return s->be->leader_try(s, job);
}

int store_leader_check(struct store *s, long timeout_ms)
{
	if (s->be->leader_check == NULL)
		return 0;
	return s->be->leader_check(s, timeout_ms);
}

void store_leader_release(struct store *s, const char *job)
{
	if (s->be->leader_release != NULL)
		s->be->leader_release(s, job);
}
