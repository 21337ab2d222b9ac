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
DATA="$OUT/fashion-mnist"
RUN="$OUT/fashion-mnist-ipc10"
G=.venv/bin/gencond
$G prep fashion-mnist --source "$SRC" --out "$DATA" --force
$G inspect "$DATA" --grid "$OUT/fashion-mnist-real.png"
# The recommended recipe (herding-dm: the herding coreset fitted into G and the codebook, then
# the paper's loop with DM's class-mean matching) on a demo budget (2 CPU cores): shorter GAN
# pretraining (500 steps), a 1,000-step fit and 300 loop steps, then 2 evaluation seeds of 50
# epochs beside random real images and the herding coreset. The paper's method is one flag
# away: drop --recipe herding-dm (docs/recipes.md says when to use which).
rm -rf "$RUN"
$G condense --preset fashion-mnist-smoke --recipe herding-dm --data "$DATA" --out "$RUN" \
  --set gan.steps=500 --set condense.coreset_fit_steps=1000 --set condense.coreset_fit_lr=0.001 \
  --set condense.outer_iterations=300
$G synthesize "$RUN"
$G evaluate "$RUN" --data "$DATA" --seeds 2 --epochs 50 --baselines random,herding
