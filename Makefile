# antenna -- top-level entry points.
#   make run    install what is missing, build, start the broker (embedded defaults)
#   make cluster  build, start etcd, 3 nodes and HAProxy on loopback
#               (tools/cluster.sh up 3; `tools/cluster.sh down` stops them)
#   make test   install what is missing, check the formatting (.clang-format),
#               build, run every test (unit, integration, the Debian package
#               run as systemd would, the same under ASan+UBSan, unit and a
#               subset covering every thread under ThreadSanitizer, and a
#               short fuzz run: TEST_FUZZ_TIME s per target)
#   make tsan   the unit tests and the whole integration suite under TSan
# Everything the build and the tests need comes from Debian packages (make deps).

BUILD       ?= build
ASAN_BUILD  ?= build-asan
TSAN_BUILD  ?= build-tsan
FUZZ_BUILD  ?= build-fuzz
JOBS        ?= $(shell nproc)
FUZZ_TIME   ?= 30
TEST_FUZZ_TIME ?= 10
# the integration suite runs in PYTEST_JOBS processes (pytest-xdist), one
# test file per process at a time: most of a test's time is waiting for a
# broker, so 2 processes on 2 cores halve it (conftest.free_port gives each
# process its own ports)
PYTEST_JOBS ?= 2
PYTEST      ?= /usr/bin/python3 -m pytest
PYTEST_ARGS ?= -q --durations=15 -n $(PYTEST_JOBS) --dist loadfile
PREFIX      ?= /usr/local

DEB_PACKAGES = build-essential cmake pkg-config clang libclang-rt-14-dev \
               libyaml-dev libcmocka-dev libssl-dev librocksdb-dev libwslay-dev \
               python3 python3-pytest python3-pytest-xdist python3-paho-mqtt \
               mosquitto mosquitto-clients haproxy openssl chromium \
               libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev libhiredis-dev \
               libjwt-dev redis-server prometheus wrk man-db python3-yaml clang-format \
               etcd-server etcd-client librdkafka-dev influxdb influxdb-client \
               libcoap3-dev libcoap3-bin

.PHONY: all deps js-deps build run cluster test unit integration asan tsan tsan-build tsan-threads fuzz \
        fuzz-build format format-check clean install deb package-test

all: build

# Installs only what is missing.  Debian's mosquitto (the reference broker of
# the benchmarks) must not run as a service: it would take port 1883.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing && \
	  if command -v systemctl >/dev/null 2>&1; then $$SUDO systemctl disable --now mosquitto redis-server prometheus prometheus-node-exporter etcd influxdb >/dev/null 2>&1 || true; fi; \
	fi

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/antenna

cluster: build
	ANTENNA_BIN=$(CURDIR)/$(BUILD)/antenna tools/cluster.sh up 3

unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# MQTT.js for the WebSocket tests and playwright-core for the browser test
# (Debian's chromium, headless; tests/integration/js, package-lock.json
# pinned), with whatever node/npm is on PATH (not necessarily Debian's);
# without them those tests are skipped.
JS_DIR = tests/integration/js
js-deps:
	@if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then \
	  if [ ! -f $(JS_DIR)/node_modules/.package-lock.json ] || \
	     [ $(JS_DIR)/package-lock.json -nt $(JS_DIR)/node_modules/.package-lock.json ]; then \
	    (cd $(JS_DIR) && npm ci --no-audit --no-fund); fi; \
	else \
	  echo "make js-deps: node/npm not found on PATH: the MQTT.js WebSocket tests will be skipped"; \
	fi

integration: build js-deps
	ANTENNA_BIN=$(CURDIR)/$(BUILD)/antenna $(PYTEST) $(PYTEST_ARGS) tests/integration

asan: deps js-deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DANTENNA_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS)
	ANTENNA_BIN=$(CURDIR)/$(ASAN_BUILD)/antenna ANTENNA_SANITIZED=1 $(PYTEST) $(PYTEST_ARGS) tests/integration

# ThreadSanitizer: its own build (it excludes ASan), the unit tests and the
# integration suite; any report fails the test that produced it (conftest
# SANITIZER_MARKERS, and TSan's exit code 66).  tests/tsan.supp holds the
# only suppressions, for uninstrumented libraries (ctest and conftest pass it).
# The whole suite takes ~8 min under TSan on 2 cores; make test runs
# tsan-threads: the unit tests and the files below, which between them run
# every thread (workers and takeovers across them, shared subscriptions, the
# store's committer, the password pool, the HTTP and Redis auth threads, the
# API's threads and reaper, SIGHUP reloads on the main thread, the cluster's
# etcd and link threads, a sink's thread and its httpc thread, the InfluxDB
# sink's thread driving curl multi itself, the route barrier between the link
# thread and the workers, the CoAP gateway's thread, the HTTP downlink's
# endpoints across MHD's threads and the workers, the lora gateway's thread
# and the workers' downlinks on its socket, the cluster's links over TLS and
# the API reading their cipher, the compact route table and the peers' Bloom
# filters written by the link thread and read by the workers, connections
# and sessions moving between workers with the table of their homes read by
# the API's threads), ~4 min.
TSAN_TESTS = test_01_cli_config.py::test_sighup_reopens_log_file test_11_load.py \
             test_13_handoff.py test_15_persistence.py test_18_durability.py \
             test_28_v5_shared.py test_30_tls.py test_40_auth.py test_41_acl.py \
             test_42_auth_http.py test_43_auth_redis.py test_46_authz_delivery.py \
             test_50_api.py test_51_ctl.py test_54_api_hardening.py test_60_threads.py \
             test_62_consumers.py test_68_backpressure.py test_69_reload_drain.py \
             test_72_cluster_members.py test_79_sinks.py test_81_sink_influx.py \
             test_73_cluster_links.py::test_suback_means_every_node_has_the_route \
             test_90_coap.py test_91_http_downlink.py \
             test_93_lora.py test_95_store_redis.py \
             test_96_cluster_tls.py::test_forwarding_over_tls_every_qos_and_retained \
             test_97_coap_secure.py \
             test_99_cluster_routes_mem.py::test_exact_and_wildcard_routes_forward_once \
             test_101_cluster_bloom.py::test_routes_above_and_below_the_threshold \
             test_110_migrate.py test_122_consolidate.py
TSAN_RUN = ANTENNA_BIN=$(CURDIR)/$(TSAN_BUILD)/antenna ANTENNA_SANITIZED=1 $(PYTEST) $(PYTEST_ARGS)

tsan-build: deps js-deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DANTENNA_TSAN=ON
	cmake --build $(TSAN_BUILD) -j $(JOBS)
	cd $(TSAN_BUILD) && ctest --output-on-failure -j $(JOBS)

tsan: tsan-build
	$(TSAN_RUN) tests/integration

tsan-threads: tsan-build
	$(TSAN_RUN) $(addprefix tests/integration/,$(TSAN_TESTS))

$(FUZZ_BUILD)/Makefile: CMakeLists.txt
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DANTENNA_FUZZ=ON -DANTENNA_SANITIZE=ON

fuzz-build: deps $(FUZZ_BUILD)/Makefile
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

# Each fuzz target runs FUZZ_TIME seconds over its seed corpus (read-only:
# new inputs go to a scratch directory).
fuzz: fuzz-build
	@set -e; for f in $(FUZZ_BUILD)/fuzz_*; do \
	  [ -f "$$f" ] && [ -x "$$f" ] || continue; \
	  name=$$(basename $$f); seeds=tests/fuzz/corpus/$${name#fuzz_}; \
	  work=$(FUZZ_BUILD)/corpus-$$name; mkdir -p $$work $$seeds; \
	  echo "fuzz: $$name for $(FUZZ_TIME)s"; \
	  if ! $$f -max_total_time=$(FUZZ_TIME) -artifact_prefix=$(FUZZ_BUILD)/ $$work $$seeds > $$work.log 2>&1; then \
	    tail -n 60 $$work.log; echo "fuzz: $$name FAILED"; exit 1; fi; \
	  tail -n 2 $$work.log; \
	done

test: format-check build unit integration package-test asan tsan-threads
	$(MAKE) fuzz FUZZ_TIME=$(TEST_FUZZ_TIME)

# Install under PREFIX (DESTDIR honoured): the binary, /etc/antenna (or
# PREFIX/etc), the systemd unit, logrotate, man pages, docs.
install: build
	cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	cmake --install $(BUILD)

# The Debian package (CPack), from the release build: prefix /usr, the
# configuration in /etc/antenna, the unit in /lib/systemd/system.
deb: build
	cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
	cmake --build $(BUILD) -j $(JOBS)
	rm -f $(BUILD)/antenna_*.deb
	cd $(BUILD) && cpack -G DEB
	@ls $(BUILD)/antenna_*.deb

# The package unpacked into a throwaway root, checked, started (as systemd
# would: NOTIFY_SOCKET, WATCHDOG_USEC, STATE_DIRECTORY), used and stopped.
package-test: deb
	ANTENNA_DEB=$$(ls $(BUILD)/antenna_*.deb) $(PYTEST) $(PYTEST_ARGS) tests/package

# .clang-format is the house style: `make format` applies it, `make
# format-check` (part of `make test`) fails on any file that differs.
format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check: deps
	@clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h') && echo "format-check: ok"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
