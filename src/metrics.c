/* Counters and gauges for /metrics. Counters are plain atomics in fixed arrays indexed by
 * enum; named gauges live in a small table under a mutex (set rarely: reconciler, forwarder).
 * Rendered on the admin listener's thread. */
#include "build_config.h"
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "util.h"

static const unsigned codes[] = {200, 201, 400, 401, 404, 405, 409, 413,
				 415, 429, 500, 502, 503, 504, 0};
#define N_CODES (sizeof(codes) / sizeof(codes[0]))

static const char *const ep_names[METRICS_EP__COUNT] = {"callback", "health", "metrics", "admin",
							"other"};
static uint64_t http_counts[METRICS_EP__COUNT][N_CODES];
static uint64_t counters[METRICS__COUNT];

static const struct {
	const char *name;
	const char *help;
	const char *labels;
} counter_info[METRICS__COUNT] = {
	[METRICS_AUTH_FAILURES] = {"hookd_callback_auth_failures_total",
				   "Callbacks refused for a missing or wrong signature", ""},
	[METRICS_AUTH_THROTTLED] =
		{"hookd_callback_throttled_total",
		 "Callbacks refused (429) from a source with too many bad signatures", ""},
	[METRICS_BAD_REQUESTS] = {"hookd_callback_rejected_total",
				  "Callbacks refused as malformed (4xx other than 401)", ""},
	[METRICS_STORE_UNAVAILABLE] =
		{"hookd_store_unavailable_total",
		 "Requests answered 503 because the event was not made durable", ""},
	[METRICS_POLLS_OK] = {"hookd_reconcile_polls_total", "Status polls sent to Komerce",
			      "outcome=\"ok\""},
	[METRICS_POLLS_RATE_LIMITED] = {"hookd_reconcile_polls_total", NULL,
					"outcome=\"rate_limited\""},
	[METRICS_POLLS_ERROR] = {"hookd_reconcile_polls_total", NULL, "outcome=\"error\""},
	[METRICS_RESOLVED_BY_RECONCILE] = {"hookd_reconcile_resolved_total",
					   "Payments whose final status was learned by polling",
					   ""},
	[METRICS_CONFIRMED] = {"hookd_confirmed_total",
			       "PAID callbacks a status call confirmed (komerce.confirm_paid)", ""},
	[METRICS_UNCONFIRMED] = {"hookd_unconfirmed_total",
				 "PAID callbacks a status call did not confirm: not applied, not "
				 "forwarded",
				 ""},
	[METRICS_FORWARD_DELIVERED] = {"hookd_forward_total", "Outbox deliveries by outcome",
				       "outcome=\"delivered\""},
	[METRICS_FORWARD_FAILED] = {"hookd_forward_total", NULL, "outcome=\"retry\""},
	[METRICS_FORWARD_DEAD] = {"hookd_forward_total", NULL, "outcome=\"dead\""},
	[METRICS_HTTP_REFUSED_PER_IP] = {"hookd_http_rejected_total",
					 "Connections or requests of the public listener refused "
					 "before reaching a handler, by reason",
					 "reason=\"per_ip_limit\""},
	[METRICS_HTTP_REFUSED_CAPACITY] = {"hookd_http_rejected_total", NULL,
					   "reason=\"capacity\""},
	[METRICS_HTTP_REQUEST_TIMEOUT] = {"hookd_http_rejected_total", NULL,
					  "reason=\"request_timeout\""},
	[METRICS_HTTP_BAD_FRAMING] = {"hookd_http_rejected_total", NULL,
				      "reason=\"bad_content_length\""},
	[METRICS_HTTP_KEEPALIVE_CLOSED] = {"hookd_http_keepalive_closed_total",
					   "Keep-alive connections of the public listener closed "
					   "because no complete request came within "
					   "server.request_timeout (idle or trickling)",
					   ""},
	[METRICS_PRUNED_RECEIPTS] = {"hookd_pruned_total",
				     "Rows deleted by retention (store.retention_days), by table",
				     "table=\"receipts\""},
	[METRICS_PRUNED_OUTBOX] = {"hookd_pruned_total", NULL, "table=\"outbox\""},
	[METRICS_PRUNED_POLLS] = {"hookd_pruned_total", NULL, "table=\"polls\""},
};

#define MAX_GAUGES 32
static pthread_mutex_t gauge_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char name[96];
	double v;
} gauges[MAX_GAUGES];
static size_t n_gauges;

void metrics_http(enum metrics_endpoint ep, unsigned status)
{
	size_t i = 0;

	if (ep >= METRICS_EP__COUNT)
		ep = METRICS_EP_OTHER;
	while (codes[i] != 0 && codes[i] != status)
		i++;
	__atomic_fetch_add(&http_counts[ep][i], 1, __ATOMIC_RELAXED);
}

void metrics_inc(enum metrics_counter c, uint64_t by)
{
	if (c < METRICS__COUNT)
		__atomic_fetch_add(&counters[c], by, __ATOMIC_RELAXED);
}

void metrics_set_gauge(const char *name, double v)
{
	pthread_mutex_lock(&gauge_mu);
	for (size_t i = 0; i < n_gauges; i++) {
		if (strcmp(gauges[i].name, name) == 0) {
			gauges[i].v = v;
			pthread_mutex_unlock(&gauge_mu);
			return;
		}
	}
	if (n_gauges < MAX_GAUGES) {
		snprintf(gauges[n_gauges].name, sizeof(gauges[n_gauges].name), "%s", name);
		gauges[n_gauges].v = v;
		n_gauges++;
	}
	pthread_mutex_unlock(&gauge_mu);
}

/* HELP text of the named gauges (set by the reconciler and the forwarders). */
static const struct {
	const char *family;
	const char *help;
} gauge_help[] = {
	{"hookd_outbox_pending", "Outbox rows waiting for delivery, by sink"},
	{"hookd_reconcile_watched", "PENDING payments the reconciler watches"},
	{"hookd_reconcile_circuit_open",
	 "1 while the reconciler's circuit breaker is open (Komerce failing), else 0"},
	{"hookd_reconcile_in_flight", "Status requests the reconciler has in flight"},
	{"hookd_reconcile_lag_seconds",
	 "How long the most overdue watched payment has waited for its status poll"},
	{"hookd_payments_pending", "PENDING payments (refreshed every 30 s)"},
	{"hookd_payments_pending_expired",
	 "PENDING payments past their expiry, settled by neither a callback nor a poll"},
};

static const char *gauge_help_of(const char *family)
{
	for (size_t i = 0; i < sizeof(gauge_help) / sizeof(gauge_help[0]); i++)
		if (strcmp(gauge_help[i].family, family) == 0)
			return gauge_help[i].help;
	return "komerce-hookd gauge";
}

/* The metric name of a series: "name{labels}" without its labels. */
static void gauge_family(const char *series, char *out, size_t n)
{
	size_t len = strcspn(series, "{");

	snprintf(out, n, "%.*s", (int)len, series);
}

static bool same_family(const char *series, const char *family)
{
	size_t len = strlen(family);

	return strncmp(series, family, len) == 0 && (series[len] == '\0' || series[len] == '{');
}

static void render_store(struct util_buf *b, struct store *store)
{
	struct store_writer_stats st;
	uint64_t cum = 0;

	store_writer_stats_get(store, &st);
	util_buf_printf(
		b,
		"# HELP hookd_events_stored_total New events committed\n"
		"# TYPE hookd_events_stored_total counter\nhookd_events_stored_total %llu\n",
		(unsigned long long)st.events);
	util_buf_printf(b, "# HELP hookd_events_total New events by status and source\n"
			   "# TYPE hookd_events_total counter\n");
	for (int stt = PAYMENT_PENDING; stt <= PAYMENT_CANCELED; stt++)
		for (int src = EVENT_SOURCE_CALLBACK; src <= EVENT_SOURCE_API; src++)
			util_buf_printf(b, "hookd_events_total{status=\"%s\",source=\"%s\"} %llu\n",
					payment_status_name((enum payment_status)stt),
					event_source_name((enum event_source)src),
					(unsigned long long)st.events_by[stt][src]);
	util_buf_printf(b,
			"# HELP hookd_duplicates_total Deliveries of a fact already stored\n"
			"# TYPE hookd_duplicates_total counter\nhookd_duplicates_total %llu\n",
			(unsigned long long)st.duplicates);
	util_buf_printf(
		b,
		"# HELP hookd_conflicts_total Events that contradict the known payment state\n"
		"# TYPE hookd_conflicts_total counter\nhookd_conflicts_total %llu\n",
		(unsigned long long)st.conflicts);
	util_buf_printf(
		b,
		"# HELP hookd_commit_failures_total Transactions rolled back\n"
		"# TYPE hookd_commit_failures_total counter\nhookd_commit_failures_total %llu\n",
		(unsigned long long)st.commit_failures);
	util_buf_printf(
		b,
		"# HELP hookd_batch_retries_total Batches applied again event by event "
		"after one event failed on its own\n"
		"# TYPE hookd_batch_retries_total counter\nhookd_batch_retries_total %llu\n",
		(unsigned long long)st.batch_retries);
	util_buf_printf(b,
			"# HELP hookd_writer_queue Requests waiting for the writer\n"
			"# TYPE hookd_writer_queue gauge\nhookd_writer_queue %ld\n",
			st.queue_len);
	util_buf_printf(b, "# HELP hookd_commit_seconds Duration of a group commit\n"
			   "# TYPE hookd_commit_seconds histogram\n");
	for (size_t i = 0; i < 11; i++) {
		cum += st.commit_us_bucket[i];
		util_buf_printf(b, "hookd_commit_seconds_bucket{le=\"%g\"} %llu\n",
				store_commit_bucket_ms[i] / 1000.0, (unsigned long long)cum);
	}
	cum += st.commit_us_bucket[11];
	util_buf_printf(b, "hookd_commit_seconds_bucket{le=\"+Inf\"} %llu\n",
			(unsigned long long)cum);
	util_buf_printf(b, "hookd_commit_seconds_sum %.6f\nhookd_commit_seconds_count %llu\n",
			(double)st.commit_us_total / 1e6, (unsigned long long)cum);
	util_buf_printf(b, "# HELP hookd_commit_batch_size Requests per group commit\n"
			   "# TYPE hookd_commit_batch_size histogram\n");
	cum = 0;
	for (size_t i = 0; i < 9; i++) {
		cum += st.batch_bucket[i];
		util_buf_printf(b, "hookd_commit_batch_size_bucket{le=\"%g\"} %llu\n",
				store_batch_bucket[i], (unsigned long long)cum);
	}
	cum += st.batch_bucket[9];
	util_buf_printf(b, "hookd_commit_batch_size_bucket{le=\"+Inf\"} %llu\n",
			(unsigned long long)cum);
	util_buf_printf(b, "hookd_commit_batch_size_sum %llu\nhookd_commit_batch_size_count %llu\n",
			(unsigned long long)st.batch_total, (unsigned long long)cum);
}

/* The named gauges: one block per family (HELP, TYPE, then every series of it), in order of
 * first use. */
static void render_gauges(struct util_buf *b)
{
	pthread_mutex_lock(&gauge_mu);
	for (size_t i = 0; i < n_gauges; i++) {
		char family[96];
		bool seen = false;

		gauge_family(gauges[i].name, family, sizeof(family));
		for (size_t j = 0; j < i && !seen; j++)
			seen = same_family(gauges[j].name, family);
		if (seen)
			continue;
		util_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", family, gauge_help_of(family),
				family);
		for (size_t k = i; k < n_gauges; k++)
			if (same_family(gauges[k].name, family))
				util_buf_printf(b, "%s %g\n", gauges[k].name, gauges[k].v);
	}
	pthread_mutex_unlock(&gauge_mu);
}

char *metrics_render(struct store *store, size_t *ret_len)
{
	struct util_buf b = {0};
	const char *last = NULL;

	util_buf_printf(&b,
			"# HELP hookd_build_info Build information\n# TYPE hookd_build_info gauge\n"
			"hookd_build_info{version=\"%s\"} 1\n",
			HOOKD_VERSION);
	util_buf_printf(
		&b, "# HELP hookd_http_requests_total HTTP requests by endpoint and status code\n"
		    "# TYPE hookd_http_requests_total counter\n");
	for (size_t e = 0; e < METRICS_EP__COUNT; e++)
		for (size_t i = 0; i < N_CODES; i++) {
			uint64_t v = __atomic_load_n(&http_counts[e][i], __ATOMIC_RELAXED);

			if (v == 0)
				continue;
			if (codes[i] != 0)
				util_buf_printf(&b,
						"hookd_http_requests_total{endpoint=\"%s\",code=\"%"
						"u\"} %llu\n",
						ep_names[e], codes[i], (unsigned long long)v);
			else
				util_buf_printf(
					&b,
					"hookd_http_requests_total{endpoint=\"%s\",code=\"other\"} "
					"%llu\n",
					ep_names[e], (unsigned long long)v);
		}
	for (size_t c = 0; c < METRICS__COUNT; c++) {
		uint64_t v = __atomic_load_n(&counters[c], __ATOMIC_RELAXED);

		if (last == NULL || strcmp(last, counter_info[c].name) != 0)
			util_buf_printf(&b, "# HELP %s %s\n# TYPE %s counter\n",
					counter_info[c].name, counter_info[c].help,
					counter_info[c].name);
		last = counter_info[c].name;
		if (counter_info[c].labels[0] != '\0')
			util_buf_printf(&b, "%s{%s} %llu\n", counter_info[c].name,
					counter_info[c].labels, (unsigned long long)v);
		else
			util_buf_printf(&b, "%s %llu\n", counter_info[c].name,
					(unsigned long long)v);
	}
	if (store != NULL)
		render_store(&b, store);
	render_gauges(&b);
	return util_buf_steal(&b, ret_len);
}
