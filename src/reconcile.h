/* Reconciler: a thread that polls Komerce for the status of PENDING payments whose callback
 * has not arrived, and of those whose PAID callback waits for confirmation (confirm_paid),
 * up to max_in_flight requests at once, within the per-payment 3 s limit and a global
 * request budget. With several instances on one store it runs on the elected one only
 * (leader.c runs and halts it). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct store;
struct reconcile;

/* Prepares a reconciler (its own read-only handle, a Komerce client, the budgets) without
 * starting it. On failure returns -errno with one line in err. */
int reconcile_new(const struct config *cfg, struct store *writer, struct reconcile **ret, char *err,
		  size_t err_len) __attribute__((warn_unused_result));
/* Starts polling (this instance leads the job). The request budget starts empty and the
 * one-second window full, so the first request after a change of leader waits a second and
 * no second holds the requests of two leaders; the per-payment minimum holds through the
 * schedule in the store. 0 or -errno. */
int reconcile_run(struct reconcile *r) __attribute__((warn_unused_result));
/* Stops polling and joins within about a second (a status request in flight is abandoned;
 * what was learned is written first). A no-op when not running. */
void reconcile_halt(struct reconcile *r);
/* reconcile_new + reconcile_run. */
int reconcile_start(const struct config *cfg, struct store *writer, struct reconcile **ret,
		    char *err, size_t err_len) __attribute__((warn_unused_result));
/* A payment became watched (created or tracked): look at the schedule again. Any thread,
 * running or not. */
void reconcile_wake(struct reconcile *r);
/* A commit scheduled a poll at due_ms (unix ms; the store's poll hook): wakes the thread if it
 * sleeps past it. Cheap enough for every commit (two atomics). Any thread, running or not. */
void reconcile_wake_at(struct reconcile *r, int64_t due_ms);
/* Halts and frees. NULL is fine. */
void reconcile_stop(struct reconcile *r);

/* ---- pure pieces of the reconciler, exported for the unit tests ---- */

/* Added to min_interval_seconds: timer slack, and clocks that are not quite ours. */
#define RECONCILE_SAFETY_MS	100
#define RECONCILE_FIRST_BACKOFF 5000LL	  /* second poll, then doubling */
#define RECONCILE_MAX_BACKOFF	600000LL  /* expiry known: at least one poll every 10 min */
#define RECONCILE_MAX_UNKNOWN	1800000LL /* expiry unknown: every 30 min at most */
#define RECONCILE_NEAR_WINDOW	60000LL	  /* the last minute before expiry ... */
#define RECONCILE_NEAR_STEP	15000LL	  /* ... is polled every 15 s */
#define RECONCILE_FINAL_DELAY	2000LL	  /* the confirming poll, after expires_at */
/* Defaults of reconcile.give_up_after_expiry_seconds / give_up_unknown_expiry_seconds. */
#define RECONCILE_GIVE_UP	  86400000LL	   /* stop a day after expiry, still PENDING */
#define RECONCILE_GIVE_UP_UNKNOWN (7 * 86400000LL) /* or a week after creation */
/* At most max_requests_per_second requests in any window of 1 s plus this (the budget is per
 * second as Komerce counts them: a request that takes a little longer to arrive than the next
 * one must not put one more into Komerce's second). */
#define RECONCILE_WINDOW_SLACK_MS 100

struct reconcile_sched {
	int64_t now_ms;		    /* the poll's reply arrived (unix ms) */
	int64_t created_at_ms;	    /* payment known since (unix ms) */
	int64_t expires_at_s;	    /* unix s, 0 when unknown */
	int64_t last_polled_ms;	    /* unix ms, 0 when never */
	long attempts;		    /* polls made, the one just answered included */
	int64_t min_interval_ms;    /* per-payment minimum, safety margin included */
	int64_t give_up_ms;	    /* after expiry; 0 = RECONCILE_GIVE_UP */
	int64_t give_up_unknown_ms; /* after creation, expiry unknown; 0 = the default */
};

/* When to poll a payment that is still PENDING next (unix ms), or 0 to stop watching it.
 * Backoff 5 s, 10 s, 20 s ... capped at 10 min (30 min when the expiry is unknown); no poll
 * skips the last minute before expires_at, which is polled every 15 s; one poll 2 s after
 * expires_at confirms EXPIRED (then backoff again if Komerce still says PENDING, until a day
 * past expiry). Never sooner than last_polled_ms + min_interval_ms. */
int64_t reconcile_next_poll_ms(const struct reconcile_sched *s);

/* Delay after a failed poll (5xx, timeout, network) when streak polls in a row failed:
 * 2 s * 2^(streak-1) capped at 10 min, with jitter taking it down to half (rnd: any
 * random 32 bits). */
int64_t reconcile_error_delay_ms(long streak, uint32_t rnd);

/* Next poll after one that taught nothing (429, 5xx, timeout, network): not before delay_ms
 * (Retry-After, or reconcile_error_delay_ms), and otherwise the schedule shortened by up to
 * half at random (rnd), so a payment that keeps failing still backs off (and is given up in
 * the end: 0) while payments that failed together spread out. */
int64_t reconcile_retry_ms(const struct reconcile_sched *s, int64_t delay_ms, uint32_t rnd);

/* Circuit breaker for "Komerce is down": threshold consecutive failures (default
 * RECONCILE_BREAKER_THRESHOLD, reconcile.breaker_failures) open it for base_open_ms (default
 * RECONCILE_BREAKER_OPEN_MS, doubling on each failed probe, up to max_open_ms); then one probe
 * is let through (half-open); its success closes it. With requests in flight together,
 * failures that arrive while it is open are not counted (the streak, which also sets the
 * retry delay, stays what opened it), and a success closes it unless its request left before
 * the failures were seen. */
#define RECONCILE_BREAKER_THRESHOLD   5
#define RECONCILE_BREAKER_OPEN_MS     10000LL
#define RECONCILE_BREAKER_MAX_OPEN_MS 300000LL

enum reconcile_breaker_state {
	RECONCILE_BREAKER_CLOSED,
	RECONCILE_BREAKER_OPEN,
	RECONCILE_BREAKER_HALF_OPEN, /* one probe in flight */
};

struct reconcile_breaker {
	enum reconcile_breaker_state state;
	long failures;		 /* consecutive */
	int64_t streak_since_ms; /* the first of them was seen then */
	int64_t opened_at_ms, open_until_ms, open_ms;
	long threshold;
	int64_t base_open_ms, max_open_ms;
};

/* With the default threshold and timings. */
void reconcile_breaker_init(struct reconcile_breaker *b);
/* The operator's threshold and timings (values <= 0 keep the defaults). */
void reconcile_breaker_configure(struct reconcile_breaker *b, long threshold, int64_t open_ms,
				 int64_t max_open_ms);
/* May a request be sent now? Turns OPEN into HALF_OPEN (one probe) once the period is over. */
bool reconcile_breaker_allow(struct reconcile_breaker *b, int64_t now_ms);
/* When allow() may next say yes (now_ms when it would now). */
int64_t reconcile_breaker_ready_ms(const struct reconcile_breaker *b, int64_t now_ms);
/* Komerce answered a request sent at sent_ms. Returns true when this closed an open breaker
 * (log it). With requests in flight together, only a request sent after the first failure of
 * the streak was seen says that Komerce answers again: the others left before anyone knew,
 * and their successes change nothing (nor do their failures end the streak). */
bool reconcile_breaker_success(struct reconcile_breaker *b, int64_t now_ms, int64_t sent_ms);
/* Komerce failed (5xx, timeout, network) a request sent at sent_ms. Returns true when this
 * opened a closed breaker. */
bool reconcile_breaker_failure(struct reconcile_breaker *b, int64_t now_ms, int64_t sent_ms);
