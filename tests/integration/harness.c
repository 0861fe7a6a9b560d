/* Integration-test harness (see harness.h). */
#include "harness.h"

#include <check.h>

#include <errno.h>
#include <fcntl.h>
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

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sqlite3.h>

#include "pgtest.h"
#include "store.h"

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : def;
}

unsigned hk_free_port(void)
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

void hk_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

long long hk_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long hk_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool hk_wait_until(bool (*fn)(void *arg), void *arg, long timeout_ms)
{
	long long deadline = hk_mono_ms() + timeout_ms;

	for (;;) {
		if (fn(arg))
			return true;
		if (hk_mono_ms() > deadline)
			return false;
		hk_sleep_ms(10);
	}
}

static void init_common(struct hk_daemon *d, const char *extra_conf, const struct hk_daemon *peer,
			bool pg)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->dir, sizeof(d->dir), "%s/hookd-test-XXXXXX", env_or("TMPDIR", "/tmp"));
	if (mkdtemp(d->dir) == NULL) {
		perror("mkdtemp");
		abort();
	}
	snprintf(d->conf, sizeof(d->conf), "%s/hookd.conf", d->dir);
	if (peer != NULL) {
		snprintf(d->db, sizeof(d->db), "%s", peer->db);
	} else if (pg) {
		if (pgtest_createdb(d->db, sizeof(d->db)) < 0)
			abort();
		d->own_db = true;
	} else {
		snprintf(d->db, sizeof(d->db), "%s/events.db", d->dir);
	}
	snprintf(d->log, sizeof(d->log), "%s/hookd.log", d->dir);
	d->port = hk_free_port();
	do
		d->admin_port = hk_free_port();
	while (d->admin_port == d->port);
	if (extra_conf != NULL)
		snprintf(d->extra, sizeof(d->extra), "%s", extra_conf);
}

void hk_daemon_init(struct hk_daemon *d, const char *extra_conf)
{
	init_common(d, extra_conf, NULL, hk_backend_pg());
}

void hk_daemon_init_sqlite(struct hk_daemon *d, const char *extra_conf)
{
	init_common(d, extra_conf, NULL, false);
}

void hk_daemon_init_peer(struct hk_daemon *d, const struct hk_daemon *first, const char *extra_conf)
{
	init_common(d, extra_conf, first, false);
}

bool hk_backend_pg(void)
{
	return pgtest_enabled();
}

void hk_store_target(struct store_opts *o, const char *db)
{
	if (strncmp(db, "postgresql://", 13) == 0) {
		o->backend = STORE_BACKEND_POSTGRESQL;
		o->url = db;
		o->path = NULL;
	} else {
		o->backend = STORE_BACKEND_SQLITE;
		o->path = db;
		o->url = NULL;
	}
}

int hk_db_exec(const struct hk_daemon *d, const char *sql, char *out, size_t n)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int rc;

	if (strncmp(d->db, "postgresql://", 13) == 0)
		return pgtest_exec(d->db, sql, out, n);
	if (out != NULL && n > 0)
		out[0] = '\0';
	if (sqlite3_open_v2(d->db, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		snprintf(out, n, "%s", sqlite3_errmsg(db));
		sqlite3_close(db);
		return -1;
	}
	sqlite3_busy_timeout(db, 5000);
	/* every statement of sql in turn; the first cell of the last one's first row */
	for (const char *tail = sql; tail != NULL && *tail != '\0';) {
		rc = sqlite3_prepare_v2(db, tail, -1, &st, &tail);
		if (rc != SQLITE_OK)
			break;
		if (st == NULL)
			continue;
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW && out != NULL && sqlite3_column_text(st, 0) != NULL)
			snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
		if (rc == SQLITE_ROW || rc == SQLITE_DONE)
			rc = SQLITE_OK;
		sqlite3_finalize(st);
		st = NULL;
		if (rc != SQLITE_OK)
			break;
	}
	if (rc != SQLITE_OK && out != NULL)
		snprintf(out, n, "%s", sqlite3_errmsg(db));
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : -1;
}

static int write_conf(struct hk_daemon *d)
{
	FILE *f;

	if (access(d->conf, F_OK) == 0)
		return 0;
	f = fopen(d->conf, "w");
	if (f == NULL)
		return -1;
	fprintf(f,
		"[server]\nlisten = 127.0.0.1:%u\n"
		"[admin]\nlisten = 127.0.0.1:%u\ntoken = %s\n"
		/* Suites that want PAID callbacks confirmed (and run komerce-sim) set
		 * confirm_paid = true in their extra text, which comes later and wins. */
		"[komerce]\napi_key = %s\ncallback_keys = %s\nconfirm_paid = false\n",
		d->port, d->admin_port, HK_ADMIN_TOKEN, HK_API_KEY, HK_CALLBACK_KEY);
	if (strncmp(d->db, "postgresql://", 13) == 0)
		fprintf(f, "[store]\nbackend = postgresql\nurl = %s\n", d->db);
	else
		fprintf(f, "[store]\npath = %s\n", d->db);
	fprintf(f, "[log]\nlevel = debug\n%s\n", d->extra);
	return fclose(f);
}

static bool is_ready(void *arg)
{
	struct hk_daemon *d = arg;
	struct hk_reply r;
	char url[128];
	int status;

	if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
		d->pid = 0;
		return true; /* exited: stop waiting */
	}
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/readyz", d->admin_port);
	return hk_request("GET", url, NULL, NULL, 0, 500, &r) == 200;
}

int hk_daemon_start(struct hk_daemon *d)
{
	const char *bin = env_or("HOOKD_BIN", "build/komerce-hookd");
	pid_t pid;

	if (write_conf(d) < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		if (fd >= 0) {
			dup2(fd, STDERR_FILENO);
			close(fd);
		}
		/* A test that dies must not leave its daemon behind. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl(bin, bin, "-c", d->conf, (char *)NULL);
		_exit(127);
	}
	d->pid = pid;
	if (!hk_wait_until(is_ready, d, 10000) || d->pid == 0) {
		if (d->pid > 0)
			hk_daemon_stop(d, SIGKILL);
		return -1;
	}
	return 0;
}

int hk_daemon_stop(struct hk_daemon *d, int sig)
{
	int status = 0;

	if (d->pid <= 0)
		return -1;
	kill(d->pid, sig);
	while (waitpid(d->pid, &status, 0) < 0 && errno == EINTR)
		;
	d->pid = 0;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* Sanitizer reports of the daemon (ASan, UBSan, TSan, LSan) go to its log, which tests do
 * not always read: every cleanup checks it, so that a sanitizer build of the suite fails on
 * any report. Prints the report's lines. */
static bool sanitizer_report(const char *log)
{
	static const char *const needles[] = {"Sanitizer:", "runtime error:"};
	FILE *f = fopen(log, "r");
	char line[4096];
	bool found = false;

	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f) != NULL) {
		for (size_t i = 0; i < sizeof(needles) / sizeof(needles[0]); i++)
			found |= strstr(line, needles[i]) != NULL;
		if (found)
			fputs(line, stderr);
	}
	fclose(f);
	return found;
}

void hk_daemon_cleanup(struct hk_daemon *d)
{
	char cmd[400];
	bool report;

	if (d->pid > 0)
		hk_daemon_stop(d, SIGKILL);
	report = d->log[0] != '\0' && sanitizer_report(d->log);
	if (d->own_db) {
		pgtest_dropdb(d->db);
		d->own_db = false;
	}
	if (getenv("HK_KEEP") == NULL && d->dir[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", d->dir);
	}
	ck_assert_msg(!report, "the daemon's log has a sanitizer report (printed above)");
}

bool hk_file_contains(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	bool found = false;

	if (f == NULL)
		return false;
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

bool hk_log_contains(const struct hk_daemon *d, const char *needle)
{
	return hk_file_contains(d->log, needle);
}

void hk_print_log_tail(const struct hk_daemon *d, int lines)
{
	char(*ring)[512] = calloc((size_t)lines, sizeof(*ring));
	FILE *f = fopen(d->log, "r");
	long n = 0;

	if (ring == NULL || f == NULL || lines <= 0) {
		free(ring);
		if (f != NULL)
			fclose(f);
		return;
	}
	while (fgets(ring[n % lines], sizeof(ring[0]), f) != NULL)
		n++;
	fclose(f);
	fprintf(stderr, "---- %s (last %d lines)\n", d->log, lines);
	for (long i = n > lines ? n - lines : 0; i < n; i++)
		fputs(ring[i % lines], stderr);
	free(ring);
}

void hk_sign(const char *key, const char *body, size_t len, char out[65])
{
	unsigned char mac[32];
	unsigned int n = sizeof(mac);

	HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)body, len, mac, &n);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct hk_reply *r = arg;
	size_t n = size * nmemb, room = sizeof(r->body) - 1 - r->len;

	if (n > room)
		n = room;
	memcpy(r->body + r->len, ptr, n);
	r->len += n;
	r->body[r->len] = '\0';
	return size * nmemb;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct hk_reply *r = arg;
	size_t n = size * nmemb, have = strlen(r->headers);

	if (have + n < sizeof(r->headers)) {
		memcpy(r->headers + have, ptr, n);
		r->headers[have + n] = '\0';
	}
	return size * nmemb;
}

long hk_request(const char *method, const char *url, const char *const *headers, const char *body,
		size_t body_len, long timeout_ms, struct hk_reply *ret)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hl = NULL;
	long status = -1;

	memset(ret, 0, sizeof(*ret));
	if (c == NULL)
		return -1;
	for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
		hl = curl_slist_append(hl, headers[i]);
	hl = curl_slist_append(hl, "Expect:");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, ret);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, ret);
	if (body != NULL) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
	}
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	ret->status = status;
	curl_slist_free_all(hl);
	curl_easy_cleanup(c);
	return status;
}

long hk_post_callback(const struct hk_daemon *d, const char *body, const char *key,
		      struct hk_reply *ret)
{
	char url[160], sig[65], hdr[100];
	const char *headers[3] = {"Content-Type: application/json", NULL, NULL};

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/komerce/callback", d->port);
	if (key != NULL) {
		hk_sign(key, body, strlen(body), sig);
		snprintf(hdr, sizeof(hdr), "X-Callback-Api-Key: %s", sig);
		headers[1] = hdr;
	}
	return hk_request("POST", url, headers, body, strlen(body), 10000, ret);
}

long long hk_count(const struct hk_daemon *d, const char *table)
{
	struct store_opts o = {.mode = STORE_MODE_READER, .busy_timeout_ms = 5000};
	struct store *s;
	char err[256];
	int64_t n = -1;

	hk_store_target(&o, d->db);
	if (store_open(&o, &s, err, sizeof(err)) < 0) {
		fprintf(stderr, "hk_count: %s\n", err);
		return -1;
	}
	if (store_count(s, table, &n) < 0)
		n = -1;
	store_close(s);
	return n;
}

static bool port_file_ready(void *arg)
{
	struct hk_sim *s = arg;
	char path[300];
	FILE *f;
	unsigned port = 0;

	snprintf(path, sizeof(path), "%s/port", s->dir);
	f = fopen(path, "r");
	if (f == NULL)
		return false;
	if (fscanf(f, "%u", &port) != 1)
		port = 0;
	fclose(f);
	s->port = port;
	return port != 0;
}

int hk_sim_start(struct hk_sim *s, const char *extra_args)
{
	const char *bin = env_or("SIM_BIN", "build/komerce-sim");
	char cmd[1024];
	pid_t pid;

	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "%s/hookd-sim-XXXXXX", env_or("TMPDIR", "/tmp"));
	if (mkdtemp(s->dir) == NULL)
		return -1;
	snprintf(cmd, sizeof(cmd),
		 "exec '%s' --listen 127.0.0.1:0 --api-key %s --port-file '%s/port' %s "
		 "2>>'%s/sim.log'",
		 bin, HK_API_KEY, s->dir, extra_args != NULL ? extra_args : "", s->dir);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	s->pid = pid;
	if (!hk_wait_until(port_file_ready, s, 10000)) {
		hk_sim_stop(s);
		return -1;
	}
	return 0;
}

void hk_sim_stop(struct hk_sim *s)
{
	char cmd[400];
	int status;

	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		waitpid(s->pid, &status, 0);
		s->pid = 0;
	}
	if (getenv("HK_KEEP") == NULL && s->dir[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", s->dir);
	}
}
