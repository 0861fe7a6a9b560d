/* The maintenance thread (maintain.h). Checkpoints are read on its own reader handle and
 * logged with the head's event id and hash (HMAC-signed when store.checkpoint_key is set);
 * pruning is a loop of short STORE_REQ_PRUNE requests, each its own transaction on the writer,
 * with a pause between them so that callbacks never queue behind more than one batch. */
#include "maintain.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checkpoint.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "util.h"

#define PRUNE_PERIOD_MS (60 * 1000)
#define DAY_MS		(24LL * 3600 * 1000)

struct maintain {
	struct maintain_opts o;
	struct store *reader;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool stopping;	 /* under mu */
	int64_t last_id; /* of the last checkpoint logged */
};

/* Logs the chain head as a checkpoint (unless it was logged already and force is false). */
static void checkpoint(struct maintain *m, const char *reason, bool force)
{
	uint8_t hash[STORE_HASH_LEN];
	char text[CHECKPOINT_TEXT_MAX], eid[24], cp[CHECKPOINT_TEXT_MAX];
	int64_t id;
	int r = store_chain_head(m->reader, &id, hash);

	if (r < 0) {
		log_warn("chain checkpoint not taken reason=%s: %s", reason,
			 r == -ENOTSUP ? "not supported by the backend" : store_errmsg(m->reader));
		return;
	}
	if (id == 0 || (id == m->last_id && !force))
		return;
	m->last_id = id;
	if (checkpoint_format(id, hash, m->o.checkpoint_key, strlen(m->o.checkpoint_key), text,
			      sizeof(text)) < 0)
		return;
	snprintf(cp, sizeof(cp), "%s", text + strlen("checkpoint="));
	cp[strcspn(cp, " ")] = '\0';
	log_fields(LOG_PRIO_NOTICE,
		   (const struct log_field[]){{"EVENT_ID", log_num(id, eid, sizeof(eid))},
					      {"CHAIN_CHECKPOINT", cp},
					      {NULL, NULL}},
		   "chain head published reason=%s %s", reason, text);
}

/* True when stop was asked; otherwise waits up to ms for it. */
static bool wait_stop(struct maintain *m, long ms)
{
	struct timespec ts;
	bool stop;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&m->mu);
	if (!m->stopping && ms > 0)
		pthread_cond_timedwait(&m->cond, &m->mu, &ts);
	stop = m->stopping;
	pthread_mutex_unlock(&m->mu);
	return stop;
}

/* Prunes everything past the retention in batches until a batch comes back short. */
static void prune_all(struct maintain *m)
{
	int64_t before = util_now_ms() - m->o.retention_days * DAY_MS, t0 = util_mono_ms();
	size_t receipts = 0, outbox = 0, polls = 0, batches = 0;
	struct store_req r;

	for (;;) {
		int e;

		store_req_prune(&r, before, m->o.prune_batch);
		e = store_submit_wait(m->o.store, &r);
		if (e < 0) {
			if (e != -ESHUTDOWN)
				log_warn("retention: prune failed: %s", store_errmsg(m->o.store));
			break;
		}
		batches++;
		receipts += r.u.prune.receipts;
		outbox += r.u.prune.outbox;
		polls += r.u.prune.polls;
		metrics_inc(METRICS_PRUNED_RECEIPTS, r.u.prune.receipts);
		metrics_inc(METRICS_PRUNED_OUTBOX, r.u.prune.outbox);
		metrics_inc(METRICS_PRUNED_POLLS, r.u.prune.polls);
		if ((long)r.u.prune.receipts < m->o.prune_batch &&
		    (long)r.u.prune.outbox < m->o.prune_batch &&
		    (long)r.u.prune.polls < m->o.prune_batch)
			break;
		if (wait_stop(m, m->o.prune_pause_ms))
			break;
	}
	if (receipts + outbox + polls > 0)
		log_info("retention: pruned receipts=%zu outbox=%zu polls=%zu batches=%zu ms=%lld "
			 "older_than_days=%ld",
			 receipts, outbox, polls, batches, (long long)(util_mono_ms() - t0),
			 m->o.retention_days);
}

static void *maintain_main(void *arg)
{
	struct maintain *m = arg;
	int64_t now = util_mono_ms(), next_cp = now + m->o.checkpoint_interval_s * 1000,
		next_prune = now;

	for (;;) {
		int64_t wake;

		now = util_mono_ms();
		if (m->o.checkpoint_interval_s > 0 && now >= next_cp) {
			checkpoint(m, "periodic", false);
			next_cp = now + m->o.checkpoint_interval_s * 1000;
		}
		if (m->o.retention_days > 0 && now >= next_prune) {
			prune_all(m);
			next_prune = util_mono_ms() + PRUNE_PERIOD_MS;
		}
		wake = m->o.retention_days > 0 ? next_prune : now + PRUNE_PERIOD_MS;
		if (m->o.checkpoint_interval_s > 0 && next_cp < wake)
			wake = next_cp;
		now = util_mono_ms();
		if (wait_stop(m, wake > now ? (long)(wake - now) : 0))
			return NULL;
	}
}

int maintain_start(const struct maintain_opts *o, struct maintain **ret, char *err, size_t err_len)
{
	struct maintain *m = calloc(1, sizeof(*m));
	int r;

	if (m == NULL) {
		snprintf(err, err_len, "maintenance: out of memory");
		return -ENOMEM;
	}
	m->o = *o;
	if (m->o.checkpoint_key == NULL)
		m->o.checkpoint_key = "";
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cond, NULL);
	r = store_open_like(o->store, STORE_MODE_READER, &m->reader, err, err_len);
	if (r == 0) {
		checkpoint(m, "start", true);
		r = -pthread_create(&m->thread, NULL, maintain_main, m);
		if (r < 0)
			snprintf(err, err_len, "maintenance: cannot start its thread");
	}
	if (r < 0) {
		store_close(m->reader);
		pthread_mutex_destroy(&m->mu);
		pthread_cond_destroy(&m->cond);
		free(m);
		return r;
	}
	*ret = m;
	return 0;
}

void maintain_stop(struct maintain *m)
{
	if (m == NULL)
		return;
	pthread_mutex_lock(&m->mu);
	m->stopping = true;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->mu);
	pthread_join(m->thread, NULL);
	checkpoint(m, "shutdown", true);
	store_close(m->reader);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cond);
	free(m);
}
