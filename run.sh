#!/usr/bin/env bash
# One entry point for a fresh machine:
#   bash run.sh explore   set up everything, then open the explorer (JupyterLab) on resnet18
#   bash run.sh test      set up everything, then run the whole test suite
#   bash run.sh setup     only set up (.venv with pinned torch, the package, Debian packages)
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv
TORCH_PIN="torch==2.14.1 torchvision==0.29.1"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {  # apt_install <command-to-check> <packages...>
  local check=$1; shift
  if ! command -v "$check" >/dev/null 2>&1; then
    echo "== installing Debian packages: $*"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
  fi
}

setup() {
  apt_install dot graphviz
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "== installing $TORCH_PIN"
    python -m pip install -q $TORCH_PIN 2>&1 | grep -v "is ignored" || true
  fi
  echo "== installing prune_explorer and its extras"
  python -m pip install -q -e ".[explorer,zoo,test,cli,bench]" 2>&1 | grep -v "is ignored" || true
}

case "${1:-explore}" in
  setup)
    setup ;;
  explore)
    setup
    # start the notebook's kernel without asking, and open it (a browser if there is a screen)
    mkdir -p "$VENV/share/jupyter/lab/settings"
    echo '{"@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": true}}' \
      > "$VENV/share/jupyter/lab/settings/overrides.json"
    browser=--no-browser
    [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && browser=""
    if [ -f notebooks/explore.ipynb ]; then
      echo "== opening the explorer: run the first cell, then click a layer"
      exec jupyter lab $browser --ip=127.0.0.1 --port="${PORT:-8888}" --allow-root \
        --ServerApp.root_dir="$PWD" notebooks/explore.ipynb
    else
      exec python -m prune_explorer.cli plan torchvision:resnet18 --layer conv1 --idxs 2,6,9
    fi ;;
  test)
    setup
    apt_install chromium chromium chromium-driver
    shift || true
    exec python -m pytest -q "$@" ;;
  *)
    echo "usage: bash run.sh [explore|test|setup]" >&2; exit 2 ;;
esac
