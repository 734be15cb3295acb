#!/usr/bin/env bash
# One entry point for a fresh machine:
#   bash run.sh explore [MODEL]  set up, then open the explorer on a model (default resnet18) as
#                                a page of its own (`explore lab`: the notebook in JupyterLab)
#   bash run.sh test [--all]     set up, then run the tests (--all: also the slow ones, as CI)
#   bash run.sh cli ARGS...      the `prune-explorer` command, from the project's venv
#   bash run.sh setup            only set up (.venv with pinned torch, the package, Debian packages)
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv
TORCH_PIN="torch==2.14.1 torchvision==0.29.1"
LOG=$VENV/setup.log

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {  # apt_install <command-to-check> <packages...>: only what is missing
  local check=$1; shift
  command -v "$check" >/dev/null 2>&1 && return 0
  echo "== installing Debian packages: $* (waits for another apt to finish, if one runs)"
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
  for attempt in 1 2; do
    if as_root "${apt[@]}" update -qq >/dev/null &&
       DEBIAN_FRONTEND=noninteractive as_root "${apt[@]}" install -y -qq "$@" >/dev/null; then
      return 0
    fi
    if [ "$attempt" = 1 ]; then echo "   apt-get failed (above); trying once more in 15 s"; sleep 15; fi
  done
  echo "!! could not install $*: install them yourself (apt-get install -y $*), then re-run" >&2
  return 1
}

pip_quiet() {  # pip_quiet <what> <pip args...>: one line of progress, the full log on failure
  local what=$1; shift
  echo "== installing $what"
  if ! python -m pip install --progress-bar off "$@" >>"$LOG" 2>&1; then
    echo "!! pip failed; the last lines of $LOG:" >&2
    tail -n 25 "$LOG" >&2
    return 1
  fi
}

setup() {  # setup <extras>: skips every step that is already done
  local extras=$1
  apt_install dot graphviz
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  local stamp
  stamp="$VENV/.setup-$(cat pyproject.toml run.sh | sha1sum | cut -c1-12)-${extras//,/-}"
  if [ -f "$stamp" ] && python -c "import torch, torchvision, prune_explorer" 2>/dev/null; then
    return 0  # nothing changed since the last set-up
  fi
  : >"$LOG"
  python -m pip install -q --upgrade pip >>"$LOG" 2>&1 || true
  if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "== installing $TORCH_PIN (a large download the first time: pip shows its progress)"
    python -m pip install $TORCH_PIN || { echo "!! PyTorch did not install (above)" >&2; exit 1; }
  fi
  pip_quiet "prune_explorer with [$extras] (about a minute the first time; log: $LOG)" \
    -e ".[$extras]"
  touch "$stamp"
}

case "${1:-explore}" in
  setup)
    setup explorer,zoo,cli,test,bench,llm,realworld ;;
  cli)
    setup explorer,zoo,cli
    shift
    exec python -m prune_explorer.cli "$@" ;;
  explore)
    setup explorer,zoo,cli
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
    # screen, else the URL to open
    echo "== opening the explorer on ${1:-torchvision:resnet18} (Ctrl-C stops it)"
    echo "   (the command line is \`bash run.sh cli --help\`, or \`. .venv/bin/activate\` then \`prune-explorer\`)"
    exec python -m prune_explorer.cli explore "${1:-torchvision:resnet18}" \
      ${PORT:+--port "$PORT"} ;;
  test)
    setup explorer,zoo,cli,test,bench,llm,realworld
    apt_install chromium chromium
    shift || true
    args=(-m "not slow")
    if [ "${1:-}" = "--all" ]; then
      shift; args=(); export PE_ZOO=1
      echo "== running every test, the slow ones too (browser, notebooks, the torchvision zoo)"
    else
      echo "== running the fast tests in parallel (\`bash run.sh test --all\` runs everything)"
    fi
    exec python -m pytest -q -rs -n "${PE_WORKERS:-2}" "${args[@]}" "$@" ;;
  *)
    echo "usage: bash run.sh [explore [MODEL|lab]|test [--all]|cli ARGS|setup]" >&2; exit 2 ;;
esac
