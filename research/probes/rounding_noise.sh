#!/usr/bin/env bash
# How far apart do two single-process runs end when only the intra-op thread count differs?
# That is the floating-point noise floor the world-size invariance tolerance is set against
# (tests/test_distributed.py). Usage: rounding_noise.sh DATA PRE TAG [--set overrides...]
# with DATA/PRE the toy dataset and pretrain stage of tests/test_distributed.py.
set -euo pipefail
data=$1; pre=$2; tag=$3; shift 3
sets=""
for s in teacher.width=8 teacher.epochs=1 teacher.batch_size=32 gan.steps=6 gan.width=4 \
  gan.disc_width=4 gan.batch_size=16 gan.z_dim=8 gan.proj_dim=4 condense.outer_iterations=2 \
  condense.inner_iterations=2 condense.gen_steps=2 condense.phi_width=8 condense.phi_batch=32 \
  condense.assoc_per_image=2 eval.width=8 ipc=3 condense.finetune_generator=true \
  condense.feature_match=image condense.checkpoint_every=0 condense.log_every=1 max_steps=8 "$@"; do
  sets="$sets --set $s"
done
for t in 1 2; do
  OMP_NUM_THREADS=$t python -m launch.cli condense --preset mnist-smoke --data "$data" \
    --out "/tmp/noise/$tag-t$t" --pretrained "$pre" $sets > /dev/null 2>&1
done
python - "$tag" <<'PY'
import sys, torch
tag = sys.argv[1]
a, b = (torch.load(f"/tmp/noise/{tag}-t{t}/condensed.pt", weights_only=False) for t in (1, 2))
g = max((a["generator"][k] - b["generator"][k]).abs().max().item()
        for k in a["generator"] if a["generator"][k].is_floating_point())
print(tag, "codebook", (a["codebook"] - b["codebook"]).abs().max().item(), "G", g)
PY
