/* komerce-hookd: start-up in the order data will flow (config, store and its writer, the
 * forwarder and the reconciler, the admin API and both listeners), signals, sd_notify, and an
 * orderly shutdown in the reverse order. The main thread owns the lifecycle and otherwise
 * waits for signals. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "build_config.h"
#include "api.h"
#include "config.h"
#include "console.h"
#include "forward.h"
#include "http.h"
#include "ingest.h"
#include "leader.h"
#include "listen.h"
#include "log.h"
#include "maintain.h"
#include "metrics.h"
#include "openapi.h"
#include "reconcile.h"
#include "store.h"
#include "util.h"

_Static_assert(CONFIG_MAX_SINKS == STORE_MAX_SINKS, "every configured sink has an outbox");
_Static_assert(sizeof(((struct config_sink *)0)->name) == STORE_SINK_NAME_MAX,
	       "a sink name fits the outbox's sink column");

#define ADMIN_DRAIN_MS 2000
#define MAX_ROUTES     64

extern char **environ;

struct daemon {
	struct config *cfg;
	struct store *store;
	struct forward *fwd;
	struct reconcile *rec;
	struct leader *leader;
	struct api *api;
	struct ingest *ingest;
	struct maintain *maint;
	struct http_server *pub, *admin;
	struct store_sink sinks[CONFIG_MAX_SINKS];
	struct http_route pub_routes[4], admin_routes[MAX_ROUTES];
	size_t n_pub, n_admin;
};

static int ready; /* atomic: both listeners up and schema migrated */

/* ---- health and metrics routes ---- */

static void health_handler(struct http_request *req, void *ctx)
{
	(void)ctx;
	http_reply_json(req, 200, "{\"status\":\"ok\"}");
}

/* Ready: both listeners up, and the store answered the leader thread's last round (with
 * PostgreSQL, a database out of reach makes the instance unready so that a load balancer
 * sends callbacks to another). The body names the backend, the instance and the jobs it
 * leads. */
static void ready_handler(struct http_request *req, void *ctx)
{
	const struct daemon *d = ctx;
	char roles[512], body[768];
	bool up = __atomic_load_n(&ready, __ATOMIC_ACQUIRE);
	bool store_ok = up && leader_store_ok(d->leader);

	leader_roles_json(up ? d->leader : NULL, roles, sizeof(roles));
	snprintf(body, sizeof(body),
		 "{\"status\":\"%s\",\"backend\":\"%s\",\"instance\":\"%s\",\"roles\":%s}",
		 !up	    ? "starting or stopping"
		 : store_ok ? "ready"
			    : "store unreachable",
		 config_store_backend_name(d->cfg->store_backend), d->cfg->instance, roles);
	http_reply_json(req, store_ok ? 200 : 503, body);
}

static void metrics_handler(struct http_request *req, void *ctx)
{
	size_t len;
	char *text = metrics_render(ctx, &len);

	if (text == NULL) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	http_reply(req, 200, "text/plain; version=0.0.4", text, len, NULL);
	free(text);
}

static struct http_route get_route(const char *path, enum metrics_endpoint ep, http_handler_fn fn,
				   void *ctx)
{
	return (struct http_route){.method = "GET", .path = path, .ep = ep, .fn = fn, .ctx = ctx};
}

/* ---- command line ---- */

static void usage(FILE *f)
{
	fprintf(f, "usage: komerce-hookd [-c PATH] [--check-config] [--version]\n"
		   "  -c, --config PATH   configuration file (default " HOOKD_DEFAULT_CONFIG ")\n"
		   "      --check-config  validate the configuration and exit (0 ok, 2 invalid)\n"
		   "      --version       print the version and exit\n");
}

/* Returns -1 to go on (with *ret_path, *ret_check), or the exit status. */
static int parse_args(int argc, char **argv, const char **ret_path, bool *ret_check)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"check-config", no_argument, NULL, 'C'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int opt;

	*ret_path = HOOKD_DEFAULT_CONFIG;
	*ret_check = false;
	while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			*ret_path = optarg;
			break;
		case 'C':
			*ret_check = true;
			break;
		case 'V':
			printf("komerce-hookd %s\n", HOOKD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	return -1;
}

/* ---- start-up ---- */

/* Sleeps ms, or less when SIGTERM/SIGINT arrives (they are blocked: see block_signals). True
 * when one did. */
static bool stop_requested_within(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sig = sigtimedwait(&set, NULL, &ts);
	return sig == SIGTERM || sig == SIGINT;
}

/* A PostgreSQL server out of reach at start-up is waited for (backoff to 10 s, one log line
 * every 30 s, systemd's start timeout extended) rather than exiting into the unit's start
 * limit: instances of a cluster come up in any order with their database. SIGTERM ends the
 * wait (-ECANCELED). Any other failure is returned at once. */
static int store_open_waiting(const struct store_opts *so, struct store **ret, char *err,
			      size_t err_len)
{
	long delay = 500;
	int64_t next_log = 0;

	for (;;) {
		int r = store_open(so, ret, err, err_len);

		if (r == 0 || so->backend != STORE_BACKEND_POSTGRESQL ||
		    (r != -ECONNREFUSED && r != -ECONNRESET))
			return r;
		if (util_mono_ms() >= next_log) {
			log_warn("%s; retrying until it answers", err);
			next_log = util_mono_ms() + 30000;
		}
		sd_notifyf(0, "STATUS=waiting for PostgreSQL\nEXTEND_TIMEOUT_USEC=%llu",
			   (unsigned long long)(delay + 10000) * 1000ULL);
		if (stop_requested_within(delay)) {
			snprintf(err, err_len, "stopped while waiting for PostgreSQL");
			return -ECANCELED;
		}
		delay = delay * 2 < 10000 ? delay * 2 : 10000;
	}
}

static int open_store(struct daemon *d, char *err, size_t err_len)
{
	const struct config *cfg = d->cfg;
	struct store_opts so = {
		.backend = cfg->store_backend == CONFIG_STORE_POSTGRESQL ? STORE_BACKEND_POSTGRESQL
									 : STORE_BACKEND_SQLITE,
		.path = cfg->store_path,
		.url = cfg->store_url,
		.instance = cfg->instance,
		.mode = STORE_MODE_WRITER,
		.synchronous_full = cfg->synchronous_full,
		.busy_timeout_ms = cfg->busy_timeout_ms,
		.batch_max = cfg->batch_max,
		.queue_max = cfg->queue_max,
		.grace_seconds = cfg->grace_seconds,
		.reconcile = cfg->reconcile_enabled,
		.confirm_paid = cfg->confirm_paid,
		.sinks = d->sinks,
		.n_sinks = cfg->n_sinks,
	};
	int r;

	for (size_t i = 0; i < cfg->n_sinks; i++)
		d->sinks[i] = (struct store_sink){.name = cfg->sinks[i].name,
						  .conflicts = cfg->sinks[i].conflicts};
	r = store_open_waiting(&so, &d->store, err, err_len);
	if (r < 0)
		return r;
	r = store_writer_start(d->store);
	if (r < 0)
		snprintf(err, err_len, "store: cannot start the writer thread");
	return r;
}

static void on_commit(void *arg, size_t new_events)
{
	(void)new_events;
	forward_notify(arg);
}

/* A commit scheduled a poll (a payment newly watched, a PAID callback to confirm). */
static void on_poll_scheduled(void *arg, int64_t due_ms)
{
	reconcile_wake_at(arg, due_ms);
}

static int job_reconcile_start(void *arg, size_t idx)
{
	(void)idx;
	return reconcile_run(arg);
}

static void job_reconcile_stop(void *arg, size_t idx)
{
	(void)idx;
	reconcile_halt(arg);
}

static int job_forward_start(void *arg, size_t idx)
{
	return forward_run(arg, idx);
}

static void job_forward_stop(void *arg, size_t idx)
{
	forward_halt(arg, idx);
}

/* The reconciler and each sink's forwarder are prepared here and run where this instance is
 * elected for them (leader.c; with SQLite, always and at once). */
static int start_workers(struct daemon *d, char *err, size_t err_len)
{
	struct leader_job jobs[1 + CONFIG_MAX_SINKS];
	size_t n = 0;
	int r = forward_new(d->cfg, d->store, &d->fwd, err, err_len);

	if (r < 0)
		return r;
	store_set_commit_hook(d->store, on_commit, d->fwd);
	/* Without reconcile.enabled the reconciler still confirms PAID callbacks. */
	if (d->cfg->reconcile_enabled || d->cfg->confirm_paid) {
		r = reconcile_new(d->cfg, d->store, &d->rec, err, err_len);
		if (r < 0)
			return r;
		store_set_poll_hook(d->store, on_poll_scheduled, d->rec);
		jobs[n] = (struct leader_job){.name = "reconcile",
					      .start = job_reconcile_start,
					      .stop = job_reconcile_stop,
					      .arg = d->rec};
		n++;
	}
	for (size_t i = 0; i < d->cfg->n_sinks; i++) {
		jobs[n] = (struct leader_job){.start = job_forward_start,
					      .stop = job_forward_stop,
					      .arg = d->fwd,
					      .idx = i};
		snprintf(jobs[n].name, sizeof(jobs[n].name), "forward:%s", d->cfg->sinks[i].name);
		n++;
	}
	r = leader_start(d->store, jobs, n, d->cfg->instance, &d->leader, err, err_len);
	if (r == 0)
		r = api_new(d->cfg, d->store, d->rec, &d->api, err, err_len);
	if (r < 0)
		return r;
	return maintain_start(
		&(struct maintain_opts){.store = d->store,
					.checkpoint_interval_s = d->cfg->checkpoint_interval * 60,
					.checkpoint_key = d->cfg->checkpoint_key,
					.retention_days = d->cfg->retention_days,
					.prune_batch = 300,
					.prune_pause_ms = 20},
		&d->maint, err, err_len);
}

static int build_routes(struct daemon *d, char *err, size_t err_len)
{
	const struct config *cfg = d->cfg;
	struct ingest_opts io = {
		.store = d->store,
		.keys = {.keys = (const char *const *)cfg->keys,
			 .lens = cfg->key_lens,
			 .n = cfg->n_keys,
			 .plain = cfg->callback_auth == CONFIG_AUTH_PLAIN},
		.path = cfg->callback_path,
		.auth_failure_burst = (double)cfg->auth_failure_burst,
		.auth_failure_rate = cfg->auth_failure_rate,
	};

	d->ingest = ingest_new(&io);
	if (d->ingest == NULL) {
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	d->pub_routes[d->n_pub++] = ingest_route(d->ingest);
	d->pub_routes[d->n_pub++] = get_route("/healthz", METRICS_EP_HEALTH, health_handler, NULL);
	d->pub_routes[d->n_pub++] = get_route("/readyz", METRICS_EP_HEALTH, ready_handler, d);
	d->admin_routes[d->n_admin++] =
		get_route("/healthz", METRICS_EP_HEALTH, health_handler, NULL);
	d->admin_routes[d->n_admin++] = get_route("/readyz", METRICS_EP_HEALTH, ready_handler, d);
	d->admin_routes[d->n_admin++] =
		get_route("/metrics", METRICS_EP_METRICS, metrics_handler, d->store);
	d->admin_routes[d->n_admin++] =
		get_route("/openapi.json", METRICS_EP_OTHER, openapi_handler, NULL);
	d->n_admin += api_routes(d->api, d->admin_routes + d->n_admin, MAX_ROUTES - d->n_admin);
	d->n_admin += console_routes(d->admin_routes + d->n_admin, MAX_ROUTES - d->n_admin);
	return 0;
}

static int start_listeners(struct daemon *d, char *err, size_t err_len)
{
	const struct config *cfg = d->cfg;
	long nproc = sysconf(_SC_NPROCESSORS_ONLN);
	struct http_opts po = {
		.name = "public",
		.listen = cfg->listen,
		.threads = cfg->threads > 0 ? (unsigned)cfg->threads
					    : (unsigned)(nproc > 0 ? nproc : 2),
		.max_connections = (unsigned)cfg->max_connections,
		.connection_timeout_s = (unsigned)cfg->connection_timeout,
		.request_timeout_s = (unsigned)cfg->request_timeout,
		.keep_alive = cfg->keep_alive,
		.max_connections_per_ip = (unsigned)cfg->max_connections_per_ip,
		.max_body = (size_t)cfg->max_body,
		.trusted_proxies = &cfg->proxies,
		.routes = d->pub_routes,
		.n_routes = d->n_pub,
	};
	struct http_opts ao = {
		.name = "admin",
		.listen = cfg->admin_listen,
		.threads = 0,
		.max_connections = (unsigned)cfg->admin_max_connections,
		.connection_timeout_s = (unsigned)cfg->connection_timeout,
		.max_body = (size_t)cfg->max_body,
		.routes = d->admin_routes,
		.n_routes = d->n_admin,
	};
	const char *names[] = {po.name, ao.name};
	int fds[2];
	int r;

	/* Sockets from systemd (komerce-hookd.socket), matched by FileDescriptorName=. */
	(void)listen_take(names, 2, fds);
	po.listen_fd = fds[0] > 0 ? fds[0] : 0;
	ao.listen_fd = fds[1] > 0 ? fds[1] : 0;
	r = http_start(&po, &d->pub, err, err_len);

	if (r == 0)
		r = http_start(&ao, &d->admin, err, err_len);
	return r;
}

/* ---- running ---- */

/* Waits for SIGTERM/SIGINT, pinging the systemd watchdog if it is enabled. */
static int wait_for_signal(void)
{
	sigset_t set;
	uint64_t wd_usec = 0;
	bool watchdog = sd_watchdog_enabled(0, &wd_usec) > 0;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	for (;;) {
		struct timespec ts = {1, 0};
		int sig;

		if (watchdog) {
			ts.tv_sec = (time_t)(wd_usec / 2 / 1000000);
			ts.tv_nsec = (long)(wd_usec / 2 % 1000000) * 1000;
		}
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT)
			return sig;
		if (sig == SIGHUP)
			log_notice("SIGHUP ignored: komerce-hookd has no reload; restart it to "
				   "apply a new configuration");
		if (watchdog)
			sd_notify(0, "WATCHDOG=1");
	}
}

/* Signals are taken synchronously by the main thread; every other thread inherits the mask.
 * A peer that hangs up must not kill us with SIGPIPE. */
static void block_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Order matters: stop taking callbacks and let those in flight commit, stop the threads that
 * use the writer, then the writer (it drains its queue), log the final chain checkpoint, close
 * the database; only then free the listeners, since the writer may still answer a callback
 * that http_stop gave up on. */
static void drain(struct daemon *d)
{
	http_stop(d->pub, d->cfg->drain_timeout * 1000);
	http_stop(d->admin, ADMIN_DRAIN_MS);
	if (d->store != NULL)
		store_set_poll_hook(d->store, NULL, NULL);
	leader_stop(d->leader);
	reconcile_stop(d->rec);
	forward_stop(d->fwd);
	store_writer_stop(d->store); /* everything committed: the last checkpoint is the head */
	maintain_stop(d->maint);
	store_close(d->store);
	http_free(d->pub);
	http_free(d->admin);
	api_free(d->api);
	ingest_free(d->ingest);
}

static int run(struct daemon *d)
{
	char err[CONFIG_ERR_LEN + 256], db[1024];
	int sig, r;

	block_signals();
	r = open_store(d, err, sizeof(err));
	if (r == -ECANCELED) {
		log_info("%s", err);
		return 0;
	}
	if (r < 0 || start_workers(d, err, sizeof(err)) < 0 ||
	    build_routes(d, err, sizeof(err)) < 0 || start_listeners(d, err, sizeof(err)) < 0) {
		log_err("%s", err);
		return 1;
	}
	__atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
	if (d->cfg->store_backend == CONFIG_STORE_POSTGRESQL)
		config_mask_url(d->cfg->store_url, db, sizeof(db));
	else
		snprintf(db, sizeof(db), "%s", d->cfg->store_path);
	log_info("komerce-hookd started version=%s instance=%s listen=%s port=%u admin=%s "
		 "admin_port=%u store=%s db=%s sinks=%zu synchronous=%s",
		 HOOKD_VERSION, d->cfg->instance, d->cfg->listen, http_port(d->pub),
		 d->cfg->admin_listen, http_port(d->admin), store_backend_name(d->store), db,
		 d->cfg->n_sinks, d->cfg->synchronous_full ? "full" : "normal");
	sd_notify(0, "READY=1\nSTATUS=accepting callbacks");

	sig = wait_for_signal();
	log_info("shutting down signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	sd_notify(0, "STOPPING=1\nSTATUS=draining");
	__atomic_store_n(&ready, 0, __ATOMIC_RELEASE);
	return 0;
}

/* --check-config: the verdict, then what the daemon would use (the store URL without its
 * password). */
static void print_effective(const struct config *cfg)
{
	char url[1024];

	printf("configuration OK\n");
	if (cfg->store_backend == CONFIG_STORE_POSTGRESQL) {
		config_mask_url(cfg->store_url, url, sizeof(url));
		printf("store: backend=postgresql url=%s\n", url);
	} else {
		printf("store: backend=sqlite path=%s\n", cfg->store_path);
	}
	printf("cluster: instance=%s\n", cfg->instance);
}

int main(int argc, char **argv)
{
	struct daemon d = {0};
	char err[CONFIG_ERR_LEN + 256];
	const char *config_path;
	bool check_only;
	int code = parse_args(argc, argv, &config_path, &check_only);

	if (code >= 0)
		return code;
	log_init(); /* under journald: native entries with fields (PAYMENT_ID=...) */
	d.cfg = config_new();
	if (d.cfg == NULL) {
		log_err("out of memory");
		return 1;
	}
	if (config_load_file(d.cfg, config_path, environ, err, sizeof(err)) < 0) {
		log_err("%s", err);
		config_free(d.cfg);
		return 2;
	}
	if (check_only) {
		print_effective(d.cfg);
		config_free(d.cfg);
		return 0;
	}
	log_max_prio = d.cfg->log_level;
	code = run(&d);
	drain(&d);
	if (code == 0)
		log_info("stopped cleanly");
	config_free(d.cfg);
	return code;
}
