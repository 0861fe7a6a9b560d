/* Integration-test harness: starts the real komerce-hookd (and komerce-sim) binaries on free
 * loopback ports with a temporary directory, waits for readiness with a deadline, and talks
 * HTTP to them with libcurl. Binaries come from $HOOKD_BIN / $HOOKCTL_BIN / $SIM_BIN (set by
 * meson test). With HK_BACKEND=postgresql every daemon gets a database of its own in the
 * suite's throw-away PostgreSQL cluster (tests/pgtest.c) instead of an SQLite file. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define HK_CALLBACK_KEY	 "test-callback-key-0001"
#define HK_CALLBACK_KEY2 "test-callback-key-0002"
#define HK_ADMIN_TOKEN	 "test-admin-token-0123456789"
#define HK_API_KEY	 "test-komerce-api-key"

struct hk_daemon {
	pid_t pid;
	unsigned port, admin_port;
	char dir[256]; /* temporary directory, removed by hk_daemon_cleanup */
	char conf[300];
	char db[300];	  /* SQLite: the file; PostgreSQL: the database's URL */
	bool own_db;	  /* PostgreSQL: dropped by hk_daemon_cleanup */
	char log[300];	  /* the daemon's stderr */
	char extra[4096]; /* extra config text appended to the generated file */
};

struct hk_reply {
	long status;
	char body[65536];
	size_t len;
	char headers[4096];
};

/* A port that was free a moment ago on 127.0.0.1. */
unsigned hk_free_port(void);
/* Creates the temporary directory and chooses ports; extra may be NULL. */
void hk_daemon_init(struct hk_daemon *d, const char *extra_conf);
/* An SQLite daemon whatever HK_BACKEND says (the source of a migration to PostgreSQL). */
void hk_daemon_init_sqlite(struct hk_daemon *d, const char *extra_conf);
/* Another instance on the same database as first (PostgreSQL; with SQLite the same file,
 * which the second daemon refuses). */
void hk_daemon_init_peer(struct hk_daemon *d, const struct hk_daemon *first,
			 const char *extra_conf);
/* True when the suite runs on PostgreSQL (HK_BACKEND=postgresql). */
bool hk_backend_pg(void);
/* Points store options at db (a daemon's d->db): an SQLite path or a PostgreSQL URL. */
struct store_opts;
void hk_store_target(struct store_opts *o, const char *db);
/* Runs SQL on the daemon's database with its own client library (sqlite3 or libpq): 0, or -1
 * with the message in out; the first cell of the result (if any) into out. */
int hk_db_exec(const struct hk_daemon *d, const char *sql, char *out, size_t n);
/* Writes the config (first time only), starts the binary, waits for /readyz (10 s deadline).
 * Returns 0, or -1 if it exited or never became ready. */
int hk_daemon_start(struct hk_daemon *d);
/* Sends sig and waits for the exit; returns the exit status (128+N when killed by signal N). */
int hk_daemon_stop(struct hk_daemon *d, int sig);
/* Stops (SIGKILL) if still running and removes the temporary directory. */
void hk_daemon_cleanup(struct hk_daemon *d);
/* True when a line of the file at path contains needle (false when it cannot be read). */
bool hk_file_contains(const char *path, const char *needle);
/* True when the daemon's log contains needle. */
bool hk_log_contains(const struct hk_daemon *d, const char *needle);
/* Prints the last lines of the daemon's log to stderr (for a failing test's report). */
void hk_print_log_tail(const struct hk_daemon *d, int lines);

/* Lowercase hex HMAC-SHA256(key, body) into out[65]. */
void hk_sign(const char *key, const char *body, size_t len, char out[65]);
/* POSTs body to the callback path signed with key (NULL: no header). Returns HTTP status, or
 * -1 on a transport error. */
long hk_post_callback(const struct hk_daemon *d, const char *body, const char *key,
		      struct hk_reply *ret);
/* Generic request. headers: NULL-terminated "Name: value" list (may be NULL). body may be
 * NULL. Returns HTTP status or -1. */
long hk_request(const char *method, const char *url, const char *const *headers, const char *body,
		size_t body_len, long timeout_ms, struct hk_reply *ret);

/* Clocks for tests: monotonic milliseconds, and a sleep. */
long long hk_mono_ms(void);
void hk_sleep_ms(long ms);
/* Unix milliseconds (wall clock). */
long long hk_now_ms(void);

/* Waits until fn(arg) is true or timeout_ms passes (polls every 10 ms). */
bool hk_wait_until(bool (*fn)(void *arg), void *arg, long timeout_ms);

/* Runs a SQL query against the daemon's database with the sqlite3 shell-free read path
 * (store API) and returns the count of events. -1 on error. */
long long hk_count(const struct hk_daemon *d, const char *table);

/* komerce-sim */
struct hk_sim {
	pid_t pid;
	unsigned port;
	char dir[256];
};
int hk_sim_start(struct hk_sim *s, const char *extra_args);
void hk_sim_stop(struct hk_sim *s);
