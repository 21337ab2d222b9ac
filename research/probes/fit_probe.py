"""Probe (issue 3): the coreset fit of a preset alone, as `gencond condense` runs it (same G,
codebook, herding coreset, optimizer), its pixel MSE printed for the first 10 steps and every
100 after. Threads and `--set` overrides are arguments, to test the fit's stability. The
herding coreset is cached in OUT_DIR/coreset.pt (it depends on the teacher, not on the fit
settings). Usage:
python -m research.probes.fit_probe DATA PRE THREADS OUT_DIR TAG [key=value ...]"""

import json
import sys
import time
from pathlib import Path

import torch

from data_prep.meta import load_meta
from engine import artifact
from engine.coreset_init import coreset, fit_to_coreset
from engine.presets import load_preset
from engine.stages import load_pretrained, teacher_from
from engine.step import StepModules

data, pre_dir, threads, out_dir, tag = (
    sys.argv[1],
    Path(sys.argv[2]),
    int(sys.argv[3]),
    Path(sys.argv[4]),
    sys.argv[5],
)
torch.set_num_threads(threads)
cfg = load_preset("fashion-mnist-smoke", sys.argv[6:])
meta = load_meta(data)
pre = load_pretrained(pre_dir, meta)
teacher = teacher_from(pre, meta).requires_grad_(False)
out_dir.mkdir(parents=True, exist_ok=True)
cache = out_dir / "coreset.pt"
if cache.is_file():
    images = torch.load(cache, weights_only=True)
else:
    images, _ = coreset(cfg, data, teacher)
    torch.save(images, cache)
m = StepModules(cfg, meta, artifact.rebuild_generator(pre), pre.conditions, torch.device("cpu"))
curve: list[tuple[int, float]] = []
began = time.time()


def record(step: int, mse: float) -> None:
    if step < 10 or step % 100 == 0 or step == cfg.condense.coreset_fit_steps - 1:
        curve.append((step, round(mse, 5)))
        print(f"{tag} step {step} mse {mse:.5f} ({time.time() - began:.0f} s)", flush=True)


final = fit_to_coreset(
    m.G,
    m.codebook,
    m.conditions,
    images,
    list(range(meta.num_classes)),
    meta.num_classes,
    cfg,
    on_step=record,
)
result = {
    "tag": tag,
    "threads": threads,
    "overrides": sys.argv[6:],
    "final_mse": final,
    "seconds": round(time.time() - began, 1),
    "curve": curve,
}
(out_dir / f"{tag}.json").write_text(json.dumps(result, indent=1))
