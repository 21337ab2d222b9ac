"""Probe (issue 3): evaluate only the condensed set of RUN (the preset's protocol: ConvNet-128,
DSA, hard labels) at EPOCHS epochs over SEEDS seeds, into RUN/eval_<SEEDS>x<EPOCHS>.json.
Seed i is the same network init and batch order as seed i of `gencond evaluate`, so the numbers
sit beside that command's random / herding rows. OFFSET (default 0) starts at seed OFFSET, to
add seeds to an earlier call (RUN/eval_<SEEDS>x<EPOCHS>_o<OFFSET>.json). Usage:
python -m research.probes.eval_condensed RUN DATA SEEDS EPOCHS [OFFSET]"""

import json
import sys
import time
from pathlib import Path

from engine.config import EvalConfig
from engine.evaluate import evaluate_sets
from engine.stages import load_condensed, synthetic_set

run, data, seeds, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
offset = int(sys.argv[5]) if len(sys.argv) > 5 else 0
began = time.time()
result = evaluate_sets(
    {"condensed": synthetic_set(load_condensed(run))},
    data,
    EvalConfig(seeds=seeds, epochs=epochs),
    seed_offset=offset,
)
result["seconds"] = round(time.time() - began, 1)
print(json.dumps(result))
suffix = f"_o{offset}" if offset else ""
(run / f"eval_{seeds}x{epochs}{suffix}.json").write_text(json.dumps(result, indent=1))
