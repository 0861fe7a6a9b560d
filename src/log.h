/* Journald-friendly logging: one line per event on stderr with a "<N>" syslog priority prefix,
 * or, under journald, native journal entries that can carry fields (PAYMENT_ID=...). */
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

/* A journal field of a log line: NAME=value, so that `journalctl -u komerce-hookd
 * PAYMENT_ID=...` shows one payment's story. Names are upper case letters, digits and '_'
 * (PAYMENT_ID, ORDER_ID, EVENT_ID, SINK); a NULL or empty value leaves the field out. Values
 * are user-controlled text: never a secret. */
struct log_field {
	const char *name;
	const char *value;
};

#define LOG_FIELDS_MAX	    8	/* fields of one line, beyond MESSAGE/PRIORITY/SYSLOG_IDENTIFIER */
#define LOG_FIELD_VALUE_MAX 256 /* bytes of one value kept; longer values are cut */

/* Like log_msg, with fields (an array ended by {NULL, NULL}). On stderr the line is exactly
 * what log_msg would print (put the same facts in the text as key=value). Under journald
 * (see log_init) it is sent with sd_journal_sendv as MESSAGE=, PRIORITY=, SYSLOG_IDENTIFIER=
 * and the fields; if that fails, it goes to stderr. */
void log_fields(int prio, const struct log_field *fields, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Decimal text of v in buf, for a field value (EVENT_ID). Returns buf. */
const char *log_num(long long v, char *buf, size_t n);

/* Detects journald once at start-up: stderr is the journal's stream when $JOURNAL_STREAM
 * ("DEV:INODE", as systemd sets it) names the device and inode of fd 2. From then on every
 * line (log_msg too, so lines keep their order) is sent natively. Not calling it keeps plain
 * stderr. Returns true when journald was detected. */
bool log_init(void);

/* Pure helpers, unit-tested. */
/* True when journal_stream ("DEV:INODE", decimal) names dev and ino. */
bool log_journal_stream_matches(const char *journal_stream, unsigned long long dev,
				unsigned long long ino);
/* Renders one journal entry: out[i] = "NAME=value" strings in buf (NUL-terminated each), in the
 * order MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, then the fields with a valid name and a non-empty
 * value (at most LOG_FIELDS_MAX, each value cut at LOG_FIELD_VALUE_MAX bytes). Returns the count
 * of strings, or -ENOBUFS when buf is too small. */
int log_journal_render(int prio, const char *message, const struct log_field *fields, char *buf,
		       size_t buf_len, const char **out, size_t out_max);
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
