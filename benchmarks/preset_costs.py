"""The analytic step costs of several presets (engine/cost_model.py) as
benchmarks/results/cost_model.json: `python -m benchmarks.preset_costs`."""

from __future__ import annotations

from benchmarks.cost_model import preset_costs
from benchmarks.results import RESULTS_DIR, write_result

PRESETS = [
    "cifar10-ipc10",
    "cifar10-ipc50",
    "tiny-imagenet-ipc10",
    "imagenet64-ipc10",
    "imagenet64-ipc10+condense.precision=bf16",
    "imagenet64-ipc50",
    "fashion-mnist-smoke",
]

if __name__ == "__main__":
    write_result(
        RESULTS_DIR / "cost_model.json",
        {"presets": PRESETS},
        preset_costs(PRESETS),
        note="analytic (engine/cost_model.py), not a measurement",
    )
