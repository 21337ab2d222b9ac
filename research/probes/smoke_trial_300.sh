#!/usr/bin/env bash
# One issue-3 trial at the bar's evaluation length: condense the fashion-mnist-smoke preset from
# an existing pretrain stage with --set overrides, then evaluate the condensed set alone,
# ConvNet-128, 300 epochs, SEEDS seeds (random / herding: `gencond evaluate` on the same stage).
# Usage: smoke_trial_300.sh DATA PRE OUTDIR TAG SEEDS key=value ...
set -euo pipefail
data=$1; pre=$2; outdir=$3; tag=$4; seeds=$5; shift 5
cd "$(dirname "$0")/../.."
S=""; for s in "$@"; do S="$S --set $s"; done
/usr/bin/time -f %e -o $outdir/$tag.condense_seconds .venv/bin/python -m launch.cli condense \
  --preset fashion-mnist-smoke --data $data --out $outdir/$tag --pretrained $pre $S \
  > $outdir/$tag.condense.log 2>&1
.venv/bin/python -m research.probes.eval_condensed $outdir/$tag $data $seeds 300 \
  > $outdir/$tag.eval.log 2>&1
tail -1 $outdir/$tag.eval.log
