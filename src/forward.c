/* Outbox forwarder: one worker thread per configured sink, each with its own read-only store
 * handle; with several instances on one store each sink's worker runs on the instance elected
 * for "forward:<sink>" (leader.c runs and halts it). A worker takes the next due rows (one per
 * payment, so order per payment holds), delivers them through sink_http or sink_redis, and records
 * every outcome through the writer in one store_submit_wait(). Workers sleep on a condition
 * variable that forward_notify() (writer thread, after a commit with new events) signals, with a
 * re-scan at least every second for rows written by other processes and for due retries. */
#include "forward.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "sink_http.h"
#include "sink_redis.h"
#include "sink_sign.h"
#include "store.h"
#include "util.h"

#define RESCAN_MS	1000 /* longest sleep: rows from other processes, due retries */
#define GAUGE_MS	1000
#define BACKLOG_WARN_MS 60000

struct worker {
	struct forward *f;
	const struct config_sink *cfg;
	pthread_t thread;
	bool started; /* the thread runs (touched by the lifecycle's thread only) */
	int stop;     /* atomic; also read by the sinks between I/O slices */
	struct store *reader;
	struct sink_http *http;
	struct sink_redis *redis;
	char gauge[128];
	int64_t next_gauge_ms;
	uint32_t rnd;
	bool failing; /* last round had failures: log recovery once */
	struct log_rl fail_rl, dead_rl, backlog_rl;
	/* per round, reused */
	struct store_outbox_outcome *outcomes; /* sink.NAME.batch of each */
	struct sink_result *results;
};

struct forward {
	pthread_mutex_t mu;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	uint64_t gen;	     /* bumped by forward_notify */
	bool curl_inited;
	struct store *writer;
	struct worker workers[CONFIG_MAX_SINKS];
	size_t n_workers;
};

static void update_gauge(struct worker *w, bool force)
{
	int64_t now = util_mono_ms(), pending = 0;
	unsigned long long suppressed = 0;

	if (!force && now < w->next_gauge_ms)
		return;
	w->next_gauge_ms = now + GAUGE_MS;
	if (store_outbox_count(w->reader, w->cfg->name, STORE_OUTBOX_PENDING, &pending) < 0)
		return;
	metrics_set_gauge(w->gauge, (double)pending);
	if (pending > w->cfg->backlog_warn &&
	    log_rl_allow(&w->backlog_rl, BACKLOG_WARN_MS, &suppressed))
		log_warn("forward backlog over threshold sink=%s pending=%lld threshold=%ld",
			 w->cfg->name, (long long)pending, w->cfg->backlog_warn);
}

/* Turns the sink's verdicts into outcomes; returns how many to record and the earliest
 * retry time in *next_due. */
int64_t forward_backoff_ms(long attempts, uint32_t rnd)
{
	const int64_t cap = 10 * 60 * 1000;
	int64_t base = 1000;

	for (long i = 1; i < attempts && base < cap; i++)
		base *= 2;
	if (base > cap)
		base = cap;
	return base - (int64_t)(rnd % (uint32_t)(base / 4 + 1));
}

static size_t outcomes_for(struct worker *w, const struct store_outbox_row *rows, size_t n,
			   int64_t *next_due, size_t *ret_failed)
{
	int64_t now = util_now_ms(), postpone_to = INT64_MAX;
	size_t k = 0, failed = 0;

	for (size_t i = 0; i < n; i++) {
		const struct store_outbox_row *row = &rows[i];
		struct sink_result *res = &w->results[i];
		struct store_outbox_outcome *o = &w->outcomes[k];
		char q1[160], q2[200], eid[24];
		unsigned long long sup = 0;
		const struct log_field f[] = {
			{"PAYMENT_ID", row->payment_id},
			{"ORDER_ID", row->order_id},
			{"EVENT_ID", log_num(row->event_id, eid, sizeof(eid))},
			{"SINK", w->cfg->name},
			{NULL, NULL}};

		if (res->verdict == SINK_ABANDONED)
			continue;
		o->outbox_id = row->id;
		o->error = res->error;
		if (res->verdict == SINK_NOT_SENT) {
			/* Its time is set below, once the batch's earliest retry is known. */
			o->verdict = STORE_OUTBOX_MARK_POSTPONE;
			o->at = 0;
		} else if (res->verdict == SINK_DELIVERED) {
			o->verdict = STORE_OUTBOX_MARK_DELIVERED;
			o->at = now;
			if (log_max_prio >= LOG_PRIO_DEBUG)
				log_fields(LOG_PRIO_DEBUG, f,
					   "forward delivered sink=%s event_id=%lld attempts=%ld",
					   w->cfg->name, (long long)row->event_id,
					   row->attempts + 1);
		} else if (res->verdict == SINK_DEAD || row->attempts + 1 >= w->cfg->max_attempts) {
			o->verdict = STORE_OUTBOX_MARK_DEAD;
			o->at = now;
			failed++;
			if (log_rl_allow(&w->dead_rl, 1000, &sup))
				log_fields(LOG_PRIO_WARNING, f,
					   "forward dead letter sink=%s event_id=%lld "
					   "payment_id=\"%s\" "
					   "attempts=%ld reason=%s error=\"%s\" suppressed=%llu",
					   w->cfg->name, (long long)row->event_id,
					   log_quote(row->payment_id, q1, sizeof(q1)),
					   row->attempts + 1,
					   res->verdict == SINK_DEAD ? "refused" : "max_attempts",
					   log_quote(res->error, q2, sizeof(q2)), sup);
		} else {
			int64_t delay = forward_backoff_ms(row->attempts + 1, util_rand32(&w->rnd));

			o->verdict = STORE_OUTBOX_MARK_RETRY;
			o->at = now + delay;
			if (o->at < *next_due)
				*next_due = o->at;
			if (o->at < postpone_to)
				postpone_to = o->at;
			failed++;
			if (log_rl_allow(&w->fail_rl, 10000, &sup))
				log_fields(
					LOG_PRIO_WARNING, f,
					"forward delivery failed sink=%s event_id=%lld attempt=%ld "
					"retry_in_ms=%lld error=\"%s\" suppressed=%llu",
					w->cfg->name, (long long)row->event_id, row->attempts + 1,
					(long long)delay, log_quote(res->error, q2, sizeof(q2)),
					sup);
		}
		k++;
	}
	/* Rows that were not sent wait as long as the row whose failure stopped the round. */
	if (postpone_to == INT64_MAX)
		postpone_to = now + 1000;
	for (size_t i = 0; i < k; i++)
		if (w->outcomes[i].verdict == STORE_OUTBOX_MARK_POSTPONE)
			w->outcomes[i].at = postpone_to;
	if (postpone_to < *next_due)
		*next_due = postpone_to;
	*ret_failed = failed;
	return k;
}

static enum metrics_counter counter_for(enum store_outbox_verdict v)
{
	if (v == STORE_OUTBOX_MARK_DELIVERED)
		return METRICS_FORWARD_DELIVERED;
	if (v == STORE_OUTBOX_MARK_RETRY)
		return METRICS_FORWARD_FAILED;
	return METRICS_FORWARD_DEAD;
}

/* One round: returns the number of rows taken (0: nothing due), or -errno. */
static int round_once(struct worker *w, int64_t *next_due)
{
	struct store_outbox_row *rows = NULL;
	struct store_req req;
	size_t n = 0, k, failed = 0;
	int r;

	r = store_outbox_next(w->reader, w->cfg->name, util_now_ms(), w->cfg->batch, &rows, &n);
	if (r < 0) {
		unsigned long long sup = 0;

		if (log_rl_allow(&w->fail_rl, 10000, &sup))
			log_err("forward cannot read the outbox sink=%s err=%d detail=\"%s\"",
				w->cfg->name, r, store_errmsg(w->reader));
		return r;
	}
	if (n == 0) {
		store_outbox_rows_free(rows, n);
		return 0;
	}
	if (w->http != NULL)
		sink_http_deliver(w->http, rows, n, w->results, &w->stop);
	else
		sink_redis_deliver(w->redis, rows, n, w->results, &w->stop);
	k = outcomes_for(w, rows, n, next_due, &failed);
	if (k > 0) {
		store_req_outcomes(&req, w->outcomes, k);
		r = store_submit_wait(w->f->writer, &req);
		if (r < 0) {
			/* Not recorded: the rows stay pending and are sent again. */
			log_err("forward cannot record outcomes sink=%s rows=%zu err=%d",
				w->cfg->name, k, r);
			store_outbox_rows_free(rows, n);
			return r;
		}
		for (size_t i = 0; i < k; i++)
			if (w->outcomes[i].verdict != STORE_OUTBOX_MARK_POSTPONE)
				metrics_inc(counter_for(w->outcomes[i].verdict), 1);
	}
	if (failed == 0 && k > 0 && w->failing) {
		log_info("forward sink delivering again sink=%s", w->cfg->name);
		w->failing = false;
	} else if (failed > 0) {
		w->failing = true;
	}
	store_outbox_rows_free(rows, n);
	return (int)n;
}

static void wait_for_work(struct worker *w, uint64_t *seen, int64_t wake_mono)
{
	struct forward *f = w->f;
	struct timespec ts;

	ts.tv_sec = (time_t)(wake_mono / 1000);
	ts.tv_nsec = (long)(wake_mono % 1000) * 1000000;
	pthread_mutex_lock(&f->mu);
	while (f->gen == *seen && !util_flag_get(&w->stop) && util_mono_ms() < wake_mono)
		if (pthread_cond_timedwait(&f->cond, &f->mu, &ts) == ETIMEDOUT)
			break;
	*seen = f->gen;
	pthread_mutex_unlock(&f->mu);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct forward *f = w->f;
	int64_t next_due = INT64_MAX; /* earliest retry this worker scheduled, unix ms */
	uint64_t seen;

	pthread_mutex_lock(&f->mu);
	seen = f->gen;
	pthread_mutex_unlock(&f->mu);
	update_gauge(w, true);
	while (!util_flag_get(&w->stop)) {
		int n = round_once(w, &next_due);
		int64_t wake, in;

		update_gauge(w, false);
		if (n > 0)
			continue; /* delivered rows may have unblocked later events of a payment */
		in = next_due - util_now_ms();
		if (in <= 0) {
			next_due = INT64_MAX; /* due now: the round just run has taken it */
			in = RESCAN_MS;
		}
		wake = util_mono_ms() + (n == 0 && in < RESCAN_MS ? in : RESCAN_MS);
		wait_for_work(w, &seen, wake);
	}
	update_gauge(w, true);
	return NULL;
}

static void worker_free(struct worker *w)
{
	sink_http_free(w->http);
	sink_redis_free(w->redis);
	store_close(w->reader);
	free(w->outcomes);
	free(w->results);
	w->http = NULL;
	w->redis = NULL;
	w->reader = NULL;
	w->outcomes = NULL;
	w->results = NULL;
}

static int worker_init(struct forward *f, struct worker *w, const struct config_sink *sc, char *err,
		       size_t err_len)
{
	char serr[256];
	int r;

	w->f = f;
	w->cfg = sc;
	w->rnd = util_rand_seed(w);
	snprintf(w->gauge, sizeof(w->gauge), "hookd_outbox_pending{sink=\"%s\"}", sc->name);
	w->outcomes = calloc((size_t)sc->batch, sizeof(*w->outcomes));
	w->results = calloc((size_t)sc->batch, sizeof(*w->results));
	if (w->outcomes == NULL || w->results == NULL) {
		snprintf(err, err_len, "forward: sink.%s: out of memory", sc->name);
		return -ENOMEM;
	}
	if (sc->type == CONFIG_SINK_HTTP) {
		w->http = sink_http_new(sc, (size_t)sc->parallel);
		if (w->http == NULL) {
			snprintf(err, err_len, "forward: sink.%s: out of memory", sc->name);
			return -ENOMEM;
		}
	} else {
		r = sink_redis_new(sc, &w->redis);
		if (r < 0) {
			snprintf(err, err_len, "forward: sink.%s.url: %s", sc->name,
				 r == -EINVAL ? "must be redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]"
					      : "out of memory");
			return r;
		}
	}
	r = store_open_like(f->writer, STORE_MODE_READER, &w->reader, serr, sizeof(serr));
	if (r < 0) {
		snprintf(err, err_len, "forward: sink.%s: %s", sc->name, serr);
		return r;
	}
	return 0;
}

int forward_new(const struct config *cfg, struct store *writer, struct forward **ret, char *err,
		size_t err_len)
{
	struct forward *f;
	pthread_condattr_t ca;
	int r = 0;

	f = calloc(1, sizeof(*f));
	if (f == NULL) {
		snprintf(err, err_len, "forward: out of memory");
		return -ENOMEM;
	}
	f->writer = writer;
	pthread_mutex_init(&f->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->cond, &ca);
	pthread_condattr_destroy(&ca);

	for (size_t i = 0; i < cfg->n_sinks; i++) {
		if (cfg->sinks[i].type == CONFIG_SINK_HTTP && !f->curl_inited) {
			if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
				snprintf(err, err_len, "forward: libcurl initialisation failed");
				forward_stop(f);
				return -EIO;
			}
			f->curl_inited = true;
		}
		r = worker_init(f, &f->workers[i], &cfg->sinks[i], err, err_len);
		f->n_workers = i + 1;
		if (r < 0) {
			forward_stop(f);
			return r;
		}
	}
	for (size_t i = 0; i < f->n_workers; i++)
		log_info("forward sink ready sink=%s type=%s signature=%s max_attempts=%ld",
			 cfg->sinks[i].name,
			 cfg->sinks[i].type == CONFIG_SINK_HTTP ? "http" : "redis",
			 cfg->sinks[i].type != CONFIG_SINK_HTTP	      ? "none"
			 : cfg->sinks[i].signature == SINK_SIGN_HOOKD ? "hookd"
								      : "standardwebhooks",
			 cfg->sinks[i].max_attempts);
	*ret = f;
	return 0;
}

int forward_run(struct forward *f, size_t i)
{
	struct worker *w;
	int r;

	if (i >= f->n_workers)
		return -EINVAL;
	w = &f->workers[i];
	if (w->started)
		return 0;
	__atomic_store_n(&w->stop, 0, __ATOMIC_RELEASE);
	w->next_gauge_ms = 0;
	r = pthread_create(&w->thread, NULL, worker_main, w);
	if (r != 0)
		return -r;
	w->started = true;
	log_info("forward running sink=%s", w->cfg->name);
	return 0;
}

void forward_halt(struct forward *f, size_t i)
{
	struct worker *w;

	if (f == NULL || i >= f->n_workers || !f->workers[i].started)
		return;
	w = &f->workers[i];
	pthread_mutex_lock(&f->mu);
	util_flag_set(&w->stop);
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
	pthread_join(w->thread, NULL);
	w->started = false;
	log_info("forward halted sink=%s", w->cfg->name);
}

int forward_start(const struct config *cfg, struct store *writer, struct forward **ret, char *err,
		  size_t err_len)
{
	struct forward *f;
	int r = forward_new(cfg, writer, &f, err, err_len);

	if (r < 0)
		return r;
	for (size_t i = 0; i < f->n_workers; i++) {
		r = forward_run(f, i);
		if (r < 0) {
			snprintf(err, err_len, "forward: cannot start a thread");
			forward_stop(f);
			return r;
		}
	}
	*ret = f;
	return 0;
}

void forward_notify(struct forward *f)
{
	if (f == NULL)
		return;
	pthread_mutex_lock(&f->mu);
	f->gen++;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
}

void forward_stop(struct forward *f)
{
	if (f == NULL)
		return;
	for (size_t i = 0; i < f->n_workers; i++) {
		forward_halt(f, i);
		worker_free(&f->workers[i]);
	}
	if (f->curl_inited)
		curl_global_cleanup();
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cond);
	free(f);
}
