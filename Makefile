# Thin wrapper around meson/ninja. `make deps` installs the Debian packages (needs root).
BUILD ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
DEBIAN_PACKAGES = meson ninja-build pkg-config gcc libc6-dev python3 python3-yaml \
	libmicrohttpd-dev libcjson-dev libsqlite3-dev libpq-dev libcurl4-openssl-dev libssl-dev \
	libinih-dev libsystemd-dev libhiredis-dev check \
	curl openssl sqlite3 redis-server systemd postgresql \
	clang libclang-rt-14-dev
FUZZ_SECONDS ?= 60

.PHONY: all deps run test test-asan test-tsan check fuzz crash security clean node-deps test-node test-prometheus

all: $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(BUILD)/build.ninja:
	meson setup $(BUILD)

# Runs the daemon on config/local.conf (database under ./var) with the bundled simulator as
# the Komerce upstream. Ctrl-C stops both.
run: all
	./tools/run-local.sh $(BUILD)

deps:
	@if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $(DEBIAN_PACKAGES)

test: all
	meson test -C $(BUILD) --print-errorlogs || { tools/test-digest.sh $(BUILD); exit 1; }

# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan:
	@[ -f $(ASAN_BUILD)/build.ninja ] || meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false
	ninja -C $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C $(ASAN_BUILD) --print-errorlogs || { tools/test-digest.sh $(ASAN_BUILD); exit 1; }

check: test test-asan

# The whole suite again under ThreadSanitizer (CI runs it; data races between the HTTP
# threads, the writer, the forwarder and the reconciler). Any report fails the test that
# started the daemon (tests/integration/harness.c reads every daemon log).
test-tsan:
	@[ -f $(TSAN_BUILD)/build.ninja ] || meson setup $(TSAN_BUILD) -Db_sanitize=thread -Db_lundef=false
	ninja -C $(TSAN_BUILD)
	TSAN_OPTIONS=halt_on_error=0:exitcode=66:second_deadlock_stack=1 \
		meson test -C $(TSAN_BUILD) --print-errorlogs || { tools/test-digest.sh $(TSAN_BUILD); exit 1; }

# libFuzzer targets (clang), each run FUZZ_SECONDS seconds from the seeded corpus.
fuzz:
	tests/fuzz/run.sh $(FUZZ_SECONDS)

# 20 kill -9 cycles under load: nothing acknowledged may be lost or stored twice.
crash: all
	bench/crash 20

# The systemd unit's sandbox, analysed offline; fails above an exposure of 2.0.
security:
	systemd-analyze security --offline=true --threshold=20 systemd/komerce-hookd.service

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD)

# ---- the ecosystem's own tools (issue 17) ----
NODE_DIR = tests/node

# The node suites' packages (standardwebhooks, svix, swagger-parser, ajv), exactly as
# tests/node/package-lock.json pins them, from the npm registry into tests/node/node_modules.
node-deps:
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund

# The node suites against the real build/komerce-hookd (+ komerce-sim): Standard Webhooks and
# Svix verifiers on real deliveries, the OpenAPI document and every route's live replies.
test-node: all node-deps
	cd $(NODE_DIR) && HOOKD_BIN=$(CURDIR)/$(BUILD)/komerce-hookd SIM_BIN=$(CURDIR)/$(BUILD)/komerce-sim \
		node --test $$(ls *.test.mjs)

# promtool (Debian's prometheus package): the alerting rules, their unit tests with synthetic
# series, and a live /metrics scrape of the real daemon (contrib/prometheus/check.sh).
test-prometheus: all
	BUILD=$(BUILD) contrib/prometheus/check.sh

# ---- Debian package (issue 9) ----
DEB_DIR ?= build-deb
DEB_PACKAGES = debhelper scdoc dpkg-dev fakeroot man-db bash-completion
.PHONY: deb-deps deb deb-check

# Packaging tools on top of `make deps` (needs root).
deb-deps:
	@if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; fi; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES)

# dpkg-buildpackage -us -uc -b on a copy of the tree: $(DEB_DIR)/komerce-hookd_*.deb.
# DEB_BUILD_OPTIONS=nocheck skips the test suite inside the package build.
deb:
	tests/package/build.sh $(DEB_DIR)

# Builds, installs with dpkg -i (root) and checks the installed package, daemon included.
deb-check: deb
	tests/package/check-installed.sh $$(ls $(DEB_DIR)/komerce-hookd_*.deb)

# ---- The unit under a real systemd (issue 14) ----
# Debian 12 booted in systemd-nspawn (root; debootstrap + systemd-container, see
# systemd-test-deps): the first run builds a minimal root with debootstrap from this machine's
# apt source and caches it in /var/cache/komerce-hookd-test; later runs reuse it. Builds the
# .deb first unless one newer than every file of the tree is there. HOOKD_WATCHDOG_WAIT=SECONDS
# shortens the minute the running service is watched. test-socket.sh: callbacks under load
# across restarts, a kill -9 and an upgrade (socket activation). Exit 77 = skipped (no
# container here).
SYSTEMD_TEST_PACKAGES = debootstrap systemd-container
.PHONY: systemd-test systemd-test-deps

systemd-test-deps:
	@if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; fi; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $(SYSTEMD_TEST_PACKAGES)

systemd-test:
	@deb=$$(ls $(DEB_DIR)/komerce-hookd_*.deb 2>/dev/null | head -n 1); \
	if [ -z "$$deb" ] || [ -n "$$(find . -path ./.git -prune -o -path './build*' -prune \
		-o -path ./var -prune -o -type f -newer "$$deb" -print | head -n 1)" ]; then \
		$(MAKE) deb; \
	fi
	tests/systemd/test-unit.sh $$(ls $(DEB_DIR)/komerce-hookd_*.deb | head -n 1)
	tests/systemd/test-socket.sh $$(ls $(DEB_DIR)/komerce-hookd_*.deb | head -n 1)

# ---- the payments console in a real browser (issue 18) ----
.PHONY: browser-deps test-browser console-screenshot
BROWSER_NODE_MODULES = tests/browser/node_modules/.package-lock.json

# Debian's chromium, plus node and npm unless a node is already installed (needs root).
browser-deps:
	@if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; fi; \
	pkgs=chromium; command -v npm >/dev/null 2>&1 || pkgs="$$pkgs nodejs npm"; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs

# puppeteer-core exactly as tests/browser/package-lock.json pins it (it never downloads a
# browser; the test points it at /usr/bin/chromium).
$(BROWSER_NODE_MODULES): tests/browser/package.json tests/browser/package-lock.json
	cd tests/browser && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

# Drives headless chromium against build/komerce-hookd + build/komerce-sim on loopback: login,
# search, the payment's story, replay of a dead letter, CSP, network log, phone layout. Prints
# the page weight and first paint; screenshots in $(BUILD)/console-screenshots/.
test-browser: all $(BROWSER_NODE_MODULES)
	BUILD=$(BUILD) node tests/browser/console.test.mjs

# The same run, also retaking the README's screenshot (docs/console.png).
console-screenshot: all $(BROWSER_NODE_MODULES)
	BUILD=$(BUILD) CONSOLE_DOCS_SCREENSHOT=docs/console.png node tests/browser/console.test.mjs
