#!/usr/bin/env bash
# The main job on a fresh Debian machine (as root): install, then run the demo on the real
# Fashion-MNIST (Debian's dataset-fashion-mnist; a torchvision download where it is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh

SRC=/usr/share/datasets/fashion-mnist
if [ ! -d "$SRC" ]; then
  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1) || true
fi
if [ ! -d "$SRC" ]; then
  echo "[demo] dataset-fashion-mnist unavailable: downloading with torchvision"
  .venv/bin/python -c "from torchvision.datasets import FashionMNIST; FashionMNIST('runs/demo/raw', download=True)"
  SRC=runs/demo/raw/FashionMNIST/raw
fi

OUT=runs/demo
.venv/bin/gencond prep fashion-mnist --source "$SRC" --out "$OUT/fashion-mnist" --force
.venv/bin/gencond inspect "$OUT/fashion-mnist" --grid "$OUT/fashion-mnist-real.png"
