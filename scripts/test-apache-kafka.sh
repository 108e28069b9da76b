#!/usr/bin/env bash
# The real-Kafka test tier: start an Apache Kafka 4.x broker (KRaft, single
# node, scripts/kafka.sh) on a free loopback port with its data in a temp
# dir, run the Kafka-facing tests against it instead of the in-process kfake
# broker, and stop the broker at the end whatever happens.
#
#   scripts/test-apache-kafka.sh                 the default package list below
#   scripts/test-apache-kafka.sh ./speed -run X  other packages / go test flags
#
# Java 17 and Maven come from Debian packages when missing, the broker from
# Maven Central into $TANDEM_CACHE (both done by scripts/kafka.sh).
#
# Environment:
#   GO                 go command (default go)
#   TEST_TIMEOUT       go test -timeout (default 20m)
#   TANDEM_KAFKA_KEEP  set to keep the broker's dir (logs) after the run
set -euo pipefail
cd "$(dirname "$0")/.."

GO="${GO:-go}"
TEST_TIMEOUT="${TEST_TIMEOUT:-20m}"

# Every package whose tests talk to a Kafka broker (grep testenv.Kafka).
# Tests that need the in-process broker (restart, fault injection) skip
# themselves against an external one.
DEFAULT_PKGS=(
  ./internal/testenv
  ./internal/kafka
  ./ingest
  ./ingest/gen
  ./speed
  ./batch/archive
  ./cmd/tandem
)

log() { printf 'test-apache-kafka: %s\n' "$*" >&2; }

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A client port p with p+1 (the KRaft controller) and p+2 (SASL_SSL) free too. The ephemeral
# range is avoided so that clients' outgoing ports do not collide.
pick_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 10000))
    if port_free "$p" && port_free "$((p + 1))" && port_free "$((p + 2))"; then
      echo "$p"
      return 0
    fi
  done
  log "no free port pair found"
  return 1
}

dir="$(mktemp -d "${TMPDIR:-/tmp}/tandem-apache-kafka.XXXXXX")"
port="$(pick_port)"
export TANDEM_KAFKA_DIR="$dir" TANDEM_KAFKA_PORT="$port"
# A SASL_SSL listener next to the plaintext one, for the TLS/SASL tests
# (testenv.SecureKafka); the password is new for every run.
export TANDEM_KAFKA_SASL_SSL_PORT="$((port + 2))" TANDEM_KAFKA_SASL_USER=tandem
TANDEM_KAFKA_SASL_PASSWORD="pw-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
export TANDEM_KAFKA_SASL_PASSWORD

cleanup() {
  local rc=$?
  scripts/kafka.sh stop || true
  if [ $rc -ne 0 ] && [ -f "$dir/logs/server.log" ]; then
    log "last broker log lines ($dir/logs/server.log):"
    tail -n 20 "$dir/logs/server.log" >&2 || true
  fi
  if [ -z "${TANDEM_KAFKA_KEEP:-}" ]; then
    rm -rf "$dir"
  else
    log "broker dir kept: $dir"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/kafka.sh start

args=("$@")
if [ ${#args[@]} -eq 0 ] || [[ "${args[0]}" == -* ]]; then
  args=("${DEFAULT_PKGS[@]}" "${args[@]}")
fi

log "running ${args[*]} against Apache Kafka at 127.0.0.1:$port"
TANDEM_TEST_KAFKA=apache TANDEM_TEST_KAFKA_BROKERS="127.0.0.1:$port" \
  TANDEM_TEST_KAFKA_SASL_SSL_BROKERS="127.0.0.1:$TANDEM_KAFKA_SASL_SSL_PORT" TANDEM_TEST_KAFKA_CA_FILE="$dir/tls/ca.crt" \
  TANDEM_TEST_KAFKA_SASL_USER="$TANDEM_KAFKA_SASL_USER" TANDEM_TEST_KAFKA_SASL_PASSWORD="$TANDEM_KAFKA_SASL_PASSWORD" \
  "$GO" test -count=1 -timeout "$TEST_TIMEOUT" "${args[@]}"
