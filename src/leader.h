/* Leadership: the jobs that must run on one instance at a time (the reconciler, each sink's
 * forwarder) are won, kept and lost here, through the store's elections (store_leader_*). One
 * thread per daemon; the jobs' own modules only start and stop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct store;
struct leader;

#define LEADER_JOB_MAX	48
#define LEADER_TICK_MS	1000 /* tries and checks */
#define LEADER_CHECK_MS 2000 /* a check not answered by then: every job is stopped */

struct leader_job {
	char name[LEADER_JOB_MAX]; /* "reconcile", "forward:<sink>" */
	/* This instance leads now: start the work. 0, or -errno (the job is given up and tried
	 * again next tick). */
	int (*start)(void *arg, size_t idx);
	/* Leadership is lost or ending: stop the work and return only once it has stopped. */
	void (*stop)(void *arg, size_t idx);
	void *arg;
	size_t idx;
};

/* Opens a LEADER handle like `like` (the daemon's writer), runs one election round at once
 * (with SQLite every job starts here) and then a thread that, every LEADER_TICK_MS, confirms
 * the jobs it runs are still its own (stopping all of them when the store does not answer
 * within LEADER_CHECK_MS) and tries to win the others. jobs is copied. instance names this
 * instance in log lines. 0, or -errno with one line in err. */
int leader_start(struct store *like, const struct leader_job *jobs, size_t n, const char *instance,
		 struct leader **ret, char *err, size_t err_len)
	__attribute__((warn_unused_result));
/* Stops the thread, then every job this instance runs, and gives their leadership up. NULL is
 * fine. */
void leader_stop(struct leader *l);
/* The store answered the last election round (for /readyz). Any thread. */
bool leader_store_ok(struct leader *l);
/* The jobs this instance runs now as a JSON array of strings into out (e.g.
 * ["reconcile","forward:shop"]). Any thread. */
void leader_roles_json(struct leader *l, char *out, size_t n);
