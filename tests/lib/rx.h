/* A small HTTP/1.1 receiver on 127.0.0.1 for tests and benchmarks: the consumer side of a
 * sink. One thread per connection, keep-alive, Content-Length bodies; a handler decides each
 * answer (a status, no answer at all, or a reset). Used by tests/integration/it_forward.c,
 * bench/forward-receiver.c and bench/sink-receiver.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct rx;

struct rx_request {
	const char *head; /* request line and headers, NUL-terminated */
	const char *body; /* body_len bytes (not NUL-terminated) */
	size_t body_len;
	const char *reply; /* set by the handler: the answer's body (NULL: "ok" / "down") */
};

#define RX_HANG_UP (-1) /* close without an answer */
#define RX_RESET   (-2) /* close with a TCP reset */

/* Returns the status to answer (>= 100), RX_HANG_UP or RX_RESET. May block (until
 * rx_stopping()). */
typedef int (*rx_handler_fn)(void *ctx, struct rx_request *req);

/* Listens on 127.0.0.1:port (0: any free port). NULL when it cannot. */
struct rx *rx_start(unsigned port, rx_handler_fn fn, void *ctx);
unsigned rx_port(const struct rx *rx);
bool rx_stopping(const struct rx *rx);
/* Closes the listener and joins every connection thread. NULL is fine. */
void rx_stop(struct rx *rx);

/* The value of header name in head (case-insensitive) into out, or NULL (out = ""). */
const char *rx_header(const char *head, const char *name, char *out, size_t n);
/* X-Hookd-Signature of the request checked like a consumer does: sha256=HMAC(secret,
 * X-Hookd-Timestamp "." body), the timestamp within 300 s of now. */
bool rx_hookd_signature_ok(const struct rx_request *req, const char *secret);
/* Standard Webhooks as a consumer computes it: webhook-signature holds "v1,<base64
 * HMAC-SHA256(secret, webhook-id "." webhook-timestamp "." body)>" (secret a raw secret, used
 * as its bytes), the timestamp within 300 s of now. */
bool rx_standard_signature_ok(const struct rx_request *req, const char *secret);
/* Whichever scheme the headers carry: webhook-* (and then no X-Hookd-Signature), or X-Hookd-*. */
bool rx_signature_ok(const struct rx_request *req, const char *secret);
/* The event id: webhook-id "evt_N", or X-Hookd-Event-Id; -1 when neither. */
long long rx_event_id(const struct rx_request *req);
