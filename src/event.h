/* The event: one fact about a payment (its status, as Komerce reported it in a callback, as
 * the reconciler learned it from a status call, or as the admin API created it), the value
 * type handed from the parsers to the store. Pure; any thread. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "payment.h"

#define EVENT_ID_MAX 128 /* payment_id / order_id, bytes including NUL */

enum event_source { EVENT_SOURCE_CALLBACK, EVENT_SOURCE_RECONCILE, EVENT_SOURCE_API };
#define EVENT_SOURCE_COUNT 3

struct event {
	char payment_id[EVENT_ID_MAX];
	char order_id[EVENT_ID_MAX]; /* "" when absent */
	enum payment_status status;
	long long amount; /* -1 when absent */
	char payment_type[32];
	char channel_code[32];
	int64_t expires_at; /* unix seconds, 0 when unknown */
	enum event_source source;
	const char *raw; /* raw JSON stored with the event (borrowed) */
	size_t raw_len;
	char remote_addr[64];
};

/* "callback", "reconcile", "api" ("unknown" for anything else). */
const char *event_source_name(enum event_source s);
/* Case-insensitive; -1 when name is none of them. */
int event_source_parse(const char *name);
