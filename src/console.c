/* Serves the payments console (see console.h) from the table tools/embed-assets.py generated:
 * the page at "/" (revalidated on every load: Cache-Control no-cache + ETag) and its assets
 * under "/console/" (their names carry the content hash, so they are cached for a year and a
 * new build is picked up by the page naming new files). Every reply carries the console's
 * security headers. Runs on the admin listener's threads; no token (the data routes check). */
#include "console.h"

#include <stdio.h>
#include <string.h>

#include "http.h"
#include "metrics.h"

/* No inline script or style, no plugin, frame, form target or foreign connection; Trusted
 * Types make any HTML-from-string sink (innerHTML, document.write) throw. */
const char console_security_headers[] =
	"Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "
	"connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
	"form-action 'none'; require-trusted-types-for 'script'; trusted-types 'none'\r\n"
	"X-Frame-Options: DENY\r\n"
	"X-Content-Type-Options: nosniff\r\n"
	"Referrer-Policy: no-referrer\r\n"
	"Cross-Origin-Opener-Policy: same-origin\r\n"
	"Cross-Origin-Resource-Policy: same-origin";

#define CACHE_IMMUTABLE "public, max-age=31536000, immutable"
#define CACHE_PAGE	"no-cache"

const struct console_asset *console_find(const char *path)
{
	for (size_t i = 0; i < console_assets_count; i++)
		if (strcmp(console_assets[i].path, path) == 0)
			return &console_assets[i];
	return NULL;
}

bool console_etag_matches(const char *inm, const char *etag)
{
	size_t len = strlen(etag);

	for (const char *p = inm; *p != '\0';) {
		size_t n;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		n = strcspn(p, ",");
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if ((n == 1 && p[0] == '*') || (n == len && strncmp(p, etag, len) == 0))
			return true;
		p += strcspn(p, ",");
	}
	return false;
}

static void console_handler(struct http_request *req, void *ctx)
{
	static const char not_found[] = "not found\n";
	const struct console_asset *as = console_find(http_url(req));
	const char *inm = http_header(req, "If-None-Match");
	char hdr[1024];

	(void)ctx;
	if (as == NULL) {
		http_reply(req, 404, "text/plain; charset=utf-8", not_found, strlen(not_found),
			   console_security_headers);
		return;
	}
	snprintf(hdr, sizeof(hdr), "%s\r\nCache-Control: %s\r\nETag: %s", console_security_headers,
		 as->immutable ? CACHE_IMMUTABLE : CACHE_PAGE, as->etag);
	if (inm != NULL && console_etag_matches(inm, as->etag)) {
		http_reply(req, 304, NULL, "", 0, hdr);
		return;
	}
	http_reply(req, 200, as->content_type, as->data, as->len, hdr);
}

size_t console_routes(struct http_route *out, size_t max)
{
	const struct http_route routes[] = {
		{.method = "GET", .path = "/", .ep = METRICS_EP_ADMIN, .fn = console_handler},
		{.method = "GET",
		 .path = "/console/",
		 .prefix = true,
		 .ep = METRICS_EP_ADMIN,
		 .fn = console_handler},
	};
	size_t n = sizeof(routes) / sizeof(routes[0]);

	if (n > max)
		n = max;
	memcpy(out, routes, n * sizeof(routes[0]));
	return n;
}
