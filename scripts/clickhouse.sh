#!/usr/bin/env bash
# Local ClickHouse for tandem: install it, and run it without systemd.
#
#   scripts/clickhouse.sh install   apt-get install clickhouse-server/-client when missing
#   scripts/clickhouse.sh start     start a loopback-only server (idempotent)
#   scripts/clickhouse.sh stop      stop it (SIGTERM, then SIGKILL after a grace period)
#   scripts/clickhouse.sh status    exit 0 when it answers, 1 when not
#
# Environment:
#   TANDEM_CH_DIR            data dir (default .tandem/clickhouse); also holds the
#                            rendered config, logs and the pidfile
#   TANDEM_CH_PORT           native TCP port (default 9000)
#   TANDEM_CH_HTTP_PORT      HTTP port (default 8123)
#   TANDEM_ANALYST_PASSWORD  password of the read-only `analyst` user (default analyst)
#   TANDEM_CH_SECURE_PORT    also serve the secure native port (TLS) here; needs
#   TANDEM_CH_TLS_CERT       the server certificate (PEM) and
#   TANDEM_CH_TLS_KEY        its private key (PEM), absolute paths
#   TANDEM_CH_SHARDS         run N servers (default 1) as the N shards of one
#                            cluster: server i in TANDEM_CH_DIR/shard<i> on native
#                            port TANDEM_CH_PORT+i-1 and HTTP port
#                            TANDEM_CH_HTTP_PORT+i-1; every server gets
#                            config.d/cluster.xml (deploy/local/clickhouse/cluster.xml)
#   TANDEM_CH_CLUSTER        that cluster's name (default tandem): set
#                            clickhouse.cluster to it and clickhouse.addr to the
#                            first server
#
# The config comes from deploy/local/clickhouse/{config,users}.xml, the same
# templates internal/testenv renders for the Go tests.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TEMPLATES="$REPO_ROOT/deploy/local/clickhouse"

CH_DIR="${TANDEM_CH_DIR:-.tandem/clickhouse}"
CH_PORT="${TANDEM_CH_PORT:-9000}"
CH_HTTP_PORT="${TANDEM_CH_HTTP_PORT:-8123}"
ANALYST_PASSWORD="${TANDEM_ANALYST_PASSWORD:-analyst}"
CH_SECURE_PORT="${TANDEM_CH_SECURE_PORT:-}"
CH_TLS_CERT="${TANDEM_CH_TLS_CERT:-}"
CH_TLS_KEY="${TANDEM_CH_TLS_KEY:-}"
START_TIMEOUT="${TANDEM_CH_START_TIMEOUT:-20}"
CH_SHARDS="${TANDEM_CH_SHARDS:-1}"
CH_CLUSTER="${TANDEM_CH_CLUSTER:-tandem}"
# Set by the cluster mode below for each server it starts: the rendered
# remote_servers file to install as config.d/cluster.xml.
CH_CLUSTER_FILE="${TANDEM_CH_CLUSTER_FILE:-}"

log() { printf 'clickhouse.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# server_cmd prints the command that runs the server. Debian ships a separate
# clickhouse-server binary (in /usr/sbin, which may not be on a user's PATH);
# upstream packages ship one multi-call `clickhouse` binary.
server_cmd() {
  if command -v clickhouse-server >/dev/null 2>&1; then
    command -v clickhouse-server
  elif [ -x /usr/sbin/clickhouse-server ]; then
    echo /usr/sbin/clickhouse-server
  elif command -v clickhouse >/dev/null 2>&1; then
    echo "$(command -v clickhouse) server"
  else
    return 1
  fi
}

client_cmd() {
  if command -v clickhouse-client >/dev/null 2>&1; then
    command -v clickhouse-client
  elif command -v clickhouse >/dev/null 2>&1; then
    echo "$(command -v clickhouse) client"
  else
    return 1
  fi
}

cmd_install() {
  if server_cmd >/dev/null && client_cmd >/dev/null; then
    log "already installed: $(server_cmd)"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "installing needs root (apt-get); run: sudo $0 install"
  export DEBIAN_FRONTEND=noninteractive
  # Update the package lists only when apt does not know the package yet
  # (a fresh container has empty lists); otherwise installing is offline-fast.
  if ! apt-cache show clickhouse-server >/dev/null 2>&1; then
    apt-get update -q
  fi
  apt-get install -y -q --no-install-recommends clickhouse-server clickhouse-client
  # Debian's postinst may start the packaged service; tandem never uses it and
  # it would hold port 9000.
  if command -v service >/dev/null 2>&1; then
    service clickhouse-server stop >/dev/null 2>&1 || true
  fi
  server_cmd >/dev/null || die "clickhouse-server still missing after apt-get install"
  log "installed: $(server_cmd)"
}

# abs_dir makes the data dir absolute: ClickHouse resolves <path> against its
# working directory, which the daemon changes.
abs_dir() {
  mkdir -p "$CH_DIR"
  (cd "$CH_DIR" && pwd)
}

pidfile() { echo "$(abs_dir)/clickhouse.pid"; }

running_pid() {
  local pf pid
  pf="$(pidfile)"
  [ -s "$pf" ] || return 1
  pid="$(tr -dc '0-9' <"$pf")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

answers() {
  local client
  client="$(client_cmd)" || return 1
  # shellcheck disable=SC2086 # client may be "clickhouse client"
  $client --host 127.0.0.1 --port "$CH_PORT" --query 'SELECT 1' >/dev/null 2>&1
}

render() {
  # render TEMPLATE OUT: substitute the @NAME@ placeholders. The password is
  # XML-escaped, then escaped for sed's replacement text.
  local tmpl="$1" out="$2" dir="$3" pw
  pw="$(printf '%s' "$ANALYST_PASSWORD" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g')"
  pw="$(printf '%s' "$pw" | sed -e 's/[\\&|]/\\&/g')"
  sed -e "s|@DATA_DIR@|$dir/|g" \
      -e "s|@TCP_PORT@|$CH_PORT|g" \
      -e "s|@HTTP_PORT@|$CH_HTTP_PORT|g" \
      -e "s|@LISTEN_HOST@|127.0.0.1|g" \
      -e "s|@ANALYST_PASSWORD@|$pw|g" \
      -e "s|@TCP_PORT_SECURE@|$CH_SECURE_PORT|g" \
      -e "s|@CERT_FILE@|$CH_TLS_CERT|g" \
      -e "s|@KEY_FILE@|$CH_TLS_KEY|g" \
      "$tmpl" >"$out.tmp"
  mv "$out.tmp" "$out"
}

cmd_start() {
  local server dir pid i
  server="$(server_cmd)" || die "clickhouse-server not found; run: make deps (or $0 install)"
  dir="$(abs_dir)"
  if pid="$(running_pid)"; then
    log "already running at $dir (pid $pid, port $CH_PORT)"
    return 0
  fi
  mkdir -p "$dir/log" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
  render "$TEMPLATES/config.xml" "$dir/config.xml" "$dir"
  render "$TEMPLATES/users.xml" "$dir/users.xml" "$dir"
  # The secure port comes from config.d/, which the server merges into
  # config.xml; a start without TLS removes it again.
  rm -f "$dir/config.d/tls.xml" "$dir/config.d/cluster.xml"
  if [ -n "$CH_CLUSTER_FILE" ]; then
    mkdir -p "$dir/config.d"
    cp "$CH_CLUSTER_FILE" "$dir/config.d/cluster.xml"
  fi
  if [ -n "$CH_SECURE_PORT" ]; then
    [ -f "$CH_TLS_CERT" ] && [ -f "$CH_TLS_KEY" ] \
      || die "TANDEM_CH_SECURE_PORT needs TANDEM_CH_TLS_CERT and TANDEM_CH_TLS_KEY naming the server's PEM certificate and key"
    mkdir -p "$dir/config.d"
    render "$TEMPLATES/tls.xml" "$dir/config.d/tls.xml" "$dir"
  fi
  rm -f "$dir/clickhouse.pid"
  # --daemon forks into the background and writes the pidfile; stdout/stderr
  # of the early start-up go to a file so a failing start can be diagnosed.
  # shellcheck disable=SC2086 # server may be "clickhouse server"
  $server --config-file="$dir/config.xml" --pid-file="$dir/clickhouse.pid" --daemon \
    >>"$dir/log/stdout.log" 2>&1 </dev/null
  for ((i = 0; i < START_TIMEOUT * 10; i++)); do
    if answers; then
      log "started at $dir (pid $(running_pid || echo '?'), native 127.0.0.1:$CH_PORT, http 127.0.0.1:$CH_HTTP_PORT)"
      return 0
    fi
    sleep 0.1
  done
  log "did not answer SELECT 1 on port $CH_PORT within ${START_TIMEOUT}s; last log lines:"
  tail -n 20 "$dir/log/clickhouse-server.err.log" "$dir/log/stdout.log" >&2 2>/dev/null || true
  exit 1
}

cmd_stop() {
  local pid dir i
  dir="$(abs_dir)"
  if ! pid="$(running_pid)"; then
    log "not running at $dir"
    rm -f "$dir/clickhouse.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  # ClickHouse waits for running queries on SIGTERM; give it 15 s.
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored SIGTERM for 15s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/clickhouse.pid"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid dir
  dir="$(abs_dir)"
  if pid="$(running_pid)" && answers; then
    echo "clickhouse: running at $dir (pid $pid, native 127.0.0.1:$CH_PORT, http 127.0.0.1:$CH_HTTP_PORT)"
    return 0
  fi
  if pid="$(running_pid)"; then
    echo "clickhouse: pid $pid alive but not answering on port $CH_PORT"
  else
    echo "clickhouse: not running at $dir"
  fi
  return 1
}

# each_shard CMD: run this script's CMD for every server of the cluster,
# with the cluster's remote_servers rendered for them (start only).
each_shard() {
  local cmd="$1" dir i shards="" rc=0
  [[ "$CH_SHARDS" =~ ^[1-9][0-9]*$ ]] || die "TANDEM_CH_SHARDS must be a positive number, not '$CH_SHARDS'"
  [[ "$CH_CLUSTER" =~ ^[A-Za-z][A-Za-z0-9_]*$ ]] || die "TANDEM_CH_CLUSTER must be letters, digits and _, not '$CH_CLUSTER'"
  dir="$(abs_dir)"
  for ((i = 0; i < CH_SHARDS; i++)); do
    shards+="            <shard><replica><host>127.0.0.1</host><port>$((CH_PORT + i))</port></replica></shard>"$'\n'
  done
  if [ "$cmd" = start ]; then
    # The replacement has newlines: substitute with awk, not sed.
    awk -v name="$CH_CLUSTER" -v shards="${shards%$'\n'}" \
      '{ gsub(/@CLUSTER@/, name); if ($0 ~ /@SHARDS@/) print shards; else print }' \
      "$TEMPLATES/cluster.xml" >"$dir/cluster.xml"
  fi
  for ((i = 0; i < CH_SHARDS; i++)); do
    TANDEM_CH_SHARDS=1 TANDEM_CH_DIR="$dir/shard$((i + 1))" TANDEM_CH_PORT=$((CH_PORT + i)) \
      TANDEM_CH_HTTP_PORT=$((CH_HTTP_PORT + i)) TANDEM_CH_CLUSTER_FILE="$dir/cluster.xml" \
      "${BASH_SOURCE[0]}" "$cmd" || rc=1
  done
  return $rc
}

if [ "$CH_SHARDS" != 1 ]; then
  case "${1:-}" in
    start | stop | status) each_shard "$1"; exit $? ;;
  esac
fi

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
