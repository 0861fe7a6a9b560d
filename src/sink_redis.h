/* Redis Streams sink: XADD of each outbox row to the configured stream (hiredis), pipelined,
 * with a connection that is dropped on any error and made again on the next attempt. Driven
 * by one forwarder thread; sink_redis_parse_url is pure (unit-tested). */
#pragma once

#include <stddef.h>

#include "sink_http.h" /* enum sink_verdict, struct sink_result */

struct config_sink;

struct sink_redis_addr {
	char host[256]; /* without brackets for an IPv6 literal */
	unsigned port;	/* 6379 when absent */
	long db;	/* 0 when absent */
	char user[64];	/* "" when absent (Redis 6 ACL user) */
	char password[256];
};

/* Parses redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (HOST may be [v6]). No percent-decoding.
 * Returns 0 and fills *ret, or -EINVAL. */
int sink_redis_parse_url(const char *url, struct sink_redis_addr *ret);

struct sink_redis;

/* A sink for cfg (kept by reference). Does not connect yet. Returns 0, -EINVAL for a bad url,
 * or -ENOMEM. */
int sink_redis_new(const struct config_sink *cfg, struct sink_redis **ret)
	__attribute__((warn_unused_result));
void sink_redis_free(struct sink_redis *r);

/* XADDs rows[0..n) in one pipeline (connecting first if needed; AUTH and SELECT when the URL
 * asks), each entry carrying the fields event_id, payment_id, order_id, status, amount,
 * source, conflict, received_at and document (the JSON of sink_http_document), with
 * MAXLEN ~ maxlen when configured. The whole batch is bounded by the sink's timeout_ms;
 * returns within ~100 ms once *stop becomes non-zero (unanswered rows are SINK_ABANDONED).
 * Any connection error drops the connection: unanswered rows are SINK_RETRY. */
void sink_redis_deliver(struct sink_redis *r, const struct store_outbox_row *rows, size_t n,
			struct sink_result *res, const int *stop);
