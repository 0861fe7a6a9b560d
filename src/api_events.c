/* GET /v1/events (see api_events.h): validates the query parameters into a store events
 * filter, reads one page on a read-only store opened for this request, and replies with JSON.
 * Called on the admin listener's per-connection threads, so a slow query blocks only its own
 * client; the page itself is built by audit.c. */
#include "api_events.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "http.h"
#include "log.h"
#include "store.h"

void api_events_handler(struct http_request *req, void *ctx)
{
	static const char *const params[] = {"payment_id", "order_id", "status",   "source",
					     "since",	   "until",    "after_id", "limit"};
	struct store *writer = ctx;
	struct store_event_filter f = {.status = PAYMENT_UNKNOWN,
				       .limit = API_EVENTS_LIMIT_DEFAULT};
	struct store *s = NULL;
	char why[128], msg[192], err[512];
	char *body = NULL;
	int r;

	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
		const char *v = http_query(req, params[i]);

		if (v == NULL || v[0] == '\0')
			continue;
		r = audit_filter_set(&f, params[i], v, why, sizeof(why));
		if (r == 0 && f.limit > API_EVENTS_LIMIT_MAX) {
			snprintf(why, sizeof(why), "at most %d", API_EVENTS_LIMIT_MAX);
			r = -EINVAL;
		}
		if (r < 0) {
			snprintf(msg, sizeof(msg), "%s: %s", params[i], why);
			http_reply_error(req, 400, msg);
			return;
		}
	}

	r = store_open_like(writer, STORE_MODE_READER, &s, err, sizeof(err));
	if (r < 0) {
		log_err("events api: %s", err);
		http_reply_error(req, 503, "store unavailable");
		return;
	}
	r = audit_events_page(s, &f, API_EVENTS_MAX_BYTES, &body);
	if (r < 0) {
		log_err("events api: query failed: %s", store_errmsg(s));
		store_close(s);
		http_reply_error(req, r == -ENOMEM ? 500 : 503,
				 r == -ENOMEM ? "out of memory" : "store unavailable");
		return;
	}
	store_close(s);
	http_reply_json(req, 200, body);
	free(body);
}
