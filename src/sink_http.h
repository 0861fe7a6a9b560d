/* HTTP sink: POSTs each outbox row as a signed JSON document to the merchant's URL (signatures
 * in sink_sign.h). The document builder and status classification are pure (unit-tested); the sink
 * object is driven by one forwarder thread. The verdict types are shared with sink_redis. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct config_sink;

enum sink_verdict {
	SINK_DELIVERED, /* acknowledged: mark delivered */
	SINK_RETRY,	/* transient failure: schedule a retry (or dead past max_attempts) */
	SINK_DEAD,	/* refused for good (HTTP 4xx other than 408/429): dead letter now */
	SINK_ABANDONED, /* not finished because the forwarder is stopping: leave pending */
	SINK_NOT_SENT,	/* never sent (the endpoint failed on another row): postpone, no attempt */
};

struct sink_result {
	enum sink_verdict verdict;
	char error[STORE_ERR_MAX]; /* for retry/dead: what went wrong, with the reply */
};

/* The JSON document for row: {"event_id","payment_id","order_id","status","amount","source",
 * "conflict","received_at" (ISO 8601 UTC),"callback": the stored raw body parsed back}. A raw
 * body that is not JSON is sent as a string in "callback_raw" with "callback": null. Returns
 * a heap string (caller frees) and its length in *ret_len, or NULL on allocation failure. */
char *sink_http_document(const struct store_outbox_row *row, size_t *ret_len);

/* 2xx delivered; 408 and 429 retry; other 4xx dead; anything else (3xx, 5xx, 0) retry. */
enum sink_verdict sink_http_classify(long status);

struct sink_http;

/* A sink for cfg (kept by reference: it must outlive the sink) with up to parallel transfers
 * at once over kept-alive connections. NULL on allocation failure. */
struct sink_http *sink_http_new(const struct config_sink *cfg, size_t parallel);
void sink_http_free(struct sink_http *h);

/* Delivers rows[0..n) (distinct payments, so their order among themselves does not matter),
 * at most `parallel` at a time, each bounded by the sink's timeout_ms, and fills res[i].
 * Returns within ~100 ms once *stop becomes non-zero; unfinished rows are SINK_ABANDONED. */
void sink_http_deliver(struct sink_http *h, const struct store_outbox_row *rows, size_t n,
		       struct sink_result *res, const int *stop);
