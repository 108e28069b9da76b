#!/usr/bin/env bash
# Local ZooKeeper for a replicated ClickHouse cluster (clickhouse.replicated).
#
#   scripts/zookeeper.sh install   copy ZooKeeper's jars from Maven Central (mvn) when missing
#   scripts/zookeeper.sh path      print the directory of the jars
#   scripts/zookeeper.sh start     start a loopback-only standalone server (idempotent)
#   scripts/zookeeper.sh stop      stop it
#
# Environment:
#   TANDEM_ZK_HOME   where the jars go (default ~/.cache/tandem/zookeeper-3.8.4)
#   TANDEM_ZK_DIR    data dir, rendered zoo.cfg, log and pidfile (default .tandem/zookeeper)
#   TANDEM_ZK_PORT   client port (default 2181)
#
# Needs java (17+) and mvn; deploy/local/zookeeper/{pom.xml,zoo.cfg} are the
# inputs, the same ones internal/testenv uses.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ZK_HOME="${TANDEM_ZK_HOME:-$HOME/.cache/tandem/zookeeper-3.8.4}"
ZK_DIR="${TANDEM_ZK_DIR:-.tandem/zookeeper}"
ZK_PORT="${TANDEM_ZK_PORT:-2181}"

log() { printf 'zookeeper.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

cmd_install() {
  if [ -f "$ZK_HOME/lib/zookeeper-3.8.4.jar" ]; then
    log "already installed: $ZK_HOME/lib"
    return 0
  fi
  if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    # As scripts/kafka.sh: Java and Maven from Debian's packages.
    [ "$(id -u)" -eq 0 ] || die "java and mvn are missing; run: sudo apt-get install openjdk-17-jre-headless maven"
    log "installing Java 17 and Maven from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  fi
  mkdir -p "$ZK_HOME"
  mvn -q -B -f "$REPO_ROOT/deploy/local/zookeeper/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$ZK_HOME/lib.tmp" -DincludeScope=runtime
  rm -rf "$ZK_HOME/lib"
  mv "$ZK_HOME/lib.tmp" "$ZK_HOME/lib"
  log "installed: $ZK_HOME/lib"
}

abs_dir() { mkdir -p "$ZK_DIR"; (cd "$ZK_DIR" && pwd); }

running_pid() {
  local pf pid
  pf="$(abs_dir)/zookeeper.pid"
  [ -s "$pf" ] || return 1
  pid="$(tr -dc '0-9' <"$pf")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

cmd_start() {
  local dir i
  [ -f "$ZK_HOME/lib/zookeeper-3.8.4.jar" ] || die "not installed; run: $0 install"
  dir="$(abs_dir)"
  if running_pid >/dev/null; then
    log "already running at $dir (port $ZK_PORT)"
    return 0
  fi
  mkdir -p "$dir/data"
  sed -e "s|@DATA_DIR@|$dir/data|g" -e "s|@PORT@|$ZK_PORT|g" "$REPO_ROOT/deploy/local/zookeeper/zoo.cfg" >"$dir/zoo.cfg"
  nohup java -Xmx256m -cp "$ZK_HOME/lib/*" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
    >>"$dir/zookeeper.log" 2>&1 </dev/null &
  echo $! >"$dir/zookeeper.pid"
  for ((i = 0; i < 200; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$ZK_PORT") 2>/dev/null; then
      log "started at $dir (pid $(cat "$dir/zookeeper.pid"), 127.0.0.1:$ZK_PORT)"
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$dir/zookeeper.log" >&2 || true
  die "did not listen on 127.0.0.1:$ZK_PORT within 20s"
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$(abs_dir)/zookeeper.pid"
  log "stopped (pid $pid)"
}

case "${1:-}" in
  install) cmd_install ;;
  path) echo "$ZK_HOME/lib" ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) echo "usage: $0 install|path|start|stop" >&2; exit 2 ;;
esac
