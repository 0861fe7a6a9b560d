/* Check suite for src/console.c and the table tools/embed-assets.py generates from console/:
 * the page at "/" and hashed, immutable asset names that match their content; the page only
 * references embedded assets and nothing off the machine; the script never turns data into
 * markup; If-None-Match handling; the security headers; the routes. */
#include "console.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#include "util.h"

static const struct console_asset *asset_ending(const char *ext)
{
	for (size_t i = 0; i < console_assets_count; i++) {
		size_t n = strlen(console_assets[i].path), e = strlen(ext);

		if (n > e && strcmp(console_assets[i].path + n - e, ext) == 0)
			return &console_assets[i];
	}
	return NULL;
}

/* The asset's text as a NUL-terminated copy (the table's data is not NUL-terminated by
 * contract). Caller frees. */
static char *text_of(const struct console_asset *a)
{
	char *s = malloc(a->len + 1);

	ck_assert_ptr_nonnull(s);
	memcpy(s, a->data, a->len);
	s[a->len] = '\0';
	return s;
}

START_TEST(page_first_and_assets_named_by_their_content)
{
	const struct console_asset *page = &console_assets[0];

	ck_assert_uint_ge(console_assets_count, 4);
	ck_assert_str_eq(page->path, "/");
	ck_assert_str_eq(page->content_type, "text/html; charset=utf-8");
	ck_assert(!page->immutable);
	for (size_t i = 1; i < console_assets_count; i++) {
		const struct console_asset *a = &console_assets[i];
		uint8_t md[UTIL_SHA256_LEN];
		char hex[2 * UTIL_SHA256_LEN + 1], want[16];
		const char *dot;

		ck_assert_msg(strncmp(a->path, "/console/", 9) == 0, "%s", a->path);
		ck_assert(a->immutable);
		ck_assert_uint_gt(a->len, 0);
		util_sha256(a->data, a->len, md);
		util_hex(md, sizeof(md), hex);
		/* /console/<stem>.<12 hex of the content's SHA-256>.<ext> */
		snprintf(want, sizeof(want), ".%.12s.", hex);
		dot = strstr(a->path, want);
		ck_assert_msg(dot != NULL, "%s is not named after its content %s", a->path, hex);
		ck_assert_int_eq(a->etag[0], '"');
		ck_assert_int_eq(strncmp(a->etag + 1, hex, 16), 0);
	}
	ck_assert_str_eq(asset_ending(".js")->content_type, "text/javascript; charset=utf-8");
	ck_assert_str_eq(asset_ending(".css")->content_type, "text/css; charset=utf-8");
	ck_assert_str_eq(asset_ending(".svg")->content_type, "image/svg+xml");
}
END_TEST

START_TEST(page_references_only_embedded_assets)
{
	char *html = text_of(&console_assets[0]);

	for (size_t i = 1; i < console_assets_count; i++)
		ck_assert_msg(strstr(html, console_assets[i].path) != NULL, "page lacks %s",
			      console_assets[i].path);
	ck_assert_ptr_null(strstr(html, "http://"));
	ck_assert_ptr_null(strstr(html, "https://"));
	ck_assert_ptr_null(strstr(html, " style="));
	ck_assert_ptr_null(strstr(html, "<style"));
	ck_assert_ptr_null(strstr(html, "onclick"));
	/* the one script element is the deferred, embedded one */
	ck_assert_ptr_nonnull(strstr(html, "<script src=\"/console/app."));
	ck_assert_ptr_null(strstr(strstr(html, "<script") + 1, "<script"));
	free(html);
}
END_TEST

START_TEST(script_never_builds_markup_from_strings)
{
	static const char *const banned[] = {"innerHTML",      "outerHTML", "insertAdjacentHTML",
					     "document.write", "eval(",	    "new Function",
					     "http://",	       "https://",  "localStorage",
					     "document.cookie"};
	char *js = text_of(asset_ending(".js"));

	for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
		ck_assert_msg(strstr(js, banned[i]) == NULL, "app.js uses %s", banned[i]);
	ck_assert_ptr_nonnull(strstr(js, "sessionStorage"));
	free(js);
}
END_TEST

START_TEST(find)
{
	ck_assert_ptr_eq(console_find("/"), &console_assets[0]);
	ck_assert_ptr_eq(console_find(console_assets[1].path), &console_assets[1]);
	ck_assert_ptr_null(console_find("/console/"));
	ck_assert_ptr_null(console_find("/console/app.js"));
	ck_assert_ptr_null(console_find("/index.html"));
	ck_assert_ptr_null(console_find(""));
}
END_TEST

START_TEST(if_none_match)
{
	ck_assert(console_etag_matches("\"abc\"", "\"abc\""));
	ck_assert(console_etag_matches("W/\"abc\"", "\"abc\""));
	ck_assert(console_etag_matches("\"x\", \"abc\"", "\"abc\""));
	ck_assert(console_etag_matches("\"x\",W/\"abc\" ", "\"abc\""));
	ck_assert(console_etag_matches("*", "\"abc\""));
	ck_assert(!console_etag_matches("\"abcd\"", "\"abc\""));
	ck_assert(!console_etag_matches("\"ab\"", "\"abc\""));
	ck_assert(!console_etag_matches("abc", "\"abc\""));
	ck_assert(!console_etag_matches("", "\"abc\""));
	ck_assert(!console_etag_matches(", ,", "\"abc\""));
}
END_TEST

START_TEST(security_headers)
{
	static const char *const want[] = {
		"Content-Security-Policy: default-src 'none';",
		"script-src 'self';",
		"style-src 'self';",
		"connect-src 'self';",
		"img-src 'self' data:;",
		"frame-ancestors 'none';",
		"base-uri 'none';",
		"form-action 'none';",
		"require-trusted-types-for 'script'",
		"\r\nX-Frame-Options: DENY\r\n",
		"\r\nX-Content-Type-Options: nosniff\r\n",
		"\r\nReferrer-Policy: no-referrer\r\n",
	};

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		ck_assert_msg(strstr(console_security_headers, want[i]) != NULL, "missing %s",
			      want[i]);
	ck_assert_ptr_null(strstr(console_security_headers, "unsafe"));
	/* with the longest cache line and ETag it still fits http_reply's header room */
	ck_assert_uint_lt(strlen(console_security_headers) + 100, 1023);
}
END_TEST

START_TEST(routes)
{
	struct http_route r[4];

	ck_assert_uint_eq(console_routes(r, 4), 2);
	ck_assert_str_eq(r[0].path, "/");
	ck_assert(!r[0].prefix);
	ck_assert_str_eq(r[1].path, "/console/");
	ck_assert(r[1].prefix);
	ck_assert_str_eq(r[0].method, "GET");
	ck_assert_str_eq(r[1].method, "GET");
	ck_assert_uint_eq(console_routes(r, 1), 1);
}
END_TEST

static Suite *console_suite(void)
{
	Suite *s = suite_create("console");
	TCase *core = tcase_create("core"), *limits = tcase_create("limits");

	tcase_add_test(core, page_first_and_assets_named_by_their_content);
	tcase_add_test(core, page_references_only_embedded_assets);
	tcase_add_test(core, script_never_builds_markup_from_strings);
	tcase_add_test(core, find);
	suite_add_tcase(s, core);
	tcase_add_test(limits, if_none_match);
	tcase_add_test(limits, security_headers);
	tcase_add_test(limits, routes);
	suite_add_tcase(s, limits);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(console_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
