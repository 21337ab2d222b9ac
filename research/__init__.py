"""The lab notebook beside the product: probes, ablation variants, kept pretrain stages and
their results. Not part of the installed package; see research/README.md."""

from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STAGES_DIR = Path(__file__).resolve().parent / "stages"
