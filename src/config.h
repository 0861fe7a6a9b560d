/* Configuration: built-in defaults, then the INI file (inih), then $CREDENTIALS_DIRECTORY
 * secrets, then KOMERCE_HOOKD_<SECTION>_<KEY> environment overrides. Pure: never logs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "netaddr.h"

#define CONFIG_MAX_KEYS	 8
#define CONFIG_MAX_SINKS 8
#define CONFIG_ERR_LEN	 256

enum config_callback_auth { CONFIG_AUTH_HMAC, CONFIG_AUTH_PLAIN };
enum config_sink_type { CONFIG_SINK_HTTP, CONFIG_SINK_REDIS };
enum config_store_backend { CONFIG_STORE_SQLITE, CONFIG_STORE_POSTGRESQL };

#define CONFIG_INSTANCE_MAX 64 /* [cluster] instance, bytes including NUL */

struct config_sink {
	char name[32];
	int type;      /* enum config_sink_type */
	char *url;     /* http(s)://... or redis://host:port[/db] */
	char *secret;  /* http: HMAC key(s), see sink_sign.h */
	int signature; /* http: enum sink_sign_scheme */
	char *stream;  /* redis: stream name */
	long max_attempts;
	long maxlen; /* redis: approximate MAXLEN, 0 = unbounded */
	long timeout_ms;
	long backlog_warn; /* warn when pending rows for this sink pass this */
	bool conflicts;	   /* also forward events flagged conflict */
	long batch;	   /* outbox rows taken per round */
	long parallel;	   /* http: concurrent deliveries (distinct payments) */
};

struct config {
	/* [server] */
	char *listen;
	char *callback_path;
	long max_body;
	long max_connections;
	long connection_timeout;     /* s: idle */
	long request_timeout;	     /* s: head and body from accept (408); 0 = off */
	bool keep_alive;	     /* public listener: replies keep the connection */
	long max_connections_per_ip; /* of one TCP peer; 0 = no limit (behind a proxy) */
	long threads;		     /* MHD worker threads, 0 = one per core */
	char *trusted_proxies;	     /* IPs / CIDRs whose X-Forwarded-For is believed */
	long drain_timeout;	     /* s: at stop, wait this long for callbacks being stored */
	long auth_failure_burst;     /* failed signatures a source may send at once ... */
	double auth_failure_rate;    /* ... and then per second before it gets 429 */
	/* [admin] */
	char *admin_listen;
	char *admin_token;
	long admin_max_connections;
	/* [komerce] */
	char *base_url;
	char *api_key;
	char *callback_keys; /* comma separated, as configured */
	int callback_auth;   /* enum config_callback_auth */
	char *callback_url;
	long timeout_ms;
	long connect_timeout_ms;
	bool confirm_paid; /* a PAID callback counts once a status call confirms it */
	/* [store] */
	int store_backend; /* enum config_store_backend */
	char *store_path;  /* sqlite */
	char *store_url;   /* postgresql: a libpq URI (secret: it may hold a password) */
	bool synchronous_full;
	long busy_timeout_ms;
	long batch_max;
	long queue_max;		  /* requests waiting for the writer; 503 past it */
	long retention_days;	  /* receipts and delivered outbox rows; 0 = keep */
	long checkpoint_interval; /* minutes between logged chain checkpoints; 0 = start/stop */
	char *checkpoint_key;	  /* HMAC key of the checkpoints (secret); "" = unsigned */
	/* [cluster] */
	char *instance; /* names this instance in logs and receipts; default: the host name */
	/* [reconcile] */
	bool reconcile_enabled;
	long grace_seconds;
	double max_requests_per_second;
	long min_interval_seconds;
	long max_in_flight;		     /* status requests at once */
	long breaker_failures;		     /* failures in a row that open the circuit ... */
	long breaker_open_seconds;	     /* ... for this long, doubling per failed probe ... */
	long breaker_max_open_seconds;	     /* ... up to this */
	long give_up_after_expiry_seconds;   /* still PENDING this long after expiry: stop */
	long give_up_unknown_expiry_seconds; /* expiry unknown: stop this long after creation */
	/* [log] */
	int log_level;

	/* Set before loading by komerce-hookctl: the daemon's secrets (which on an installed
	 * system exist only as systemd credentials) are not required, only checked if given. */
	bool secrets_optional;

	/* derived */
	char *keys[CONFIG_MAX_KEYS]; /* callback_keys split, pointers into keys_buf */
	size_t key_lens[CONFIG_MAX_KEYS];
	size_t n_keys;
	char *keys_buf;
	struct config_sink sinks[CONFIG_MAX_SINKS];
	size_t n_sinks;
	struct netaddr_list proxies; /* trusted_proxies parsed */
};

/* Allocates a config holding the built-in defaults. NULL on allocation failure. */
struct config *config_new(void);
void config_free(struct config *c);

/* Applies an INI file (path) or INI text (text, for tests and the fuzzer), then secrets from
 * $CREDENTIALS_DIRECTORY and the environment (envp, NULL-terminated "K=V" list; NULL = none),
 * then validates. On error returns -EINVAL (or -errno for an unreadable file) and writes one
 * line naming the key into err. */
int config_load_file(struct config *c, const char *path, char *const *envp, char *err,
		     size_t err_len) __attribute__((warn_unused_result));
int config_load_string(struct config *c, const char *text, char *const *envp, char *err,
		       size_t err_len) __attribute__((warn_unused_result));

/* Copies url into out with its password (user:PASSWORD@ and password=... parameters)
 * replaced by "***", for --check-config and log lines. */
void config_mask_url(const char *url, char *out, size_t n);
/* "sqlite" or "postgresql". */
const char *config_store_backend_name(int backend);

/* Splits "host:port", "[v6]:port" into host (without brackets) and port. -EINVAL if bad. */
int config_split_listen(const char *listen, char *host, size_t host_len, unsigned *port);
