/* Komerce Payment API client (libcurl). Pure: never logs. One struct komerce per thread
 * (it owns a reusable curl easy handle); none of its functions may be called concurrently
 * on the same struct. A struct komerce_multi runs many status requests at once on one
 * thread (libcurl's multi interface over a fixed pool of them). */
#pragma once

#include <stddef.h>
#include <cjson/cJSON.h>

enum komerce_err {
	KOMERCE_OK = 0,
	KOMERCE_E_BAD_REQUEST,	/* HTTP 400 / 422: Komerce refused the request */
	KOMERCE_E_UNAUTHORIZED, /* HTTP 401 / 403: api key wrong */
	KOMERCE_E_NOT_FOUND,	/* HTTP 404 */
	KOMERCE_E_RATE_LIMITED, /* HTTP 429; retry_after_s set when the header was present */
	KOMERCE_E_SERVER,	/* HTTP 5xx */
	KOMERCE_E_HTTP,		/* any other non-2xx status */
	KOMERCE_E_TIMEOUT,	/* connect or total timeout */
	KOMERCE_E_DNS,		/* host name did not resolve */
	KOMERCE_E_CONNECT,	/* refused, reset, unreachable */
	KOMERCE_E_TLS,		/* handshake or certificate */
	KOMERCE_E_BAD_RESPONSE, /* body not JSON or not the {meta,data} envelope */
	KOMERCE_E_NOMEM,
	KOMERCE_E_INTERNAL,
};

struct komerce_opts {
	const char *base_url; /* e.g. https://api-sandbox.collaborator.komerce.id/user */
	const char *api_key;  /* sent as x-api-key; never logged */
	long connect_timeout_ms;
	long timeout_ms;
	/* Optional: while *stop is non-zero a request in flight is abandoned within ~0.1 s
	 * (KOMERCE_E_INTERNAL, "aborted"), so a stopping thread never waits for a timeout. */
	const int *stop;
};

struct komerce_result {
	enum komerce_err err;
	long http_status;   /* 0 when no HTTP reply was received */
	long retry_after_s; /* from Retry-After on 429, else -1 */
	char message[256];  /* meta.message or a description of the transport error */
	cJSON *root;	    /* whole parsed reply (owned), NULL if none */
	const cJSON *data;  /* root's "data" member (borrowed from root), may be NULL */
};

/* A payment's status as read from a status/create reply. */
struct komerce_payment {
	char payment_id[128];
	char order_id[128];
	char status[16]; /* PENDING, PAID, EXPIRED, CANCELED (normalised upper case) */
	char payment_type[32];
	char channel_code[32];
	long long amount;     /* -1 when absent */
	long long expires_at; /* unix seconds, 0 when absent */
	long long paid_at;    /* unix seconds, 0 when absent */
};

/* Returns NULL on allocation failure. The strings in opts are copied. Caller frees. */
struct komerce *komerce_new(const struct komerce_opts *opts);
void komerce_free(struct komerce *k);

/* Each call fills *ret (call komerce_result_clear afterwards, also on error) and returns 0
 * on 2xx with a valid envelope, or -EIO/-ETIMEDOUT/-EAGAIN/... with ret->err saying which. */
int komerce_methods_get(struct komerce *k, struct komerce_result *ret);
int komerce_payment_create(struct komerce *k, const cJSON *request, struct komerce_result *ret);
int komerce_payment_status(struct komerce *k, const char *payment_id, struct komerce_result *ret);
int komerce_payment_cancel(struct komerce *k, const char *payment_id, struct komerce_result *ret);
void komerce_result_clear(struct komerce_result *r);

/* ---- concurrent status requests (one thread; komerce_multi_wakeup from any) ---- */

struct komerce_multi;

/* slots: most requests in flight at once. NULL on allocation failure. Caller frees. */
struct komerce_multi *komerce_multi_new(const struct komerce_opts *opts, size_t slots);
/* Abandons the requests in flight (their results are never reported). NULL is fine. */
void komerce_multi_free(struct komerce_multi *m);
/* Starts a status request for payment_id, tagged with tag (returned with its result). 0;
 * -EBUSY when every slot is in use; or -errno with *ret filled when it could not be sent
 * (call komerce_result_clear). Nothing leaves before komerce_multi_wait. */
int komerce_multi_status(struct komerce_multi *m, const char *payment_id, void *tag,
			 struct komerce_result *ret);
/* Requests in flight. */
size_t komerce_multi_running(const struct komerce_multi *m);
/* Moves the transfers along, waiting up to timeout_ms for network activity, a reply or
 * komerce_multi_wakeup: the caller's only place to sleep. Returns at once when a request has
 * finished (its result waits in komerce_multi_next). 0 or -EIO. */
int komerce_multi_wait(struct komerce_multi *m, long timeout_ms);
/* Puts the requests just started on the wire: drives the transfers, waiting at most 2 ms for
 * their connections (on loopback or a warm path they are ready by then), so that a request
 * leaves when it was started rather than at the caller's next wait. */
void komerce_multi_push(struct komerce_multi *m);
/* Any thread: the komerce_multi_wait in progress (or the next one) returns at once. */
void komerce_multi_wakeup(struct komerce_multi *m);
/* A finished request: 1 with its tag and *ret (call komerce_result_clear), 0 when none. */
int komerce_multi_next(struct komerce_multi *m, void **ret_tag, struct komerce_result *ret);

/* Pure helpers (unit-tested without a network). */
const char *komerce_err_name(enum komerce_err e);
int komerce_parse_reply(long http_status, const char *body, size_t len, struct komerce_result *ret);
int komerce_payment_from_json(const cJSON *data, struct komerce_payment *ret);
/* Validates a create request by the Komerce docs' rules before it is sent. methods_data may be
 * NULL (channel_code then only checked for presence). On failure returns -EINVAL and writes the
 * offending field name and the rule broken into field/rule. */
int komerce_validate_create(const cJSON *request, const cJSON *methods_data, char *field,
			    size_t field_len, char *rule, size_t rule_len);
