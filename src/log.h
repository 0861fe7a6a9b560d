/* Journald-friendly logging: one line per event on stderr with a "<N>" syslog priority prefix. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

enum {
	LOG_PRIO_ERR = 3,
	LOG_PRIO_WARNING = 4,
	LOG_PRIO_NOTICE = 5,
	LOG_PRIO_INFO = 6,
	LOG_PRIO_DEBUG = 7,
};

/* Lines above this priority are dropped. Set once at start-up, read by every thread. */
extern int log_max_prio;

void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int log_level_parse(const char *name);

/* Copies a user-controlled string into buf for logging: printable ASCII only, quotes and
 * backslashes escaped, cut at n-1 bytes with "..." when too long. Returns buf. */
const char *log_quote(const char *s, char *buf, size_t n);

/* Rate limit for a log line that hostile input could repeat: allows one line per interval and
 * counts the rest, reported with the next allowed line. Thread-safe; zero-initialise. */
struct log_rl {
	long long last_ms;
	unsigned long long suppressed;
	int lock;
};
bool log_rl_allow(struct log_rl *rl, long long interval_ms, unsigned long long *ret_suppressed);

#define log_err(...)	log_msg(LOG_PRIO_ERR, __VA_ARGS__)
#define log_warn(...)	log_msg(LOG_PRIO_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_PRIO_NOTICE, __VA_ARGS__)
#define log_info(...)	log_msg(LOG_PRIO_INFO, __VA_ARGS__)
#define log_debug(...)                                        \
	do {                                                  \
		if (log_max_prio >= LOG_PRIO_DEBUG)           \
			log_msg(LOG_PRIO_DEBUG, __VA_ARGS__); \
	} while (0)
