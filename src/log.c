/* Logging to stderr for journald. Called from every thread: each line is formatted into a
 * local buffer and written with a single write(2), so lines from different threads never
 * interleave. Never pass secrets, signatures or whole bodies here. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <strings.h>
#include <unistd.h>

int log_max_prio = LOG_PRIO_INFO;

void log_msg(int prio, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	if (prio > log_max_prio)
		return;
	n = snprintf(line, sizeof(line), "<%d>", prio);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* Best effort: there is nowhere else to report a failed log write. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

int log_level_parse(const char *name)
{
	static const struct {
		const char *name;
		int prio;
	} levels[] = {
		{"err", LOG_PRIO_ERR},	     {"error", LOG_PRIO_ERR}, {"warning", LOG_PRIO_WARNING},
		{"notice", LOG_PRIO_NOTICE}, {"info", LOG_PRIO_INFO}, {"debug", LOG_PRIO_DEBUG},
	};

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcasecmp(name, levels[i].name) == 0)
			return levels[i].prio;
	return -1;
}

const char *log_quote(const char *s, char *buf, size_t n)
{
	size_t o = 0;

	if (n == 0)
		return buf;
	if (s == NULL)
		s = "";
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[5];
		size_t len;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			len = 2;
		} else if (c < 0x20 || c >= 0x7f) {
			snprintf(esc, sizeof(esc), "\\x%02x", c);
			len = 4;
		} else {
			esc[0] = (char)c;
			len = 1;
		}
		if (o + len + 4 > n) {
			if (n >= 4) {
				o = o + 3 < n ? o : n - 4;
				memcpy(buf + o, "...", 3);
				o += 3;
			}
			break;
		}
		memcpy(buf + o, esc, len);
		o += len;
	}
	buf[o] = '\0';
	return buf;
}

bool log_rl_allow(struct log_rl *rl, long long interval_ms, unsigned long long *ret_suppressed)
{
	struct timespec ts;
	long long now;
	bool allow = false;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	while (__atomic_exchange_n(&rl->lock, 1, __ATOMIC_ACQUIRE) != 0)
		;
	if (rl->last_ms == 0 || now - rl->last_ms >= interval_ms) {
		allow = true;
		*ret_suppressed = rl->suppressed;
		rl->suppressed = 0;
		rl->last_ms = now;
	} else {
		rl->suppressed++;
	}
	__atomic_store_n(&rl->lock, 0, __ATOMIC_RELEASE);
	return allow;
}
