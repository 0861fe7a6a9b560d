/* Check suite for src/gate.c: the request-head scanner (where the head ends, which
 * Content-Length values are refused before libmicrohttpd sees them) and the gate itself on a
 * loopback listener: the per-address limit, the hand-off of a complete head, the 408 of a
 * head that does not arrive in time. */
#include "gate.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

static enum gate_head scan(const char *s, size_t *ret_len)
{
	size_t dummy;

	return gate_scan_head(s, strlen(s), ret_len != NULL ? ret_len : &dummy);
}

START_TEST(test_head_end)
{
	size_t len = 0;

	ck_assert_int_eq(scan("POST / HTTP/1.1\r\nHost: x\r\n", NULL), GATE_HEAD_INCOMPLETE);
	ck_assert_int_eq(scan("POST / HTTP/1.1\r\nHost: x\r\n\r\n{}", &len), GATE_HEAD_OK);
	ck_assert_uint_eq(len, strlen("POST / HTTP/1.1\r\nHost: x\r\n\r\n"));
	/* bare LF line ends, and empty lines before the request line */
	ck_assert_int_eq(scan("GET / HTTP/1.1\nHost: x\n\n", &len), GATE_HEAD_OK);
	ck_assert_uint_eq(len, strlen("GET / HTTP/1.1\nHost: x\n\n"));
	ck_assert_int_eq(scan("\r\n\r\nGET / HTTP/1.1\r\n", NULL), GATE_HEAD_INCOMPLETE);
	ck_assert_int_eq(scan("\r\n\r\nGET / HTTP/1.1\r\n\r\n", &len), GATE_HEAD_OK);
	ck_assert_uint_eq(len, 22);
	ck_assert_int_eq(scan("", NULL), GATE_HEAD_INCOMPLETE);
	ck_assert_int_eq(scan("\r\n", NULL), GATE_HEAD_INCOMPLETE);
	/* a request line alone, then the empty line (HTTP/0.9-like): complete */
	ck_assert_int_eq(scan("GET /healthz\r\n\r\n", NULL), GATE_HEAD_OK);
}
END_TEST

START_TEST(test_content_length)
{
	static const struct {
		const char *value;
		enum gate_head want;
	} cases[] = {
		{"2", GATE_HEAD_OK},
		{" 2 ", GATE_HEAD_OK},
		{"0", GATE_HEAD_OK},
		{"18446744073709551615", GATE_HEAD_OK},
		{"18446744073709551616", GATE_HEAD_LENGTH_TOO_LONG},
		{"99999999999999999999999", GATE_HEAD_LENGTH_TOO_LONG},
		{"-5", GATE_HEAD_BAD_LENGTH},
		{"-1", GATE_HEAD_BAD_LENGTH},
		{"abc", GATE_HEAD_BAD_LENGTH},
		{"2x", GATE_HEAD_BAD_LENGTH},
		{"+2", GATE_HEAD_BAD_LENGTH},
		{"0x2", GATE_HEAD_BAD_LENGTH},
		{"", GATE_HEAD_BAD_LENGTH},
		{"2, 2", GATE_HEAD_BAD_LENGTH},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char head[256];

		snprintf(head, sizeof(head),
			 "POST /cb HTTP/1.1\r\nHost: x\r\ncontent-LENGTH:%s\r\n\r\n{}",
			 cases[i].value);
		ck_assert_msg(scan(head, NULL) == cases[i].want, "Content-Length \"%s\"",
			      cases[i].value);
	}
	/* whitespace before the colon, and a folded value, are refused */
	ck_assert_int_eq(scan("POST / HTTP/1.1\r\nContent-Length : 2\r\n\r\n", NULL),
			 GATE_HEAD_BAD_LENGTH);
	ck_assert_int_eq(scan("POST / HTTP/1.1\r\nContent-Length: 2\r\n 3\r\n\r\n", NULL),
			 GATE_HEAD_BAD_LENGTH);
	/* other fields are none of the gate's business */
	ck_assert_int_eq(scan("POST / HTTP/1.1\r\nX-Content-Length: abc\r\nGarbage\r\n"
			      "X-A: 1\r\n b\r\n\r\n",
			      NULL),
			 GATE_HEAD_OK);
	/* the request line is not a field, whatever it says */
	ck_assert_int_eq(scan("Content-Length: x\r\n\r\n", NULL), GATE_HEAD_OK);
}
END_TEST

/* ---- the gate on a loopback listener ---- */

struct handed {
	pthread_mutex_t mu;
	int fds[16];
	int n;
};

static int record_hand_off(void *arg, int fd, const struct sockaddr *sa, socklen_t len)
{
	struct handed *h = arg;

	(void)sa;
	(void)len;
	pthread_mutex_lock(&h->mu);
	if (h->n < 16)
		h->fds[h->n++] = fd;
	else
		close(fd);
	pthread_mutex_unlock(&h->mu);
	return 0;
}

static int handed_count(struct handed *h)
{
	int n;

	pthread_mutex_lock(&h->mu);
	n = h->n;
	pthread_mutex_unlock(&h->mu);
	return n;
}

static struct gate *g;
static struct handed handed = {.mu = PTHREAD_MUTEX_INITIALIZER};
static unsigned port;

static void gate_setup(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct gate_opts o = {.name = "test",
			      .max_connections = 8,
			      .max_per_ip = 3,
			      .request_timeout_ms = 600,
			      .idle_timeout_ms = 5000,
			      .hand_off = record_hand_off,
			      .arg = &handed};

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fd, 16), 0);
	o.listen_fd = fd;
	handed.n = 0;
	ck_assert_int_eq(gate_start(&o, &g), 0);
	port = gate_port(g);
	ck_assert_uint_gt(port, 0);
}

static void gate_teardown(void)
{
	gate_free(g);
	for (int i = 0; i < handed.n; i++)
		close(handed.fds[i]);
	g = NULL;
}

static int connect_from(const char *src)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct sockaddr_in me = {.sin_family = AF_INET};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	inet_pton(AF_INET, src, &me.sin_addr);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&me, sizeof(me)), 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* What the server sent before closing, within ms ("" if it kept the connection open). */
static void read_until_close(int fd, long ms, char *out, size_t n, bool *ret_closed)
{
	size_t len = 0;

	*ret_closed = false;
	out[0] = '\0';
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&p, 1, (int)ms) <= 0)
			return;
		r = recv(fd, out + len, n - 1 - len, 0);
		if (r <= 0) {
			*ret_closed = true;
			return;
		}
		len += (size_t)r;
		out[len] = '\0';
	}
}

START_TEST(test_per_ip_limit_and_hand_off)
{
	static const char head[] = "POST /cb HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
	int fd[5];
	char got[512];
	bool closed;

	for (int i = 0; i < 4; i++)
		fd[i] = connect_from("127.0.0.1");
	/* the fourth from one address is closed at once, with nothing said */
	read_until_close(fd[3], 2000, got, sizeof(got), &closed);
	ck_assert(closed);
	ck_assert_str_eq(got, "");
	/* another address still gets in, and a complete head is handed off */
	fd[4] = connect_from("127.0.0.2");
	ck_assert_int_eq(send(fd[4], head, strlen(head), 0), (ssize_t)strlen(head));
	for (int i = 0; i < 200 && handed_count(&handed) < 1; i++)
		usleep(10000);
	ck_assert_int_eq(handed_count(&handed), 1);
	/* a Content-Length libmicrohttpd would answer twice is answered once, here */
	ck_assert_int_eq(send(fd[0], "POST /cb HTTP/1.1\r\nContent-Length: -5\r\n\r\n{}", 44, 0),
			 44);
	read_until_close(fd[0], 2000, got, sizeof(got), &closed);
	ck_assert(closed);
	ck_assert_msg(strncmp(got, "HTTP/1.1 400 ", 13) == 0, "got \"%s\"", got);
	ck_assert_ptr_null(strstr(got + 1, "HTTP/1."));
	ck_assert_int_eq(handed_count(&handed), 1);
	for (int i = 0; i < 5; i++)
		close(fd[i]);
}
END_TEST

START_TEST(test_slow_head_gets_408)
{
	int fd = connect_from("127.0.0.3");
	char got[512];
	bool closed;

	ck_assert_int_eq(send(fd, "POST /cb HTTP/1.1\r\nHo", 21, 0), 21);
	read_until_close(fd, 3000, got, sizeof(got), &closed);
	ck_assert(closed);
	ck_assert_msg(strncmp(got, "HTTP/1.1 408 ", 13) == 0, "got \"%s\"", got);
	ck_assert_int_eq(handed_count(&handed), 0);
	/* once the client has closed too, its slot is free again: three more from that address
	 * get in */
	close(fd);
	usleep(300000);
	for (int i = 0; i < 3; i++) {
		int c = connect_from("127.0.0.3");

		ck_assert_int_eq(send(c, "GET / HTTP/1.1\r\n\r\n", 18, 0), 18);
		close(c);
	}
	for (int i = 0; i < 200 && handed_count(&handed) < 3; i++)
		usleep(10000);
	ck_assert_int_eq(handed_count(&handed), 3);
}
END_TEST

static Suite *gate_suite(void)
{
	Suite *s = suite_create("gate");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_head_end);
	tcase_add_test(tc, test_content_length);
	suite_add_tcase(s, tc);
	tc = tcase_create("limits");
	tcase_add_checked_fixture(tc, gate_setup, gate_teardown);
	tcase_add_test(tc, test_per_ip_limit_and_hand_off);
	tcase_add_test(tc, test_slow_head_gets_408);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(gate_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
