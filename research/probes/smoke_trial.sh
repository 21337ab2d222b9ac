#!/usr/bin/env bash
# One tuning trial of the fashion-mnist-smoke preset: condense with an existing smoke pretrain
# stage and --set overrides, then a quick evaluation proxy (2 seeds, 150 epochs, random real
# beside). Usage: smoke_trial.sh DATA PRE OUTDIR TAG key=value ...
set -euo pipefail
data=$1; pre=$2; outdir=$3; tag=$4; shift 4
cd "$(dirname "$0")/../.."
S=""; for s in "$@"; do S="$S --set $s"; done
.venv/bin/python -m launch.cli condense --preset fashion-mnist-smoke --data $data --out $outdir/$tag --pretrained $pre $S > $outdir/$tag.condense.log 2>&1
.venv/bin/python -m launch.cli evaluate $outdir/$tag --data $data --seeds 2 --epochs 150 --baselines random > $outdir/$tag.eval.log 2>&1
grep -E "convnet:" $outdir/$tag.eval.log
