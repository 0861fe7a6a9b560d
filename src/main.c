/* komerce-hookd: start-up (config, store, writer, listeners), signals, sd_notify and an
 * orderly shutdown. The main thread owns the lifecycle and otherwise waits for signals. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "callback.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "util.h"
#ifdef HAVE_API
#include "api.h"
#endif
#ifdef HAVE_FORWARD
#include "forward.h"
#endif
#ifdef HAVE_RECONCILE
#include "reconcile.h"
#endif

extern char **environ;

static int ready; /* atomic: both listeners up and schema migrated */

static void health_handler(struct http_request *req, void *ctx)
{
	(void)ctx;
	http_reply_json(req, 200, "{\"status\":\"ok\"}");
}

static void ready_handler(struct http_request *req, void *ctx)
{
	(void)ctx;
	if (__atomic_load_n(&ready, __ATOMIC_ACQUIRE))
		http_reply_json(req, 200, "{\"status\":\"ready\"}");
	else
		http_reply_json(req, 503, "{\"status\":\"starting or stopping\"}");
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

#ifdef HAVE_FORWARD
static void on_commit(void *arg, size_t new_events)
{
	(void)new_events;
	forward_notify(arg);
}
#endif

static void usage(FILE *f)
{
	fprintf(f, "usage: komerce-hookd [-c PATH] [--check-config] [--version]\n"
		   "  -c, --config PATH   configuration file (default "
		   "/etc/komerce-hookd/komerce-hookd.conf)\n"
		   "      --check-config  validate the configuration and exit (0 ok, 2 invalid)\n"
		   "      --version       print the version and exit\n");
}

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
			uint64_t half = wd_usec / 2;

			ts.tv_sec = (time_t)(half / 1000000);
			ts.tv_nsec = (long)(half % 1000000) * 1000;
		}
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT)
			return sig;
		if (sig == SIGHUP)
			log_notice("SIGHUP ignored: komerce-hookd has no reload; restart it to "
				   "apply a "
				   "new configuration");
		if (watchdog)
			sd_notify(0, "WATCHDOG=1");
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"check-config", no_argument, NULL, 'C'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *config_path = "/etc/komerce-hookd/komerce-hookd.conf";
	bool check_only = false;
	char err[CONFIG_ERR_LEN + 256];
	struct config *cfg;
	struct store *store = NULL;
	struct http_server *pub = NULL, *admin = NULL;
	const char *sinks[CONFIG_MAX_SINKS];
	bool sink_conflicts[CONFIG_MAX_SINKS];
	struct http_callback_ctx cb;
#ifdef HAVE_FORWARD
	struct forward *fwd = NULL;
#endif
#ifdef HAVE_RECONCILE
	struct reconcile *rec = NULL;
#endif
#ifdef HAVE_API
	struct api *api = NULL;
#endif
	struct http_route admin_routes[64];
	size_t n_admin = 0;
	sigset_t set;
	int opt, r, sig, exit_code = 1;

	while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'C':
			check_only = true;
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

	cfg = config_new();
	if (cfg == NULL) {
		log_err("out of memory");
		return 1;
	}
	r = config_load_file(cfg, config_path, environ, err, sizeof(err));
	if (r < 0) {
		log_err("%s", err);
		config_free(cfg);
		return 2;
	}
	if (check_only) {
		printf("configuration OK\n");
		config_free(cfg);
		return 0;
	}
	log_max_prio = cfg->log_level;

	/* Signals are taken synchronously by the main thread; every other thread inherits the
	 * mask. A peer that hangs up must not kill us with SIGPIPE. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	for (size_t i = 0; i < cfg->n_sinks; i++) {
		sinks[i] = cfg->sinks[i].name;
		sink_conflicts[i] = cfg->sinks[i].conflicts;
	}
	struct store_opts so = {
		.path = cfg->store_path,
		.synchronous_full = cfg->synchronous_full,
		.busy_timeout_ms = cfg->busy_timeout_ms,
		.batch_max = cfg->batch_max,
		.grace_seconds = cfg->grace_seconds,
		.reconcile = cfg->reconcile_enabled,
		.sinks = sinks,
		.sink_conflicts = sink_conflicts,
		.n_sinks = cfg->n_sinks,
	};
	r = store_open(&so, &store, err, sizeof(err));
	if (r < 0) {
		log_err("%s", err);
		goto out;
	}
	r = store_writer_start(store);
	if (r < 0) {
		log_err("store: cannot start the writer thread");
		goto out;
	}
#ifdef HAVE_FORWARD
	r = forward_start(cfg, store, &fwd, err, sizeof(err));
	if (r < 0) {
		log_err("%s", err);
		goto out;
	}
	store_set_commit_hook(store, on_commit, fwd);
#endif
#ifdef HAVE_RECONCILE
	if (cfg->reconcile_enabled) {
		r = reconcile_start(cfg, store, &rec, err, sizeof(err));
		if (r < 0) {
			log_err("%s", err);
			goto out;
		}
	}
#endif

	cb.store = store;
	cb.keys.keys = (const char *const *)cfg->keys;
	cb.keys.lens = cfg->key_lens;
	cb.keys.n = cfg->n_keys;
	cb.keys.plain = cfg->callback_auth == CONFIG_AUTH_PLAIN;

	const struct http_route pub_routes[] = {
		{"POST", cfg->callback_path, false, true, true, METRICS_EP_CALLBACK,
		 http_callback_handler, &cb},
		{"GET", "/healthz", false, false, false, METRICS_EP_HEALTH, health_handler, NULL},
		{"GET", "/readyz", false, false, false, METRICS_EP_HEALTH, ready_handler, NULL},
	};
	admin_routes[n_admin++] = (struct http_route){
		"GET", "/healthz", false, false, false, METRICS_EP_HEALTH, health_handler, NULL};
	admin_routes[n_admin++] = (struct http_route){
		"GET", "/readyz", false, false, false, METRICS_EP_HEALTH, ready_handler, NULL};
	admin_routes[n_admin++] = (struct http_route){
		"GET", "/metrics", false, false, false, METRICS_EP_METRICS, metrics_handler, store};
#ifdef HAVE_API
#ifdef HAVE_RECONCILE
	r = api_new(cfg, store, rec, &api, err, sizeof(err));
#else
	r = api_new(cfg, store, NULL, &api, err, sizeof(err));
#endif
	if (r < 0) {
		log_err("%s", err);
		goto out;
	}
	n_admin += api_routes(api, admin_routes + n_admin,
			      sizeof(admin_routes) / sizeof(admin_routes[0]) - n_admin);
#endif
	long nproc = sysconf(_SC_NPROCESSORS_ONLN);
	struct http_opts po = {
		.name = "public",
		.listen = cfg->listen,
		.threads = cfg->threads > 0 ? (unsigned)cfg->threads
					    : (unsigned)(nproc > 0 ? nproc : 2),
		.max_connections = (unsigned)cfg->max_connections,
		.connection_timeout_s = (unsigned)cfg->connection_timeout,
		.max_body = (size_t)cfg->max_body,
		.trusted_proxies = &cfg->proxies,
		.routes = pub_routes,
		.n_routes = sizeof(pub_routes) / sizeof(pub_routes[0]),
	};
	struct http_opts ao = {
		.name = "admin",
		.listen = cfg->admin_listen,
		.threads = 0,
		.max_connections = 64,
		.connection_timeout_s = (unsigned)cfg->connection_timeout,
		.max_body = (size_t)cfg->max_body,
		.routes = admin_routes,
		.n_routes = n_admin,
	};
	r = http_start(&po, &pub, err, sizeof(err));
	if (r < 0) {
		log_err("%s", err);
		goto out;
	}
	r = http_start(&ao, &admin, err, sizeof(err));
	if (r < 0) {
		log_err("%s", err);
		goto out;
	}

	__atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
	log_info("komerce-hookd started version=%s listen=%s port=%u admin=%s admin_port=%u "
		 "db=%s sinks=%zu "
		 "synchronous=%s",
		 HOOKD_VERSION, cfg->listen, http_port(pub), cfg->admin_listen, http_port(admin),
		 cfg->store_path, cfg->n_sinks, cfg->synchronous_full ? "full" : "normal");
	sd_notify(0, "READY=1\nSTATUS=accepting callbacks");

	sig = wait_for_signal();
	log_info("shutting down signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	sd_notify(0, "STOPPING=1\nSTATUS=draining");
	__atomic_store_n(&ready, 0, __ATOMIC_RELEASE);
	exit_code = 0;
out:
	/* Order matters: stop taking callbacks and let those in flight commit, then stop the
	 * writer (it drains its queue), then close the database. */
	http_stop(pub, cfg->drain_timeout * 1000);
	http_stop(admin, 2000);
#ifdef HAVE_RECONCILE
	reconcile_stop(rec);
#endif
#ifdef HAVE_FORWARD
	forward_stop(fwd);
#endif
	store_close(store);
	/* Only now: the writer may have answered a callback abandoned by http_stop. */
	http_free(pub);
	http_free(admin);
#ifdef HAVE_API
	api_free(api);
#endif
	if (exit_code == 0)
		log_info("stopped cleanly");
	config_free(cfg);
	return exit_code;
}
