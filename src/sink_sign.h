/* Signatures of sink deliveries: Standard Webhooks (standardwebhooks.com, as Svix signs) and the
 * original hookd scheme. Pure (OpenSSL HMAC and base64, no I/O, no logging); called by the
 * forwarder threads of HTTP sinks and by config validation. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SINK_SIGN_MAX_SECRETS 4	  /* secrets one sink may hold during a rotation */
#define SINK_SIGN_KEY_MAX     256 /* bytes of one decoded secret */
#define SINK_SIGN_KEY_MIN     16  /* bytes (raw secret: characters) */
#define SINK_SIGN_ID_LEN      32  /* "evt_" + a 64-bit decimal id + NUL fits */
/* "v1," + 44 base64 characters per secret, separated by one space. */
#define SINK_SIGN_HEADER_LEN (SINK_SIGN_MAX_SECRETS * 48 + 1)
#define SINK_SIGN_HOOKD_LEN  (7 + 64 + 1) /* "sha256=" + hex + NUL */

enum sink_sign_scheme {
	SINK_SIGN_STANDARD, /* webhook-id, webhook-timestamp, webhook-signature: v1,<base64> */
	SINK_SIGN_HOOKD,    /* X-Hookd-Signature: sha256=<hex HMAC(secret, ts "." body)> */
};

struct sink_sign_keys {
	uint8_t key[SINK_SIGN_MAX_SECRETS][SINK_SIGN_KEY_MAX];
	size_t len[SINK_SIGN_MAX_SECRETS];
	size_t n;
};

/* Parses a sink secret for Standard Webhooks: one to SINK_SIGN_MAX_SECRETS secrets separated
 * by commas (blanks around each are ignored). A secret written "whsec_<base64>" (the spec's
 * form, as Svix shows it) is the key its base64 decodes to; any other text is used as its own
 * bytes. Each key must be at least SINK_SIGN_KEY_MIN bytes. Returns 0, or -EINVAL with a reason
 * in why (which never quotes the secret). Clear *ret with sink_sign_keys_clear when done. */
int sink_sign_keys_parse(const char *secrets, struct sink_sign_keys *ret, char *why, size_t why_len)
	__attribute__((warn_unused_result));
void sink_sign_keys_clear(struct sink_sign_keys *k);

/* The webhook-id of an event: "evt_<event_id>". The same for every attempt and every sink
 * (and for a replay of the event): consumers deduplicate on it. */
void sink_sign_webhook_id(int64_t event_id, char out[SINK_SIGN_ID_LEN]);

/* The webhook-signature value: "v1,<base64 HMAC-SHA256(key, id "." timestamp "." body)>" for
 * each key, separated by single spaces, into out. Returns 0, -EINVAL (no key) or -ENOMEM/-EIO. */
int sink_sign_standard(const struct sink_sign_keys *keys, const char *webhook_id, int64_t timestamp,
		       const char *body, size_t len, char out[SINK_SIGN_HEADER_LEN]);

/* "sha256=" + lowercase hex HMAC-SHA256(secret, decimal timestamp + "." + body) into out: the
 * original X-Hookd-Signature. Returns 0, or -ENOMEM / -EIO. */
int sink_sign_hookd(const char *secret, int64_t timestamp, const char *body, size_t len,
		    char out[SINK_SIGN_HOOKD_LEN]);
