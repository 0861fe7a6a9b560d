/* Chain checkpoints (checkpoint.h): their text form in the log, parsing it back (from the
 * command line or a file of log lines) and their HMAC. Pure; called by the daemon's main
 * thread and by komerce-hookctl. */
#include "checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* "<id>:<hex hash>", the text the MAC covers. */
static int body(int64_t id, const uint8_t hash[STORE_HASH_LEN], char *out, size_t n)
{
	char hex[2 * STORE_HASH_LEN + 1];
	int len;

	util_hex(hash, STORE_HASH_LEN, hex);
	len = snprintf(out, n, "%" PRId64 ":%s", id, hex);
	return len > 0 && (size_t)len < n ? len : -ENOBUFS;
}

static void mac_of(int64_t id, const uint8_t hash[STORE_HASH_LEN], const void *key, size_t key_len,
		   uint8_t out[STORE_HASH_LEN])
{
	char text[CHECKPOINT_TEXT_MAX];
	int len = body(id, hash, text, sizeof(text));

	memset(out, 0, STORE_HASH_LEN);
	if (len > 0)
		(void)util_hmac_sha256(key, key_len, text, (size_t)len, out);
}

int checkpoint_format(int64_t id, const uint8_t hash[STORE_HASH_LEN], const void *key,
		      size_t key_len, char *out, size_t n)
{
	char text[CHECKPOINT_TEXT_MAX], hex[2 * STORE_HASH_LEN + 1];
	uint8_t mac[STORE_HASH_LEN];
	int len = body(id, hash, text, sizeof(text));

	if (len < 0)
		return len;
	if (key_len == 0) {
		len = snprintf(out, n, "checkpoint=%s", text);
	} else {
		mac_of(id, hash, key, key_len, mac);
		util_hex(mac, sizeof(mac), hex);
		len = snprintf(out, n, "checkpoint=%s mac=%s", text, hex);
	}
	return len > 0 && (size_t)len < n ? len : -ENOBUFS;
}

/* Parses "<id>:<64 hex digits>" at p (ended by NUL, blank or quote). */
static int parse_pair(const char *p, struct checkpoint *ret)
{
	char *end;
	long long id;
	size_t hl;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	errno = 0;
	id = strtoll(p, &end, 10);
	if (errno != 0 || id <= 0 || *end != ':')
		return -EINVAL;
	p = end + 1;
	hl = strcspn(p, " \t\r\n\"");
	if (hl != 2 * STORE_HASH_LEN || util_unhex(p, hl, ret->hash, STORE_HASH_LEN) < 0)
		return -EINVAL;
	ret->id = id;
	return 0;
}

int checkpoint_parse(const char *text, struct checkpoint *ret)
{
	const char *at = strstr(text, "checkpoint="), *mac;
	struct checkpoint c;
	int r;

	memset(&c, 0, sizeof(c));
	while (*text == ' ' || *text == '\t')
		text++;
	if (at == NULL) {
		if (*text < '0' || *text > '9')
			return -ENOENT; /* no checkpoint on this line */
		r = parse_pair(text, &c);
		text += strcspn(text, " \t\r\n");
		if (r == 0 && text[strspn(text, " \t\r\n")] != '\0')
			r = -EINVAL; /* "ID:HASH" stands alone on its line */
	} else {
		r = parse_pair(at + strlen("checkpoint="), &c);
	}
	if (r < 0)
		return r;
	mac = strstr(text, " mac=");
	if (mac != NULL) {
		size_t ml = strcspn(mac + 5, " \t\r\n\"");

		if (ml != 2 * STORE_HASH_LEN || util_unhex(mac + 5, ml, c.mac, STORE_HASH_LEN) < 0)
			return -EINVAL;
		c.has_mac = true;
	}
	*ret = c;
	return 0;
}

bool checkpoint_mac_ok(const struct checkpoint *c, const void *key, size_t key_len)
{
	uint8_t want[STORE_HASH_LEN];

	if (!c->has_mac || key_len == 0)
		return false;
	mac_of(c->id, c->hash, key, key_len, want);
	return util_ct_equal(want, c->mac, STORE_HASH_LEN);
}
