/* The callback route, from a complete request to its reply: the signature first (HMAC is cheap),
 * then the budget of failed signatures per source, the parser, and the hand-over to the store
 * writer. The request is suspended while its event waits for the group commit and answered from
 * the writer thread once the transaction committed or failed, so waiting never blocks the public
 * listener's threads. Uses http only as a transport and the store only through store.h. */
#include "ingest.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "store.h"
#include "util.h"

/* The failed-signature table is small and lossy (a slot is taken over by another address),
 * which can only make throttling forget. */
#define AUTH_SLOTS 1024

struct auth_slot {
	char addr[64];
	struct ratelimit_bucket bucket;
};

struct ingest {
	struct ingest_opts o;
	pthread_mutex_t mu;
	struct auth_slot slot[AUTH_SLOTS];
	struct log_rl rl_auth, rl_bad, rl_store, rl_throttle;
};

/* Per request, in the storage the transport keeps with it (http_route.req_data). */
struct ingest_req {
	struct store_req sreq;
	struct ingest *in;
	struct http_request *req;
};

static size_t auth_slot(const char *addr)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	for (; *addr != '\0'; addr++)
		h = (h ^ (unsigned char)*addr) * 1099511628211ULL;
	return (size_t)(h % AUTH_SLOTS);
}

/* Spends one failure of addr's budget: 0 when it had one left (answer 401), else the
 * milliseconds until it has one again (answer 429). A correctly signed callback never gets
 * here, so other requests' failures never refuse it (behind a reverse proxy every callback has
 * the same peer: see server.trusted_proxies for per-client addresses). */
static int64_t auth_failure(struct ingest *in, const char *addr, int64_t now)
{
	struct auth_slot *sl = &in->slot[auth_slot(addr)];
	int64_t wait = 0;

	pthread_mutex_lock(&in->mu);
	if (strcmp(sl->addr, addr) != 0) {
		snprintf(sl->addr, sizeof(sl->addr), "%s", addr);
		ratelimit_bucket_init(&sl->bucket, in->o.auth_failure_rate,
				      in->o.auth_failure_burst, now);
	}
	if (ratelimit_take(&sl->bucket, now) < 0)
		wait = ratelimit_wait_ms(&sl->bucket, now);
	pthread_mutex_unlock(&in->mu);
	return wait;
}

/* 401, or 429 with Retry-After once the source spent its budget (its log lines are then
 * folded into one throttle line a second). */
static void reply_bad_signature(struct ingest *in, struct http_request *req)
{
	const char *sig = http_header(req, "X-Callback-Api-Key");
	int64_t wait = auth_failure(in, http_remote(req), util_mono_ms());
	unsigned long long sup;

	metrics_inc(METRICS_AUTH_FAILURES, 1);
	if (wait > 0) {
		char hdr[48];

		metrics_inc(METRICS_AUTH_THROTTLED, 1);
		if (log_rl_allow(&in->rl_throttle, 1000, &sup))
			log_warn("callback throttled reason=too_many_auth_failures remote=%s "
				 "suppressed=%llu",
				 http_remote(req), sup);
		snprintf(hdr, sizeof(hdr), "Retry-After: %lld", (long long)(wait + 999) / 1000);
		http_reply_error_hdr(req, 429, "too many bad signatures", hdr);
		return;
	}
	if (log_rl_allow(&in->rl_auth, 1000, &sup))
		log_warn("callback rejected reason=%s remote=%s suppressed=%llu",
			 sig != NULL ? "bad_signature" : "no_signature", http_remote(req), sup);
	http_reply_error(req, 401, "missing or invalid X-Callback-Api-Key signature");
}

static const char *store_reason(int result)
{
	switch (result) {
	case -ENOSPC:
		return "disk_full";
	case -EAGAIN:
		return "busy";
	case -ESHUTDOWN:
		return "shutting_down";
	default:
		return "storage_error";
	}
}

/* Runs on the store writer thread once the event's transaction committed or failed (or on the
 * handler's thread when it could not be submitted). */
static void callback_done(struct store_req *r)
{
	struct ingest_req *ir = r->user;
	struct http_request *req = ir->req;
	unsigned long long sup;
	char body[160];
	int n;

	if (r->result == 0) {
		char pid[160], eid[24];
		const struct log_field f[] = {{"PAYMENT_ID", r->ev.payment_id},
					      {"ORDER_ID", r->ev.order_id},
					      {"EVENT_ID", log_num(r->event_id, eid, sizeof(eid))},
					      {NULL, NULL}};

		if (r->conflict && !r->duplicate)
			log_fields(
				LOG_PRIO_WARNING, f,
				"callback conflicts with known state payment_id=\"%s\" status=%s "
				"event_id=%lld",
				log_quote(r->ev.payment_id, pid, sizeof(pid)),
				payment_status_name(r->ev.status), (long long)r->event_id);
		else if (!r->duplicate && log_max_prio >= LOG_PRIO_INFO)
			log_fields(LOG_PRIO_INFO, f,
				   "callback stored payment_id=\"%s\" status=%s event_id=%lld%s",
				   log_quote(r->ev.payment_id, pid, sizeof(pid)),
				   payment_status_name(r->ev.status), (long long)r->event_id,
				   r->held ? " held=awaiting_confirmation" : "");
		n = snprintf(body, sizeof(body),
			     "{\"status\":\"ok\",\"event_id\":%lld,\"duplicate\":%s}",
			     (long long)r->event_id, r->duplicate ? "true" : "false");
		http_reply(req, 200, "application/json", body, (size_t)n, NULL);
		return;
	}
	metrics_inc(METRICS_STORE_UNAVAILABLE, 1);
	if (log_rl_allow(&ir->in->rl_store, 1000, &sup))
		log_fields(LOG_PRIO_ERR,
			   (const struct log_field[]){{"PAYMENT_ID", r->ev.payment_id},
						      {"ORDER_ID", r->ev.order_id},
						      {NULL, NULL}},
			   "callback not stored reason=%s remote=%s detail=\"%s\" suppressed=%llu",
			   store_reason(r->result), http_remote(req), store_errmsg(ir->in->o.store),
			   sup);
	http_reply_error_hdr(req, 503, "event not stored, retry later", "Retry-After: 5");
}

static void callback_handler(struct http_request *req, void *ctx)
{
	struct ingest *in = ctx;
	struct ingest_req *ir = http_req_data(req);
	unsigned long long sup;
	struct event ev;
	size_t len;
	const char *body = http_body(req, &len);
	char why[128];
	int r;

	if (callback_verify(&in->o.keys, http_header(req, "X-Callback-Api-Key"), body, len) < 0) {
		reply_bad_signature(in, req);
		return;
	}
	if (callback_parse(body, len, &ev, why, sizeof(why)) < 0) {
		metrics_inc(METRICS_BAD_REQUESTS, 1);
		if (log_rl_allow(&in->rl_bad, 1000, &sup))
			log_warn("callback rejected reason=\"%s\" remote=%s suppressed=%llu", why,
				 http_remote(req), sup);
		http_reply_error(req, 400, why);
		return;
	}
	snprintf(ev.remote_addr, sizeof(ev.remote_addr), "%s", http_remote(req));
	store_req_event(&ir->sreq, &ev);
	ir->sreq.done = callback_done;
	ir->sreq.user = ir;
	ir->in = in;
	ir->req = req;
	/* Suspend before submitting: the writer may finish before this function returns. The
	 * body (ev.raw points into it) stays until this request's reply. */
	if (!http_suspend(req)) {
		ir->sreq.result = -ESHUTDOWN;
		callback_done(&ir->sreq);
		return;
	}
	r = store_submit(in->o.store, &ir->sreq);
	if (r < 0) {
		ir->sreq.result = r;
		callback_done(&ir->sreq);
	}
}

struct ingest *ingest_new(const struct ingest_opts *o)
{
	struct ingest *in = calloc(1, sizeof(*in));

	if (in == NULL)
		return NULL;
	in->o = *o;
	pthread_mutex_init(&in->mu, NULL);
	return in;
}

void ingest_free(struct ingest *in)
{
	if (in == NULL)
		return;
	pthread_mutex_destroy(&in->mu);
	free(in);
}

struct http_route ingest_route(struct ingest *in)
{
	return (struct http_route){
		.method = "POST",
		.path = in->o.path,
		.has_body = true,
		.json_body = true,
		.ep = METRICS_EP_CALLBACK,
		.fn = callback_handler,
		.ctx = in,
		.req_data = sizeof(struct ingest_req),
	};
}
