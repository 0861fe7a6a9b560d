/* Pure parts of the store shared by every backend: what a fact means for its payment (the
 * conflict rule and the dedupe key), the hash chain's hash, and outbox state names. No I/O;
 * called on the writer thread and by the verifier. */
#include "store_backend.h"

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

/* A conflicting fact (a status the state machine refuses, or another amount than the one
 * known) never moves the payment and gets a key of its own, so that the true fact for the
 * same status, arriving later, is still stored rather than absorbed as its duplicate. */
void store_event_decide(const struct event *ev, bool known, enum payment_status cur,
			long long cur_amount, struct store_event_decision *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->known = known;
	ret->verdict = known ? payment_transition(cur, ev->status) : PAYMENT_APPLY;
	ret->conflict = ret->verdict == PAYMENT_CONFLICT ||
			(known && cur_amount >= 0 && ev->amount >= 0 && cur_amount != ev->amount);
	ret->apply = ret->verdict == PAYMENT_APPLY && !ret->conflict;
	ret->terminal = payment_status_terminal(ev->status);
	store_dedupe_key(ev->payment_id, payment_status_name(ev->status), ret->conflict, ev->amount,
			 ret->key, sizeof(ret->key));
}

static void hash_field(EVP_MD_CTX *ctx, const void *p, size_t len)
{
	uint8_t l[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			(uint8_t)len};

	EVP_DigestUpdate(ctx, l, sizeof(l));
	if (len > 0)
		EVP_DigestUpdate(ctx, p, len);
}

static void hash_str(EVP_MD_CTX *ctx, const char *s)
{
	hash_field(ctx, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

static void hash_int(EVP_MD_CTX *ctx, long long v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%lld", v);
	hash_str(ctx, buf);
}

void store_event_hash(const uint8_t prev[STORE_HASH_LEN], int64_t id, const char *payment_id,
		      const char *order_id, const char *status, long long amount,
		      const char *source, bool conflict, const char *dedupe_key, const char *raw,
		      size_t raw_len, int64_t received_at, uint8_t out[STORE_HASH_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n = STORE_HASH_LEN;

	memset(out, 0, STORE_HASH_LEN);
	if (ctx == NULL)
		return;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1) {
		EVP_DigestUpdate(ctx, "komerce-hookd/1", 15);
		hash_field(ctx, prev, STORE_HASH_LEN);
		hash_int(ctx, id);
		hash_str(ctx, payment_id);
		hash_str(ctx, order_id);
		hash_str(ctx, status);
		hash_int(ctx, amount);
		hash_str(ctx, source);
		hash_int(ctx, conflict ? 1 : 0);
		hash_str(ctx, dedupe_key);
		hash_field(ctx, raw, raw_len);
		hash_int(ctx, received_at);
		EVP_DigestFinal_ex(ctx, out, &n);
	}
	EVP_MD_CTX_free(ctx);
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
