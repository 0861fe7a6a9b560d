/* The tests' own PostgreSQL cluster (see pgtest.h). The server runs in the foreground as a child
 * of the process that started it (the suite's main process), with a parent-death signal, so a
 * test binary killed by a timeout takes its server with it. Check runs each test in a forked
 * child: a test that stops and restarts the server (an outage) asks the main process to do it
 * (SIGUSR1 stop, SIGUSR2 start), so the server stays the main process's child. */
#include "pgtest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <libpq-fe.h>

static struct {
	pid_t owner; /* the process that started it (Check's children must not stop it) */
	volatile sig_atomic_t server; /* postgres, a child of owner */
	unsigned port;
	char dir[256];
	char bindir[256];
	uid_t uid; /* the server's user */
	gid_t gid;
	unsigned next_db;
	bool have_db;
} pg;

bool pgtest_enabled(void)
{
	const char *b = getenv("HK_BACKEND");

	return b != NULL && strcmp(b, "postgresql") == 0;
}

static unsigned free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	unsigned port = 0;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* $HK_PG_BINDIR, else the highest /usr/lib/postgresql/N/bin that has initdb. */
static int find_bindir(void)
{
	const char *env = getenv("HK_PG_BINDIR");
	DIR *d;
	struct dirent *e;
	int best = -1;

	if (env != NULL && env[0] != '\0') {
		snprintf(pg.bindir, sizeof(pg.bindir), "%s", env);
		return 0;
	}
	d = opendir("/usr/lib/postgresql");
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		char path[512];
		int v = atoi(e->d_name);

		snprintf(path, sizeof(path), "/usr/lib/postgresql/%s/bin/initdb", e->d_name);
		if (v > best && access(path, X_OK) == 0) {
			best = v;
			snprintf(pg.bindir, sizeof(pg.bindir), "/usr/lib/postgresql/%d/bin", v);
		}
	}
	closedir(d);
	return best > 0 ? 0 : -1;
}

/* initdb and postgres refuse to run as root: the server runs as $HK_PG_USER, else nobody. */
static int pick_user(void)
{
	const char *name = getenv("HK_PG_USER");
	struct passwd *pw;

	pg.uid = geteuid();
	pg.gid = getegid();
	if (pg.uid != 0)
		return 0;
	pw = getpwnam(name != NULL && name[0] != '\0' ? name : "nobody");
	if (pw == NULL)
		return -1;
	pg.uid = pw->pw_uid;
	pg.gid = pw->pw_gid;
	return 0;
}

/* In a child: become the server's user, die with the parent, exec argv. */
static void exec_as_server_user(char *const argv[], const char *log)
{
	int fd;

	if (geteuid() == 0 && (setgroups(0, NULL) < 0 || setgid(pg.gid) < 0 || setuid(pg.uid) < 0))
		_exit(126);
	prctl(PR_SET_PDEATHSIG, SIGQUIT); /* after setuid, which clears it */
	fd = log != NULL ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0600) : -1;
	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	unsetenv("PGDATA");
	execv(argv[0], argv);
	_exit(127);
}

static int run_initdb(void)
{
	char bin[512], data[300], log[300];
	char *argv[] = {bin,	 "-D", data,   "-U",	      "hookd",	   "-A",
			"trust", "-E", "UTF8", "--no-locale", "--no-sync", NULL};
	pid_t pid;
	int status;

	snprintf(bin, sizeof(bin), "%s/initdb", pg.bindir);
	snprintf(data, sizeof(data), "%s/data", pg.dir);
	snprintf(log, sizeof(log), "%s/initdb.log", pg.dir);
	pid = fork();
	if (pid == 0)
		exec_as_server_user(argv, log);
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		fprintf(stderr, "pgtest: initdb failed (see %s)\n", log);
		return -1;
	}
	return 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* The server's command line, built once so that the signal handler only forks and execs. */
static char srv_bin[512], srv_data[300], srv_log[300], srv_port[16], srv_sock[300];
static char *srv_argv[] = {srv_bin,
			   "-D",
			   srv_data,
			   "-p",
			   srv_port,
			   "-k",
			   srv_sock,
			   "-c",
			   "listen_addresses=127.0.0.1",
			   "-c",
			   "fsync=off",
			   "-c",
			   "full_page_writes=off",
			   "-c",
			   "max_connections=300",
			   "-c",
			   "shared_buffers=64MB",
			   NULL};

static void spawn_server(void)
{
	pid_t pid = fork();

	if (pid == 0)
		exec_as_server_user(srv_argv, srv_log);
	pg.server = pid > 0 ? pid : 0;
}

static void on_signal(int sig)
{
	int saved = errno;

	if (sig == SIGUSR1 && pg.server > 0) {
		kill(pg.server, SIGINT); /* fast shutdown: every session is cut */
		pg.server = 0;
	} else if (sig == SIGUSR2 && pg.server == 0) {
		spawn_server();
	}
	errno = saved;
}

static bool pid_file_exists(void)
{
	char path[320];

	snprintf(path, sizeof(path), "%s/postmaster.pid", srv_data);
	return access(path, F_OK) == 0;
}

static bool accepting(void)
{
	char conninfo[128];

	snprintf(conninfo, sizeof(conninfo),
		 "host=127.0.0.1 port=%u user=hookd dbname=postgres connect_timeout=2", pg.port);
	return PQping(conninfo) == PQPING_OK;
}

int pgtest_server_start(void)
{
	if (getpid() == pg.owner)
		spawn_server();
	else
		kill(pg.owner, SIGUSR2);
	for (int i = 0; i < 600; i++) {
		if (accepting())
			return 0;
		sleep_ms(50);
	}
	fprintf(stderr, "pgtest: postgres did not accept connections (see %s)\n", srv_log);
	return -1;
}

int pgtest_server_stop(void)
{
	if (getpid() == pg.owner)
		on_signal(SIGUSR1);
	else
		kill(pg.owner, SIGUSR1);
	for (int i = 0; i < 600; i++) {
		if (!pid_file_exists() && !accepting())
			return 0;
		sleep_ms(50);
	}
	fprintf(stderr, "pgtest: postgres did not stop\n");
	return -1;
}

int pgtest_start(void)
{
	if (pg.owner != 0)
		return pg.server > 0 || getpid() != pg.owner ? 0 : -1;
	if (find_bindir() < 0 || pick_user() < 0) {
		fprintf(stderr, "pgtest: no PostgreSQL server binaries or no user to run them\n");
		return -1;
	}
	snprintf(pg.dir, sizeof(pg.dir), "%s/hookd-pg-XXXXXX",
		 getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(pg.dir) == NULL || chown(pg.dir, pg.uid, pg.gid) < 0) {
		fprintf(stderr, "pgtest: cannot make %s\n", pg.dir);
		return -1;
	}
	pg.owner = getpid();
	pg.port = free_port();
	snprintf(srv_bin, sizeof(srv_bin), "%s/postgres", pg.bindir);
	snprintf(srv_data, sizeof(srv_data), "%s/data", pg.dir);
	snprintf(srv_log, sizeof(srv_log), "%s/server.log", pg.dir);
	snprintf(srv_port, sizeof(srv_port), "%u", pg.port);
	snprintf(srv_sock, sizeof(srv_sock), "%s", pg.dir);
	{
		struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};

		sigemptyset(&sa.sa_mask);
		sigaction(SIGUSR1, &sa, NULL);
		sigaction(SIGUSR2, &sa, NULL);
	}
	if (run_initdb() < 0 || pgtest_server_start() < 0)
		return -1;
	return 0;
}

__attribute__((constructor)) static void pgtest_auto_start(void)
{
	if (pgtest_enabled() && pgtest_start() < 0)
		exit(77); /* the suite cannot run: fail loudly rather than test SQLite twice */
}

__attribute__((destructor)) static void pgtest_auto_stop(void)
{
	char cmd[300];

	if (pg.owner != getpid())
		return;
	if (pg.server > 0) {
		pid_t pid = pg.server;

		pg.server = 0;
		kill(pid, SIGQUIT); /* immediate: the data goes away anyway */
		waitpid(pid, NULL, 0);
	}
	if (getenv("HK_KEEP") == NULL && pg.dir[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pg.dir);
		if (system(cmd) != 0)
			fprintf(stderr, "pgtest: could not remove %s\n", pg.dir);
	}
}

static void quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static PGconn *connect_db(const char *url)
{
	PGconn *c = PQconnectdb(url);

	PQsetNoticeProcessor(c, quiet, NULL);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "pgtest: %s", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

int pgtest_exec(const char *url, const char *sql, char *out, size_t n)
{
	PGconn *c = connect_db(url);
	PGresult *res;
	int r = 0;

	if (out != NULL && n > 0)
		out[0] = '\0';
	if (c == NULL)
		return -1;
	res = PQexec(c, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
		if (out != NULL)
			snprintf(out, n, "%s", PQresultErrorMessage(res));
		r = -1;
	} else if (out != NULL && PQntuples(res) > 0 && PQnfields(res) > 0) {
		snprintf(out, n, "%s", PQgetvalue(res, 0, 0));
	}
	PQclear(res);
	PQfinish(c);
	return r;
}

long pgtest_count(const char *url, const char *sql)
{
	PGconn *c = connect_db(url);
	PGresult *res;
	long n = -1;

	if (c == NULL)
		return -1;
	res = PQexec(c, sql);
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		n = PQntuples(res);
	PQclear(res);
	PQfinish(c);
	return n;
}

static void admin_url(char *out, size_t n)
{
	snprintf(out, n, "postgresql://hookd@127.0.0.1:%u/postgres", pg.port);
}

/* Each test's tables live in a schema of its own in one database: a schema is made and dropped
 * in milliseconds, a database in a second or more (DROP DATABASE checkpoints). The daemon
 * keys its advisory locks by schema, so tests do not compete either. */
int pgtest_createdb(char *url, size_t n)
{
	char admin[128], sql[160], name[64], msg[256];

	if (pgtest_start() < 0)
		return -1;
	admin_url(admin, sizeof(admin));
	if (!pg.have_db) {
		/* once per process (and Check child): ignore "already exists" */
		(void)pgtest_exec(admin, "CREATE DATABASE hookd", NULL, 0);
		pg.have_db = true;
	}
	snprintf(name, sizeof(name), "hk_%d_%u", (int)getpid(), pg.next_db++);
	snprintf(admin, sizeof(admin), "postgresql://hookd@127.0.0.1:%u/hookd", pg.port);
	snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", name);
	if (pgtest_exec(admin, sql, msg, sizeof(msg)) < 0) {
		fprintf(stderr, "pgtest: %s", msg);
		return -1;
	}
	snprintf(url, n, "postgresql://hookd@127.0.0.1:%u/hookd?options=-c%%20search_path%%3D%s",
		 pg.port, name);
	return 0;
}

void pgtest_dropdb(const char *url)
{
	const char *name = strstr(url, "search_path%3D");
	char admin[128], sql[160], msg[256];

	if (name == NULL || pg.owner == 0)
		return;
	snprintf(admin, sizeof(admin), "postgresql://hookd@127.0.0.1:%u/hookd", pg.port);
	snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %.60s CASCADE", name + 14);
	if (pgtest_exec(admin, sql, msg, sizeof(msg)) < 0)
		fprintf(stderr, "pgtest: %s", msg);
}
