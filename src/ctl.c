/* komerce-hookctl: the operator's CLI over the event store (audit queries, hash-chain verify,
 * replay, online backup). Single-threaded; every command but replay opens the database
 * read-only, so it runs beside the daemon under load. Output formats (table, json, jsonl, csv)
 * live here; the queries live in the store module (store.h, store_audit.h). Exit status: 0 ok,
 * 1 failure (tampering found, storage error), 2 usage error or missing database. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "build_config.h"
#include "audit.h"
#include "checkpoint.h"
#include "config.h"
#include "store.h"
#include "util.h"

#define CTL_OK	  0
#define CTL_FAIL  1
#define CTL_USAGE 2

#define DEFAULT_CONFIG	HOOKD_DEFAULT_CONFIG
#define TABLE_WINDOW	1000 /* rows buffered to size the table's columns */
#define TABLE_ERROR_MAX 60   /* last_error is cut in tables */

extern char **environ;

struct ctl {
	const char *cmd; /* "events", for messages */
	const char *config_path;
	bool config_explicit;
	const char *db_path; /* --db, else the configured store.path or store.url */
	struct config *cfg;  /* NULL when --db was given and the config did not load */
	long busy_timeout_ms;
	struct store *store;
};

static void fail_line(const struct ctl *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The one line on stderr that every error gets. */
static void fail_line(const struct ctl *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "komerce-hookctl%s%s: ", c->cmd != NULL ? " " : "",
		c->cmd != NULL ? c->cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- output formats ---- */

enum fmt { FMT_TABLE, FMT_JSON, FMT_JSONL, FMT_CSV };

struct column {
	const char *key;   /* key in the row object */
	const char *title; /* header in table and csv */
	bool right;	   /* right-aligned in tables (numbers) */
	bool table;	   /* shown in tables (csv and json always carry every column) */
};

/* Rows are cJSON objects keyed by column key; json and jsonl print them as they are, csv and
 * table print the columns. A table buffers its first TABLE_WINDOW rows to size the columns and
 * streams the rest, so a huge listing never sits in memory. */
struct out {
	enum fmt fmt;
	const struct column *cols;
	size_t n_cols;
	size_t rows;
	cJSON *window; /* table: rows not yet printed */
	size_t width[16];
	bool widths_known;
};

static int fmt_parse(const char *v, bool allow_rows, enum fmt *ret)
{
	if (strcmp(v, "table") == 0)
		*ret = FMT_TABLE;
	else if (strcmp(v, "json") == 0)
		*ret = FMT_JSON;
	else if (allow_rows && strcmp(v, "jsonl") == 0)
		*ret = FMT_JSONL;
	else if (allow_rows && strcmp(v, "csv") == 0)
		*ret = FMT_CSV;
	else
		return -EINVAL;
	return 0;
}

/* Text of a cell for csv and tables: heap string (caller frees) or NULL for JSON null. */
static char *cell_text(const cJSON *v)
{
	char buf[64];

	if (v == NULL || cJSON_IsNull(v))
		return NULL;
	if (cJSON_IsString(v))
		return strdup(v->valuestring);
	if (cJSON_IsBool(v))
		return strdup(cJSON_IsTrue(v) ? "true" : "false");
	if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;

		if (d == (double)(long long)d)
			snprintf(buf, sizeof(buf), "%lld", (long long)d);
		else
			snprintf(buf, sizeof(buf), "%g", d);
		return strdup(buf);
	}
	return cJSON_PrintUnformatted(v);
}

/* RFC 4180: a field with a comma, quote, CR or LF is quoted, quotes doubled. */
static void csv_field(const char *s)
{
	if (s == NULL)
		return;
	if (strpbrk(s, ",\"\r\n") == NULL) {
		fputs(s, stdout);
		return;
	}
	fputc('"', stdout);
	for (const char *p = s; *p != '\0'; p++) {
		if (*p == '"')
			fputc('"', stdout);
		fputc(*p, stdout);
	}
	fputc('"', stdout);
}

/* Characters on screen of UTF-8 text (continuation bytes do not count). */
static size_t text_width(const char *s)
{
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		n += (*p & 0xc0) != 0x80;
	return n;
}

/* Prints s padded to width; control characters (a hostile id could carry escapes) as '?'. */
static void table_cell(const char *s, size_t width, bool right, bool last)
{
	size_t w = text_width(s);
	size_t pad = width > w ? width - w : 0;

	if (right)
		printf("%*s", (int)pad, "");
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, stdout);
	if (!right && !last)
		printf("%*s", (int)pad, "");
	if (!last)
		fputs("  ", stdout);
}

static const char *table_text(const struct column *col, const cJSON *row, char **heap)
{
	char *t = cell_text(cJSON_GetObjectItemCaseSensitive(row, col->key));

	*heap = t;
	if (t == NULL)
		return "-";
	if (strcmp(col->key, "last_error") == 0 && strlen(t) > TABLE_ERROR_MAX)
		snprintf(t + TABLE_ERROR_MAX - 3, 4, "...");
	return t;
}

static size_t last_table_col(const struct out *o)
{
	size_t last = 0;

	for (size_t i = 0; i < o->n_cols; i++) {
		if (o->cols[i].table)
			last = i;
	}
	return last;
}

static void table_row(struct out *o, const cJSON *row)
{
	size_t last = last_table_col(o);

	for (size_t i = 0; i < o->n_cols; i++) {
		char *heap = NULL;
		const char *t;

		if (!o->cols[i].table)
			continue;
		t = row != NULL ? table_text(&o->cols[i], row, &heap)
				: o->cols[i].title; /* header */
		table_cell(t, o->width[i], o->cols[i].right, i == last);
		free(heap);
	}
	fputc('\n', stdout);
}

static void table_flush(struct out *o)
{
	cJSON *row;

	if (!o->widths_known) {
		for (size_t i = 0; i < o->n_cols; i++)
			o->width[i] = text_width(o->cols[i].title);
		cJSON_ArrayForEach(row, o->window)
		{
			for (size_t i = 0; i < o->n_cols; i++) {
				char *heap;
				size_t w;

				if (!o->cols[i].table)
					continue;
				w = text_width(table_text(&o->cols[i], row, &heap));
				free(heap);
				if (w > o->width[i])
					o->width[i] = w;
			}
		}
		o->widths_known = true;
		table_row(o, NULL);
	}
	cJSON_ArrayForEach(row, o->window)
	{
		table_row(o, row);
	}
	cJSON_Delete(o->window);
	o->window = NULL;
}

static int out_begin(struct out *o, enum fmt fmt, const struct column *cols, size_t n_cols)
{
	memset(o, 0, sizeof(*o));
	o->fmt = fmt;
	o->cols = cols;
	o->n_cols = n_cols < 16 ? n_cols : 16;
	if (fmt == FMT_CSV) {
		for (size_t i = 0; i < o->n_cols; i++) {
			if (i > 0)
				fputc(',', stdout);
			csv_field(cols[i].key);
		}
		fputs("\r\n", stdout);
	}
	return 0;
}

/* Takes ownership of row. */
static int out_row(struct out *o, cJSON *row)
{
	char *text;

	if (row == NULL)
		return -ENOMEM;
	switch (o->fmt) {
	case FMT_JSON:
	case FMT_JSONL:
		text = cJSON_PrintUnformatted(row);
		cJSON_Delete(row);
		if (text == NULL)
			return -ENOMEM;
		if (o->fmt == FMT_JSON)
			fputs(o->rows == 0 ? "[\n" : ",\n", stdout);
		fputs(text, stdout);
		if (o->fmt == FMT_JSONL)
			fputc('\n', stdout);
		free(text);
		break;
	case FMT_CSV:
		for (size_t i = 0; i < o->n_cols; i++) {
			char *t = cell_text(cJSON_GetObjectItemCaseSensitive(row, o->cols[i].key));

			if (i > 0)
				fputc(',', stdout);
			csv_field(t);
			free(t);
		}
		fputs("\r\n", stdout);
		cJSON_Delete(row);
		break;
	case FMT_TABLE:
		if (o->window == NULL && (o->window = cJSON_CreateArray()) == NULL) {
			cJSON_Delete(row);
			return -ENOMEM;
		}
		cJSON_AddItemToArray(o->window, row);
		if (cJSON_GetArraySize(o->window) >= TABLE_WINDOW)
			table_flush(o);
		break;
	}
	o->rows++;
	return 0;
}

static void out_end(struct out *o)
{
	if (o->fmt == FMT_JSON)
		fputs(o->rows == 0 ? "[]\n" : "\n]\n", stdout);
	else if (o->fmt == FMT_TABLE)
		table_flush(o); /* the header at least */
	cJSON_Delete(o->window);
	o->window = NULL;
}

/* ---- JSON helpers for rows ---- */

/* ---- opening the store ---- */

static int load_config(struct ctl *c)
{
	char err[CONFIG_ERR_LEN];
	int r;

	/* --db without -c: the database was named, so the default config (which may describe
	 * another database) is not read at all. */
	if (c->db_path != NULL && !c->config_explicit)
		return 0;
	c->cfg = config_new();
	if (c->cfg == NULL) {
		fail_line(c, "out of memory");
		return -ENOMEM;
	}
	c->cfg->secrets_optional = true; /* ctl needs the store path and sinks only */
	r = config_load_file(c->cfg, c->config_path, environ, err, sizeof(err));
	if (r < 0) {
		config_free(c->cfg);
		c->cfg = NULL;
		if (c->db_path != NULL)
			return 0; /* only the database is needed */
		fail_line(c, "%s (or name the database with --db PATH)", err);
		return r;
	}
	c->busy_timeout_ms = c->cfg->busy_timeout_ms;
	if (c->db_path == NULL && c->cfg->store_backend == CONFIG_STORE_POSTGRESQL) {
		if (c->cfg->store_url[0] == '\0') {
			fail_line(c, "store.url is not set (komerce-hookctl does not read the "
				     "daemon's credentials: set KOMERCE_HOOKD_STORE_URL or "
				     "KOMERCE_HOOKD_STORE_URL_FILE, or give --db URL)");
			return -EINVAL;
		}
		c->db_path = c->cfg->store_url;
	}
	if (c->db_path == NULL)
		c->db_path = c->cfg->store_path;
	return 0;
}

/* A PostgreSQL URL rather than an SQLite file. */
static bool is_url(const char *db)
{
	return strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0;
}

/* Loads the config and checks that the database exists; 0 or CTL_USAGE (message printed). */
static int resolve_db(struct ctl *c)
{
	struct stat sb;

	if (load_config(c) < 0)
		return CTL_USAGE;
	if (is_url(c->db_path))
		return 0;
	if (stat(c->db_path, &sb) < 0) {
		fail_line(c, "database %s: %s", c->db_path,
			  errno == ENOENT ? "no such file" : "cannot access it");
		return CTL_USAGE;
	}
	return 0;
}

/* Opens the store in mode (READER, or ADMIN for replay) with the configuration's sinks, or
 * only sink when given; 0 or CTL_USAGE (message printed). */
static int open_store(struct ctl *c, enum store_mode mode, const char *sink)
{
	struct store_sink sinks[CONFIG_MAX_SINKS];
	struct store_opts so = {.mode = mode, .sinks = sinks};
	char err[512];
	int r = resolve_db(c);

	if (r != 0)
		return r;
	for (size_t i = 0; c->cfg != NULL && i < c->cfg->n_sinks; i++)
		if (sink == NULL || strcmp(sink, c->cfg->sinks[i].name) == 0)
			sinks[so.n_sinks++] = (struct store_sink){.name = c->cfg->sinks[i].name};
	if (c->cfg != NULL && sink != NULL && so.n_sinks == 0) {
		fail_line(c, "--sink: no [sink.%s] in %s", sink, c->config_path);
		return CTL_USAGE;
	}
	if (is_url(c->db_path)) {
		so.backend = STORE_BACKEND_POSTGRESQL;
		so.url = c->db_path;
	} else {
		so.path = c->db_path;
	}
	so.instance = c->cfg != NULL ? c->cfg->instance : NULL;
	so.busy_timeout_ms = c->busy_timeout_ms;
	if (store_open(&so, &c->store, err, sizeof(err)) < 0) {
		fail_line(c, "%s", err);
		return CTL_USAGE;
	}
	return 0;
}

static int open_ro(struct ctl *c)
{
	return open_store(c, STORE_MODE_READER, NULL);
}

/* ---- option parsing ---- */

enum {
	OPT_DB = 1000,
	OPT_FORMAT,
	OPT_PAYMENT_ID,
	OPT_ORDER_ID,
	OPT_STATUS,
	OPT_SOURCE,
	OPT_SINCE,
	OPT_UNTIL,
	OPT_AFTER_ID,
	OPT_LIMIT,
	OPT_STALE,
	OPT_DEAD,
	OPT_ALL,
	OPT_SINK,
	OPT_VERSION,
	OPT_CHECKPOINT,
	OPT_CHECKPOINTS,
};

/* The options every command takes; ends a longopts table. */
/* clang-format off */
#define COMMON_OPTS \
	{"config", required_argument, NULL, 'c'}, \
	{"db", required_argument, NULL, OPT_DB}, \
	{"help", no_argument, NULL, 'h'}, \
	{NULL, 0, NULL, 0}
/* clang-format on */

/* Handles -c, --db and the getopt errors. Returns 0 when opt was one of those (or a normal
 * option left to the caller, *handled false), CTL_USAGE after printing an error. */
static int common_opt(struct ctl *c, int opt, char **argv, bool *handled)
{
	*handled = true;
	switch (opt) {
	case 'c':
		c->config_path = optarg;
		c->config_explicit = true;
		return 0;
	case OPT_DB:
		c->db_path = optarg;
		return 0;
	case ':':
		fail_line(c, "option '%s' needs a value (see --help)", argv[optind - 1]);
		return CTL_USAGE;
	case '?':
		if (optopt != 0 && optopt < 256)
			fail_line(c, "unknown option '-%c' (see --help)", optopt);
		else
			fail_line(c, "unknown option '%s' (see --help)", argv[optind - 1]);
		return CTL_USAGE;
	default:
		*handled = false;
		return 0;
	}
}

static int parse_long(const struct ctl *c, const char *opt, const char *v, long long min,
		      long long *ret)
{
	char *end;
	long long n;

	errno = 0;
	n = v[0] >= '0' && v[0] <= '9' ? strtoll(v, &end, 10) : -1;
	if (n < min || errno != 0 || *end != '\0') {
		fail_line(c, "%s: '%s' is not an integer >= %lld", opt, v, min);
		return CTL_USAGE;
	}
	*ret = n;
	return 0;
}

/* --format V: 0, or CTL_USAGE with the error printed. */
static int format_opt(const struct ctl *c, const char *v, bool allow_rows, enum fmt *ret)
{
	if (fmt_parse(v, allow_rows, ret) == 0)
		return 0;
	fail_line(c, "--format: must be %s",
		  allow_rows ? "table, json, jsonl or csv" : "table or json");
	return CTL_USAGE;
}

/* After the options: 0 when no argument is left, else CTL_USAGE with the error printed. */
static int no_operands(const struct ctl *c, int argc, char **argv)
{
	if (optind < argc) {
		fail_line(c, "unexpected argument '%s' (see --help)", argv[optind]);
		return CTL_USAGE;
	}
	return 0;
}

/* After the options: 0 when exactly one argument (named what in the error) is left. */
static int one_operand(const struct ctl *c, int argc, char **argv, const char *what)
{
	if (optind >= argc) {
		fail_line(c, "missing %s (see --help)", what);
		return CTL_USAGE;
	}
	if (optind + 1 < argc) {
		fail_line(c, "unexpected argument '%s' (see --help)", argv[optind + 1]);
		return CTL_USAGE;
	}
	return 0;
}

/* ---- listings ---- */

/* Checks that no argument is left, opens the store read-only and starts the output: 0, or the
 * exit status with the error printed. */
static int list_begin(struct ctl *c, int argc, char **argv, struct out *o, enum fmt fmt,
		      const struct column *cols, size_t n_cols)
{
	int r = no_operands(c, argc, argv);

	if (r == 0)
		r = open_ro(c);
	if (r != 0)
		return r;
	out_begin(o, fmt, cols, n_cols);
	return 0;
}

/* Ends the output of a listing whose query returned r; the exit status. */
static int list_end(struct ctl *c, struct out *o, int r)
{
	out_end(o);
	if (r < 0) {
		fail_line(c, "query failed: %s",
			  r == -ENOMEM ? "out of memory" : store_errmsg(c->store));
		return CTL_FAIL;
	}
	return CTL_OK;
}

/* ---- events ---- */

static const char events_usage[] =
	"usage: komerce-hookctl events [--payment-id ID] [--order-id ID] [--status S]\n"
	"         [--source callback|reconcile|api] [--since T] [--until T] [--after-id N]\n"
	"         [--limit N] [--format table|json|jsonl|csv]\n"
	"List stored events in id order, each with its receipts count (how often it was\n"
	"delivered) and its part in confirming a PAID callback: held (stored as received,\n"
	"not applied, not forwarded), confirmed (the status call's PAID, for HELD EVENT) or\n"
	"unconfirmed (a conflict: the status call said otherwise). T is ISO 8601\n"
	"(2026-08-12, 2026-08-12T10:15:30Z, +07:00 offsets) or unix seconds; --until is\n"
	"exclusive. Times are printed in UTC. json prints one array, jsonl one object a line\n"
	"(with the raw callback), csv follows RFC 4180.\n";

static const struct column event_cols[] = {
	{"id", "ID", true, true},
	{"received_at", "RECEIVED (UTC)", false, true},
	{"payment_id", "PAYMENT", false, true},
	{"order_id", "ORDER", false, true},
	{"status", "STATUS", false, true},
	{"amount", "AMOUNT", true, true},
	{"source", "SOURCE", false, true},
	{"conflict", "CONFLICT", false, true},
	{"confirmation", "CONFIRMATION", false, true},
	{"held_event_id", "HELD EVENT", true, false},
	{"receipts", "RECEIPTS", true, true},
	{"callback", "CALLBACK", false, false},
};

static int print_event(void *arg, const struct store_event *e)
{
	return out_row(arg, audit_event_json(e));
}

static int cmd_events(struct ctl *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"payment-id", required_argument, NULL, OPT_PAYMENT_ID},
		{"order-id", required_argument, NULL, OPT_ORDER_ID},
		{"status", required_argument, NULL, OPT_STATUS},
		{"source", required_argument, NULL, OPT_SOURCE},
		{"since", required_argument, NULL, OPT_SINCE},
		{"until", required_argument, NULL, OPT_UNTIL},
		{"after-id", required_argument, NULL, OPT_AFTER_ID},
		{"limit", required_argument, NULL, OPT_LIMIT},
		{"format", required_argument, NULL, OPT_FORMAT},
		COMMON_OPTS,
	};
	static const char *const names[] = {
		[OPT_PAYMENT_ID - OPT_PAYMENT_ID] = "payment_id",
		[OPT_ORDER_ID - OPT_PAYMENT_ID] = "order_id",
		[OPT_STATUS - OPT_PAYMENT_ID] = "status",
		[OPT_SOURCE - OPT_PAYMENT_ID] = "source",
		[OPT_SINCE - OPT_PAYMENT_ID] = "since",
		[OPT_UNTIL - OPT_PAYMENT_ID] = "until",
		[OPT_AFTER_ID - OPT_PAYMENT_ID] = "after_id",
		[OPT_LIMIT - OPT_PAYMENT_ID] = "limit",
	};
	struct store_event_filter f = {.status = PAYMENT_UNKNOWN};
	enum fmt fmt = FMT_TABLE;
	struct out o;
	bool handled;
	char why[128];
	int opt, r, idx = 0;

	while ((opt = getopt_long(argc, argv, ":c:h", longopts, &idx)) != -1) {
		if (opt == 'h') {
			fputs(events_usage, stdout);
			return CTL_OK;
		}
		r = common_opt(c, opt, argv, &handled);
		if (r != 0 || handled) {
			if (r != 0)
				return r;
			continue;
		}
		if (opt == OPT_FORMAT) {
			if (format_opt(c, optarg, true, &fmt) != 0)
				return CTL_USAGE;
			continue;
		}
		if (audit_filter_set(&f, names[opt - OPT_PAYMENT_ID], optarg, why, sizeof(why)) <
		    0) {
			fail_line(c, "--%s: '%s': %s", longopts[idx].name, optarg, why);
			return CTL_USAGE;
		}
	}
	r = list_begin(c, argc, argv, &o, fmt, event_cols,
		       sizeof(event_cols) / sizeof(event_cols[0]));
	if (r != 0)
		return r;
	return list_end(c, &o, store_events_query(c->store, &f, print_event, &o));
}

/* ---- payments ---- */

static const char payments_usage[] =
	"usage: komerce-hookctl payments [--status S] [--stale] [--limit N]\n"
	"         [--format table|json|jsonl|csv]\n"
	"List payments, oldest first. --stale: PENDING payments past their expiry (the\n"
	"callback and the reconciler have not settled them). CONFIRMATION: where a PAID\n"
	"callback held for a status call stands (pending, confirmed, unconfirmed), and why.\n";

static const struct column payment_cols[] = {
	{"payment_id", "PAYMENT", false, true},
	{"order_id", "ORDER", false, true},
	{"status", "STATUS", false, true},
	{"amount", "AMOUNT", true, true},
	{"payment_type", "TYPE", false, false},
	{"channel_code", "CHANNEL", false, true},
	{"origin", "ORIGIN", false, true},
	{"created_at", "CREATED (UTC)", false, true},
	{"updated_at", "UPDATED (UTC)", false, false},
	{"expires_at", "EXPIRES (UTC)", false, true},
	{"callback_seen_at", "CALLBACK SEEN (UTC)", false, true},
	{"last_polled_at", "LAST POLL (UTC)", false, false},
	{"next_poll_at", "NEXT POLL (UTC)", false, false},
	{"poll_attempts", "POLLS", true, true},
	{"confirmation", "CONFIRMATION", false, true},
	{"confirmation_detail", "WHY", false, true},
	{"confirmation_at", "CONFIRMATION AT (UTC)", false, false},
	{"held_event_id", "HELD EVENT", true, false},
};

static int print_payment(void *arg, const struct store_payment *p)
{
	cJSON *o = audit_payment_json(p);

	if (o == NULL)
		return -ENOMEM;
	return out_row(arg, o);
}

static int cmd_payments(struct ctl *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"status", required_argument, NULL, OPT_STATUS},
		{"stale", no_argument, NULL, OPT_STALE},
		{"limit", required_argument, NULL, OPT_LIMIT},
		{"format", required_argument, NULL, OPT_FORMAT},
		COMMON_OPTS,
	};
	struct store_payment_filter f = {.status = PAYMENT_UNKNOWN, .now_ms = util_now_ms()};
	enum fmt fmt = FMT_TABLE;
	struct out o;
	long long n;
	bool handled;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(payments_usage, stdout);
			return CTL_OK;
		}
		r = common_opt(c, opt, argv, &handled);
		if (r != 0)
			return r;
		if (handled)
			continue;
		switch (opt) {
		case OPT_STATUS:
			f.status = payment_status_parse(optarg);
			if (f.status == PAYMENT_UNKNOWN) {
				fail_line(c,
					  "--status: '%s': must be PENDING, PAID, EXPIRED or "
					  "CANCELED",
					  optarg);
				return CTL_USAGE;
			}
			break;
		case OPT_STALE:
			f.stale = true;
			break;
		case OPT_LIMIT:
			if (parse_long(c, "--limit", optarg, 1, &n) != 0)
				return CTL_USAGE;
			f.limit = (long)n;
			break;
		case OPT_FORMAT:
			if (format_opt(c, optarg, true, &fmt) != 0)
				return CTL_USAGE;
			break;
		}
	}
	r = list_begin(c, argc, argv, &o, fmt, payment_cols,
		       sizeof(payment_cols) / sizeof(payment_cols[0]));
	if (r != 0)
		return r;
	return list_end(c, &o, store_payments_list(c->store, &f, print_payment, &o));
}

/* ---- outbox ---- */

static const char outbox_usage[] =
	"usage: komerce-hookctl outbox [--dead | --all] [--sink NAME] [--limit N]\n"
	"         [--format table|json|jsonl|csv]\n"
	"List the outbox backlog (rows waiting for delivery), oldest first; --dead lists the\n"
	"dead letters (given up after max_attempts; see replay), --all every row. A dead letter\n"
	"queued again shows when and by whom (REPLAYED) and what became of it (AFTER REPLAY:\n"
	"pending, delivered at T, or dead again).\n";

static const struct column outbox_cols[] = {
	{"id", "ID", true, true},
	{"event_id", "EVENT", true, true},
	{"payment_id", "PAYMENT", false, true},
	{"status", "STATUS", false, true},
	{"sink", "SINK", false, true},
	{"state", "STATE", false, true},
	{"attempts", "ATTEMPTS", true, true},
	{"created_at", "CREATED (UTC)", false, true},
	{"next_attempt_at", "NEXT ATTEMPT (UTC)", false, true},
	{"delivered_at", "DELIVERED (UTC)", false, false},
	{"last_error", "LAST ERROR", false, true},
	{"replayed", "REPLAYED", false, true},
	{"after_replay", "AFTER REPLAY", false, true},
};

/* "2026-08-12T10:15:30.000Z by komerce-hookctl" for a replayed dead row, else null; and what
 * became of the row that replaced it. */
static void add_replay(cJSON *o, const struct store_outbox_row *r)
{
	char iso[40], text[160];

	if (r->replayed_at == 0) {
		cJSON_AddNullToObject(o, "replayed");
		cJSON_AddNullToObject(o, "after_replay");
		return;
	}
	util_iso8601_ms(r->replayed_at, iso, sizeof(iso));
	snprintf(text, sizeof(text), "%s by %s", iso,
		 r->replayed_by[0] != '\0' ? r->replayed_by : "?");
	cJSON_AddStringToObject(o, "replayed", text);
	if (r->replay_state == STORE_OUTBOX_DELIVERED && r->replay_delivered_at != 0) {
		util_iso8601_ms(r->replay_delivered_at, iso, sizeof(iso));
		snprintf(text, sizeof(text), "delivered %s", iso);
	} else {
		snprintf(text, sizeof(text), "%s", store_outbox_state_name(r->replay_state));
	}
	cJSON_AddStringToObject(o, "after_replay", text);
}

static int print_outbox(void *arg, const struct store_outbox_row *r)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL)
		return -ENOMEM;
	cJSON_AddNumberToObject(o, "id", (double)r->id);
	cJSON_AddNumberToObject(o, "event_id", (double)r->event_id);
	cJSON_AddStringToObject(o, "payment_id", r->payment_id);
	cJSON_AddStringToObject(o, "status", payment_status_name(r->status));
	cJSON_AddStringToObject(o, "sink", r->sink);
	cJSON_AddStringToObject(o, "state", store_outbox_state_name(r->state));
	cJSON_AddNumberToObject(o, "attempts", (double)r->attempts);
	audit_json_time(o, "created_at", r->created_at);
	audit_json_time(o, "next_attempt_at", r->next_attempt_at);
	audit_json_time(o, "delivered_at", r->delivered_at);
	audit_json_str_or_null(o, "last_error", r->last_error);
	add_replay(o, r);
	return out_row(arg, o);
}

static int cmd_outbox(struct ctl *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"dead", no_argument, NULL, OPT_DEAD},
		{"all", no_argument, NULL, OPT_ALL},
		{"sink", required_argument, NULL, OPT_SINK},
		{"limit", required_argument, NULL, OPT_LIMIT},
		{"format", required_argument, NULL, OPT_FORMAT},
		COMMON_OPTS,
	};
	struct store_outbox_filter f = {.state = STORE_OUTBOX_PENDING};
	enum fmt fmt = FMT_TABLE;
	long long limit = 0;
	bool handled;
	struct out o;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(outbox_usage, stdout);
			return CTL_OK;
		}
		r = common_opt(c, opt, argv, &handled);
		if (r != 0)
			return r;
		if (handled)
			continue;
		if (opt == OPT_DEAD) {
			f.state = STORE_OUTBOX_DEAD;
		} else if (opt == OPT_ALL) {
			f.state = STORE_OUTBOX_ANY;
		} else if (opt == OPT_SINK) {
			f.sink = optarg;
		} else if (opt == OPT_LIMIT) {
			if (parse_long(c, "--limit", optarg, 1, &limit) != 0)
				return CTL_USAGE;
			f.limit = (long)limit;
		} else if (opt == OPT_FORMAT && format_opt(c, optarg, true, &fmt) != 0) {
			return CTL_USAGE;
		}
	}
	r = list_begin(c, argc, argv, &o, fmt, outbox_cols,
		       sizeof(outbox_cols) / sizeof(outbox_cols[0]));
	if (r != 0)
		return r;
	return list_end(c, &o, store_outbox_list(c->store, &f, print_outbox, &o));
}

/* ---- stats ---- */

static const char stats_usage[] =
	"usage: komerce-hookctl stats [--format table|json]\n"
	"Counts of events by status and source, deliveries and duplicates, conflicts, payments\n"
	"by status (and stale ones), payments settled by the reconciler because the callback\n"
	"never came (or came late), and the outbox backlog per sink. One consistent snapshot.\n";

static void print_by_status(const int64_t *by_status)
{
	for (int i = PAYMENT_PENDING; i <= PAYMENT_CANCELED; i++)
		printf("%s%s %lld", i > 0 ? ", " : "", payment_status_name((enum payment_status)i),
		       (long long)by_status[i]);
	fputc('\n', stdout);
}

static void stats_table(const struct store_stats *t)
{
	printf("events              %lld\n", (long long)t->events);
	printf("  by status         ");
	print_by_status(t->events_by_status);
	printf("  by source         callback %lld, reconcile %lld, api %lld\n",
	       (long long)t->events_by_source[EVENT_SOURCE_CALLBACK],
	       (long long)t->events_by_source[EVENT_SOURCE_RECONCILE],
	       (long long)t->events_by_source[EVENT_SOURCE_API]);
	printf("  conflicts         %lld\n", (long long)t->conflicts);
	printf("deliveries          %lld receipts, %lld duplicates\n", (long long)t->receipts,
	       (long long)(t->receipts - t->events));
	printf("payments            %lld\n", (long long)t->payments);
	printf("  by status         ");
	print_by_status(t->payments_by_status);
	printf("  stale PENDING     %lld (past expiry)\n", (long long)t->stale);
	printf("reconciled          %lld settled by polling: callback missed %lld, late %lld\n",
	       (long long)t->reconciled, (long long)(t->reconciled - t->reconciled_late_cb),
	       (long long)t->reconciled_late_cb);
	printf("outbox backlog      %lld pending, %lld dead, %lld dead replayed (%lld delivered)\n",
	       (long long)t->outbox_pending, (long long)t->outbox_dead,
	       (long long)t->outbox_replayed, (long long)t->outbox_delivered);
	for (size_t i = 0; i < t->n_sinks; i++) {
		char iso[40] = "-";

		if (t->sinks[i].oldest_pending_ms != 0)
			util_iso8601_ms(t->sinks[i].oldest_pending_ms, iso, sizeof(iso));
		printf("  sink ");
		table_cell(t->sinks[i].sink, 12, false, false);
		printf("%lld pending (oldest %s), %lld dead, %lld dead replayed, %lld delivered\n",
		       (long long)t->sinks[i].pending, iso, (long long)t->sinks[i].dead,
		       (long long)t->sinks[i].replayed, (long long)t->sinks[i].delivered);
	}
}

static int cmd_stats(struct ctl *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"format", required_argument, NULL, OPT_FORMAT},
		COMMON_OPTS,
	};
	struct store_stats t;
	enum fmt fmt = FMT_TABLE;
	bool handled;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(stats_usage, stdout);
			return CTL_OK;
		}
		r = common_opt(c, opt, argv, &handled);
		if (r != 0)
			return r;
		if (!handled && format_opt(c, optarg, false, &fmt) != 0)
			return CTL_USAGE;
	}
	r = no_operands(c, argc, argv);
	if (r == 0)
		r = open_ro(c);
	if (r != 0)
		return r;
	r = store_stats(c->store, util_now_ms(), &t);
	if (r < 0) {
		fail_line(c, "query failed: %s", store_errmsg(c->store));
		return CTL_FAIL;
	}
	if (fmt == FMT_JSON) {
		cJSON *j = audit_stats_json(&t);
		char *text = j != NULL ? cJSON_Print(j) : NULL;

		cJSON_Delete(j);
		if (text == NULL) {
			fail_line(c, "out of memory");
			return CTL_FAIL;
		}
		printf("%s\n", text);
		free(text);
	} else {
		stats_table(&t);
	}
	return CTL_OK;
}

/* ---- verify ---- */

static const char verify_usage[] =
	"usage: komerce-hookctl verify [--checkpoint ID:HASH]... [--checkpoints FILE]\n"
	"Walk the events hash chain from the first row. Exit 0 printing how many events were\n"
	"checked; exit 1 naming the first row that was altered, deleted or moved, and why.\n"
	"Receipts and outbox rows that refer to a missing event are reported too (a deleted\n"
	"tail). Reads one snapshot; safe while the daemon runs.\n"
	"  --checkpoint ID:HASH  a chain head the daemon published (its log line \"chain head\n"
	"                        published ... checkpoint=ID:HASH\"); exit 1 when the database no\n"
	"                        longer reaches it (newest events deleted) or event ID has\n"
	"                        another hash (chain rewritten). Repeatable.\n"
	"  --checkpoints FILE    every checkpoint=ID:HASH in FILE (e.g. journalctl output; lines\n"
	"                        without one are skipped), or FILE of ID:HASH lines; - = stdin.\n"
	"A checkpoint with a mac= is checked against store.checkpoint_key when it is configured.\n";

#define MAX_CHECKPOINTS 4096

struct checkpoints {
	struct checkpoint *list;
	size_t n;
};

static int checkpoint_add(struct ctl *c, struct checkpoints *cps, const char *text,
			  const char *where)
{
	struct checkpoint cp;
	int r = checkpoint_parse(text, &cp);

	if (r == -ENOENT && where != NULL)
		return 0; /* a line of the file without a checkpoint */
	if (r < 0) {
		fail_line(c, "%s%s'%.80s' is not a checkpoint (ID:HASH, 64 hex digits)",
			  where != NULL ? where : "--checkpoint: ", where != NULL ? ": " : "",
			  text);
		return CTL_USAGE;
	}
	if (cps->n == MAX_CHECKPOINTS) {
		fail_line(c, "more than %d checkpoints", MAX_CHECKPOINTS);
		return CTL_USAGE;
	}
	cps->list[cps->n++] = cp;
	return 0;
}

static int checkpoint_file(struct ctl *c, struct checkpoints *cps, const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
	char line[4096], where[300];
	int r = 0;

	if (f == NULL) {
		fail_line(c, "--checkpoints: cannot open '%s': %m", path);
		return CTL_USAGE;
	}
	for (long no = 1; r == 0 && fgets(line, sizeof(line), f) != NULL; no++) {
		snprintf(where, sizeof(where), "%s line %ld", path, no);
		r = checkpoint_add(c, cps, line, where);
	}
	if (f != stdin)
		fclose(f);
	return r;
}

static int grab_event_hash(void *arg, const struct store_event *e)
{
	memcpy(arg, e->hash, STORE_HASH_LEN);
	return 1;
}

/* One checkpoint against the intact chain of `head` events: 0 when reached with its hash. */
static int check_checkpoint(struct ctl *c, const struct checkpoint *cp, int64_t head)
{
	const char *key = c->cfg != NULL ? c->cfg->checkpoint_key : "";
	struct store_event_filter f = {
		.status = PAYMENT_UNKNOWN, .after_id = cp->id - 1, .limit = 1};
	uint8_t h[STORE_HASH_LEN] = {0};
	char want[2 * STORE_HASH_LEN + 1], got[2 * STORE_HASH_LEN + 1];
	int r;

	util_hex(cp->hash, STORE_HASH_LEN, want);
	if (cp->has_mac && key[0] != '\0' && !checkpoint_mac_ok(cp, key, strlen(key))) {
		printf("verify: FAILED: checkpoint %lld:%.12s... has a mac that "
		       "store.checkpoint_key "
		       "did not make (forged, or another key)\n",
		       (long long)cp->id, want);
		return CTL_FAIL;
	}
	if (cp->id > head) {
		printf("verify: FAILED: checkpoint %lld:%.12s... not reached: the chain ends at "
		       "%lld "
		       "(events %lld to %lld are missing)\n",
		       (long long)cp->id, want, (long long)head, (long long)head + 1,
		       (long long)cp->id);
		return CTL_FAIL;
	}
	r = store_events_query(c->store, &f, grab_event_hash, h);
	if (r < 0) {
		fail_line(c, "cannot read event %lld: %s", (long long)cp->id,
			  store_errmsg(c->store));
		return CTL_FAIL;
	}
	if (!util_ct_equal(h, cp->hash, STORE_HASH_LEN)) {
		util_hex(h, STORE_HASH_LEN, got);
		printf("verify: FAILED: checkpoint %lld:%.12s... does not match: event %lld has "
		       "hash %.12s... (the chain was rewritten)\n",
		       (long long)cp->id, want, (long long)cp->id, got);
		return CTL_FAIL;
	}
	printf("verify: checkpoint %lld:%.12s... reached%s\n", (long long)cp->id, want,
	       cp->has_mac && key[0] == '\0' ? " (mac not checked: no store.checkpoint_key)" : "");
	return CTL_OK;
}

static int verify_opts(struct ctl *c, int argc, char **argv, struct checkpoints *cps)
{
	static const struct option longopts[] = {
		{"checkpoint", required_argument, NULL, OPT_CHECKPOINT},
		{"checkpoints", required_argument, NULL, OPT_CHECKPOINTS},
		COMMON_OPTS,
	};
	bool handled;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(verify_usage, stdout);
			return -1;
		}
		r = common_opt(c, opt, argv, &handled);
		if (r == 0 && !handled)
			r = opt == OPT_CHECKPOINT ? checkpoint_add(c, cps, optarg, NULL)
						  : checkpoint_file(c, cps, optarg);
		if (r != 0)
			return r;
	}
	return no_operands(c, argc, argv);
}

static int cmd_verify(struct ctl *c, int argc, char **argv)
{
	struct checkpoints cps = {.list = calloc(MAX_CHECKPOINTS, sizeof(struct checkpoint))};
	int64_t checked = 0, bad = 0, t0;
	char why[256];
	int r;

	if (cps.list == NULL)
		return CTL_FAIL;
	r = verify_opts(c, argc, argv, &cps);
	if (r == 0)
		r = open_ro(c);
	if (r != 0) {
		free(cps.list);
		return r < 0 ? CTL_OK : r;
	}
	t0 = util_mono_ms();
	why[0] = '\0';
	r = store_verify(c->store, &checked, &bad, why, sizeof(why));
	if (r == 0)
		r = store_orphans(c->store, &bad, why, sizeof(why));
	if (r == -EBADMSG) {
		printf("verify: FAILED at event %lld: %s (%lld events before it are intact)\n",
		       (long long)bad, why, (long long)checked);
		r = CTL_FAIL;
	} else if (r < 0) {
		fail_line(c, "cannot read the events: %s", store_errmsg(c->store));
		r = CTL_FAIL;
	}
	for (size_t i = 0; i < cps.n && r == 0; i++)
		r = check_checkpoint(c, &cps.list[i], checked);
	free(cps.list);
	if (r != 0)
		return r;
	printf("verify: OK, %lld events checked, hash chain intact (%.2f s)\n", (long long)checked,
	       (double)(util_mono_ms() - t0) / 1000.0);
	return CTL_OK;
}

/* ---- replay ---- */

static const char replay_usage[] =
	"usage: komerce-hookctl replay EVENT_ID [--sink NAME]\n"
	"Queue the event for delivery again: one new pending outbox row for each configured\n"
	"sink (or the sinks it was queued for before, without a configuration), or only for\n"
	"NAME. A sink where the event is still pending is skipped. The only command that\n"
	"writes; it waits for the daemon's writer rather than stopping it.\n";

static int cmd_replay(struct ctl *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"sink", required_argument, NULL, OPT_SINK},
		COMMON_OPTS,
	};
	const char *sink = NULL;
	struct store_req req;
	long long event_id;
	bool handled;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(replay_usage, stdout);
			return CTL_OK;
		}
		r = common_opt(c, opt, argv, &handled);
		if (r != 0)
			return r;
		if (!handled)
			sink = optarg;
	}
	if (one_operand(c, argc, argv, "EVENT_ID") != 0)
		return CTL_USAGE;
	if (parse_long(c, "EVENT_ID", argv[optind], 1, &event_id) != 0)
		return CTL_USAGE;
	r = open_store(c, STORE_MODE_ADMIN, sink);
	if (r != 0)
		return r;
	/* The configuration's sinks were narrowed to --sink already; with --db alone the
	 * request names it (or the event's earlier sinks are used). */
	store_req_replay(&req, event_id, c->cfg == NULL ? sink : NULL, "komerce-hookctl");
	r = store_apply_now(c->store, &req);
	if (r == -ENOENT) {
		fail_line(c, "no event %lld", event_id);
		return CTL_FAIL;
	}
	if (r == -ENODATA) {
		fail_line(c, "event %lld was never queued for a sink; name one with --sink",
			  event_id);
		return CTL_FAIL;
	}
	if (r < 0) {
		fail_line(c, "replay: %s", store_errmsg(c->store));
		return CTL_FAIL;
	}
	if (req.changed == 0)
		printf("replay: event %lld is already pending for %s\n", event_id,
		       sink != NULL ? sink : "every sink");
	else
		printf("replay: event %lld queued for %zu sink%s\n", event_id, req.changed,
		       req.changed == 1 ? "" : "s");
	return CTL_OK;
}

/* ---- backup ---- */

static const char backup_usage[] =
	"usage: komerce-hookctl backup PATH\n"
	"Copy the database to PATH (which must not exist) with SQLite's online backup API: one\n"
	"consistent snapshot, taken while the daemon keeps writing. The copy is a single file\n"
	"(no -wal); check it with: komerce-hookctl --db PATH verify\n";

static int cmd_backup(struct ctl *c, int argc, char **argv)
{
	static const struct option longopts[] = {COMMON_OPTS};
	int64_t bytes = 0, t0;
	char err[512];
	bool handled;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(backup_usage, stdout);
			return CTL_OK;
		}
		r = common_opt(c, opt, argv, &handled);
		if (r != 0)
			return r;
	}
	if (one_operand(c, argc, argv, "PATH") != 0)
		return CTL_USAGE;
	r = open_ro(c);
	if (r != 0)
		return r;
	t0 = util_mono_ms();
	r = store_backup(c->store, argv[optind], &bytes, err, sizeof(err));
	if (r < 0) {
		fail_line(c, "%s", err);
		return r == -EEXIST ? CTL_USAGE : CTL_FAIL;
	}
	printf("backup: wrote %s (%lld bytes) in %.2f s\n", argv[optind], (long long)bytes,
	       (double)(util_mono_ms() - t0) / 1000.0);
	return CTL_OK;
}

/* ---- migrate-to ---- */

static const char migrate_usage[] =
	"usage: komerce-hookctl migrate-to URL\n"
	"Copy the whole store (the configured one, or --db PATH|URL) into the PostgreSQL database\n"
	"at URL (postgresql://USER@HOST:PORT/DB?...), which must hold no events yet: payments,\n"
	"events with their ids and hashes, receipts and the outbox, from one snapshot, in one\n"
	"transaction. The schema is created there if needed. Stop komerce-hookd first. The copy's\n"
	"hash chain is verified and its head compared with the source's before it reports OK.\n";

static void migrate_progress(void *arg, const char *table, int64_t rows)
{
	(void)arg;
	fprintf(stderr, "migrate-to: %s: %lld rows\n", table, (long long)rows);
}

static int grab_hash(void *arg, const struct store_event *e)
{
	memcpy(arg, e->hash, STORE_HASH_LEN);
	return 0;
}

/* The hash of event n (the chain's head when n events were copied). */
static int head_hash(struct store *s, int64_t n, uint8_t out[STORE_HASH_LEN])
{
	struct store_event_filter f = {.status = PAYMENT_UNKNOWN, .after_id = n - 1, .limit = 1};

	memset(out, 0, STORE_HASH_LEN);
	return n > 0 ? store_events_query(s, &f, grab_hash, out) : 0;
}

/* The copy's chain verifies, has as many events as were copied, and ends where the source's
 * ends; the source did not grow meanwhile. CTL_OK or CTL_FAIL (message printed). */
static int check_copy(struct ctl *c, struct store *dst, const int64_t rows[STORE_TABLES])
{
	uint8_t h_src[STORE_HASH_LEN], h_dst[STORE_HASH_LEN];
	int64_t checked = 0, bad = 0, n_src = -1;
	char why[256] = "", hex[2 * STORE_HASH_LEN + 1];
	int r;

	r = store_verify(dst, &checked, &bad, why, sizeof(why));
	if (r == 0)
		r = store_orphans(dst, &bad, why, sizeof(why));
	if (r < 0 || checked != rows[1]) {
		fail_line(c, "the copy does not verify: %s (event %lld, %lld checked of %lld)",
			  r == -EBADMSG ? why : store_errmsg(dst), (long long)bad,
			  (long long)checked, (long long)rows[1]);
		return CTL_FAIL;
	}
	if (store_count(c->store, "events", &n_src) < 0 ||
	    head_hash(c->store, rows[1], h_src) < 0 || head_hash(dst, rows[1], h_dst) < 0) {
		fail_line(c, "cannot read back: %s", store_errmsg(c->store));
		return CTL_FAIL;
	}
	if (memcmp(h_src, h_dst, STORE_HASH_LEN) != 0) {
		fail_line(c, "the copy's chain ends elsewhere than the source's");
		return CTL_FAIL;
	}
	if (n_src != rows[1]) {
		fail_line(c,
			  "the source has %lld events now, %lld were copied: komerce-hookd is "
			  "still running on it; stop it and copy again into an empty database",
			  (long long)n_src, (long long)rows[1]);
		return CTL_FAIL;
	}
	util_hex(h_dst, STORE_HASH_LEN, hex);
	printf("migrate-to: OK, hash chain verified: %lld events, head %.16s...\n",
	       (long long)checked, hex);
	return CTL_OK;
}

static int cmd_migrate_to(struct ctl *c, int argc, char **argv)
{
	static const struct option longopts[] = {COMMON_OPTS};
	struct store_opts so = {.backend = STORE_BACKEND_POSTGRESQL, .mode = STORE_MODE_WRITER};
	char err[512], shown[1024];
	struct store *dst = NULL;
	int64_t rows[STORE_TABLES] = {0};
	bool handled;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(migrate_usage, stdout);
			return CTL_OK;
		}
		r = common_opt(c, opt, argv, &handled);
		if (r != 0)
			return r;
	}
	if (one_operand(c, argc, argv, "URL") != 0)
		return CTL_USAGE;
	if (!is_url(argv[optind])) {
		fail_line(c, "URL: must be postgresql://USER@HOST:PORT/DB[?...]");
		return CTL_USAGE;
	}
	r = open_ro(c);
	if (r != 0)
		return r;
	so.url = argv[optind];
	so.instance = c->cfg != NULL ? c->cfg->instance : "komerce-hookctl";
	so.busy_timeout_ms = c->busy_timeout_ms;
	config_mask_url(so.url, shown, sizeof(shown));
	if (store_open(&so, &dst, err, sizeof(err)) < 0) {
		fail_line(c, "%s: %s", shown, err);
		return CTL_FAIL;
	}
	r = store_copy(c->store, dst, migrate_progress, NULL, rows, err, sizeof(err));
	if (r < 0) {
		fail_line(c, "%s: %s", shown, err);
		store_close(dst);
		return CTL_FAIL;
	}
	printf("migrate-to: copied %lld payments, %lld events, %lld receipts, %lld outbox rows, "
	       "%lld polls to %s\n",
	       (long long)rows[0], (long long)rows[1], (long long)rows[2], (long long)rows[3],
	       (long long)rows[4], shown);
	r = check_copy(c, dst, rows);
	store_close(dst);
	return r;
}

/* ---- main ---- */

static const struct command {
	const char *name;
	int (*run)(struct ctl *c, int argc, char **argv);
	const char *summary;
} commands[] = {
	{"events", cmd_events, "list events (filters; --format table|json|jsonl|csv)"},
	{"payments", cmd_payments, "list payments (--status S, --stale)"},
	{"outbox", cmd_outbox, "list the delivery backlog (--dead: dead letters)"},
	{"stats", cmd_stats, "counts by status and source, reconciled, conflicts, backlog"},
	{"verify", cmd_verify,
	 "check the hash chain (and published checkpoints); exit 1 naming the first bad row"},
	{"replay", cmd_replay, "queue an event for delivery again: replay EVENT_ID"},
	{"backup", cmd_backup, "consistent copy of the live database: backup PATH"},
	{"migrate-to", cmd_migrate_to, "copy the store into PostgreSQL: migrate-to URL"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: komerce-hookctl [-c CONF | --db PATH|URL] COMMAND [OPTIONS]\n"
		   "Audit and operate a komerce-hookd event store. Every command but replay opens "
		   "the\ndatabase read-only and is safe while the daemon runs.\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\noptions (also accepted after COMMAND):\n"
		   "  -c, --config PATH  configuration (default " DEFAULT_CONFIG ")\n"
		   "      --db PATH|URL  the SQLite file or PostgreSQL URL; the configuration "
		   "becomes\n"
		   "                     optional\n"
		   "  -h, --help         this help; COMMAND --help for the command's options\n"
		   "      --version      print the version\n"
		   "\nexit status: 0 ok, 1 failure (tampering found, storage error), 2 usage "
		   "error\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"version", no_argument, NULL, OPT_VERSION},
		COMMON_OPTS,
	};
	struct ctl c = {.config_path = DEFAULT_CONFIG, .busy_timeout_ms = 5000};
	const struct command *cmd = NULL;
	bool handled;
	int opt, r;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+:c:h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			usage(stdout);
			return CTL_OK;
		}
		if (opt == OPT_VERSION) {
			printf("komerce-hookctl %s\n", HOOKD_VERSION);
			return CTL_OK;
		}
		r = common_opt(&c, opt, argv, &handled);
		if (r != 0)
			return r;
	}
	if (optind >= argc) {
		fail_line(&c, "missing COMMAND (see --help)");
		return CTL_USAGE;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[optind], commands[i].name) == 0)
			cmd = &commands[i];
	}
	if (cmd == NULL) {
		fail_line(&c, "unknown command '%s' (see --help)", argv[optind]);
		return CTL_USAGE;
	}
	c.cmd = cmd->name;
	argc -= optind;
	argv += optind;
	optind = 0; /* glibc: restart the scan for the command's options */
	r = cmd->run(&c, argc, argv);
	store_close(c.store);
	config_free(c.cfg);
	if (fflush(stdout) != 0 && r == CTL_OK) {
		fail_line(&c, "cannot write the output");
		r = CTL_FAIL;
	}
	return r;
}
