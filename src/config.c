/* Configuration loading. Every key is one row of key_table (section, name, type, offset,
 * default, limits), so adding a key is one line; [sink.NAME] sections use sink_table the same
 * way. Called by main at start-up and by komerce-hookctl; pure (no logging). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "log.h"
#include "sink_sign.h"
#include "util.h"

#define SECRET_FILE_LIMIT (64 * 1024)
/* Where the systemd unit loads the secrets from (systemd/komerce-hookd.service). */
#define SECRETS_DIR "/etc/komerce-hookd/secrets"

enum key_type {
	KEY_STR,
	KEY_SECRET,	 /* string that may also come from NAME_file / credentials; never echoed */
	KEY_SECRET_LIST, /* secret, comma-separated; repeated lines in the file add to it */
	KEY_INT,
	KEY_BOOL,
	KEY_DOUBLE,
	KEY_AUTH,
	KEY_SYNC,
	KEY_LOGLEVEL,
	KEY_SINKTYPE,
	KEY_SIGSCHEME,
	KEY_BACKEND,
};

struct key_def {
	const char *section;
	const char *name;
	enum key_type type;
	size_t off;
	const char *def;
	long min, max;
};

#define C(field) offsetof(struct config, field)
static const struct key_def key_table[] = {
	{"server", "listen", KEY_STR, C(listen), "127.0.0.1:8080", 0, 0},
	{"server", "callback_path", KEY_STR, C(callback_path), "/v1/komerce/callback", 0, 0},
	{"server", "max_body", KEY_INT, C(max_body), "65536", 1024, 16 * 1024 * 1024},
	{"server", "max_connections", KEY_INT, C(max_connections), "1024", 1, 65536},
	{"server", "connection_timeout", KEY_INT, C(connection_timeout), "10", 1, 3600},
	{"server", "request_timeout", KEY_INT, C(request_timeout), "10", 0, 3600},
	{"server", "keep_alive", KEY_BOOL, C(keep_alive), "false", 0, 0},
	{"server", "max_connections_per_ip", KEY_INT, C(max_connections_per_ip), "64", 0, 65536},
	{"server", "threads", KEY_INT, C(threads), "0", 0, 64},
	{"server", "trusted_proxies", KEY_STR, C(trusted_proxies), "", 0, 0},
	{"server", "drain_timeout", KEY_INT, C(drain_timeout), "10", 0, 300},
	{"server", "auth_failure_burst", KEY_INT, C(auth_failure_burst), "20", 1, 100000},
	{"server", "auth_failure_rate", KEY_DOUBLE, C(auth_failure_rate), "1", 0, 10000},
	{"admin", "listen", KEY_STR, C(admin_listen), "127.0.0.1:8081", 0, 0},
	{"admin", "token", KEY_SECRET, C(admin_token), "", 0, 0},
	{"admin", "max_connections", KEY_INT, C(admin_max_connections), "64", 1, 1024},
	{"komerce", "base_url", KEY_STR, C(base_url),
	 "https://api-sandbox.collaborator.komerce.id/user", 0, 0},
	{"komerce", "api_key", KEY_SECRET, C(api_key), "", 0, 0},
	{"komerce", "callback_keys", KEY_SECRET_LIST, C(callback_keys), "", 0, 0},
	{"komerce", "callback_auth", KEY_AUTH, C(callback_auth), "hmac", 0, 0},
	{"komerce", "callback_url", KEY_STR, C(callback_url), "", 0, 0},
	{"komerce", "timeout_ms", KEY_INT, C(timeout_ms), "10000", 100, 120000},
	{"komerce", "connect_timeout_ms", KEY_INT, C(connect_timeout_ms), "3000", 100, 60000},
	{"komerce", "confirm_paid", KEY_BOOL, C(confirm_paid), "true", 0, 0},
	{"store", "backend", KEY_BACKEND, C(store_backend), "sqlite", 0, 0},
	{"store", "path", KEY_STR, C(store_path), "/var/lib/komerce-hookd/events.db", 0, 0},
	{"store", "url", KEY_SECRET, C(store_url), "", 0, 0},
	{"store", "synchronous", KEY_SYNC, C(synchronous_full), "full", 0, 0},
	{"store", "busy_timeout_ms", KEY_INT, C(busy_timeout_ms), "5000", 0, 600000},
	{"store", "batch_max", KEY_INT, C(batch_max), "512", 1, 65536},
	{"store", "queue_max", KEY_INT, C(queue_max), "65536", 1, 1048576},
	{"store", "retention_days", KEY_INT, C(retention_days), "0", 0, 36500},
	{"store", "checkpoint_interval", KEY_INT, C(checkpoint_interval), "15", 0, 10080},
	{"store", "checkpoint_key", KEY_SECRET, C(checkpoint_key), "", 0, 0},
	{"cluster", "instance", KEY_STR, C(instance), "", 0, 0},
	{"reconcile", "enabled", KEY_BOOL, C(reconcile_enabled), "true", 0, 0},
	{"reconcile", "grace_seconds", KEY_INT, C(grace_seconds), "60", 0, 86400},
	{"reconcile", "max_requests_per_second", KEY_DOUBLE, C(max_requests_per_second), "5", 0,
	 1000},
	{"reconcile", "min_interval_seconds", KEY_INT, C(min_interval_seconds), "3", 3, 86400},
	{"reconcile", "max_in_flight", KEY_INT, C(max_in_flight), "16", 1, 256},
	{"reconcile", "breaker_failures", KEY_INT, C(breaker_failures), "5", 1, 1000},
	{"reconcile", "breaker_open_seconds", KEY_INT, C(breaker_open_seconds), "10", 1, 3600},
	{"reconcile", "breaker_max_open_seconds", KEY_INT, C(breaker_max_open_seconds), "300", 1,
	 86400},
	{"reconcile", "give_up_after_expiry_seconds", KEY_INT, C(give_up_after_expiry_seconds),
	 "86400", 60, 90 * 86400},
	{"reconcile", "give_up_unknown_expiry_seconds", KEY_INT, C(give_up_unknown_expiry_seconds),
	 "604800", 3600, 365 * 86400},
	{"log", "level", KEY_LOGLEVEL, C(log_level), "info", 0, 0},
};
#undef C

#define S(field) offsetof(struct config_sink, field)
static const struct key_def sink_table[] = {
	{"sink", "type", KEY_SINKTYPE, S(type), "http", 0, 0},
	{"sink", "url", KEY_STR, S(url), "", 0, 0},
	{"sink", "secret", KEY_SECRET, S(secret), "", 0, 0},
	{"sink", "signature", KEY_SIGSCHEME, S(signature), "standardwebhooks", 0, 0},
	{"sink", "stream", KEY_STR, S(stream), "komerce-hookd", 0, 0},
	{"sink", "max_attempts", KEY_INT, S(max_attempts), "12", 1, 1000},
	{"sink", "maxlen", KEY_INT, S(maxlen), "0", 0, 1000000000},
	{"sink", "timeout_ms", KEY_INT, S(timeout_ms), "5000", 100, 120000},
	{"sink", "backlog_warn", KEY_INT, S(backlog_warn), "10000", 1, 1000000000},
	{"sink", "conflicts", KEY_BOOL, S(conflicts), "false", 0, 0},
	{"sink", "batch", KEY_INT, S(batch), "256", 1, 10000},
	{"sink", "parallel", KEY_INT, S(parallel), "8", 1, 64},
};
#undef S

#define N_KEYS	    (sizeof(key_table) / sizeof(key_table[0]))
#define N_SINK_KEYS (sizeof(sink_table) / sizeof(sink_table[0]))

struct load_ctx {
	struct config *c;
	char *err;
	size_t err_len;
	int error;
	bool in_file;	/* applying the INI file (not defaults or overrides) */
	bool list_seen; /* the file already set the list key */
};

static int fail(struct load_ctx *x, int error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct load_ctx *x, int error, const char *fmt, ...)
{
	va_list ap;

	if (x->error != 0)
		return x->error; /* keep the first error */
	va_start(ap, fmt);
	vsnprintf(x->err, x->err_len, fmt, ap);
	va_end(ap);
	x->error = error;
	return error;
}

static int set_string(char **slot, const char *value)
{
	char *copy = strdup(value);

	if (copy == NULL)
		return -ENOMEM;
	free(*slot);
	*slot = copy;
	return 0;
}

/* Appends a further line of a list key (inih reads at most 200 bytes a line: long key lists
 * take several lines). */
static int append_list(struct load_ctx *x, char **sp, const char *value)
{
	size_t a = strlen(*sp), b = strlen(value);
	char *joined = malloc(a + b + 2);

	if (joined == NULL)
		return fail(x, -ENOMEM, "config: out of memory");
	memcpy(joined, *sp, a);
	joined[a] = ',';
	memcpy(joined + a + 1, value, b + 1);
	explicit_bzero(*sp, a);
	free(*sp);
	*sp = joined;
	return 0;
}

static int set_number(struct load_ctx *x, const char *section, const struct key_def *k, char *slot,
		      const char *value)
{
	char *end;

	errno = 0;
	if (k->type == KEY_INT) {
		long v = strtol(value, &end, 10);

		if (errno != 0 || end == value || *end != '\0' || v < k->min || v > k->max)
			return fail(x, -EINVAL, "config: %s.%s: must be an integer from %ld to %ld",
				    section, k->name, k->min, k->max);
		*(long *)(void *)slot = v;
		return 0;
	}
	double v = strtod(value, &end);

	if (errno != 0 || end == value || *end != '\0' || !(v > (double)k->min) ||
	    v > (double)k->max)
		return fail(x, -EINVAL, "config: %s.%s: must be a number above %ld and at most %ld",
			    section, k->name, k->min, k->max);
	*(double *)(void *)slot = v;
	return 0;
}

/* The words an enumerated key accepts (case-insensitive) and what each means. */
struct word {
	const char *name;
	int value;
};

static const struct word bool_words[] = {{"true", 1}, {"yes", 1},   {"1", 1},
					 {"on", 1},   {"false", 0}, {"no", 0},
					 {"0", 0},    {"off", 0},   {NULL, 0}};
static const struct word auth_words[] = {
	{"hmac", CONFIG_AUTH_HMAC}, {"plain", CONFIG_AUTH_PLAIN}, {NULL, 0}};
static const struct word sync_words[] = {{"full", 1}, {"normal", 0}, {NULL, 0}};
static const struct word sink_words[] = {
	{"http", CONFIG_SINK_HTTP}, {"redis", CONFIG_SINK_REDIS}, {NULL, 0}};
static const struct word sigscheme_words[] = {
	{"standardwebhooks", SINK_SIGN_STANDARD}, {"hookd", SINK_SIGN_HOOKD}, {NULL, 0}};
static const struct word backend_words[] = {
	{"sqlite", CONFIG_STORE_SQLITE}, {"postgresql", CONFIG_STORE_POSTGRESQL}, {NULL, 0}};

/* Booleans (KEY_BOOL, KEY_SYNC) are stored as bool, the other words as int. */
static int set_word(struct load_ctx *x, const char *section, const struct key_def *k, char *slot,
		    const char *value)
{
	const struct word *w = k->type == KEY_BOOL	  ? bool_words
			       : k->type == KEY_AUTH	  ? auth_words
			       : k->type == KEY_SYNC	  ? sync_words
			       : k->type == KEY_SIGSCHEME ? sigscheme_words
			       : k->type == KEY_BACKEND	  ? backend_words
							  : sink_words;
	const char *expect = k->type == KEY_BOOL	? "true or false"
			     : k->type == KEY_AUTH	? "hmac or plain"
			     : k->type == KEY_SYNC	? "full or normal"
			     : k->type == KEY_SIGSCHEME ? "standardwebhooks or hookd"
			     : k->type == KEY_BACKEND	? "sqlite or postgresql"
							: "http or redis";

	for (; w->name != NULL; w++) {
		if (strcasecmp(value, w->name) != 0)
			continue;
		if (k->type == KEY_BOOL || k->type == KEY_SYNC)
			*(bool *)(void *)slot = w->value != 0;
		else
			*(int *)(void *)slot = w->value;
		return 0;
	}
	return fail(x, -EINVAL, "config: %s.%s: must be %s", section, k->name, expect);
}

/* Sets one key of base (a struct config or a struct config_sink) from its text form. */
static int set_value(struct load_ctx *x, const char *section, const struct key_def *k, void *base,
		     const char *value)
{
	char *slot = (char *)base + k->off;
	int prio;

	switch (k->type) {
	case KEY_SECRET_LIST:
		if (x->in_file && x->list_seen)
			return append_list(x, (char **)(void *)slot, value);
		if (x->in_file)
			x->list_seen = true;
		/* fall through */
	case KEY_STR:
	case KEY_SECRET:
		if (set_string((char **)(void *)slot, value) < 0)
			return fail(x, -ENOMEM, "config: out of memory");
		return 0;
	case KEY_INT:
	case KEY_DOUBLE:
		return set_number(x, section, k, slot, value);
	case KEY_BOOL:
	case KEY_AUTH:
	case KEY_SYNC:
	case KEY_SINKTYPE:
	case KEY_SIGSCHEME:
	case KEY_BACKEND:
		return set_word(x, section, k, slot, value);
	case KEY_LOGLEVEL:
		prio = log_level_parse(value);
		if (prio < 0)
			return fail(x, -EINVAL,
				    "config: %s.%s: must be err, warning, notice, info or debug",
				    section, k->name);
		*(int *)(void *)slot = prio;
		return 0;
	}
	return fail(x, -EINVAL, "config: %s.%s: internal error", section, k->name);
}

static int set_from_file(struct load_ctx *x, const char *section, const struct key_def *k,
			 void *base, const char *path)
{
	char *content = NULL;
	int r;

	r = util_read_file(path, SECRET_FILE_LIMIT, &content);
	if (r < 0)
		return fail(x, -EINVAL, "config: %s.%s: cannot read secret file \"%s\": %s",
			    section, k->name, path,
			    r == -ENOENT   ? "no such file"
			    : r == -EACCES ? "permission denied"
			    : r == -EFBIG  ? "too large"
					   : "read error");
	r = set_value(x, section, k, base, content);
	explicit_bzero(content, strlen(content));
	free(content);
	return r;
}

static const struct key_def *find_key(const struct key_def *table, size_t n, const char *section,
				      const char *name, bool *ret_is_file)
{
	size_t len = strlen(name);

	*ret_is_file = false;
	for (size_t i = 0; i < n; i++) {
		if (section != NULL && strcmp(table[i].section, section) != 0)
			continue;
		if (strcmp(table[i].name, name) == 0)
			return &table[i];
		if ((table[i].type == KEY_SECRET || table[i].type == KEY_SECRET_LIST) &&
		    len == strlen(table[i].name) + 5 &&
		    strncmp(name, table[i].name, len - 5) == 0 &&
		    strcmp(name + len - 5, "_file") == 0) {
			*ret_is_file = true;
			return &table[i];
		}
	}
	return NULL;
}

static bool valid_sink_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len >= sizeof(((struct config_sink *)0)->name))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '-')
			return false;
	return true;
}

static struct config_sink *sink_get(struct load_ctx *x, const char *name, bool create)
{
	struct config *c = x->c;
	struct config_sink *s;

	for (size_t i = 0; i < c->n_sinks; i++)
		if (strcmp(c->sinks[i].name, name) == 0)
			return &c->sinks[i];
	if (!create)
		return NULL;
	if (!valid_sink_name(name)) {
		fail(x, -EINVAL, "config: [sink.%.40s]: name must be 1-31 letters, digits, - or _",
		     name);
		return NULL;
	}
	if (c->n_sinks == CONFIG_MAX_SINKS) {
		fail(x, -EINVAL, "config: [sink.%s]: at most %d sinks", name, CONFIG_MAX_SINKS);
		return NULL;
	}
	s = &c->sinks[c->n_sinks++];
	memset(s, 0, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", name);
	for (size_t i = 0; i < N_SINK_KEYS; i++)
		if (set_value(x, "sink", &sink_table[i], s, sink_table[i].def) < 0)
			return NULL;
	return s;
}

static int on_ini_key(void *user, const char *section, const char *name, const char *value)
{
	struct load_ctx *x = user;
	const struct key_def *k;
	bool is_file;
	void *base = x->c;
	char sect[64];

	if (x->error != 0)
		return 0;
	if (name == NULL) /* new section with INI_CALL_HANDLER_ON_NEW_SECTION */
		return 1;
	if (strncmp(section, "sink.", 5) == 0) {
		base = sink_get(x, section + 5, true);
		if (base == NULL)
			return 0;
		k = find_key(sink_table, N_SINK_KEYS, NULL, name, &is_file);
	} else {
		k = find_key(key_table, N_KEYS, section, name, &is_file);
	}
	snprintf(sect, sizeof(sect), "%s", section);
	if (k == NULL) {
		fail(x, -EINVAL, "config: unknown key %.60s.%.60s", section, name);
		return 0;
	}
	if (is_file)
		return set_from_file(x, sect, k, base, value) == 0;
	return set_value(x, sect, k, base, value) == 0;
}

/* Length of line n (1-based) of the file or text, for a useful error message. */
static size_t line_length(const char *path, const char *text, int n)
{
	size_t len = 0;
	int line = 1, c;
	FILE *f = path != NULL ? fopen(path, "re") : NULL;

	if (path != NULL && f == NULL)
		return 0;
	for (size_t i = 0;; i++) {
		c = f != NULL ? fgetc(f) : (unsigned char)text[i];
		if (c == EOF || c == '\0' || (c == '\n' && line == n))
			break;
		if (c == '\n')
			line++;
		else if (line == n)
			len++;
	}
	if (f != NULL)
		fclose(f);
	return len;
}

static int accept_any(void *user, const char *section, const char *name, const char *value)
{
	(void)user;
	(void)section;
	(void)name;
	(void)value;
	return 1;
}

static const char *env_get(char *const *envp, const char *name)
{
	size_t len = strlen(name);

	if (envp == NULL)
		return NULL;
	for (; *envp != NULL; envp++)
		if (strncmp(*envp, name, len) == 0 && (*envp)[len] == '=')
			return *envp + len + 1;
	return NULL;
}

static void env_name(char *out, size_t n, const char *section, const char *key, const char *suffix)
{
	size_t o;

	snprintf(out, n, "KOMERCE_HOOKD_%s_%s%s", section, key, suffix);
	for (o = 0; out[o] != '\0'; o++) {
		unsigned char ch = (unsigned char)out[o];

		out[o] = isalnum(ch) ? (char)toupper(ch) : '_';
	}
}

/* The unit loads the directory /etc/komerce-hookd/secrets as a whole (LoadCredential=
 * secrets:DIR), so its file F arrives as the credential secrets_F. These are the file names of
 * the main secrets (and of the PostgreSQL URL); a sink's secret is the file sink.NAME.secret. */
static const struct {
	const char *key, *file;
} secret_files[] = {
	{"komerce.api_key", "api_key"}, {"komerce.callback_keys", "callback_keys"},
	{"admin.token", "admin_token"}, {"store.checkpoint_key", "checkpoint_key"},
	{"store.url", "store_url"},
};

static bool readable(const char *path)
{
	FILE *f = fopen(path, "re");

	if (f == NULL)
		return false;
	fclose(f);
	return true;
}

/* The credential that holds secret sect.name, if any: "<sect>.<name>" (one LoadCredential= per
 * secret, as in a drop-in) first, then "secrets_<file>" (the whole directory). Fills path. */
static bool find_credential(const char *creds, const char *sect, const char *name, char *path,
			    size_t n)
{
	char key[128];
	const char *file = key;

	snprintf(key, sizeof(key), "%s.%s", sect, name);
	snprintf(path, n, "%s/%s", creds, key);
	if (readable(path))
		return true;
	for (size_t i = 0; i < sizeof(secret_files) / sizeof(secret_files[0]); i++)
		if (strcmp(secret_files[i].key, key) == 0)
			file = secret_files[i].file;
	snprintf(path, n, "%s/secrets_%s", creds, file);
	return readable(path);
}

/* Credentials, then environment, for the keys of one table applied to base. */
static int apply_overrides(struct load_ctx *x, const struct key_def *table, size_t n, void *base,
			   const char *section, char *const *envp)
{
	const char *creds = env_get(envp, "CREDENTIALS_DIRECTORY");

	for (size_t i = 0; i < n && x->error == 0; i++) {
		const struct key_def *k = &table[i];
		const char *sect = section != NULL ? section : k->section;
		char name[160];
		const char *v;

		if ((k->type == KEY_SECRET || k->type == KEY_SECRET_LIST) && creds != NULL &&
		    *creds != '\0') {
			char path[PATH_MAX];

			if (find_credential(creds, sect, k->name, path, sizeof(path)))
				set_from_file(x, sect, k, base, path);
		}
		env_name(name, sizeof(name), sect, k->name, "");
		v = env_get(envp, name);
		if (v != NULL)
			set_value(x, sect, k, base, v);
		if (k->type == KEY_SECRET || k->type == KEY_SECRET_LIST) {
			env_name(name, sizeof(name), sect, k->name, "_FILE");
			v = env_get(envp, name);
			if (v != NULL)
				set_from_file(x, sect, k, base, v);
		}
	}
	return x->error;
}

static bool is_http_url(const char *s)
{
	return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

static int split_keys(struct load_ctx *x)
{
	struct config *c = x->c;
	char *p;

	free(c->keys_buf);
	c->keys_buf = strdup(c->callback_keys);
	c->n_keys = 0;
	if (c->keys_buf == NULL)
		return fail(x, -ENOMEM, "config: out of memory");
	p = c->keys_buf;
	while (p != NULL) {
		char *comma = strchr(p, ',');
		char *start = p, *end;

		if (comma != NULL)
			*comma = '\0';
		p = comma != NULL ? comma + 1 : NULL;
		while (isspace((unsigned char)*start))
			start++;
		end = start + strlen(start);
		while (end > start && isspace((unsigned char)end[-1]))
			*--end = '\0';
		if (*start == '\0')
			continue;
		if (c->n_keys == CONFIG_MAX_KEYS)
			return fail(x, -EINVAL, "config: komerce.callback_keys: at most %d keys",
				    CONFIG_MAX_KEYS);
		if (end - start < 16)
			return fail(
				x, -EINVAL,
				"config: komerce.callback_keys: each key needs 16 characters or "
				"more");
		c->keys[c->n_keys] = start;
		c->key_lens[c->n_keys] = (size_t)(end - start);
		c->n_keys++;
	}
	return 0;
}

static int check_listen(struct load_ctx *x, const char *key, const char *value)
{
	char host[256];
	unsigned port;

	if (config_split_listen(value, host, sizeof(host), &port) < 0)
		return fail(x, -EINVAL, "config: %s: must be HOST:PORT or [IPv6]:PORT", key);
	return 0;
}

/* The reconciler's keys that depend on each other. */
static int validate_reconcile(struct load_ctx *x)
{
	struct config *c = x->c;

	if (c->breaker_max_open_seconds < c->breaker_open_seconds)
		return fail(x, -EINVAL,
			    "config: reconcile.breaker_max_open_seconds: must be at least "
			    "reconcile.breaker_open_seconds (%ld)",
			    c->breaker_open_seconds);
	return 0;
}

static bool valid_instance(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len >= CONFIG_INSTANCE_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)name[i]) && strchr("._-", name[i]) == NULL)
			return false;
	return true;
}

/* [store] for the chosen backend, and [cluster] instance (the host name by default, cut at
 * its first dot and at the length limit). */
static int check_store(struct load_ctx *x)
{
	struct config *c = x->c;

	if (c->store_backend == CONFIG_STORE_SQLITE && c->store_path[0] == '\0')
		return fail(x, -EINVAL, "config: store.path: must not be empty");
	if (c->store_backend == CONFIG_STORE_POSTGRESQL) {
		if (c->store_url[0] == '\0' && !c->secrets_optional)
			return fail(x, -EINVAL,
				    "config: store.url: missing for backend = postgresql (set it "
				    "in the file, store.url_file, KOMERCE_HOOKD_STORE_URL or "
				    "credential store.url; the unit reads " SECRETS_DIR
				    "/store_url)");
		if (c->store_url[0] != '\0' && strncmp(c->store_url, "postgresql://", 13) != 0 &&
		    strncmp(c->store_url, "postgres://", 11) != 0)
			return fail(x, -EINVAL,
				    "config: store.url: must be a libpq URI, "
				    "postgresql://USER@HOST:PORT/DB[?...]");
	}
	if (c->instance[0] == '\0') {
		char host[256] = "";

		if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == '\0')
			snprintf(host, sizeof(host), "localhost");
		host[strcspn(host, ".")] = '\0';
		host[CONFIG_INSTANCE_MAX - 1] = '\0';
		if (set_string(&c->instance, host) < 0)
			return fail(x, -ENOMEM, "config: out of memory");
	}
	if (!valid_instance(c->instance))
		return fail(x, -EINVAL,
			    "config: cluster.instance: must be 1-63 letters, digits, '.', '-' or "
			    "'_'");
	return 0;
}

static int validate(struct load_ctx *x)
{
	struct config *c = x->c;

	if (x->error != 0)
		return x->error;
	if (check_listen(x, "server.listen", c->listen) < 0 ||
	    check_listen(x, "admin.listen", c->admin_listen) < 0)
		return x->error;
	{
		char why[128];

		if (netaddr_list_parse(c->trusted_proxies, &c->proxies, why, sizeof(why)) < 0)
			return fail(x, -EINVAL, "config: server.trusted_proxies: %s", why);
	}
	if (c->callback_path[0] != '/' || strpbrk(c->callback_path, " ?#") != NULL)
		return fail(x, -EINVAL,
			    "config: server.callback_path: must start with / and have no query");
	if (!is_http_url(c->base_url))
		return fail(x, -EINVAL,
			    "config: komerce.base_url: must start with http:// or https://");
	if (c->callback_url[0] != '\0' && !is_http_url(c->callback_url))
		return fail(x, -EINVAL,
			    "config: komerce.callback_url: must start with http:// or https://");
	if (split_keys(x) < 0)
		return x->error;
	if (c->n_keys == 0 && !c->secrets_optional)
		return fail(
			x, -EINVAL,
			"config: komerce.callback_keys: missing (set it in the file, "
			"KOMERCE_HOOKD_KOMERCE_CALLBACK_KEYS or credential komerce.callback_keys; "
			"the unit reads " SECRETS_DIR "/callback_keys)");
	if (strlen(c->admin_token) < 16 && !(c->secrets_optional && c->admin_token[0] == '\0'))
		return fail(
			x, -EINVAL,
			"config: admin.token: missing or shorter than 16 characters (set it in "
			"the file, KOMERCE_HOOKD_ADMIN_TOKEN or credential admin.token; the unit "
			"reads " SECRETS_DIR "/admin_token)");
	if (c->api_key[0] == '\0' && !c->secrets_optional)
		return fail(x, -EINVAL,
			    "config: komerce.api_key: missing (set it in the file, "
			    "KOMERCE_HOOKD_KOMERCE_API_KEY or credential komerce.api_key; the unit "
			    "reads " SECRETS_DIR "/api_key)");
	if (check_store(x) < 0)
		return x->error;
	if (c->checkpoint_key[0] != '\0' && strlen(c->checkpoint_key) < 16)
		return fail(x, -EINVAL,
			    "config: store.checkpoint_key: shorter than 16 characters (the unit "
			    "reads " SECRETS_DIR "/checkpoint_key)");
	if (validate_reconcile(x) < 0)
		return x->error;
	for (size_t i = 0; i < c->n_sinks; i++) {
		struct config_sink *s = &c->sinks[i];

		if (s->type == CONFIG_SINK_HTTP) {
			if (!is_http_url(s->url))
				return fail(
					x, -EINVAL,
					"config: sink.%s.url: must start with http:// or https://",
					s->name);
			if (strlen(s->secret) < 16 &&
			    !(c->secrets_optional && s->secret[0] == '\0'))
				return fail(x, -EINVAL,
					    "config: sink.%s.secret: missing or shorter than 16 "
					    "characters",
					    s->name);
			if (s->signature == SINK_SIGN_STANDARD && s->secret[0] != '\0') {
				struct sink_sign_keys keys;
				char why[128];
				int r = sink_sign_keys_parse(s->secret, &keys, why, sizeof(why));

				sink_sign_keys_clear(&keys);
				if (r < 0)
					return fail(x, -EINVAL, "config: sink.%s.secret: %s",
						    s->name, why);
			}
		} else {
			if (strncmp(s->url, "redis://", 8) != 0)
				return fail(x, -EINVAL,
					    "config: sink.%s.url: must be redis://HOST:PORT[/DB]",
					    s->name);
			if (s->stream[0] == '\0')
				return fail(x, -EINVAL, "config: sink.%s.stream: must not be empty",
					    s->name);
		}
	}
	return 0;
}

static int load(struct config *c, const char *path, const char *text, char *const *envp, char *err,
		size_t err_len)
{
	struct load_ctx x = {.c = c, .err = err, .err_len = err_len};
	int r;

	err[0] = '\0';
	if (path != NULL) {
		FILE *f = fopen(path, "re");

		if (f == NULL) {
			r = -errno;
			snprintf(err, err_len, "config: cannot open %s: %s", path,
				 r == -ENOENT	? "no such file"
				 : r == -EACCES ? "permission denied"
						: "open failed");
			return r;
		}
		/* First pass: syntax only, so that a syntax error is reported before the keys
		 * after it (inih reports the first bad line but keeps calling the handler). */
		r = ini_parse_file(f, accept_any, NULL);
		if (r == 0) {
			rewind(f);
			x.in_file = true;
			r = ini_parse_file(f, on_ini_key, &x);
		}
		fclose(f);
	} else {
		r = ini_parse_string(text, accept_any, NULL);
		if (r == 0) {
			x.in_file = true;
			r = ini_parse_string(text, on_ini_key, &x);
		}
	}
	x.in_file = false;
	if (x.error != 0)
		return x.error;
	if (r > 0) {
		/* inih counts the rest of an over-long line as the next line. */
		if (r > 1 && line_length(path, text, r - 1) >= 199)
			r--;
		if (line_length(path, text, r) >= 199)
			return fail(&x, -EINVAL,
				    "config: line %d is longer than 199 characters (split a long "
				    "callback_keys list over several callback_keys lines, or use "
				    "callback_keys_file)",
				    r);
		return fail(&x, -EINVAL, "config: syntax error on line %d", r);
	}
	if (r < 0)
		return fail(&x, -EIO, "config: cannot read the file");
	apply_overrides(&x, key_table, N_KEYS, c, NULL, envp);
	for (size_t i = 0; i < c->n_sinks && x.error == 0; i++) {
		char section[64];

		snprintf(section, sizeof(section), "sink.%s", c->sinks[i].name);
		apply_overrides(&x, sink_table, N_SINK_KEYS, &c->sinks[i], section, envp);
	}
	return validate(&x);
}

int config_load_file(struct config *c, const char *path, char *const *envp, char *err,
		     size_t err_len)
{
	return load(c, path, NULL, envp, err, err_len);
}

int config_load_string(struct config *c, const char *text, char *const *envp, char *err,
		       size_t err_len)
{
	return load(c, NULL, text, envp, err, err_len);
}

struct config *config_new(void)
{
	struct config *c = calloc(1, sizeof(*c));
	char err[CONFIG_ERR_LEN];
	struct load_ctx x = {.c = c, .err = err, .err_len = sizeof(err)};

	if (c == NULL)
		return NULL;
	for (size_t i = 0; i < N_KEYS; i++) {
		if (set_value(&x, key_table[i].section, &key_table[i], c, key_table[i].def) < 0) {
			config_free(c);
			return NULL;
		}
	}
	return c;
}

static void free_secret(char *s)
{
	if (s != NULL) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

void config_free(struct config *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < N_KEYS; i++) {
		if (key_table[i].type == KEY_STR)
			free(*(char **)(void *)((char *)c + key_table[i].off));
		else if (key_table[i].type == KEY_SECRET || key_table[i].type == KEY_SECRET_LIST)
			free_secret(*(char **)(void *)((char *)c + key_table[i].off));
	}
	for (size_t s = 0; s < c->n_sinks; s++) {
		for (size_t i = 0; i < N_SINK_KEYS; i++) {
			char **slot = (char **)(void *)((char *)&c->sinks[s] + sink_table[i].off);

			if (sink_table[i].type == KEY_STR)
				free(*slot);
			else if (sink_table[i].type == KEY_SECRET)
				free_secret(*slot);
		}
	}
	free_secret(c->keys_buf);
	free(c);
}

int config_split_listen(const char *listen, char *host, size_t host_len, unsigned *port)
{
	const char *colon, *hs = listen, *he;
	char *end;
	long p;

	if (listen[0] == '[') {
		he = strchr(listen, ']');
		if (he == NULL || he[1] != ':')
			return -EINVAL;
		hs = listen + 1;
		colon = he + 1;
	} else {
		colon = strrchr(listen, ':');
		if (colon == NULL)
			return -EINVAL;
		he = colon;
	}
	if (he == hs || (size_t)(he - hs) >= host_len)
		return -EINVAL;
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno != 0 || end == colon + 1 || *end != '\0' || p < 0 || p > 65535)
		return -EINVAL;
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	*port = (unsigned)p;
	return 0;
}

const char *config_store_backend_name(int backend)
{
	return backend == CONFIG_STORE_POSTGRESQL ? "postgresql" : "sqlite";
}

/* Appends src[0, len) to out at *o, cut to fit. */
static void put_n(char *out, size_t n, size_t *o, const char *src, size_t len)
{
	if (*o + 1 >= n)
		return;
	if (len > n - 1 - *o)
		len = n - 1 - *o;
	memcpy(out + *o, src, len);
	*o += len;
	out[*o] = '\0';
}

void config_mask_url(const char *url, char *out, size_t n)
{
	const char *scheme = strstr(url, "://"), *p = url, *at, *auth_end;
	size_t o = 0;

	if (n == 0)
		return;
	out[0] = '\0';
	if (scheme != NULL) {
		const char *colon;

		auth_end = scheme + 3 + strcspn(scheme + 3, "/?");
		at = memrchr(scheme + 3, '@', (size_t)(auth_end - (scheme + 3)));
		colon = at != NULL ? memchr(scheme + 3, ':', (size_t)(at - (scheme + 3))) : NULL;
		if (colon != NULL) {
			put_n(out, n, &o, url, (size_t)(colon + 1 - url));
			put_n(out, n, &o, "***", 3);
			p = at;
		}
	}
	/* password=... among the parameters (after '?' or '&') */
	while (*p != '\0') {
		const char *q = strstr(p, "password=");

		if (q == NULL || (q > url && q[-1] != '?' && q[-1] != '&')) {
			size_t len = q == NULL ? strlen(p) : (size_t)(q + 9 - p);

			put_n(out, n, &o, p, len);
			p += len;
			continue;
		}
		put_n(out, n, &o, p, (size_t)(q + 9 - p));
		put_n(out, n, &o, "***", 3);
		p = q + 9 + strcspn(q + 9, "&");
	}
}
