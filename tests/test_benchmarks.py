"""bench throughput / scaling / accuracy: result files carry the contract's keys, a point that
does not fit is a row (not a crash), bad input is one error line."""

import json

import pytest
import torch
from conftest import run_cli
from test_method import toy

from benchmarks import scaling_bench, throughput_bench
from benchmarks.throughput_bench import Point, ThroughputConfig

TINY = {"image_size": 8, "classes": 3, "width": 4}
CONTRACT = ("machine", "torch", "commit", "created", "config", "rows")
ROW_KEYS = ("method", "shape", "classes", "ipc", "params", "bytes", "step_s", "sweep_s",
            "images_per_s", "peak_mem_bytes", "mfu")  # fmt: skip


def test_throughput_rows_carry_the_contract_keys(tmp_path):
    cfg = ThroughputConfig(shapes=("cifar10",), ipcs=(2,), methods=("ours", "dm"),
                           warmup=0, repeats=1, shrink=TINY, mem_limit_gb=8.0)  # fmt: skip
    payload = throughput_bench.run(cfg, tmp_path / "t.json")
    saved = json.loads((tmp_path / "t.json").read_text())
    assert all(k in saved for k in CONTRACT) and (tmp_path / "t.md").is_file()
    rows = {r["method"]: r for r in payload["rows"]}
    for row in rows.values():
        assert all(k in row for k in ROW_KEYS), row
        assert row["fits"] is True and row["step_s"] > 0 and row["peak_mem_bytes"] > 0, row
    assert rows["dm"]["params"] == 3 * 2 * 3 * 8 * 8  # classes x IPC x C x H x W pixels
    assert rows["dm"]["params_vs_ours"] == pytest.approx(
        rows["dm"]["params"] / rows["ours"]["params"]
    )


def test_point_over_the_memory_limit_is_a_row_not_a_crash():
    point = Point("dm", "imagenet64", 50, 3, 64, 1000, 128, "imagenet64")
    predicted = throughput_bench.measure(point, ThroughputConfig(mem_limit_gb=1.0))
    assert predicted["fits"] is False and "not attempted" in predicted["reason"]
    tiny = Point("dm", "cifar10", 2, 3, 8, 3, 4, "cifar10")  # fits the prediction, not the limit
    measured = throughput_bench.measure(tiny, ThroughputConfig(mem_limit_gb=0.05, warmup=0,
                                                               repeats=1, shrink=TINY))  # fmt: skip
    assert measured["fits"] is False and "memory" in measured["reason"], measured


def test_scaling_points_span_classes_and_resolutions():
    cfg = scaling_bench.ScalingConfig(classes=(10, 10000), resolutions=(32, 128))
    pts = scaling_bench.scaling_points(cfg)
    assert {(p.classes, p.image_size) for p in pts} == {(10, 32), (10, 128), (10000, 32),
                                                         (10000, 128)}  # fmt: skip
    assert len(pts) == 4 * len(cfg.timing.methods)


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread (two threads only spin on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_accuracy_bench_as_a_job_array_on_a_toy_dataset(tmp_path, one_thread):
    """Every (method, dataset, IPC) point one array element (submitit's in-process debug
    executor), the parts merged with ours into one result file."""
    from launch.cli import main

    data = toy(tmp_path / "data", classes=3, size=8, per_class=12)
    run = tmp_path / "ours"
    run.mkdir()
    result = {"condensed": {"convnet": {"mean": 50.0, "std": 1.0, "accs": [49, 51]}}}
    report = {"ipc": 1, "epochs": 2, "protocol": "toy", "results": result}
    (run / "eval.json").write_text(json.dumps(report))
    code = main(["bench", "accuracy", "--data", f"mnist={data}", "--ipcs", "1", "--methods",
                 "dm", "dsa", "mtt", "random", "herding", "--seeds", "1", "--epochs", "2",
                 "--eval-width", "4", "--net-width", "4", "--ours", f"mnist={run}",
                 "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "a.json"),
                 "--cluster", "debug"])  # fmt: skip
    assert code == 0
    payload = json.loads((tmp_path / "a.json").read_text())
    assert payload["complete"] and all(k in payload for k in CONTRACT)
    assert len(list((tmp_path / "w" / "parts").glob("*.json"))) == 5
    rows = {r["method"]: r for r in payload["rows"]}
    assert set(rows) == {"ours", "dm", "dsa", "mtt", "random", "herding"}
    assert all(0 <= r["mean"] <= 100 for r in rows.values())
    assert rows["dm"]["updates"] == 200 and rows["mtt"]["updates"] == 60  # the CPU presets
    assert rows["dsa"]["published"] == 88.7 and rows["dm"]["published"] is None
    assert "| mnist | 1 | ours | 50.00" in (tmp_path / "a.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["throughput", "--methods", "kip"], "unknown method 'kip'"),
    (["scaling", "--resolutions", "4"], "below 8 px"),
    (["accuracy", "--data", "mnist=/nonexistent"], "not a prepared dataset"),
])  # fmt: skip
def test_bad_input_is_one_error_line(args, message):
    r = run_cli("bench", *args, timeout=60)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("error:") == 1, r.stderr
