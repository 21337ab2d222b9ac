"""The gencond command: help everywhere, inspect, the loader benchmark's result file."""

import json
import subprocess
import sys
import textwrap

import pytest
from formats import write_idx
from helpers import ROOT

from data_prep.options import PrepOptions
from data_prep.prepare import prepare


@pytest.mark.parametrize(
    "argv, needles",
    [
        ([], ["prep", "inspect", "bench"]),
        (
            ["prep"],
            [
                "--source",
                "--out",
                "--workers",
                "--image-size",
                "--force",
                "imagenet64",
                "val_annotations.txt",
            ],
        ),
        (["inspect"], ["--device", "--batch-size", "--grid"]),
        (["bench"], ["loader", "prep"]),
        (["bench", "loader"], ["--images", "--classes-per-step", "--n-per-class", "--threads"]),
        (["bench", "prep"], ["--batches", "--images-per-batch", "--workers"]),
    ],
)
def test_help(cli, argv, needles):
    r = cli(*argv, "--help")
    assert r.returncode == 0, r.stderr
    for needle in needles:
        assert needle in r.stdout


def test_inspect_with_grid(cli, tmp_path):
    write_idx(tmp_path / "src", 600, 100, seed=0, gz=True)
    prepare("mnist", tmp_path / "src", tmp_path / "data", PrepOptions(workers=1))
    r = cli("inspect", tmp_path / "data", "--batch-size", "64", "--grid", tmp_path / "grid.png")
    assert r.returncode == 0, r.stderr
    for needle in ("random (train)", "class-grouped", "sequential (test)", "counts match"):
        assert needle in r.stdout
    from PIL import Image

    # 10 classes x 10 images of 28 px with 1 px padding
    assert Image.open(tmp_path / "grid.png").size == (10 * 29 + 1, 10 * 29 + 1)


def test_bench_loader_result_file(cli, tmp_path):
    out = tmp_path / "loader.json"
    r = cli(
        "bench",
        "loader",
        "--images",
        "3000",
        "--classes",
        "20",
        "--image-size",
        "16",
        "--classes-per-step",
        "5",
        "--n-per-class",
        "8",
        "--steps",
        "10",
        "--workdir",
        tmp_path / "work",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    for key in ("machine", "torch", "commit", "created", "config", "rows"):
        assert key in result
    names = [row["loader"] for row in result["rows"]]
    assert names[:2] == ["ffcv random", "ffcv class-grouped"]
    assert any(n.startswith("torch DataLoader") for n in names)
    assert all(row["images_per_s"] > 0 for row in result["rows"])
    assert result["rows"][0]["images"] == (3000 // 256) * 256


def test_dead_writer_process_is_an_error_not_a_hang(tmp_path):
    """FFCV's writer waits forever for a worker that died; ours must raise."""
    script = textwrap.dedent(f"""
        import os, numpy as np
        from pathlib import Path
        from data_prep.beton import write_beton
        from data_prep.splits import Segment, Split
        from common.errors import DataError

        class Dying(Split):
            def __getitem__(self, i):
                if i == 150:
                    os._exit(3)
                return super().__getitem__(i)

        images = np.zeros((300, 4, 4, 1), np.uint8)
        split = Dying([Segment(images, np.zeros(300, np.int64), Path("x"))])
        try:
            write_beton(Path({str(tmp_path / "t.beton")!r}), split, 2, "test")
        except DataError as e:
            print("refused:", e)
    """)
    r = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert "refused:" in r.stdout and "writer process died (exit code 3)" in r.stdout, r.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["condense", "--preset", "nope", "--data", "{tmp}", "--out", "{tmp}/o"], "unknown preset"),
        (["synthesize", "{tmp}/run"], "no condensed artifact"),
        (["evaluate", "{tmp}/run", "--data", "{tmp}"], "no condensed artifact"),
    ],
)
def test_bad_arguments_fail_before_the_data_stack_loads(tmp_path, argv, message):
    """A typo is answered before ffcv loads (its import compiles numba code: seconds per call)."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = (
        f"import sys; from launch import cli; rc = cli.main({args!r}); "
        "print('ffcv loaded:', 'ffcv' in sys.modules); sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and message in r.stdout + r.stderr
    assert "ffcv loaded: False" in r.stdout


def test_config_shows_every_key_and_writes_what_condense_takes(cli, tmp_path):
    """`gencond config` resolves a preset with --set as condense does: a table of keys with
    value, default and meaning, and a JSON file that `--config` reads back to the same config."""
    from engine.config import RunConfig
    from engine.config_table import keys
    from engine.presets import load_preset

    out = tmp_path / "cfg.json"
    r = cli("config", "--preset", "mnist-smoke", "--set", "ipc=5", "--json", out)
    assert r.returncode == 0, r.stderr
    assert all(key in r.stdout for key, _, _ in keys())
    assert RunConfig.from_file(out).to_dict() == load_preset("mnist-smoke", ["ipc=5"]).to_dict()
    r = cli("config", "--config", out, "--changed")
    assert r.returncode == 0 and "condense.ipc" in r.stdout and "eval.dsa_mode" not in r.stdout
    r = cli("config", "--config", out, "--set", "ipc=3")
    assert r.returncode == 2 and "without --set" in r.stderr
