#!/usr/bin/env bash
# Installs what gencond needs on a fresh Debian machine (as root): apt packages, a virtual
# environment in .venv, torch/torchvision from the registry, ffcv and the project itself.
# Safe to run twice: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="libopencv-dev libturbojpeg0-dev pkg-config python3-venv ${EXTRA_APT_PACKAGES:-}"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "[setup] apt-get install$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
VPIP=".venv/bin/python -m pip"

# The local CPU-only torch wheel breaks `import torchvision`: take the registry's own builds.
if ! .venv/bin/python -c "import torch, torchvision; assert torch.__version__.startswith('2.13.0')" 2>/dev/null; then
  echo "[setup] installing torch 2.13.0 + torchvision 0.28.0"
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_NO_CACHE_DIR=1 $VPIP install -q torch==2.13.0 torchvision==0.28.0
fi

stamp=.venv/.gencond-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing gencond with its test extra (builds ffcv from source)"
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= $VPIP install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
.venv/bin/python -c "import torch, torchvision, ffcv, submitit, rich, engine, data_prep, launch" \
  && echo "[setup] environment ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
