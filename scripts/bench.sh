#!/usr/bin/env bash
# tandem's benchmarks, each measuring a stage against a baseline in the same
# run, and the generated tables of docs/performance.md (cmd/benchreport).
#
#   scripts/bench.sh [full]   every benchmark at its documented size (~15 min
#                             on 2 cores), then the summary in docs/performance.md
#   scripts/bench.sh smoke    every benchmark once at a small size; checks that
#                             each reports its figures; the document is untouched
#   scripts/bench.sh scaling  batch recompute at several sizes (1.2M-50M events; the
#                             first run generates the raw data, ~350 MB per 10M) and the speed
#                             layer with one and two instances; the scaling
#                             table and docs/scaling.png; then the duplicate
#                             horizon (events over 60 days, dedup_window: 7d)
#                             at TANDEM_BENCH_WINDOW_SIZES, into scaling-window.txt
#   scripts/bench.sh serving-scale
#                             the serving benchmark (BenchmarkServingScale):
#                             the example view over 30 days at 3M events and a
#                             speed-only day at 10M through the real services,
#                             five queries against ClickHouse's merged view; its
#                             table in docs/performance.md ("Serving at scale")
#
# Environment:
#   GO                       go command (default go)
#   TANDEM_BENCH_OUT         where raw outputs go (default .tandem/bench)
#   TANDEM_BENCH_SIZES       scaling: event counts (default "1200000 5200000 10000000 20000000 50000000";
#                            multiples of 400,000, so that each of the benchmark's 4
#                            partitions ends on a whole chunk of 100,000 offsets and
#                            the recompute absorbs every event the scan reads)
#   TANDEM_BENCH_SERVING_EVENTS        serving-scale: events over 30 days (default 3000000)
#   TANDEM_BENCH_SERVING_SPEED_EVENTS  serving-scale: events over 24 h, no batch run (default 10000000)
#   TANDEM_BENCH_SERVING_REQUESTS      serving-scale: sequential requests per query (default 50)
#   TANDEM_BENCH_SERVING_PEER_REQUESTS serving-scale: requests per query to ClickHouse's merged
#                                      view (default TANDEM_BENCH_SERVING_REQUESTS)
#                                      (0 events skips that case)
#   TANDEM_BENCH_WINDOW_SIZES  scaling: event counts of BenchmarkBatchDedupWindow over
#                            60 days (default "10000000 20000000 50000000 100000000
#                            200000000"; multiples of 400,000 as above)
#   TANDEM_BENCH_DEDUP_MEMORY  scaling: batch.dedup_memory of BenchmarkBatchDedupWindow
#                            (default 134217728, 128 MiB: the 10M size's tables fit, the
#                            larger sizes' spill, so peak RSS shows the bound)
#   TANDEM_BENCH_HISTORY_SIZES scaling: event counts of BenchmarkBatchDedupWindow at a
#                            fixed rate, 10M events every 60 days (default "10000000
#                            50000000 200000000": 60, 300 and 1200 days; multiples of
#                            10,000,000)
#   TANDEM_TEST_KAFKA, ...   as for the tests: the broker the benchmarks use
set -euo pipefail
cd "$(dirname "$0")/.."

GO="${GO:-go}"
MODE="${1:-full}"
OUT="${TANDEM_BENCH_OUT:-.tandem/bench}"
DOC=docs/performance.md
mkdir -p "$OUT"

log() { printf 'bench.sh: %s\n' "$*" >&2; }

# libchdb.so must be loadable when internal/clickhouse's test binary starts.
CHDB_LIB_PATH="$(scripts/chdb.sh path 2>/dev/null || true)"
export CHDB_LIB_PATH

failed=0
# go test's -timeout for one benchmark; serving-scale at 30M events needs more.
TIMEOUT=30m

# bench FILE PKG PATTERN BENCHTIME [ENV=VALUE...]: run one benchmark and
# append its output, with the load average before it, to FILE.
bench() {
  local file=$1 pkg=$2 pattern=$3 benchtime=$4
  shift 4
  log "$pkg $pattern (-benchtime $benchtime${*:+, $*})"
  echo "# loadavg: $(cat /proc/loadavg)" >>"$file"
  local start=$SECONDS
  if ! env "$@" "$GO" test "$pkg" -run '^$' -bench "$pattern" -benchtime "$benchtime" -count 1 -timeout "$TIMEOUT" 2>&1 | tee -a "$file"; then
    log "FAILED: $pkg $pattern"
    echo "FAIL benchmark $pkg $pattern" >>"$file"
    failed=1
  fi
  log "$pkg $pattern took $((SECONDS - start)) s"
}

# all FILE SMOKE: the stage benchmarks; SMOKE=1 shrinks what can shrink.
all() {
  local file=$1 smoke=$2
  local peer=() batch=()
  local n=1s ingest=300x serving=200x ch=10x
  if [ "$smoke" = 1 ]; then
    # The batch benchmark needs whole 100,000-offset chunks in each of its
    # 4 partitions: a multiple of 400,000.
    peer=(TANDEM_BENCH_PEER_EVENTS=20000) batch=(TANDEM_BENCH_EVENTS=400000)
    n=1x ingest=32x serving=5x ch=1x
  fi
  : >"$file"
  bench "$file" ./schemas '^(BenchmarkDecode|BenchmarkViewAdd)$' "$n"
  bench "$file" ./ingest '^BenchmarkGatewayVsBareProducer$' "$ingest"
  bench "$file" ./batch/archive '^BenchmarkArchiverVsBareParquet$' 1x
  bench "$file" ./speed '^BenchmarkSpeedVsBareConsumer$' 1x
  bench "$file" ./speed '^BenchmarkClickHouseKafkaEnginePeer$' 1x "${peer[@]}"
  bench "$file" ./batch '^BenchmarkBatchRecomputeVsScan$' 1x "${batch[@]}"
  bench "$file" ./serving '^BenchmarkServingQuery$' "$serving"
  bench "$file" ./internal/clickhouse '^(BenchmarkInsertSpeedRows|BenchmarkMergedView)$' "$ch"
}

# serving FILE SMOKE: BenchmarkServingScale; SMOKE=1 at a size that takes
# about a minute, enough to show that every query still reports.
serving() {
  local file=$1 smoke=$2
  local sizes=()
  if [ "$smoke" = 1 ]; then
    sizes=(TANDEM_BENCH_SERVING_EVENTS=100000 TANDEM_BENCH_SERVING_SPEED_EVENTS=50000 TANDEM_BENCH_SERVING_REQUESTS=8)
  fi
  : >"$file"
  local timeout=$TIMEOUT
  [ "$smoke" = 1 ] || TIMEOUT=3h
  bench "$file" ./e2e '^BenchmarkServingScale$' 1x "${sizes[@]}"
  TIMEOUT=$timeout
}

case "$MODE" in
  full)
    all "$OUT/bench.txt" 0
    "$GO" run ./cmd/benchreport -doc "$DOC" "$OUT/bench.txt"
    log "wrote $DOC from $OUT/bench.txt"
    ;;
  smoke)
    start=$SECONDS
    all "$OUT/smoke.txt" 1
    "$GO" run ./cmd/benchreport -check "$OUT/smoke.txt" || failed=1
    serving "$OUT/serving-smoke.txt" 1
    "$GO" run ./cmd/benchreport -serving -check "$OUT/serving-smoke.txt" || failed=1
    log "smoke run took $((SECONDS - start)) s"
    ;;
  scaling)
    command -v rsvg-convert >/dev/null || {
      log "installing rsvg-convert (librsvg2-bin) for the chart"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq librsvg2-bin >/dev/null
    }
    file="$OUT/scaling.txt"
    : >"$file"
    for n in ${TANDEM_BENCH_SIZES:-1200000 5200000 10000000 20000000 50000000}; do
      bench "$file" ./batch '^BenchmarkBatchRecomputeVsScan$' 1x "TANDEM_BENCH_EVENTS=$n"
    done
    bench "$file" ./speed '^BenchmarkSpeedInstances$' 1x
    "$GO" run ./cmd/benchreport -scaling -doc "$DOC" -chart docs/scaling "$file"
    log "wrote the scaling section of $DOC and docs/scaling.{svg,png} from $file"
    wfile="$OUT/scaling-window.txt"
    : >"$wfile"
    # A fixed 60 days with more events puts more ids in the window; a fixed
    # rate over more days is a longer history under the same window.
    for n in ${TANDEM_BENCH_WINDOW_SIZES:-10000000 20000000 50000000 100000000 200000000}; do
      bench "$wfile" ./batch '^BenchmarkBatchDedupWindow$' 1x "TANDEM_BENCH_EVENTS=$n" TANDEM_BENCH_DAYS=60 \
        "TANDEM_BENCH_DEDUP_MEMORY=${TANDEM_BENCH_DEDUP_MEMORY:-134217728}"
    done
    for n in ${TANDEM_BENCH_HISTORY_SIZES:-10000000 50000000 200000000}; do
      bench "$wfile" ./batch '^BenchmarkBatchDedupWindow$' 1x "TANDEM_BENCH_EVENTS=$n" "TANDEM_BENCH_DAYS=$((n / 10000000 * 60))" \
        "TANDEM_BENCH_DEDUP_MEMORY=${TANDEM_BENCH_DEDUP_MEMORY:-134217728}"
    done
    log "the duplicate horizon's figures are in $wfile"
    ;;
  serving-scale)
    serving "$OUT/serving-scale.txt" 0
    "$GO" run ./cmd/benchreport -serving -doc "$DOC" "$OUT/serving-scale.txt"
    log "wrote the serving-at-scale results of $DOC from $OUT/serving-scale.txt"
    ;;
  *)
    echo "usage: $0 [full|smoke|scaling|serving-scale]" >&2
    exit 2
    ;;
esac
exit $failed
