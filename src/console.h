/* The payments console: static HTML, CSS and JavaScript embedded at build time
 * (tools/embed-assets.py generates the table from console/), served on the admin listener at
 * "/" and "/console/..." without a token (the data routes it calls need one), with a strict
 * Content-Security-Policy. Handlers run on the admin listener's threads; nothing here
 * allocates or blocks. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct http_route;

struct console_asset {
	const char *path;	  /* "/" or "/console/<name>.<hash>.<ext>" */
	const char *content_type; /* with charset for text */
	const char *data;
	size_t len;
	const char *etag; /* quoted, from the content hash */
	bool immutable;	  /* path carries the content hash: cache for a year */
};

/* Generated (console_assets.c): every asset, the page "/" first. */
extern const struct console_asset console_assets[];
extern const size_t console_assets_count;

/* The security headers of every console reply (CSP and friends), "\r\n"-separated. */
extern const char console_security_headers[];

/* The asset at path, or NULL. */
const struct console_asset *console_find(const char *path);
/* True when an If-None-Match list names etag (or is "*"). Weak tags compare by value. */
bool console_etag_matches(const char *inm, const char *etag);

/* Writes the console's routes (GET "/" and the "/console/" prefix) into out (at most max);
 * returns how many. */
size_t console_routes(struct http_route *out, size_t max);
