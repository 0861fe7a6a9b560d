/* Client addresses behind trusted reverse proxies, and the IP/CIDR lists that say which proxies
 * are trusted. Pure; the HTTP threads call netaddr_client() once per request (only when the
 * peer itself is a trusted proxy does it read any header). */
#include "netaddr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <arpa/inet.h>

/* Parses a textual address into family + 16 bytes; IPv4-mapped IPv6 becomes IPv4. */
static bool parse_ip(const char *s, size_t len, int *ret_family, uint8_t out[16])
{
	char buf[NETADDR_STRLEN + 1];
	struct in6_addr a6;

	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	memset(out, 0, 16);
	if (inet_pton(AF_INET, buf, out) == 1) {
		*ret_family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, buf, &a6) != 1)
		return false;
	if (IN6_IS_ADDR_V4MAPPED(&a6)) {
		memcpy(out, a6.s6_addr + 12, 4);
		*ret_family = AF_INET;
		return true;
	}
	memcpy(out, a6.s6_addr, 16);
	*ret_family = AF_INET6;
	return true;
}

static bool net_contains(const struct netaddr_net *n, int family, const uint8_t *a)
{
	unsigned bits = n->prefix, full = bits / 8, rest = bits % 8;

	if (n->family != family)
		return false;
	if (memcmp(n->addr, a, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((n->addr[full] ^ a[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static bool contains(const struct netaddr_list *l, int family, const uint8_t *a)
{
	for (size_t i = 0; i < l->n; i++)
		if (net_contains(&l->nets[i], family, a))
			return true;
	return false;
}

static int parse_net(const char *s, size_t len, struct netaddr_net *ret)
{
	const char *slash = memchr(s, '/', len);
	size_t alen = slash != NULL ? (size_t)(slash - s) : len;
	unsigned max;

	if (!parse_ip(s, alen, &ret->family, ret->addr))
		return -EINVAL;
	max = ret->family == AF_INET ? 32 : 128;
	ret->prefix = max;
	if (slash != NULL) {
		const char *p = slash + 1, *end = s + len;
		unsigned v = 0;

		if (p == end || end - p > 3)
			return -EINVAL;
		for (; p < end; p++) {
			if (*p < '0' || *p > '9')
				return -EINVAL;
			v = v * 10 + (unsigned)(*p - '0');
		}
		if (v > max)
			return -EINVAL;
		ret->prefix = v;
	}
	/* Host bits set below the prefix would make the net mean something other than it says. */
	for (unsigned b = ret->prefix; b < max; b++)
		if (ret->addr[b / 8] & (0x80 >> (b % 8)))
			return -EINVAL;
	return 0;
}

int netaddr_list_parse(const char *text, struct netaddr_list *ret, char *why, size_t why_len)
{
	const char *p = text != NULL ? text : "";

	memset(ret, 0, sizeof(*ret));
	while (*p != '\0') {
		size_t len;

		p += strspn(p, ", \t");
		len = strcspn(p, ", \t");
		if (len == 0)
			break;
		if (ret->n == NETADDR_MAX_NETS) {
			snprintf(why, why_len, "at most %d entries", NETADDR_MAX_NETS);
			return -EINVAL;
		}
		if (parse_net(p, len, &ret->nets[ret->n]) < 0) {
			snprintf(why, why_len, "\"%.*s\" is not an IP address or CIDR network",
				 (int)(len > 64 ? 64 : len), p);
			return -EINVAL;
		}
		ret->n++;
		p += len;
	}
	return 0;
}

bool netaddr_list_contains(const struct netaddr_list *l, const char *addr)
{
	uint8_t a[16];
	int family;

	if (l == NULL || l->n == 0 || addr == NULL)
		return false;
	if (!parse_ip(addr, strlen(addr), &family, a))
		return false;
	return contains(l, family, a);
}

/* One list entry without spaces, quotes, brackets or port: "1.2.3.4:80", "[::1]:80", "\"...\"".
 * Returns false when it is no address (e.g. "unknown" or an obfuscated Forwarded node). */
static bool entry_address(const char *s, size_t len, int *ret_family, uint8_t out[16])
{
	while (len > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len >= 2 && s[0] == '"' && s[len - 1] == '"') {
		s++;
		len -= 2;
	}
	if (len > 0 && s[0] == '[') {
		const char *close = memchr(s, ']', len);

		if (close == NULL)
			return false;
		return parse_ip(s + 1, (size_t)(close - s - 1), ret_family, out);
	}
	if (parse_ip(s, len, ret_family, out))
		return true;
	/* IPv4 with a port */
	{
		const char *colon = memchr(s, ':', len);

		if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon - s) - 1) == NULL)
			return parse_ip(s, (size_t)(colon - s), ret_family, out);
	}
	return false;
}

/* The "for=" value of one Forwarded element ("for=1.2.3.4;proto=https"), or NULL. */
static const char *forwarded_for(const char *el, size_t len, size_t *ret_len)
{
	const char *p = el, *end = el + len;

	while (p < end) {
		const char *semi = memchr(p, ';', (size_t)(end - p));
		const char *pe = semi != NULL ? semi : end;

		while (p < pe && (*p == ' ' || *p == '\t'))
			p++;
		if (pe - p > 4 && strncasecmp(p, "for=", 4) == 0) {
			*ret_len = (size_t)(pe - p - 4);
			return p + 4;
		}
		p = semi != NULL ? semi + 1 : end;
	}
	return NULL;
}

void netaddr_client(const struct netaddr_list *trusted, const char *peer, const char *xff,
		    const char *forwarded, char *out, size_t out_len)
{
	const char *list = xff != NULL && xff[0] != '\0' ? xff : forwarded;
	bool is_fwd = list != NULL && list == forwarded;
	uint8_t best[16];
	int best_family;
	size_t end;

	snprintf(out, out_len, "%s", peer);
	if (list == NULL || !netaddr_list_contains(trusted, peer))
		return;
	if (!parse_ip(peer, strlen(peer), &best_family, best))
		return;
	/* Right to left: the rightmost entries were added by the proxies nearest to us. */
	end = strlen(list);
	for (;;) {
		size_t start = end;
		const char *val;
		size_t vlen;
		uint8_t a[16];
		int family;

		while (start > 0 && list[start - 1] != ',')
			start--;
		val = list + start;
		vlen = end - start;
		if (is_fwd)
			val = forwarded_for(list + start, end - start, &vlen);
		if (val == NULL || !entry_address(val, vlen, &family, a))
			break;
		best_family = family;
		memcpy(best, a, 16);
		if (!contains(trusted, family, a))
			break;
		if (start == 0)
			break;
		end = start - 1;
	}
	inet_ntop(best_family, best, out, (socklen_t)out_len);
}
