#!/usr/bin/env bash
# Installs chdb's libchdb.so (a current ClickHouse engine, in-process) from the
# npm package @chdb/lib-linux-x64-gnu into the tandem cache, and prints its
# path. Tests use it through github.com/chdb-io/chdb-go with CHDB_LIB_PATH to
# check that tandem's DDL and queries also run on a current ClickHouse.
#
#   scripts/chdb.sh          install when missing, print the path of libchdb.so
#   scripts/chdb.sh path     print the path, fail when not installed
#
# Environment:
#   TANDEM_CACHE         cache dir (default $HOME/.cache/tandem); the package goes to $TANDEM_CACHE/chdb
#   TANDEM_CHDB_VERSION  npm version (default latest)
set -euo pipefail

CACHE="${TANDEM_CACHE:-${HOME:-/root}/.cache/tandem}"
PREFIX="$CACHE/chdb"
PKG="@chdb/lib-linux-x64-gnu"
VERSION="${TANDEM_CHDB_VERSION:-latest}"

log() { printf 'chdb.sh: %s\n' "$*" >&2; }

find_lib() {
  local f
  f="$(find "$PREFIX/node_modules/$PKG" -name libchdb.so -type f 2>/dev/null | head -n 1)"
  [ -n "$f" ] || return 1
  echo "$f"
}

case "${1:-install}" in
  install)
    if ! find_lib >/dev/null; then
      if ! command -v npm >/dev/null 2>&1; then
        [ "$(id -u)" -eq 0 ] || { log "npm is required: sudo apt-get install -y npm"; exit 1; }
        export DEBIAN_FRONTEND=noninteractive
        apt-cache show npm >/dev/null 2>&1 || apt-get update -q
        apt-get install -y -q npm >&2
      fi
      mkdir -p "$PREFIX"
      log "installing $PKG@$VERSION into $PREFIX (~180 MB download)"
      # --prefix keeps it out of the repo; no scripts run, the .so is the payload.
      npm install --prefix "$PREFIX" --no-audit --no-fund --ignore-scripts --no-save "$PKG@$VERSION" >&2
    fi
    find_lib || { log "libchdb.so not found under $PREFIX after npm install"; exit 1; }
    ;;
  path)
    find_lib || { log "libchdb.so not installed; run: make chdb-lib"; exit 1; }
    ;;
  *)
    echo "usage: $0 [install|path]" >&2
    exit 2
    ;;
esac
