# tandem — build, test and run locally.
#
#   make deps        install everything the tests and `make dev` need
#   make build       build bin/tandem
#   make test        vet + all tests (real ClickHouse, MinIO, Kafka broker)
#   make test-short  quick tests (-short)
#   make test-apache-kafka  the Kafka-facing tests against a real Apache Kafka broker
#   make bench       the benchmarks (~15 min), and their tables in docs/performance.md
#   make bench-smoke every benchmark once at a small size (a check, no figures)
#   make bench-serving-scale  serving over a month of events against ClickHouse (tens of minutes)
#   make fuzz        run every fuzz target for $(FUZZTIME)
#   make chaos       soak run under faults (~12 min); make chaos-short (~5 min)
#   make openapi-fuzz  fuzz the live API from schemas/openapi/openapi.json (~3 min)
#   make dev         run the whole platform locally on .tandem/
#
# Downloads and builds of third-party tools are cached outside the repo in
# $(TANDEM_CACHE) (default ~/.cache/tandem). Works as root on a fresh Debian
# with Go installed; apt packages are installed by the scripts.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME    ?= 20s
# Minimizing each new interesting input defaults to 60 s, which would use up
# a short run on targets whose inputs are kilobytes (Kafka fetch responses).
FUZZMINIMIZETIME ?= 3s
TEST_TIMEOUT ?= 20m
TANDEM_CACHE ?= $(or $(HOME),/root)/.cache/tandem
export TANDEM_CACHE

.PHONY: all deps deps-go deps-clickhouse deps-minio deps-zookeeper deps-npm deps-duckdb deps-browser chdb-lib build \
        test test-short test-apache-kafka bench bench-smoke bench-scaling bench-serving-scale vet fuzz openapi-fuzz chaos chaos-short dev clean

all: build

## deps: Go modules, ClickHouse (apt), MinIO (built from the Go proxy), npm tools
deps: deps-go deps-clickhouse deps-minio deps-npm deps-zookeeper

deps-go:
	$(GO) mod download

deps-clickhouse:
	scripts/clickhouse.sh install

deps-minio:
	scripts/minio.sh install

# deps-zookeeper: ZooKeeper's jars from Maven Central, for the replicated
# ClickHouse cluster test (clickhouse.replicated).
deps-zookeeper:
	scripts/zookeeper.sh install

# deps-npm: npm-installed test tools, cached in $(TANDEM_CACHE): libchdb.so,
# DuckDB (an independent Parquet reader for the lake export test), and
# Debian's chromium with playwright-core for the dashboard test.
deps-npm: chdb-lib deps-duckdb deps-browser

deps-duckdb:
	@test -d $(TANDEM_CACHE)/node/node_modules/@duckdb/node-api || \
	  npm install --silent --no-audit --no-fund --prefix $(TANDEM_CACHE)/node @duckdb/node-api

deps-browser:
	scripts/browser.sh

## chdb-lib: libchdb.so (a current ClickHouse, in-process) for the DDL checks
chdb-lib:
	scripts/chdb.sh install

## build: bin/tandem with version and commit stamped in
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/tandem ./cmd/tandem

vet:
	$(GO) vet ./...

## test: everything, against real services (started by the tests themselves)
# CHDB_LIB_PATH must be in the environment when a test binary that imports
# chdb-go starts: chdb-go loads libchdb.so in a package init and panics
# when it cannot.
test: deps chdb-lib vet
	CHDB_LIB_PATH="$$(scripts/chdb.sh path)" $(GO) test ./... -count=1 -timeout $(TEST_TIMEOUT)

## test-short: unit tests only; missing service binaries skip instead of failing
test-short:
	$(GO) test ./... -short -count=1 -timeout 5m

## test-apache-kafka: the Kafka-facing tests against Apache Kafka 4.x
# (KRaft, single node, fetched from Maven Central; Java from apt) on a free
# loopback port instead of the in-process broker.
test-apache-kafka: deps
	TEST_TIMEOUT=$(TEST_TIMEOUT) scripts/test-apache-kafka.sh

## bench: every stage against its same-run baseline, the Kafka-engine peer;
# writes the generated summary of docs/performance.md (scripts/bench.sh)
bench: deps chdb-lib
	scripts/bench.sh full

## bench-smoke: each benchmark once at a small size; fails if one breaks
bench-smoke: deps chdb-lib
	scripts/bench.sh smoke

## bench-scaling: batch recompute at 1.2M-50M events, speed with 1 and 2
# instances; the scaling table and docs/scaling.png; the duplicate horizon
# (dedup_window: 7d) at 10M-200M events over 60 days and at a fixed rate over
# 60-1200 days (TANDEM_BENCH_WINDOW_SIZES, TANDEM_BENCH_HISTORY_SIZES; ~1 h)
bench-scaling: deps chdb-lib
	scripts/bench.sh scaling

## bench-serving-scale: the serving benchmark: the example view over
# 30 days at TANDEM_BENCH_SERVING_EVENTS (default 3M; the targets are stated
# at 30M) and a speed-only day at TANDEM_BENCH_SERVING_SPEED_EVENTS (10M)
# through the real services (TANDEM_BENCH_SERVING_CACHE_BYTES, when set, is
# serve.cache_bytes); the "Serving at scale" table of
# docs/performance.md (scripts/bench.sh serving-scale)
bench-serving-scale: deps
	scripts/bench.sh serving-scale

## fuzz: every Fuzz target of every package for $(FUZZTIME) each. Targets
# are found in the sources (no test binary is built just to list them); a
# crasher stops the run and stays in testdata/fuzz/ as a regression test.
fuzz:
	@dirs=$$(grep -rlE --include='*_test.go' --exclude-dir=.git --exclude-dir=node_modules '^func Fuzz[A-Za-z0-9_]*\(' . | xargs -r -n1 dirname | sort -u); \
	for dir in $$dirs; do \
	  for target in $$(grep -hoE '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | sed 's/^func //' | sort -u); do \
	    echo "== $$dir $$target ($(FUZZTIME))"; \
	    $(GO) test "$$dir" -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME); \
	  done; \
	done

## chaos: whole-platform soak run under load while every component is
# kill -9ed, batch runs are killed mid-flight, ClickHouse and S3 go down for
# tens of seconds and the broker restarts, while a view's definition changes
# (a new version) and a view is added; prints a summary (e2e/chaos_test.go).
# TANDEM_CHAOS_DURATION=30m sets how long faults are injected.
chaos: deps-go deps-clickhouse deps-minio
	TANDEM_CHAOS=full $(GO) test ./e2e -run '^TestChaos$$' -count=1 -v -timeout 90m

## chaos-short: the same in about 5 minutes, shorter outages (CI)
chaos-short: deps-go deps-clickhouse deps-minio
	TANDEM_CHAOS=short $(GO) test ./e2e -run '^TestChaos$$' -count=1 -v -timeout 20m

## openapi-fuzz: schemathesis fuzzes the live API from its OpenAPI document (~3 min)
openapi-fuzz: deps-go deps-clickhouse deps-minio
	bash scripts/openapi-fuzz.sh

## dev: the whole platform in one process, data under .tandem/
# dev needs only the services, not the test tools (chdb, DuckDB, Chromium).
dev: deps-go deps-clickhouse deps-minio build
	./bin/tandem dev --config tandem.example.yaml --data-dir .tandem

clean:
	rm -rf bin/
	-scripts/clickhouse.sh stop
	-TANDEM_MINIO_DIR=.tandem/minio scripts/minio.sh stop
	rm -rf .tandem/
