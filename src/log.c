/* Logging to stderr for journald. Called from every thread: each line is formatted into a
 * local buffer and written with a single write(2), so lines from different threads never
 * interleave. Under journald (log_init) lines are sent natively with sd_journal_sendv, one
 * datagram each, so that they can carry fields. Never pass secrets, signatures or whole bodies
 * here. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#define LOG_IDENTIFIER "komerce-hookd"

int log_max_prio = LOG_PRIO_INFO;
static int use_journal; /* set by log_init before any thread starts, then only read */

bool log_journal_stream_matches(const char *journal_stream, unsigned long long dev,
				unsigned long long ino)
{
	unsigned long long d, i;
	char *end;

	if (journal_stream == NULL || *journal_stream < '0' || *journal_stream > '9')
		return false;
	errno = 0;
	d = strtoull(journal_stream, &end, 10);
	if (errno != 0 || *end != ':' || end[1] < '0' || end[1] > '9')
		return false;
	i = strtoull(end + 1, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	return d == dev && i == ino;
}

bool log_init(void)
{
	struct stat st;

	if (fstat(STDERR_FILENO, &st) == 0 &&
	    log_journal_stream_matches(getenv("JOURNAL_STREAM"), (unsigned long long)st.st_dev,
				       (unsigned long long)st.st_ino))
		use_journal = 1;
	return use_journal != 0;
}

/* Journal field names: A-Z, 0-9 and '_', not starting with a digit or '_' (those are the
 * journal's own trusted fields), at most 64 characters. */
static bool field_name_ok(const char *name)
{
	size_t len = name != NULL ? strlen(name) : 0;

	if (len == 0 || len > 64 || name[0] == '_' || (name[0] >= '0' && name[0] <= '9'))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((name[i] >= 'A' && name[i] <= 'Z') || (name[i] >= '0' && name[i] <= '9') ||
		      name[i] == '_'))
			return false;
	return true;
}

/* Appends "name=value" (value cut at max bytes) and a NUL at buf + *o; NULL when full. */
static const char *put_field(char *buf, size_t len, size_t *o, const char *name, const char *value,
			     size_t max)
{
	size_t nl = strlen(name), vl = strlen(value);
	char *start = buf + *o;

	if (vl > max)
		vl = max;
	if (*o + nl + 1 + vl + 1 > len)
		return NULL;
	memcpy(start, name, nl);
	start[nl] = '=';
	memcpy(start + nl + 1, value, vl);
	start[nl + 1 + vl] = '\0';
	*o += nl + 1 + vl + 1;
	return start;
}

int log_journal_render(int prio, const char *message, const struct log_field *fields, char *buf,
		       size_t buf_len, const char **out, size_t out_max)
{
	char p[4] = {(char)('0' + (prio >= 0 && prio <= 7 ? prio : LOG_PRIO_INFO)), '\0'};
	size_t o = 0, n = 0, used = 0;

	if (out_max < 3)
		return -ENOBUFS;
	out[n++] = put_field(buf, buf_len, &o, "MESSAGE", message, SIZE_MAX);
	out[n++] = put_field(buf, buf_len, &o, "PRIORITY", p, SIZE_MAX);
	out[n++] = put_field(buf, buf_len, &o, "SYSLOG_IDENTIFIER", LOG_IDENTIFIER, SIZE_MAX);
	if (out[0] == NULL || out[1] == NULL || out[2] == NULL)
		return -ENOBUFS;
	for (; fields != NULL && fields->name != NULL; fields++) {
		if (!field_name_ok(fields->name) || fields->value == NULL ||
		    fields->value[0] == '\0' || used == LOG_FIELDS_MAX || n == out_max)
			continue;
		out[n] = put_field(buf, buf_len, &o, fields->name, fields->value,
				   LOG_FIELD_VALUE_MAX);
		if (out[n] == NULL)
			return -ENOBUFS;
		n++;
		used++;
	}
	return (int)n;
}

static int send_journal(int prio, const char *message, const struct log_field *fields)
{
	char buf[2048 + LOG_FIELDS_MAX * (LOG_FIELD_VALUE_MAX + 72)];
	const char *strs[3 + LOG_FIELDS_MAX];
	struct iovec iov[3 + LOG_FIELDS_MAX];
	int n = log_journal_render(prio, message, fields, buf, sizeof(buf), strs,
				   sizeof(strs) / sizeof(strs[0]));

	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		iov[i].iov_base = (void *)(uintptr_t)strs[i];
		iov[i].iov_len = strlen(strs[i]);
	}
	return sd_journal_sendv(iov, n);
}

static void vlog(int prio, const struct log_field *fields, const char *fmt, va_list ap)
{
	char line[1024];
	int n;

	if (prio > log_max_prio)
		return;
	n = snprintf(line, sizeof(line), "<%d>", prio);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	/* Under journald, natively (the "<N>" prefix becomes PRIORITY=); stderr if that fails. */
	if (use_journal && send_journal(prio, line + 3, fields) >= 0)
		return;
	line[n++] = '\n';
	/* Best effort: there is nowhere else to report a failed log write. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

const char *log_num(long long v, char *buf, size_t n)
{
	snprintf(buf, n, "%lld", v);
	return buf;
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(prio, NULL, fmt, ap);
	va_end(ap);
}

void log_fields(int prio, const struct log_field *fields, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(prio, fields, fmt, ap);
	va_end(ap);
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
