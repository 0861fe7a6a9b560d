/* Leadership of the jobs that run on one instance at a time. One thread owns a LEADER store
 * handle (with PostgreSQL a connection of its own) and, every tick: confirms within
 * LEADER_CHECK_MS that the session holding its jobs is alive, else stops every job it runs
 * before anything else (the server ends a silent session only later: keepalives, idle session
 * timeout, so a cut-off instance has stopped its jobs before another can win them); then tries
 * to win each job it does not run, and starts the ones it won. main.c builds the job list; the
 * reconciler and the forwarders only start and halt. Readers (/readyz, /metrics) take the
 * mutex. */
#include "leader.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "store.h"
#include "util.h"

#define MAX_JOBS	   16
#define START_RETRY_MS	   5000 /* after a job failed to start */
#define UNREACHABLE_LOG_MS 10000

struct job_state {
	struct leader_job job;
	bool running; /* written by the leader thread under mu */
	int64_t retry_at_ms;
	char gauge[96];
};

struct leader {
	struct store *like, *h;
	struct job_state jobs[MAX_JOBS];
	size_t n;
	char instance[64];
	pthread_mutex_t mu;
	pthread_cond_t cond; /* CLOCK_MONOTONIC; the stop flag */
	int stop;
	bool store_ok;
	pthread_t thread;
	bool started;
	struct log_rl rl;
};

static void set_running(struct leader *l, struct job_state *j, bool running)
{
	pthread_mutex_lock(&l->mu);
	j->running = running;
	pthread_mutex_unlock(&l->mu);
	metrics_set_gauge(j->gauge, running ? 1 : 0);
}

static void set_ok(struct leader *l, bool ok)
{
	pthread_mutex_lock(&l->mu);
	l->store_ok = ok;
	pthread_mutex_unlock(&l->mu);
}

/* The session is gone or in doubt: nothing is led from here on. */
static void lose_all(struct leader *l, const char *why)
{
	for (size_t i = 0; i < l->n; i++) {
		struct job_state *j = &l->jobs[i];

		if (!j->running)
			continue;
		j->job.stop(j->job.arg, j->job.idx);
		set_running(l, j, false);
		log_warn("leadership lost job=%s instance=%s reason=\"%s\"", j->job.name,
			 l->instance, why);
	}
}

/* Won: start the job, or give it up again for a while. */
static void take(struct leader *l, struct job_state *j)
{
	int r = j->job.start(j->job.arg, j->job.idx);

	if (r < 0) {
		store_leader_release(l->h, j->job.name);
		j->retry_at_ms = util_mono_ms() + START_RETRY_MS;
		log_err("leader cannot start job=%s instance=%s err=%d", j->job.name, l->instance,
			r);
		return;
	}
	set_running(l, j, true);
	log_notice("leading job=%s instance=%s", j->job.name, l->instance);
}

static void unreachable(struct leader *l, const char *what, const char *detail)
{
	unsigned long long sup = 0;

	set_ok(l, false);
	if (log_rl_allow(&l->rl, UNREACHABLE_LOG_MS, &sup))
		log_err("leader: store unreachable instance=%s during=%s detail=\"%s\" "
			"suppressed=%llu",
			l->instance, what, detail, sup);
}

static void round_once(struct leader *l)
{
	char err[256];
	int r;

	if (l->h == NULL) {
		r = store_open_like(l->like, STORE_MODE_LEADER, &l->h, err, sizeof(err));
		if (r < 0) {
			unreachable(l, "open", err);
			return;
		}
	}
	r = store_leader_check(l->h, LEADER_CHECK_MS);
	if (r < 0) {
		snprintf(err, sizeof(err), "%s", store_errmsg(l->h));
		lose_all(l, err);
		unreachable(l, "check", err);
		/* a new session next tick: it holds nothing, and opening it tells whether the
		 * store is back */
		store_close(l->h);
		l->h = NULL;
		return;
	}
	for (size_t i = 0; i < l->n && !util_flag_get(&l->stop); i++) {
		struct job_state *j = &l->jobs[i];

		if (j->running || util_mono_ms() < j->retry_at_ms)
			continue;
		r = store_leader_try(l->h, j->job.name);
		if (r < 0) {
			/* The next call could open a new session, which holds nothing. */
			snprintf(err, sizeof(err), "%s", store_errmsg(l->h));
			lose_all(l, err);
			unreachable(l, "try", err);
			store_close(l->h);
			l->h = NULL;
			return;
		}
		if (r == 1)
			take(l, j);
	}
	set_ok(l, true);
}

static void *leader_main(void *arg)
{
	struct leader *l = arg;

	for (;;) {
		struct timespec ts;
		int64_t deadline = util_mono_ms() + LEADER_TICK_MS;

		ts.tv_sec = deadline / 1000;
		ts.tv_nsec = (long)(deadline % 1000) * 1000000L;
		pthread_mutex_lock(&l->mu);
		while (!util_flag_get(&l->stop) && util_mono_ms() < deadline)
			if (pthread_cond_timedwait(&l->cond, &l->mu, &ts) == ETIMEDOUT)
				break;
		pthread_mutex_unlock(&l->mu);
		if (util_flag_get(&l->stop))
			break;
		round_once(l);
	}
	return NULL;
}

static void leader_free(struct leader *l)
{
	store_close(l->h);
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

int leader_start(struct store *like, const struct leader_job *jobs, size_t n, const char *instance,
		 struct leader **ret, char *err, size_t err_len)
{
	struct leader *l;
	pthread_condattr_t ca;
	int r;

	if (n > MAX_JOBS) {
		snprintf(err, err_len, "leader: too many jobs");
		return -E2BIG;
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		snprintf(err, err_len, "leader: out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&l->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);
	l->like = like;
	l->n = n;
	snprintf(l->instance, sizeof(l->instance), "%s", instance != NULL ? instance : "");
	/* every gauge of the family at once, so that /metrics lists them together */
	for (size_t i = 0; i < n; i++) {
		l->jobs[i].job = jobs[i];
		snprintf(l->jobs[i].gauge, sizeof(l->jobs[i].gauge), "hookd_leader{job=\"%s\"}",
			 jobs[i].name);
		metrics_set_gauge(l->jobs[i].gauge, 0);
	}
	round_once(l);
	r = pthread_create(&l->thread, NULL, leader_main, l);
	if (r != 0) {
		snprintf(err, err_len, "leader: cannot start the thread");
		lose_all(l, "start-up failed");
		leader_free(l);
		return -r;
	}
	l->started = true;
	*ret = l;
	return 0;
}

void leader_stop(struct leader *l)
{
	if (l == NULL)
		return;
	pthread_mutex_lock(&l->mu);
	util_flag_set(&l->stop);
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->mu);
	if (l->started)
		pthread_join(l->thread, NULL);
	for (size_t i = 0; i < l->n; i++) {
		struct job_state *j = &l->jobs[i];

		if (!j->running)
			continue;
		j->job.stop(j->job.arg, j->job.idx);
		set_running(l, j, false);
		store_leader_release(l->h, j->job.name);
		log_info("leadership given up job=%s instance=%s", j->job.name, l->instance);
	}
	leader_free(l);
}

bool leader_store_ok(struct leader *l)
{
	bool ok;

	if (l == NULL)
		return true;
	pthread_mutex_lock(&l->mu);
	ok = l->store_ok;
	pthread_mutex_unlock(&l->mu);
	return ok;
}

void leader_roles_json(struct leader *l, char *out, size_t n)
{
	size_t o = 0;

	o += (size_t)snprintf(out, n, "[");
	if (l != NULL) {
		pthread_mutex_lock(&l->mu);
		for (size_t i = 0; i < l->n && o < n; i++)
			if (l->jobs[i].running)
				o += (size_t)snprintf(out + o, n - o, "%s\"%s\"", o > 1 ? "," : "",
						      l->jobs[i].job.name);
		pthread_mutex_unlock(&l->mu);
	}
	if (o < n)
		snprintf(out + o, n - o, "]");
}
