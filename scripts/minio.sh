#!/usr/bin/env bash
# Local MinIO (S3) for tandem.
#
#   scripts/minio.sh install   build MinIO from the Go module proxy when missing (~2.5 min)
#   scripts/minio.sh start     start it on loopback (idempotent)
#   scripts/minio.sh stop      stop it (SIGTERM, then SIGKILL after a grace period)
#   scripts/minio.sh status    exit 0 when it is ready, 1 when not
#   scripts/minio.sh path      print the path of the minio binary
#
# Environment:
#   TANDEM_MINIO_DIR           data dir (default .tandem/minio); logs and pidfile go to
#                              its sibling .tandem/minio.run so MinIO's data dir holds
#                              only buckets
#   TANDEM_MINIO_PORT          S3 API port (default 9100; 9000 is ClickHouse's)
#   TANDEM_MINIO_CONSOLE_PORT  web console port (default 9101, or the next free one)
#   TANDEM_MINIO_CERTS_DIR     serve HTTPS only, with public.crt and private.key from
#                              this dir (MinIO's --certs-dir); tandem then needs
#                              s3.tls.ca_file naming the CA that signed public.crt
#   MINIO_ROOT_USER            access key (default tandem)
#   MINIO_ROOT_PASSWORD        secret key (default tandem-dev-secret)
#   TANDEM_CACHE               download/build cache (default $HOME/.cache/tandem)
#
# MinIO is AGPL: tandem only runs it as a separate program and never imports it.
set -euo pipefail

CACHE="${TANDEM_CACHE:-${HOME:-/root}/.cache/tandem}"
BIN_DIR="$CACHE/bin"
MINIO_VERSION="${TANDEM_MINIO_VERSION:-latest}"

DATA_DIR="${TANDEM_MINIO_DIR:-.tandem/minio}"
PORT="${TANDEM_MINIO_PORT:-9100}"
CONSOLE_PORT="${TANDEM_MINIO_CONSOLE_PORT:-}"
# free_console_port moves CONSOLE_PORT to the next port from $1 that nobody
# answers on.
free_console_port() {
  CONSOLE_PORT=$1
  while { [[ $CONSOLE_PORT == "$PORT" ]] || (exec 3<>"/dev/tcp/127.0.0.1/$CONSOLE_PORT") 2>/dev/null; } && [[ $CONSOLE_PORT -lt 9199 ]]; do
    CONSOLE_PORT=$((CONSOLE_PORT + 1))
  done
}
CONSOLE_PORT_CHOSEN=0
if [[ -z "$CONSOLE_PORT" ]]; then
  # Nobody asked for a console port: take 9101, or the next free one when
  # another MinIO (a test's, another checkout's) holds it — MinIO refuses
  # to start when its console port is taken.
  CONSOLE_PORT_CHOSEN=1
  free_console_port 9101
fi
export MINIO_ROOT_USER="${MINIO_ROOT_USER:-tandem}"
export MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-tandem-dev-secret}"
START_TIMEOUT="${TANDEM_MINIO_START_TIMEOUT:-30}"

log() { printf 'minio.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

minio_bin() {
  if [ -x "$BIN_DIR/minio" ]; then
    echo "$BIN_DIR/minio"
  elif command -v minio >/dev/null 2>&1; then
    command -v minio
  else
    return 1
  fi
}

cmd_install() {
  if bin="$(minio_bin)"; then
    log "already installed: $bin"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go is required to build MinIO"
  mkdir -p "$BIN_DIR"
  log "building github.com/minio/minio@$MINIO_VERSION into $BIN_DIR (takes a few minutes)"
  # Run outside the repo so tandem's go.mod is neither read nor changed.
  (cd "$BIN_DIR" && GOFLAGS= GOBIN="$BIN_DIR" go install "github.com/minio/minio@$MINIO_VERSION")
  log "installed: $BIN_DIR/minio"
}

abs_dir() {
  mkdir -p "$DATA_DIR"
  (cd "$DATA_DIR" && pwd)
}

run_dir() {
  local d
  d="$(abs_dir).run"
  mkdir -p "$d"
  echo "$d"
}

running_pid() {
  local pf pid
  pf="$(run_dir)/minio.pid"
  [ -s "$pf" ] || return 1
  pid="$(tr -dc '0-9' <"$pf")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

CERTS_DIR="${TANDEM_MINIO_CERTS_DIR:-}"

ready() {
  if [ -n "$CERTS_DIR" ]; then
    # Over TLS; -k because this only asks whether the server is up, the
    # certificate is the client's business.
    curl -fsk -o /dev/null --max-time 2 "https://127.0.0.1:$PORT/minio/health/ready" 2>/dev/null
    return
  fi
  # The readiness endpoint needs no credentials. Bash's /dev/tcp keeps this
  # free of curl/wget, which a fresh Debian may lack. The subshell keeps the
  # fd and the connection errors away from this shell.
  (
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
    printf 'GET /minio/health/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    IFS= read -r -t 2 status <&3 || exit 1
    [[ "$status" == *" 200 "* ]]
  ) 2>/dev/null
}

cmd_start() {
  local bin dir rdir pid i
  bin="$(minio_bin)" || die "minio not found in $BIN_DIR; run: make deps (or $0 install)"
  dir="$(abs_dir)"
  rdir="$(run_dir)"
  if pid="$(running_pid)"; then
    log "already running at $dir (pid $pid, port $PORT)"
    return 0
  fi
  # Something else answering on the port (another test's MinIO that took
  # the same free port) would pass the readiness check below while this
  # MinIO fails to bind and exits: refuse clearly instead.
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "port $PORT is already in use by another process; choose another TANDEM_MINIO_PORT"
  fi
  local tls=() scheme=http
  if [ -n "$CERTS_DIR" ]; then
    [ -f "$CERTS_DIR/public.crt" ] && [ -f "$CERTS_DIR/private.key" ] \
      || die "TANDEM_MINIO_CERTS_DIR=$CERTS_DIR must hold public.crt and private.key (PEM)"
    command -v curl >/dev/null || die "TANDEM_MINIO_CERTS_DIR needs curl for the readiness check"
    tls=(--certs-dir "$CERTS_DIR")
    scheme=https
  fi
  local attempt logged
  for ((attempt = 1; ; attempt++)); do
    logged=$(stat -c %s "$rdir/minio.log" 2>/dev/null || echo 0)
    # setsid detaches it from this shell's session so it outlives the script.
    MINIO_UPDATE=off setsid "$bin" server --quiet \
      --address "127.0.0.1:$PORT" --console-address "127.0.0.1:$CONSOLE_PORT" "${tls[@]}" \
      "$dir" >>"$rdir/minio.log" 2>&1 </dev/null &
    echo $! >"$rdir/minio.pid"
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
      # Ready, and still this process: one that lost the port to another
      # listener exits right after its failed bind.
      if ready && sleep 0.2 && running_pid >/dev/null && ready; then
        log "started at $dir (pid $(running_pid), S3 $scheme://127.0.0.1:$PORT, console http://127.0.0.1:$CONSOLE_PORT, user $MINIO_ROOT_USER)"
        return 0
      fi
      running_pid >/dev/null || break
      sleep 0.1
    done
    running_pid >/dev/null && break # alive but never ready: reported below
    # The free console port probed above can be taken by another MinIO
    # starting at the same moment (tests run in parallel): when this script
    # chose the port, take the next one and start again.
    if ((CONSOLE_PORT_CHOSEN && attempt < 5)) &&
      tail -c +$((logged + 1)) "$rdir/minio.log" | grep -q 'Unable to initialize console server'; then
      local taken=$CONSOLE_PORT
      free_console_port $((CONSOLE_PORT + 1))
      log "console port $taken was taken while starting; trying $CONSOLE_PORT"
      continue
    fi
    log "minio exited during start-up; last log lines:"
    tail -n 20 "$rdir/minio.log" >&2 || true
    exit 1
  done
  log "not ready on port $PORT within ${START_TIMEOUT}s; last log lines:"
  tail -n 20 "$rdir/minio.log" >&2 || true
  exit 1
}

cmd_stop() {
  local pid rdir i
  rdir="$(run_dir)"
  if ! pid="$(running_pid)"; then
    log "not running at $(abs_dir)"
    rm -f "$rdir/minio.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored SIGTERM for 10s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$rdir/minio.pid"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid
  if pid="$(running_pid)" && ready; then
    echo "minio: running at $(abs_dir) (pid $pid, S3 http://127.0.0.1:$PORT, console http://127.0.0.1:$CONSOLE_PORT)"
    return 0
  fi
  echo "minio: not running at $(abs_dir)"
  return 1
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  path) minio_bin || die "minio not installed; run: $0 install" ;;
  *)
    echo "usage: $0 install|start|stop|status|path" >&2
    exit 2
    ;;
esac
