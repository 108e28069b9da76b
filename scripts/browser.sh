#!/usr/bin/env bash
# Installs what the dashboard's browser test needs: Debian's chromium (apt)
# and the npm package playwright-core (no bundled browser: the test drives
# /usr/bin/chromium through it). Both are skipped when already present.
#
#   scripts/browser.sh          install when missing, print the node_modules folder
#   scripts/browser.sh path     print the node_modules folder, fail when not installed
#
# Environment:
#   TANDEM_CACHE               cache dir (default $HOME/.cache/tandem); npm packages go to $TANDEM_CACHE/node
#   TANDEM_PLAYWRIGHT_VERSION  npm version of playwright-core (default latest)
#   TANDEM_CHROMIUM            browser binary (default /usr/bin/chromium)
set -euo pipefail

CACHE="${TANDEM_CACHE:-${HOME:-/root}/.cache/tandem}"
PREFIX="$CACHE/node"
VERSION="${TANDEM_PLAYWRIGHT_VERSION:-latest}"
CHROMIUM="${TANDEM_CHROMIUM:-/usr/bin/chromium}"

log() { printf 'browser.sh: %s\n' "$*" >&2; }

apt_install() {
  [ "$(id -u)" -eq 0 ] || { log "need root to install $*: sudo apt-get install -y $*"; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists: update once when the package is unknown.
  apt-cache show "$1" >/dev/null 2>&1 || apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "$@" >&2
}

have_playwright() { [ -f "$PREFIX/node_modules/playwright-core/package.json" ]; }

case "${1:-install}" in
  install)
    if [ ! -x "$CHROMIUM" ]; then
      log "installing chromium (apt)"
      apt_install chromium fonts-dejavu-core
    fi
    if ! command -v npm >/dev/null 2>&1; then
      log "installing npm (apt)"
      apt_install npm
    fi
    if ! have_playwright; then
      mkdir -p "$PREFIX"
      log "installing playwright-core@$VERSION into $PREFIX"
      # Saved into $PREFIX/package.json (not --no-save), so a later npm
      # install of another tool in the same prefix does not prune it.
      # playwright-core downloads no browser; --ignore-scripts makes sure.
      npm install --prefix "$PREFIX" --no-audit --no-fund --ignore-scripts "playwright-core@$VERSION" >&2
    fi
    have_playwright || { log "playwright-core not found under $PREFIX after npm install"; exit 1; }
    echo "$PREFIX/node_modules"
    ;;
  path)
    [ -x "$CHROMIUM" ] || { log "$CHROMIUM not installed; run: scripts/browser.sh"; exit 1; }
    have_playwright || { log "playwright-core not installed; run: scripts/browser.sh"; exit 1; }
    echo "$PREFIX/node_modules"
    ;;
  *)
    echo "usage: $0 [install|path]" >&2
    exit 2
    ;;
esac
