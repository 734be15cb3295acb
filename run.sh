#!/usr/bin/env bash
# One entry point for a fresh machine:
#   bash run.sh explore   set up everything, then open the explorer on resnet18 (a page of its
#                         own; `explore MODEL` for another model, `explore lab` for JupyterLab)
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
    shift || true
    # JupyterLab from this venv starts kernels without asking and never covers the explorer
    # with its news / update pop-up
    mkdir -p "$VENV/share/jupyter/lab/settings"
    cat > "$VENV/share/jupyter/lab/settings/overrides.json" <<'JSON'
{"@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": true},
 "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}
JSON
    if [ "${1:-}" = lab ]; then  # bash run.sh explore lab: the notebook in JupyterLab
      browser=--no-browser
      [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && browser=""
      echo "== opening notebooks/explore.ipynb in JupyterLab: run its cell, then click a layer"
      exec jupyter lab $browser --ip=127.0.0.1 --port="${PORT:-8888}" --allow-root \
        --ServerApp.root_dir="$PWD" notebooks/explore.ipynb
    fi
    # the explorer as a page of its own (Voilà): no notebook to run; a window when there is a
    # screen, else the URL to open. bash run.sh explore MODEL for another model.
    echo "== opening the explorer on ${1:-torchvision:resnet18}"
    exec python -m prune_explorer.cli explore "${1:-torchvision:resnet18}" \
      ${PORT:+--port "$PORT"} ;;
  test)
    setup
    apt_install chromium chromium chromium-driver
    shift || true
    exec python -m pytest -q "$@" ;;
  *)
    echo "usage: bash run.sh [explore [MODEL|lab]|test|setup]" >&2; exit 2 ;;
esac
