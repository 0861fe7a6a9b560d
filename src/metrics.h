/* Process-wide counters for GET /metrics (Prometheus text format). Lock-free: any thread may
 * bump a counter; the admin thread renders them. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct store;

enum metrics_endpoint {
	METRICS_EP_CALLBACK,
	METRICS_EP_HEALTH,
	METRICS_EP_METRICS,
	METRICS_EP_ADMIN,
	METRICS_EP_OTHER,
	METRICS_EP__COUNT,
};

enum metrics_counter {
	METRICS_AUTH_FAILURES,
	METRICS_AUTH_THROTTLED,
	METRICS_BAD_REQUESTS,
	METRICS_STORE_UNAVAILABLE, /* 503 replies because a commit failed or the queue was full */
	METRICS_POLLS_OK,
	METRICS_POLLS_RATE_LIMITED,
	METRICS_POLLS_ERROR,
	METRICS_RESOLVED_BY_RECONCILE,
	METRICS_CONFIRMED,   /* PAID callbacks a status call confirmed */
	METRICS_UNCONFIRMED, /* PAID callbacks a status call did not confirm */
	METRICS_FORWARD_DELIVERED,
	METRICS_FORWARD_FAILED,
	METRICS_FORWARD_DEAD,
	METRICS_HTTP_REFUSED_PER_IP,   /* connection closed at accept: its address holds too many */
	METRICS_HTTP_REFUSED_CAPACITY, /* ... the listener is full (or only its reserve is left) */
	METRICS_HTTP_REQUEST_TIMEOUT,  /* 408: request not complete within request_timeout */
	METRICS_HTTP_BAD_FRAMING,      /* 400/413 for a malformed Content-Length, before MHD */
	METRICS_HTTP_KEEPALIVE_CLOSED, /* keep-alive: no complete next request in time */
	METRICS_PRUNED_RECEIPTS,       /* retention */
	METRICS_PRUNED_OUTBOX,
	METRICS_PRUNED_POLLS,
	METRICS__COUNT,
};

void metrics_http(enum metrics_endpoint ep, unsigned status);
void metrics_inc(enum metrics_counter c, uint64_t by);
void metrics_set_gauge(const char *name, double v); /* small named gauge table */

/* Renders everything as Prometheus text into a heap string (caller frees). store may be NULL;
 * when given, writer statistics are included. NULL on allocation failure. */
char *metrics_render(struct store *store, size_t *ret_len);
