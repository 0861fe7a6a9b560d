/* A throw-away PostgreSQL cluster for the test suites (no system service): when HK_BACKEND is
 * "postgresql", the test process starts its own server before main() (initdb into a temporary
 * directory as an unprivileged user when run as root, a free loopback port, the unix socket in
 * the same directory, fsync off) and stops and removes it when the process exits. Check's forked
 * test children share it; each test takes a database of its own (pgtest_createdb: a schema). Server
 * binaries: $HK_PG_BINDIR, else the newest /usr/lib/postgresql/N/bin. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* True when HK_BACKEND=postgresql. */
bool pgtest_enabled(void);
/* Starts the cluster if it is not running (normally done before main()). 0 or -1 with a line
 * on stderr. */
int pgtest_start(void);
/* A new empty database, as the daemon sees it: a schema of its own in the cluster's database
 * "hookd", named by the URL's search_path (postgresql://hookd@127.0.0.1:PORT/hookd?options=
 * -c%20search_path%3DNAME) into url. 0 or -1. */
int pgtest_createdb(char *url, size_t n);
/* Drops what pgtest_createdb made. */
void pgtest_dropdb(const char *url);
/* Stops the server (fast shutdown: every session is cut) / starts it again on the same port
 * and data, for outage tests. 0 or -1. */
int pgtest_server_stop(void);
int pgtest_server_start(void);
/* Runs sql on url; the first cell of the last result (if any) into out. 0, or -1 with the
 * server's message in out. */
int pgtest_exec(const char *url, const char *sql, char *out, size_t n);
/* Counts the rows of a query's result (e.g. SELECT ... FROM pg_stat_activity). -1 on error. */
long pgtest_count(const char *url, const char *sql);
