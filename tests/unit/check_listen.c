/* Check suite for src/listen.c: which socket passed by systemd each listener takes (matched
 * by FileDescriptorName=), and what becomes of the rest. */
#include "listen.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <netinet/in.h>

static const char *const want[] = {"public", "admin"};

static void match(const char *const *names, size_t n, int *ret_idx)
{
	ret_idx[0] = ret_idx[1] = 42; /* overwritten, whatever the names */
	listen_match(want, 2, names, n, ret_idx);
}

START_TEST(test_both_any_order)
{
	const char *names[] = {"admin", "public"};
	int idx[2];

	match(names, 2, idx);
	ck_assert_int_eq(idx[0], 1);
	ck_assert_int_eq(idx[1], 0);
}
END_TEST

START_TEST(test_one_missing)
{
	const char *only_public[] = {"public"};
	const char *only_admin[] = {"admin"};
	int idx[2];

	match(only_public, 1, idx);
	ck_assert_int_eq(idx[0], 0);
	ck_assert_int_eq(idx[1], -1); /* binds it itself */
	match(only_admin, 1, idx);
	ck_assert_int_eq(idx[0], -1);
	ck_assert_int_eq(idx[1], 0);
}
END_TEST

START_TEST(test_none_passed)
{
	int idx[2];

	match(NULL, 0, idx);
	ck_assert_int_eq(idx[0], -1);
	ck_assert_int_eq(idx[1], -1);
}
END_TEST

START_TEST(test_strays_and_duplicates)
{
	/* systemd's default name for a socket unit without FileDescriptorName= is the unit's
	 * name; an unnamed fd is "unknown". Neither is taken; a second "public" is left over. */
	const char *names[] = {
		"komerce-hookd.socket", "public", "unknown", "public", NULL, "admin"};
	int idx[2];

	match(names, 6, idx);
	ck_assert_int_eq(idx[0], 1);
	ck_assert_int_eq(idx[1], 5);
}
END_TEST

START_TEST(test_case_and_prefix_do_not_match)
{
	const char *names[] = {"Public", "publicx", "admi", ""};
	int idx[2];

	match(names, 4, idx);
	ck_assert_int_eq(idx[0], -1);
	ck_assert_int_eq(idx[1], -1);
}
END_TEST

START_TEST(test_same_name_wanted_twice)
{
	const char *w[] = {"public", "public"};
	const char *one[] = {"public"};
	const char *two[] = {"public", "public"};
	int idx[2];

	listen_match(w, 2, one, 1, idx);
	ck_assert_int_eq(idx[0], 0);
	ck_assert_int_eq(idx[1], -1); /* never one fd for two servers */
	listen_match(w, 2, two, 2, idx);
	ck_assert_int_eq(idx[0], 0);
	ck_assert_int_eq(idx[1], 1);
}
END_TEST

/* A TCP socket on 127.0.0.1, listening or not, moved to fd `at`. */
static void socket_at(int at, bool listening)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    (listening && listen(fd, 8) < 0) || dup2(fd, at) < 0)
		_exit(90);
	close(fd);
}

/* listen_take on fds 3..5 as systemd passes them. It runs in a child of its own: Check's own
 * files may sit on fds 3..5. The child writes its findings as a line to a pipe. */
START_TEST(test_take_from_environment)
{
	int p[2], st, fds[2] = {7, 7}, n;
	char line[256] = "";
	ssize_t got;
	pid_t pid;

	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char pidbuf[32];
		int out = dup2(p[1], 40);

		socket_at(3, true);  /* admin */
		socket_at(4, true);  /* stray: closed */
		socket_at(5, false); /* public, but not listening: closed, bind instead */
		snprintf(pidbuf, sizeof(pidbuf), "%d", (int)getpid());
		setenv("LISTEN_PID", pidbuf, 1);
		setenv("LISTEN_FDS", "3", 1);
		setenv("LISTEN_FDNAMES", "admin:stray:public", 1);
		n = listen_take(want, 2, fds);
		dprintf(out, "n=%d public=%d admin=%d fd4=%s fd5=%s env=%s\n", n, fds[0], fds[1],
			fcntl(4, F_GETFD) < 0 && errno == EBADF ? "closed" : "open",
			fcntl(5, F_GETFD) < 0 && errno == EBADF ? "closed" : "open",
			getenv("LISTEN_FDS") == NULL ? "unset" : "set");
		_exit(0);
	}
	close(p[1]);
	got = read(p[0], line, sizeof(line) - 1);
	close(p[0]);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert_int_gt(got, 0);
	ck_assert_str_eq(line, "n=1 public=-1 admin=3 fd4=closed fd5=closed env=unset\n");
}
END_TEST

START_TEST(test_take_without_systemd)
{
	int fds[2] = {7, 7};

	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	ck_assert_int_eq(listen_take(want, 2, fds), 0);
	ck_assert_int_eq(fds[0], -1);
	ck_assert_int_eq(fds[1], -1);
	/* Meant for another process (LISTEN_PID): not ours to take. */
	setenv("LISTEN_PID", "1", 1);
	setenv("LISTEN_FDS", "1", 1);
	ck_assert_int_eq(listen_take(want, 2, fds), 0);
	ck_assert_int_eq(fds[0], -1);
}
END_TEST

static Suite *listen_suite(void)
{
	Suite *s = suite_create("listen");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_both_any_order);
	tcase_add_test(tc, test_one_missing);
	tcase_add_test(tc, test_none_passed);
	tcase_add_test(tc, test_take_from_environment);
	tcase_add_test(tc, test_take_without_systemd);
	suite_add_tcase(s, tc);
	tc = tcase_create("errors");
	tcase_add_test(tc, test_strays_and_duplicates);
	tcase_add_test(tc, test_case_and_prefix_do_not_match);
	tcase_add_test(tc, test_same_name_wanted_twice);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(listen_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
