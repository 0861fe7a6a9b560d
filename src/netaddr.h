/* Client addresses: IP/CIDR lists (server.trusted_proxies) and the client address a request
 * speaks for when it came through a trusted reverse proxy (X-Forwarded-For, Forwarded). Pure:
 * no logging, no I/O; called by the HTTP threads for every request and by config at load. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NETADDR_MAX_NETS 32
#define NETADDR_STRLEN	 46 /* INET6_ADDRSTRLEN */

struct netaddr_net {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned prefix; /* bits */
};

struct netaddr_list {
	struct netaddr_net nets[NETADDR_MAX_NETS];
	size_t n;
};

/* Parses "1.2.3.4, 10.0.0.0/8, ::1, fd00::/8" (comma or space separated; empty = none) into
 * *ret. Returns 0, or -EINVAL with the offending item in why. */
int netaddr_list_parse(const char *text, struct netaddr_list *ret, char *why, size_t why_len);

/* True when the textual address addr (IPv4, IPv6 or IPv4-mapped IPv6) is in one of the nets. */
bool netaddr_list_contains(const struct netaddr_list *l, const char *addr);

/* The address of the client a request from peer speaks for. When peer is not in trusted (or
 * trusted is empty), that is peer. Otherwise the X-Forwarded-For list (xff, may be NULL) is
 * read from the right, skipping addresses that are themselves trusted proxies, and the first
 * other address wins; without X-Forwarded-For, the last "for=" of the Forwarded header
 * (forwarded, RFC 7239, may be NULL) is used the same way. A malformed entry stops the walk:
 * the last address read so far (the proxy's own peer) is used, so a client can never choose
 * an address by sending garbage. Writes the result (at most NETADDR_STRLEN bytes) into out. */
void netaddr_client(const struct netaddr_list *trusted, const char *peer, const char *xff,
		    const char *forwarded, char *out, size_t out_len);
