/* Check suite for src/netaddr.c: IP/CIDR lists (server.trusted_proxies) and the client address
 * behind trusted reverse proxies (X-Forwarded-For, Forwarded), including the inputs a client
 * can forge. */
#include "netaddr.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static struct netaddr_list trusted;

static void setup(void)
{
	char why[128];

	ck_assert_int_eq(netaddr_list_parse("10.0.0.0/8, 127.0.0.1 ::1,fd00::/8", &trusted, why,
					    sizeof(why)),
			 0);
}

static const char *client(const char *peer, const char *xff, const char *fwd)
{
	static char out[NETADDR_STRLEN];

	netaddr_client(&trusted, peer, xff, fwd, out, sizeof(out));
	return out;
}

START_TEST(test_parse_and_contains)
{
	ck_assert_uint_eq(trusted.n, 4);
	ck_assert(netaddr_list_contains(&trusted, "10.1.2.3"));
	ck_assert(netaddr_list_contains(&trusted, "127.0.0.1"));
	ck_assert(!netaddr_list_contains(&trusted, "127.0.0.2"));
	ck_assert(!netaddr_list_contains(&trusted, "11.0.0.1"));
	ck_assert(netaddr_list_contains(&trusted, "::1"));
	ck_assert(netaddr_list_contains(&trusted, "fd12:3456::1"));
	ck_assert(!netaddr_list_contains(&trusted, "fe80::1"));
	/* IPv4-mapped IPv6 (a dual-stack listener) is the IPv4 address. */
	ck_assert(netaddr_list_contains(&trusted, "::ffff:10.9.9.9"));
	ck_assert(!netaddr_list_contains(&trusted, "garbage"));
	ck_assert(!netaddr_list_contains(NULL, "10.0.0.1"));
}
END_TEST

START_TEST(test_prefix_bits)
{
	struct netaddr_list l;
	char why[128];

	ck_assert_int_eq(netaddr_list_parse("192.168.4.0/22", &l, why, sizeof(why)), 0);
	ck_assert(netaddr_list_contains(&l, "192.168.7.255"));
	ck_assert(!netaddr_list_contains(&l, "192.168.8.0"));
	ck_assert_int_eq(netaddr_list_parse("0.0.0.0/0", &l, why, sizeof(why)), 0);
	ck_assert(netaddr_list_contains(&l, "8.8.8.8"));
	ck_assert(!netaddr_list_contains(&l, "::1"));
	ck_assert_int_eq(netaddr_list_parse("", &l, why, sizeof(why)), 0);
	ck_assert_uint_eq(l.n, 0);
}
END_TEST

START_TEST(test_parse_errors)
{
	struct netaddr_list l;
	char why[128];

	ck_assert_int_eq(netaddr_list_parse("10.0.0.0/33", &l, why, sizeof(why)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(why, "10.0.0.0/33"));
	ck_assert_int_eq(netaddr_list_parse("10.0.0.1/8", &l, why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(netaddr_list_parse("proxy.example", &l, why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(netaddr_list_parse("10.0.0.0/", &l, why, sizeof(why)), -EINVAL);
	ck_assert_int_eq(netaddr_list_parse("::1/129", &l, why, sizeof(why)), -EINVAL);
}
END_TEST

START_TEST(test_untrusted_peer_is_the_client)
{
	ck_assert_str_eq(client("203.0.113.9", "198.51.100.1", NULL), "203.0.113.9");
	ck_assert_str_eq(client("203.0.113.9", NULL, "for=198.51.100.1"), "203.0.113.9");
	ck_assert_str_eq(client("127.0.0.1", NULL, NULL), "127.0.0.1");
}
END_TEST

START_TEST(test_xff_right_to_left)
{
	ck_assert_str_eq(client("127.0.0.1", "198.51.100.1", NULL), "198.51.100.1");
	/* The client may prepend anything: only the hops added by trusted proxies count. */
	ck_assert_str_eq(client("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.0.0.5", NULL),
			 "198.51.100.1");
	ck_assert_str_eq(client("10.0.0.2", " 198.51.100.1 ,10.0.0.5 ", NULL), "198.51.100.1");
	/* Every hop trusted: the leftmost. */
	ck_assert_str_eq(client("127.0.0.1", "10.0.0.7, 10.0.0.5", NULL), "10.0.0.7");
	/* Ports and brackets. */
	ck_assert_str_eq(client("127.0.0.1", "198.51.100.1:4711", NULL), "198.51.100.1");
	ck_assert_str_eq(client("127.0.0.1", "[2001:db8::17]:4711", NULL), "2001:db8::17");
	ck_assert_str_eq(client("::1", "2001:db8::17", NULL), "2001:db8::17");
	/* X-Forwarded-For wins over Forwarded. */
	ck_assert_str_eq(client("127.0.0.1", "198.51.100.1", "for=198.51.100.2"), "198.51.100.1");
}
END_TEST

START_TEST(test_garbage_stops_the_walk)
{
	/* A malformed rightmost entry: the proxy itself is the client. */
	ck_assert_str_eq(client("127.0.0.1", "unknown", NULL), "127.0.0.1");
	ck_assert_str_eq(client("127.0.0.1", "198.51.100.1, <script>", NULL), "127.0.0.1");
	/* Garbage to the left of a real client never replaces it. */
	ck_assert_str_eq(client("127.0.0.1", "x, 198.51.100.1", NULL), "198.51.100.1");
	/* Garbage behind a trusted hop: the last good address read. */
	ck_assert_str_eq(client("127.0.0.1", "junk, 10.0.0.5", NULL), "10.0.0.5");
	ck_assert_str_eq(client("127.0.0.1", "", NULL), "127.0.0.1");
	ck_assert_str_eq(client("127.0.0.1", ",,,", NULL), "127.0.0.1");
}
END_TEST

START_TEST(test_forwarded_header)
{
	ck_assert_str_eq(client("127.0.0.1", NULL, "for=198.51.100.60;proto=https;by=10.0.0.1"),
			 "198.51.100.60");
	ck_assert_str_eq(client("127.0.0.1", NULL, "for=\"[2001:db8:cafe::17]:4711\""),
			 "2001:db8:cafe::17");
	ck_assert_str_eq(client("127.0.0.1", NULL, "for=6.6.6.6, for=198.51.100.3, FOR=10.0.0.9"),
			 "198.51.100.3");
	ck_assert_str_eq(client("127.0.0.1", NULL, "proto=https"), "127.0.0.1");
	ck_assert_str_eq(client("127.0.0.1", NULL, "for=_hidden"), "127.0.0.1");
}
END_TEST

static Suite *netaddr_suite(void)
{
	Suite *s = suite_create("netaddr");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, test_parse_and_contains);
	tcase_add_test(tc, test_prefix_bits);
	tcase_add_test(tc, test_untrusted_peer_is_the_client);
	tcase_add_test(tc, test_xff_right_to_left);
	tcase_add_test(tc, test_forwarded_header);
	suite_add_tcase(s, tc);
	tc = tcase_create("errors");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, test_parse_errors);
	tcase_add_test(tc, test_garbage_stops_the_walk);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(netaddr_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
