/* Signatures of sink deliveries (see sink_sign.h): secret parsing with base64 via OpenSSL's
 * EVP_DecodeBlock, HMAC-SHA256 via util_hmac_sha256 and the signature's base64 via
 * EVP_EncodeBlock. Pure and thread-safe: the forwarder thread of each HTTP sink calls it per
 * delivery, config validation once at load. */
#include "sink_sign.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "util.h"

#define WHSEC_PREFIX "whsec_"

/* Decodes standard base64 (with its padding) into out. Returns the byte count, or -EINVAL for
 * anything that is not canonical base64 of at most max bytes. */
static int b64_decode(const char *in, size_t len, uint8_t *out, size_t max)
{
	uint8_t buf[SINK_SIGN_KEY_MAX + 3];
	size_t pad = 0;
	int n;

	if (len == 0 || len % 4 != 0 || len / 4 * 3 > sizeof(buf))
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '=') {
			if (i < len - 2)
				return -EINVAL;
			pad++;
		} else if (pad > 0 || !(isalnum(c) || c == '+' || c == '/')) {
			return -EINVAL;
		}
	}
	n = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)len);
	if (n < 0 || (size_t)n < pad || (size_t)n - pad > max) {
		explicit_bzero(buf, sizeof(buf));
		return -EINVAL;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes: drop them. */
	n -= (int)pad;
	memcpy(out, buf, (size_t)n);
	explicit_bzero(buf, sizeof(buf));
	return n;
}

static int fail(char *why, size_t why_len, const char *msg, size_t index)
{
	snprintf(why, why_len, "secret %zu of the list: %s", index + 1, msg);
	return -EINVAL;
}

int sink_sign_keys_parse(const char *secrets, struct sink_sign_keys *ret, char *why, size_t why_len)
{
	const char *p = secrets != NULL ? secrets : "";
	size_t index = 0;

	memset(ret, 0, sizeof(*ret));
	why[0] = '\0';
	for (;;) {
		const char *end = strchr(p, ',');
		const char *s = p, *e = end != NULL ? end : p + strlen(p);

		while (s < e && isspace((unsigned char)*s))
			s++;
		while (e > s && isspace((unsigned char)e[-1]))
			e--;
		if (e == s) {
			if (end == NULL && index == 0 && ret->n == 0)
				break;
			sink_sign_keys_clear(ret);
			return fail(why, why_len, "is empty", index);
		}
		if (ret->n == SINK_SIGN_MAX_SECRETS) {
			sink_sign_keys_clear(ret);
			snprintf(why, why_len, "at most %d secrets", SINK_SIGN_MAX_SECRETS);
			return -EINVAL;
		}
		if ((size_t)(e - s) > strlen(WHSEC_PREFIX) &&
		    strncmp(s, WHSEC_PREFIX, strlen(WHSEC_PREFIX)) == 0) {
			const char *b = s + strlen(WHSEC_PREFIX);
			int n = b64_decode(b, (size_t)(e - b), ret->key[ret->n], SINK_SIGN_KEY_MAX);

			if (n < 0) {
				sink_sign_keys_clear(ret);
				return fail(why, why_len,
					    "whsec_ must be followed by standard base64 of at "
					    "most 256 bytes",
					    index);
			}
			ret->len[ret->n] = (size_t)n;
		} else {
			if ((size_t)(e - s) > SINK_SIGN_KEY_MAX) {
				sink_sign_keys_clear(ret);
				return fail(why, why_len, "longer than 256 characters", index);
			}
			memcpy(ret->key[ret->n], s, (size_t)(e - s));
			ret->len[ret->n] = (size_t)(e - s);
		}
		if (ret->len[ret->n] < SINK_SIGN_KEY_MIN) {
			sink_sign_keys_clear(ret);
			return fail(why, why_len,
				    "shorter than 16 characters (whsec_: 16 decoded bytes)", index);
		}
		ret->n++;
		index++;
		if (end == NULL)
			break;
		p = end + 1;
	}
	if (ret->n == 0) {
		snprintf(why, why_len, "missing");
		return -EINVAL;
	}
	return 0;
}

void sink_sign_keys_clear(struct sink_sign_keys *k)
{
	if (k != NULL)
		explicit_bzero(k, sizeof(*k));
}

void sink_sign_webhook_id(int64_t event_id, char out[SINK_SIGN_ID_LEN])
{
	snprintf(out, SINK_SIGN_ID_LEN, "evt_%lld", (long long)event_id);
}

/* HMAC-SHA256(key, prefix + body) without copying the body twice. */
static int mac_of(const uint8_t *key, size_t key_len, const char *prefix, size_t plen,
		  const char *body, size_t len, uint8_t mac[UTIL_SHA256_LEN])
{
	char *msg = malloc(plen + len + 1);
	int r;

	if (msg == NULL)
		return -ENOMEM;
	memcpy(msg, prefix, plen);
	if (len > 0)
		memcpy(msg + plen, body, len);
	r = util_hmac_sha256(key, key_len, msg, plen + len, mac);
	free(msg);
	return r;
}

int sink_sign_standard(const struct sink_sign_keys *keys, const char *webhook_id, int64_t timestamp,
		       const char *body, size_t len, char out[SINK_SIGN_HEADER_LEN])
{
	char prefix[SINK_SIGN_ID_LEN + 32];
	size_t plen, o = 0;
	int n;

	if (keys == NULL || keys->n == 0 || webhook_id == NULL)
		return -EINVAL;
	n = snprintf(prefix, sizeof(prefix), "%s.%lld.", webhook_id, (long long)timestamp);
	if (n < 0 || (size_t)n >= sizeof(prefix))
		return -EINVAL;
	plen = (size_t)n;
	out[0] = '\0';
	for (size_t i = 0; i < keys->n; i++) {
		uint8_t mac[UTIL_SHA256_LEN];
		int r = mac_of(keys->key[i], keys->len[i], prefix, plen, body, len, mac);

		if (r < 0)
			return r;
		if (i > 0)
			out[o++] = ' ';
		memcpy(out + o, "v1,", 3);
		o += 3;
		/* 32 bytes encode to 44 characters plus a NUL. */
		o += (size_t)EVP_EncodeBlock((unsigned char *)out + o, mac, sizeof(mac));
		explicit_bzero(mac, sizeof(mac));
	}
	out[o] = '\0';
	return 0;
}

int sink_sign_hookd(const char *secret, int64_t timestamp, const char *body, size_t len,
		    char out[SINK_SIGN_HOOKD_LEN])
{
	uint8_t mac[UTIL_SHA256_LEN];
	char ts[32];
	int n, r;

	n = snprintf(ts, sizeof(ts), "%lld.", (long long)timestamp);
	r = mac_of((const uint8_t *)secret, strlen(secret), ts, (size_t)n, body, len, mac);
	if (r < 0)
		return r;
	memcpy(out, "sha256=", 7);
	util_hex(mac, sizeof(mac), out + 7);
	return 0;
}
