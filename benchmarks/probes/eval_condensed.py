"""Probe (issue 3): evaluate only the condensed set of RUN (the preset's protocol: ConvNet-128,
DSA, hard labels) at EPOCHS epochs over SEEDS seeds, into RUN/eval_<SEEDS>x<EPOCHS>.json.
Seed i is the same network init and batch order as seed i of `gencond evaluate`, so the numbers
sit beside that command's random / herding rows. Usage:
python -m benchmarks.probes.eval_condensed RUN DATA SEEDS EPOCHS"""

import json
import sys
import time
from pathlib import Path

from engine.evaluate import EvalConfig, evaluate_sets
from engine.stages import load_condensed, synthetic_set

run, data, seeds, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
began = time.time()
result = evaluate_sets({"condensed": synthetic_set(load_condensed(run))}, data,
                       EvalConfig(seeds=seeds, epochs=epochs))  # fmt: skip
result["seconds"] = round(time.time() - began, 1)
print(json.dumps(result))
(run / f"eval_{seeds}x{epochs}.json").write_text(json.dumps(result, indent=1))
