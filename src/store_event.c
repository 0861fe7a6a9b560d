/* Pure parts of the store shared by every backend: what a fact means for its payment (the
 * conflict rule, the hold of a PAID callback to confirm, and the dedupe keys), what a poll
 * result does to a pending confirmation, the hash chain's hash, and the names of outbox,
 * confirmation and poll states. No I/O; called on the writer thread and by the verifier. */
#include "store_backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

void store_dedupe_key(const char *payment_id, const char *status, bool conflict, long long amount,
		      char *out, size_t n)
{
	if (!conflict)
		snprintf(out, n, "%s:%s", payment_id, status);
	else if (amount >= 0)
		snprintf(out, n, "%s:%s:conflict:%lld", payment_id, status, amount);
	else
		snprintf(out, n, "%s:%s:conflict", payment_id, status);
}

void store_dedupe_key_marked(const char *payment_id, const char *status, enum store_event_mark mark,
			     long long amount, int64_t held_event_id, char *out, size_t n)
{
	if (mark == STORE_MARK_HELD && amount >= 0)
		snprintf(out, n, "%s:%s:held:%lld", payment_id, status, amount);
	else if (mark == STORE_MARK_HELD)
		snprintf(out, n, "%s:%s:held", payment_id, status);
	else if (mark == STORE_MARK_UNCONFIRMED)
		snprintf(out, n, "%s:%s:unconfirmed:%lld", payment_id, status,
			 (long long)held_event_id);
	else
		store_dedupe_key(payment_id, status, false, amount, out, n);
}

/* A conflicting fact (a status the state machine refuses, or another amount than the one
 * known) never moves the payment and gets a key of its own, so that the true fact for the
 * same status, arriving later, is still stored rather than absorbed as its duplicate. A PAID
 * callback that would move the payment is, with confirm_paid, held (key of its own too): a
 * retried callback is its duplicate, while the PAID that a status call then learns is a new
 * fact that moves the payment and is forwarded. A held claim fills nothing in the payment: an
 * amount from a forged callback would otherwise turn the true PAID into a conflict. */
void store_event_decide(const struct event *ev, const struct store_event_payment *cur,
			bool confirm_paid, struct store_event_decision *ret)
{
	bool known = cur != NULL && cur->known;
	const char *status = payment_status_name(ev->status);

	memset(ret, 0, sizeof(*ret));
	ret->known = known;
	ret->verdict = known ? payment_transition(cur->status, ev->status) : PAYMENT_APPLY;
	ret->conflict = ret->verdict == PAYMENT_CONFLICT ||
			(known && cur->amount >= 0 && ev->amount >= 0 && cur->amount != ev->amount);
	ret->apply = ret->verdict == PAYMENT_APPLY && !ret->conflict;
	ret->terminal = payment_status_terminal(ev->status);
	ret->hold = confirm_paid && ret->apply && ev->source == EVENT_SOURCE_CALLBACK &&
		    ev->status == PAYMENT_PAID;
	if (ret->hold) {
		ret->apply = false;
		ret->mark = STORE_MARK_HELD;
		store_dedupe_key_marked(ev->payment_id, status, STORE_MARK_HELD, ev->amount, 0,
					ret->key, sizeof(ret->key));
		return;
	}
	store_dedupe_key(ev->payment_id, status, ret->conflict, ev->amount, ret->key,
			 sizeof(ret->key));
}

bool store_confirm_decisive(enum store_poll_outcome outcome, long http_status)
{
	return outcome == STORE_POLL_OK ||
	       (outcome == STORE_POLL_REFUSED && (http_status == 404 || http_status == 400));
}

enum store_confirmation store_confirm_verdict(long long held_amount,
					      enum store_poll_outcome outcome, long http_status,
					      enum payment_status komerce_status,
					      long long komerce_amount, char *detail, size_t n)
{
	if (outcome != STORE_POLL_OK) {
		snprintf(detail, n, "Komerce does not know this payment (HTTP %ld)", http_status);
		return STORE_CONFIRM_UNCONFIRMED;
	}
	if (komerce_status != PAYMENT_PAID) {
		snprintf(detail, n, "Komerce says %s", payment_status_name(komerce_status));
		return STORE_CONFIRM_UNCONFIRMED;
	}
	if (held_amount >= 0 && komerce_amount >= 0 && held_amount != komerce_amount) {
		snprintf(detail, n, "Komerce says PAID with amount %lld, the callback said %lld",
			 komerce_amount, held_amount);
		return STORE_CONFIRM_UNCONFIRMED;
	}
	snprintf(detail, n, "Komerce says PAID");
	return STORE_CONFIRM_CONFIRMED;
}

void store_confirm_decide(const struct store_event_payment *cur,
			  const struct store_reconcile_update *u,
			  struct store_confirm_decision *ret)
{
	enum store_confirmation v;

	memset(ret, 0, sizeof(*ret));
	if (!cur->known || u->sent_at <= 0 || cur->held_event_id <= 0)
		return;
	/* A poll that left before the callback was held may predate the payment: only its PAID
	 * means something. */
	if (cur->confirmation == STORE_CONFIRM_PENDING && u->sent_at <= cur->confirmation_at &&
	    !(u->outcome == STORE_POLL_OK && u->komerce_status == PAYMENT_PAID)) {
		ret->poll_again = true;
		return;
	}
	if (cur->confirmation == STORE_CONFIRM_PENDING) {
		if (!store_confirm_decisive(u->outcome, u->http_status)) {
			ret->verdict = STORE_CONFIRM_PENDING;
			snprintf(ret->detail, sizeof(ret->detail),
				 "status call failed (%s%s%s), retrying",
				 store_poll_outcome_name(u->outcome),
				 u->error != NULL && u->error[0] != '\0' ? ": " : "",
				 u->error != NULL ? u->error : "");
			return;
		}
		v = store_confirm_verdict(cur->held_amount, u->outcome, u->http_status,
					  u->komerce_status, u->ev.amount, ret->detail,
					  sizeof(ret->detail));
		ret->verdict = v;
		ret->mark_fact = v == STORE_CONFIRM_CONFIRMED;
		ret->marker = v == STORE_CONFIRM_UNCONFIRMED;
		return;
	}
	if (cur->confirmation == STORE_CONFIRM_UNCONFIRMED && u->outcome == STORE_POLL_OK &&
	    u->komerce_status == PAYMENT_PAID) {
		v = store_confirm_verdict(cur->held_amount, u->outcome, u->http_status,
					  u->komerce_status, u->ev.amount, ret->detail,
					  sizeof(ret->detail));
		if (v != STORE_CONFIRM_CONFIRMED)
			return;
		ret->verdict = v;
		ret->mark_fact = true;
		snprintf(ret->detail, sizeof(ret->detail),
			 "Komerce says PAID (a later status call)");
	}
}

void store_confirm_marker(const struct store_event_payment *cur,
			  const struct store_reconcile_update *u, struct event *ev,
			  struct store_event_decision *d)
{
	enum payment_status st = u->outcome == STORE_POLL_OK && u->komerce_status != PAYMENT_UNKNOWN
					 ? u->komerce_status
					 : cur->status;

	*ev = u->ev;
	snprintf(ev->payment_id, sizeof(ev->payment_id), "%s", u->payment_id);
	ev->status = st;
	ev->source = EVENT_SOURCE_RECONCILE;
	if (u->outcome != STORE_POLL_OK)
		ev->amount = -1;
	memset(d, 0, sizeof(*d));
	d->known = true;
	d->verdict = PAYMENT_CONFLICT;
	d->conflict = true;
	d->terminal = payment_status_terminal(st);
	d->mark = STORE_MARK_UNCONFIRMED;
	d->held_event_id = cur->held_event_id;
	store_dedupe_key_marked(ev->payment_id, payment_status_name(st), STORE_MARK_UNCONFIRMED,
				ev->amount, cur->held_event_id, d->key, sizeof(d->key));
}

/* The chain hash is fed through a small buffer: a dozen short fields would otherwise be as
 * many EVP_DigestUpdate calls. The digest is fetched once (EVP_sha256() in an init makes
 * OpenSSL 3 look the implementation up again every time). */
struct hash_buf {
	EVP_MD_CTX *ctx;
	size_t n;
	uint8_t b[512];
};

static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void hash_flush(struct hash_buf *h)
{
	if (h->n > 0)
		EVP_DigestUpdate(h->ctx, h->b, h->n);
	h->n = 0;
}

static void hash_put(struct hash_buf *h, const void *p, size_t len)
{
	if (len > sizeof(h->b) - h->n) {
		hash_flush(h);
		if (len > sizeof(h->b)) {
			EVP_DigestUpdate(h->ctx, p, len);
			return;
		}
	}
	memcpy(h->b + h->n, p, len);
	h->n += len;
}

static void hash_field(struct hash_buf *h, const void *p, size_t len)
{
	uint8_t l[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			(uint8_t)len};

	hash_put(h, l, sizeof(l));
	if (len > 0)
		hash_put(h, p, len);
}

static void hash_str(struct hash_buf *h, const char *s)
{
	hash_field(h, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

/* The same digits as printf's "%lld". */
static void hash_int(struct hash_buf *h, long long v)
{
	char buf[24], *end = buf + sizeof(buf), *p = end;
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u != 0);
	if (v < 0)
		*--p = '-';
	hash_field(h, p, (size_t)(end - p));
}

int store_event_hash(const uint8_t prev[STORE_HASH_LEN], int64_t id, const char *payment_id,
		     const char *order_id, const char *status, long long amount, const char *source,
		     bool conflict, const char *dedupe_key, const char *raw, size_t raw_len,
		     int64_t received_at, uint8_t out[STORE_HASH_LEN])
{
	return store_event_hash_marked(prev, id, payment_id, order_id, status, amount, source,
				       conflict, dedupe_key, raw, raw_len, received_at, NULL, 0,
				       out);
}

/* Version 1 (every event before confirm_paid, and every unmarked one since) is unchanged, so
 * chains written before the upgrade still verify. */
int store_event_hash_marked(const uint8_t prev[STORE_HASH_LEN], int64_t id, const char *payment_id,
			    const char *order_id, const char *status, long long amount,
			    const char *source, bool conflict, const char *dedupe_key,
			    const char *raw, size_t raw_len, int64_t received_at, const char *mark,
			    int64_t held_event_id, uint8_t out[STORE_HASH_LEN])
{
	struct hash_buf h = {.ctx = EVP_MD_CTX_new()};
	unsigned int n = STORE_HASH_LEN;
	int ok = 0;

	pthread_once(&sha256_once, sha256_fetch);
	if (h.ctx != NULL && sha256_md != NULL && EVP_DigestInit_ex2(h.ctx, sha256_md, NULL) == 1) {
		hash_put(&h, mark != NULL ? "komerce-hookd/2" : "komerce-hookd/1", 15);
		hash_field(&h, prev, STORE_HASH_LEN);
		hash_int(&h, id);
		hash_str(&h, payment_id);
		hash_str(&h, order_id);
		hash_str(&h, status);
		hash_int(&h, amount);
		hash_str(&h, source);
		hash_int(&h, conflict ? 1 : 0);
		hash_str(&h, dedupe_key);
		hash_field(&h, raw, raw_len);
		hash_int(&h, received_at);
		if (mark != NULL) {
			hash_str(&h, mark);
			hash_int(&h, held_event_id);
		}
		hash_flush(&h);
		ok = EVP_DigestFinal_ex(h.ctx, out, &n);
	}
	EVP_MD_CTX_free(h.ctx);
	if (ok != 1) {
		memset(out, 0, STORE_HASH_LEN);
		return -ENOMEM;
	}
	return 0;
}

static const char *const state_names[] = {
	[STORE_OUTBOX_ANY] = "any",
	[STORE_OUTBOX_PENDING] = "pending",
	[STORE_OUTBOX_DELIVERED] = "delivered",
	[STORE_OUTBOX_DEAD] = "dead",
};

const char *store_outbox_state_name(enum store_outbox_state st)
{
	if (st < STORE_OUTBOX_ANY || st > STORE_OUTBOX_DEAD)
		return "any";
	return state_names[st];
}

enum store_outbox_state store_outbox_state_parse(const char *name)
{
	for (int i = STORE_OUTBOX_PENDING; i <= STORE_OUTBOX_DEAD; i++)
		if (name != NULL && strcmp(name, state_names[i]) == 0)
			return (enum store_outbox_state)i;
	return STORE_OUTBOX_ANY;
}

/* ---- names of the confirmation states ---- */

static const char *const mark_names[] = {
	[STORE_MARK_NONE] = NULL,
	[STORE_MARK_HELD] = "held",
	[STORE_MARK_CONFIRMED] = "confirmed",
	[STORE_MARK_UNCONFIRMED] = "unconfirmed",
};

const char *store_event_mark_name(enum store_event_mark m)
{
	return m > STORE_MARK_NONE && m <= STORE_MARK_UNCONFIRMED ? mark_names[m] : NULL;
}

enum store_event_mark store_event_mark_parse(const char *name)
{
	for (int i = STORE_MARK_HELD; i <= STORE_MARK_UNCONFIRMED; i++)
		if (name != NULL && strcmp(name, mark_names[i]) == 0)
			return (enum store_event_mark)i;
	return STORE_MARK_NONE;
}

static const char *const confirmation_names[] = {
	[STORE_CONFIRM_NONE] = NULL,
	[STORE_CONFIRM_PENDING] = "pending",
	[STORE_CONFIRM_CONFIRMED] = "confirmed",
	[STORE_CONFIRM_UNCONFIRMED] = "unconfirmed",
};

const char *store_confirmation_name(enum store_confirmation c)
{
	return c > STORE_CONFIRM_NONE && c <= STORE_CONFIRM_UNCONFIRMED ? confirmation_names[c]
									: NULL;
}

enum store_confirmation store_confirmation_parse(const char *name)
{
	for (int i = STORE_CONFIRM_PENDING; i <= STORE_CONFIRM_UNCONFIRMED; i++)
		if (name != NULL && strcmp(name, confirmation_names[i]) == 0)
			return (enum store_confirmation)i;
	return STORE_CONFIRM_NONE;
}

static const char *const outcome_names[] = {
	[STORE_POLL_OK] = "ok",
	[STORE_POLL_REFUSED] = "refused",
	[STORE_POLL_RATE_LIMITED] = "rate_limited",
	[STORE_POLL_FAILED] = "failed",
};

const char *store_poll_outcome_name(enum store_poll_outcome o)
{
	return o >= STORE_POLL_OK && o <= STORE_POLL_FAILED ? outcome_names[o] : "failed";
}

enum store_poll_outcome store_poll_outcome_parse(const char *name)
{
	for (int i = STORE_POLL_OK; i <= STORE_POLL_FAILED; i++)
		if (name != NULL && strcmp(name, outcome_names[i]) == 0)
			return (enum store_poll_outcome)i;
	return STORE_POLL_FAILED;
}
