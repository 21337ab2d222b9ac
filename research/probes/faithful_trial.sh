#!/usr/bin/env bash
# One trial of a smoke preset, resumable: pretrain (once per ROOT), condense into ROOT/TAG, then
# evaluate seeds 0..SEEDS-1 one at a time into ROOT/TAG/eval_parts (a finished seed is skipped).
# The --set overrides reach the pretrain stage too (it reads teacher.* and gan.*).
# usage: faithful_trial.sh PRESET DATA ROOT TAG SEEDS BASELINES [--set k=v ...]
# ONLY_SEEDS="5 6 7" evaluates just those of the SEEDS (two of them side by side, one a core).
set -euo pipefail
preset=$1 data=$2 root=$3 tag=$4 seeds=$5 baselines=$6
shift 6
G="python -m launch.cli"
mkdir -p "$root"
if [ ! -f "$root/pre/pretrained.pt" ]; then
  echo "$(date -Is) pretrain start"
  $G pretrain --preset "$preset" --data "$data" --out "$root/pre" "$@"
  echo "$(date -Is) pretrain end"
fi
if [ ! -f "$root/$tag/condensed.pt" ]; then
  echo "$(date -Is) condense start $tag $*"
  $G condense --preset "$preset" --data "$data" --out "$root/$tag" --pretrained "$root/pre" "$@"
  echo "$(date -Is) condense end $tag"
fi
for i in ${ONLY_SEEDS:-$(seq 0 $((seeds - 1)))}; do
  if [ ! -f "$root/$tag/eval_parts/seed_$i.json" ]; then
    $G evaluate "$root/$tag" --data "$data" --seeds "$seeds" --seed-index "$i" \
      --baselines "$baselines"
    echo "$(date -Is) evaluated seed $i"
  fi
done
