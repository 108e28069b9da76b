#!/usr/bin/env bash
# Property-based fuzz of the live REST API from its OpenAPI document
# (schemas/openapi/openapi.json) with schemathesis.
#
# Starts `tandem dev` on free loopback ports with ingest and query tokens,
# then runs schemathesis against the query API (tags query and ops) and the
# ingest gateway (tags ingest and ops), each with a bounded number of
# examples per operation and a time budget (about 3 minutes in all). Fails
# on any 5xx, any answer outside the document (status code, content type,
# headers, body schema), or an operation that needs a token answering
# without one. Stops everything and removes its files on exit.
#
# Environment:
#   TANDEM_CACHE              cache dir (default $HOME/.cache/tandem); the
#                             schemathesis venv goes to $TANDEM_CACHE/schemathesis
#   OPENAPI_FUZZ_EXAMPLES     examples per operation (default 40)
#   OPENAPI_FUZZ_SECONDS      time budget of each of the two runs (default 75)
#   OPENAPI_FUZZ_SCHEMA       fuzz from this file instead of the document the
#                             live API serves (to try an edited document, or
#                             to see the fuzz fail on a wrong one)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE="${TANDEM_CACHE:-${HOME:-/root}/.cache/tandem}"
VENV="$CACHE/schemathesis"
ST_VERSION=4.32.5
EXAMPLES="${OPENAPI_FUZZ_EXAMPLES:-40}"
SECONDS_EACH="${OPENAPI_FUZZ_SECONDS:-75}"

# --- schemathesis, in a venv outside the repository
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$ST_VERSION"; then
	if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
		apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
	fi
	rm -rf "$VENV"
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install -q "schemathesis==$ST_VERSION"
fi

WORK=$(mktemp -d)
DEV_PID=""
CH_PORT=""
cleanup() {
	local rc=$?
	if [[ -n "$DEV_PID" ]] && kill -0 "$DEV_PID" 2>/dev/null; then
		kill -TERM "$DEV_PID" 2>/dev/null || true
		for _ in $(seq 1 60); do kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.5; done
		kill -KILL "$DEV_PID" 2>/dev/null || true
	fi
	# tandem dev stops its ClickHouse and MinIO on exit; make sure of it
	# even when it was killed.
	TANDEM_CH_DIR="$WORK/data/clickhouse" TANDEM_CH_PORT="$CH_PORT" bash scripts/clickhouse.sh stop >/dev/null 2>&1 || true
	TANDEM_MINIO_DIR="$WORK/data/minio" bash scripts/minio.sh stop >/dev/null 2>&1 || true
	if [[ $rc -ne 0 && -f "$WORK/dev.log" ]]; then
		echo "--- last lines of tandem dev's log" >&2
		tail -n 40 "$WORK/dev.log" >&2
	fi
	rm -rf "$WORK"
	exit $rc
}
trap cleanup EXIT INT TERM

# --- free loopback ports: each one bound and released by the kernel's choice
ports=($(python3 - <<'EOF'
import socket
socks = []
for _ in range(8):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
))
KAFKA=127.0.0.1:${ports[0]} CH=127.0.0.1:${ports[1]} S3=127.0.0.1:${ports[2]}
INGEST=127.0.0.1:${ports[3]} SERVE=127.0.0.1:${ports[4]} SPEED=127.0.0.1:${ports[5]} ARCHIVE=127.0.0.1:${ports[6]}
CH_PORT=${ports[1]}
# MinIO's console port too: its default (9101) may be another MinIO's.
export TANDEM_MINIO_CONSOLE_PORT=${ports[7]}
INGEST_TOKEN="fuzz-ingest-$RANDOM$RANDOM"
QUERY_TOKEN="fuzz-query-$RANDOM$RANDOM"

sed -e "s/\"127.0.0.1:9092\"/\"$KAFKA\"/" -e "s/\"127.0.0.1:9000\"/\"$CH\"/" -e "s/\"127.0.0.1:9100\"/\"$S3\"/" \
	-e "s/\"127.0.0.1:8080\"/\"$INGEST\"/" -e "s/\"127.0.0.1:8081\"/\"$SERVE\"/" \
	-e "s/\"127.0.0.1:8082\"/\"$SPEED\"/" -e "s/\"127.0.0.1:8083\"/\"$ARCHIVE\"/" \
	-e "s/every: 10m/every: 1m/" \
	-e "s/ingest_tokens: \[\], query_tokens: \[\]/ingest_tokens: [$INGEST_TOKEN], query_tokens: [$QUERY_TOKEN]/" \
	tandem.example.yaml >"$WORK/tandem.yaml"
grep -q "$QUERY_TOKEN" "$WORK/tandem.yaml" || { echo "openapi-fuzz: could not set tokens in the example configuration" >&2; exit 1; }

echo "openapi-fuzz: building tandem"
go build -o "$WORK/tandem" ./cmd/tandem

echo "openapi-fuzz: starting tandem dev (ingest $INGEST, serve $SERVE)"
# Sample traffic at 5 events/s so the query answers have rows.
"$WORK/tandem" dev --config "$WORK/tandem.yaml" --data-dir "$WORK/data" --gen-rate 5 --scripts "$ROOT/scripts" >"$WORK/dev.log" 2>&1 &
DEV_PID=$!
for _ in $(seq 1 180); do
	if ! kill -0 "$DEV_PID" 2>/dev/null; then echo "openapi-fuzz: tandem dev exited early" >&2; exit 1; fi
	if curl -fsS "http://$SERVE/readyz" >/dev/null 2>&1 && curl -fsS "http://$INGEST/readyz" >/dev/null 2>&1; then break; fi
	sleep 0.5
done
curl -fsS "http://$SERVE/readyz" >/dev/null || { echo "openapi-fuzz: tandem dev never became ready" >&2; exit 1; }

CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth
run() { # name base-url token tags...
	local name=$1 base=$2 token=$3
	shift 3
	local tags=()
	for tag in "$@"; do tags+=(--include-tag "$tag"); done
	echo "openapi-fuzz: $name ($*) at $base"
	# By default the document is read from the live API: what is served is
	# what is tested.
	# schemathesis keeps its example database in the working directory:
	# run it from $WORK so nothing lands in the repository.
	(cd "$WORK" && "$VENV/bin/schemathesis" run "${OPENAPI_FUZZ_SCHEMA:-$base/v1/openapi.json}" --url "$base" "${tags[@]}" \
		-H "Authorization: Bearer $token" \
		--checks "$CHECKS" --max-examples "$EXAMPLES" --max-time "$SECONDS_EACH" \
		--request-timeout 20 --workers 2 --seed 17 --suppress-health-check too_slow,filter_too_much \
		--no-color --warnings off)
}
run "query API" "http://$SERVE" "$QUERY_TOKEN" query ops
run "ingest gateway" "http://$INGEST" "$INGEST_TOKEN" ingest ops
echo "openapi-fuzz: no 5xx and every answer within the document"
