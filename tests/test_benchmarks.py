"""bench throughput / scaling / accuracy: result files carry the contract's keys, a point that
does not fit is a row (not a crash), bad input is one error line."""

import json

import pytest
import torch
from helpers import run_cli, toy

from benchmarks import budget_bench, scaling_bench, throughput_bench
from benchmarks.throughput_bench import Point, ThroughputConfig

TINY = {"image_size": 8, "classes": 3, "width": 4}
CONTRACT = ("machine", "torch", "commit", "created", "config", "rows")
ROW_KEYS = (
    "method",
    "shape",
    "classes",
    "ipc",
    "params",
    "bytes",
    "step_s",
    "sweep_s",
    "images_per_s",
    "peak_mem_bytes",
    "mfu",
)


def test_throughput_rows_carry_the_contract_keys(tmp_path):
    cfg = ThroughputConfig(
        shapes=("cifar10",),
        ipcs=(2,),
        methods=("ours", "dm"),
        warmup=0,
        repeats=1,
        shrink=TINY,
        mem_limit_gb=8.0,
    )
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
    measured = throughput_bench.measure(
        tiny, ThroughputConfig(mem_limit_gb=0.05, warmup=0, repeats=1, shrink=TINY)
    )
    assert measured["fits"] is False and "memory" in measured["reason"], measured


def test_scaling_points_span_classes_and_resolutions():
    cfg = scaling_bench.ScalingConfig(classes=(10, 10000), resolutions=(32, 128))
    pts = scaling_bench.scaling_points(cfg)
    assert {(p.classes, p.image_size) for p in pts} == {
        (10, 32),
        (10, 128),
        (10000, 32),
        (10000, 128),
    }
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
    code = main(
        [
            "bench",
            "accuracy",
            "--data",
            f"mnist={data}",
            "--ipcs",
            "1",
            "--methods",
            "dm",
            "dsa",
            "mtt",
            "random",
            "herding",
            "--seeds",
            "1",
            "--epochs",
            "2",
            "--eval-width",
            "4",
            "--net-width",
            "4",
            "--ours",
            f"mnist={run}",
            "--workdir",
            str(tmp_path / "w"),
            "--out",
            str(tmp_path / "a.json"),
            "--cluster",
            "debug",
        ]
    )
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["throughput", "--methods", "kip"], "unknown method 'kip'"),
        (["scaling", "--resolutions", "4"], "below 8 px"),
        (["accuracy", "--data", "mnist=/nonexistent"], "not a prepared dataset"),
    ],
)
def test_bad_input_is_one_error_line(args, message):
    r = run_cli("bench", *args, timeout=60)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("error:") == 1, r.stderr


def test_full_budget_gpu_script_runs_its_tiny_cpu_mode(tmp_path):
    """benchmarks/gpu/full_budget.py, end to end in its CPU check mode: condense, seeds one at
    a time, the results file with the paper's value beside ours."""
    data = toy(tmp_path / "mnist")
    import subprocess
    import sys

    from helpers import ROOT

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu.full_budget",
            "--tiny",
            "--data",
            f"mnist={data}",
            "--out",
            str(tmp_path / "out"),
            "--seeds",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    payload = json.loads((tmp_path / "out" / "full_budget.json").read_text())
    (row,) = payload["rows"]
    assert row["dataset"] == "mnist" and row["paper"] == 98.4 and row["seeds"] == 2
    assert len(row["accs"]) == 2 and 0 <= row["mean"] <= 100 and row["condense_s"] > 0
    assert payload["device"] == "cpu" and "commit" in payload


def test_gpu_throughput_suite_runs_its_tiny_cpu_mode(tmp_path):
    """benchmarks/gpu/throughput_suite.py in its CPU check mode: peaks, speed switches with MFU,
    ours vs DM / TESLA memory, each part's file and the summary written."""
    import subprocess
    import sys

    from helpers import ROOT

    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu.throughput_suite", "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("peak", "speed_switches", "throughput_ipc50", "throughput_suite"):
        assert (out / f"{name}.json").is_file(), name
    (parts,) = json.loads((out / "throughput_suite.json").read_text())["rows"]
    assert set(parts["peak"]["tflops"]) >= {"fp32", "bf16"}
    assert parts["speed_switches"]["best"]["mfu"] > 0
    assert set(parts["memory_ipc50"]) >= {"ours", "dm", "tesla"}
    assert all(parts["memory_ipc50"][m]["peak_mem_bytes"] > 0 for m in ("ours", "dm", "tesla"))


def test_budget_bench_snapshots_resume_and_skip(tmp_path):
    """`gencond bench budget` on toy data with tiny nets: every method's set at each mark (or a
    note that it had none yet), the coresets as zero-cost rows, JSON + md + PNG; a rerun
    recomputes nothing."""
    data = toy(tmp_path / "mnist")
    from helpers import TINY

    tiny_baselines = [
        "dm.net_width=8",
        "dsa.net_width=8",
        "dsa.batch_real=16",
        "mtt.net_width=8",
        "mtt.num_experts=1",
        "mtt.train_epochs=3",
        "mtt.expert_epochs=1",
        "mtt.max_start_epoch=1",
        "mtt.syn_steps=2",
        "mtt.expert_images=0",
    ]
    out = tmp_path / "budget.json"
    args = [
        "bench",
        "budget",
        "--data",
        data,
        "--ipc",
        "3",
        "--marks",
        "0.4,0.8",
        "--preset",
        "mnist-smoke",
        "--ours-chunk",
        "4",
        "--workdir",
        tmp_path / "work",
        "--out",
        out,
        "--set",
        "eval.seeds=2",
        "--set",
        "eval.epochs=2",
        *[a for s in TINY if not s.startswith(("ipc=", "eval.")) for a in ("--set", s)],
        "--set",
        "eval.width=8",
        *[a for s in tiny_baselines for a in ("--baseline", s)],
    ]
    # the snapshots first, then the evaluations split over two shards, as two cores would run them
    r = run_cli(*args, "--phase", "condense", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "work" / "rows").exists()  # condense evaluates nothing
    for shard in ("0/2", "1/2"):
        r = run_cli(*args, "--phase", "evaluate", "--shard", shard, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    payload = json.loads(out.read_text())
    got = {(s["method"], s["mark_min"]) for s in payload["summary"]}
    assert {("random", 0.0), ("herding", 0.0)} <= got
    for method in ("ours", "dm", "dsa", "mtt"):
        for mark in (0.4, 0.8):
            assert (method, mark) in got or f"{method}@{mark:g}" in payload["no_set"]
        assert any(m == method for m, _ in got), method  # every method has a set by the end
        assert payload["resources"][method]["threads"], method  # what it ran with is recorded
    assert all(s["seeds"] == 2 for s in payload["summary"])
    # a mark holding the set of an earlier one (ours' tiny schedule done) copies its rows and is
    # not retrained; whether the schedule ended by 0.4 min depends on the machine's speed
    ours = {(r["mark_min"], r["seed"]): r for r in payload["rows"] if r["method"] == "ours"}
    for seed in (0, 1):
        early, late = ours.get((0.4, seed)), ours[0.8, seed]
        if early is not None and early.get("finished_s") is not None:
            assert late["same_set_as"] == 0.4 and late["eval_s"] == 0.0, late
            assert late["acc"] == early["acc"]
        else:
            assert "same_set_as" not in late, late
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| ours |" in out.with_suffix(".md").read_text()
    costs = payload["ours_costs"]  # where ours' clock went: its pretraining, read back
    assert costs["pretrain_s"] > 0
    if costs["finished_s"] is not None:
        assert 0 < costs["pretrain_share"] < 1
        assert "Ours' clock: pretraining" in out.with_suffix(".md").read_text()
    work = tmp_path / "work"
    stamps = {
        p: p.stat().st_mtime_ns for p in [*work.rglob("snapshot_*.pt"), *work.rglob("*.json")]
    }
    r = run_cli(*args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(out.read_text())["rows"] == payload["rows"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.parent.name == "rows")
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.suffix == ".pt")
    out.unlink()
    r = run_cli(*args, "--phase", "report", timeout=300)  # the files again, from the rows
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(out.read_text())["rows"] == payload["rows"]
    # the workdir belongs to this configuration: other marks there are refused in one line
    marks = args.index("--marks") + 1
    r = run_cli(*args[:marks], "0.4,0.9", *args[marks + 1 :], timeout=300)
    assert r.returncode != 0 and "marks_min" in r.stderr and "--workdir" in r.stderr, r.stderr


class _FakeCondenser:
    """ours' stages on a scripted clock: pretraining takes 100 s, the first chunk 500 s (the
    start fit), every later one 60 s; the set after step s is a tensor full of s."""

    def __init__(self, crash_at_step=None):
        self.now, self.step, self.crash_at_step = 0.0, 0, crash_at_step

    def install(self, monkeypatch):
        import types

        from benchmarks import budget_bench
        from engine import presets, stages

        preset = types.SimpleNamespace(condense=types.SimpleNamespace(total_steps=12))
        monkeypatch.setattr(presets, "load_preset_for", lambda name, sets, data: self._cfg(sets))
        monkeypatch.setattr(stages, "run_pretrain", lambda *a: self._advance(100.0))
        monkeypatch.setattr(stages, "run_condense", lambda cfg, *a: self._condense(cfg))
        monkeypatch.setattr(
            stages, "load_condensed", lambda run: types.SimpleNamespace(s=self.step)
        )
        monkeypatch.setattr(
            stages, "synthetic_set", lambda p: (torch.full((2, 1), p.s), torch.arange(2))
        )
        monkeypatch.setattr(
            budget_bench, "time", types.SimpleNamespace(perf_counter=lambda: self.now)
        )
        self.preset = preset

    def _cfg(self, sets):
        import types

        max_steps = [int(s.split("=")[1]) for s in sets if s.startswith("max_steps=")]
        return types.SimpleNamespace(condense=self.preset.condense, max_steps=(max_steps or [0])[0])

    def _advance(self, seconds):
        self.now += seconds

    def _condense(self, cfg):
        if cfg.max_steps == self.crash_at_step:
            self.crash_at_step = None
            raise KeyboardInterrupt  # preempted inside the chunk: its time is lost
        self._advance(500.0 if self.step == 0 else 60.0)
        self.step = cfg.max_steps


def _ours_snapshots(tmp_path, condenser):
    from benchmarks import budget_bench
    from benchmarks.config import BudgetConfig

    cfg = BudgetConfig(
        data="unused",
        methods=("ours",),
        marks_min=(1.0, 5.0, 10.5, 13.0),
        ours_chunk=4,
        workdir=str(tmp_path),
        preset="mnist-smoke",
    )
    try:
        budget_bench.run_ours(cfg, log=lambda line: None)
    except KeyboardInterrupt:
        budget_bench.run_ours(cfg, log=lambda line: None)  # the rerun resumes
    out = {}
    for mark in cfg.marks_min:
        snap = torch.load(tmp_path / "ours" / f"snapshot_{mark:g}min.pt", weights_only=False)
        images = snap["images"]
        out[mark] = None if images is None else (int(images[0, 0]), snap["elapsed_s"], snap["info"])
    return out


@pytest.mark.parametrize("crash_at_step", [None, 4, 8])
def test_budget_ours_snapshot_is_the_set_that_existed_when_the_clock_passed_the_mark(
    tmp_path, monkeypatch, crash_at_step
):
    # clock: pretrained at 100 s; steps 4 at 600 s, 8 at 660 s, 12 (the end) at 720 s
    condenser = _FakeCondenser(crash_at_step=crash_at_step)
    condenser.install(monkeypatch)
    snaps = _ours_snapshots(tmp_path, condenser)
    assert snaps[1.0] is None  # 60 s: still pretraining
    assert snaps[5.0] is None  # 300 s: the first chunk had not ended (it gave step 4 at 600 s)
    steps, made_s, info = snaps[10.5]  # 630 s: passed while step 8 was made, so step 4's set
    assert (steps, made_s, info["clock_s"]) == (4, 600.0, 660.0)
    steps, made_s, info = snaps[13.0]  # 780 s: after the end, the final set
    assert (steps, made_s, info["finished_s"]) == (12, 720.0, 720.0)
    notes = [
        torch.load(tmp_path / "ours" / f"snapshot_{m:g}min.pt", weights_only=False)["info"]
        for m in (1.0, 5.0)
    ]
    assert [n["note"] for n in notes] == [budget_bench.NO_SET_OURS, budget_bench.NO_SET_FIRST]


def test_budget_ours_refuses_a_workdir_without_its_held_set(tmp_path, monkeypatch):
    from common.errors import ConfigError

    _FakeCondenser().install(monkeypatch)
    (tmp_path / "ours").mkdir()
    clock = {"elapsed_s": 700.0, "pretrained": True, "step": 8}  # an older gencond's
    (tmp_path / "ours" / "clock.json").write_text(json.dumps(clock))
    with pytest.raises(ConfigError, match="older gencond"):
        _ours_snapshots(tmp_path, None)


def test_budget_table_marks_missing_sets_and_ours_minus_the_best_pixel_method():
    from benchmarks.budget_bench import markdown

    def point(method, mark, mean):
        return {"method": method, "mark_min": mark, "mean": mean, "std": 0.5, "seeds": 3}

    payload = {
        "config": {
            "marks_min": [5.0, 40.0],
            "coresets": ["random"],
            "dataset": "d",
            "ipc": 10,
            "eval": {"seeds": 3},
        },
        "device": "cpu",
        "machine": "m",
        "commit": "c",
        "protocol": "p",
        "summary": [
            point("random", 0.0, 70.0),
            point("ours", 40.0, 80.0),
            point("dm", 5.0, 60.0),
            point("dm", 40.0, 78.0),
            {**point("dsa", 40.0, 81.5), "seeds": 1},
        ],
        "no_set": {"ours@5": "no set yet: pretraining"},
        "resources": {"ours": {"threads": [1], "cpus": [[0]], "load_1m": [1.9, 2.1]}},
    }
    md = markdown(payload)
    assert "| random | 70.00 ± 0.50 | 70.00 ± 0.50 |" in md  # a coreset costs nothing
    assert "| ours | * | 80.00 ± 0.50 |" in md
    assert "| ours - best pixel method | - | -1.50 |" in md
    assert "| dsa | - | 81.50 ± 0.50 (1/3 seeds) |" in md  # a point still being evaluated
    assert "`*` no set yet: pretraining." in md
    assert "| ours | 1 | 0 | 1.9-2.1 |" in md


def test_every_method_counts_flops_over_the_same_sweep(tmp_path):
    cfg = ThroughputConfig(
        shapes=("cifar10",),
        ipcs=(2,),
        methods=("ours", "dm", "dsa", "mtt"),
        warmup=0,
        repeats=1,
        shrink=TINY,
        mem_limit_gb=8.0,
    )
    payload = throughput_bench.run(cfg, tmp_path / "t.json")
    for row in payload["rows"]:
        assert row["fits"] is True, row
        assert row["flops_per_sweep"] >= row["flops_per_step"] > 0, row
        assert row["images_per_s"] == pytest.approx(3 * 2 / row["sweep_s"])
        assert row["flops_per_image"] == pytest.approx(row["flops_per_sweep"] / (3 * 2))
    assert throughput_bench.SWEEP in (tmp_path / "t.md").read_text()


@pytest.mark.parametrize("method", ["dm", "dsa", "mtt"])
def test_a_baseline_sweep_updates_every_synthetic_image(method):
    """What the table calls a sweep (SWEEP) touches every image once: DM and DSA one update
    over every class, MTT ceil(n / (syn_steps x batch_syn)) iterations."""
    point = Point(method, "cifar10", 2, 3, 8, 3, 4, "cifar10")
    cfg = ThroughputConfig(warmup=0, repeats=1, shrink=TINY)
    preset, condenser, pool = throughput_bench._build_baseline(point, cfg)
    before = condenser.images.detach().clone()
    if method == "dm":
        condenser.step(0, pool, list(range(3)))
    elif method == "dsa":
        condenser.net = condenser.fresh_net(0)
        condenser.net_opt = torch.optim.SGD(condenser.net.parameters(), lr=0.01)
        condenser.match(0, pool, list(range(3)))
    else:
        n, c = 3 * 2, preset.config
        for i in range(-(-n // (c.syn_steps * (c.batch_syn or n)))):
            condenser.step(i)
    changed = (condenser.images.detach() - before).flatten(1).abs().amax(1) > 0
    assert changed.all(), changed


def test_ablation_table_sets_each_recorded_row_beside_the_paper(tmp_path, monkeypatch):
    from research.probes import ablation_table

    monkeypatch.setattr(ablation_table, "RESULTS_DIR", tmp_path)
    row = {
        "rows": [{"set": "condensed", "mean": 61.5, "std": 0.5, "seeds": 3}],
        "partial": True,
        "pretrain_sha256": "ab" * 32,
        "diagnostics": {"warnings": [], "pixels": {"warnings": ["images blown out: 90%"]}},
    }
    (tmp_path / "p_ablation_l-real_cpu.json").write_text(json.dumps(row))
    text = ablation_table.table("p")
    line = next(x for x in text.splitlines() if "| l_real |" in x)
    assert "61.50 ± 0.50 | 3 (partial) | abababababab | 63.2 | blown out | - |" in line
    row["diagnostics"]["movement"] = {"over_real_within_class": 0.42}
    (tmp_path / "p_ablation_l-real_cpu.json").write_text(json.dumps(row))
    line = next(x for x in ablation_table.table("p").splitlines() if "| l_real |" in x)
    assert line.endswith("| blown out | 42% |")
    assert "| l_feature | not yet run |" in text
    # a named series (rows of an earlier preset setting) is a table of its own
    (tmp_path / "p_ablation-old_l-feature_cpu.json").write_text(json.dumps(row))
    assert "| l_feature | not yet run |" in ablation_table.table("p")
    old = ablation_table.table("p", "old")
    assert "p_ablation-old_<row>_cpu.json" in old and "| l_real | not yet run |" in old
    assert "| l_feature | 61.50 ± 0.50 |" in old


def test_ablation_rows_redo_a_row_from_another_pretrain_stage(tmp_path, monkeypatch):
    from research.probes import ablation_rows

    monkeypatch.setattr(ablation_rows, "RESULTS_DIR", tmp_path)
    done = {"partial": False, "seeds_wanted": 5, "pretrain_sha256": "a" * 64}
    (tmp_path / "row.json").write_text(json.dumps(done))
    assert ablation_rows.finished("row", 5) and ablation_rows.finished("row", 5, "a" * 64)
    assert not ablation_rows.finished("row", 5, "b" * 64)  # made from another stage
    assert not ablation_rows.finished("row", 10)  # fewer seeds than wanted
    (tmp_path / "row.json").write_text(json.dumps({**done, "partial": True}))
    assert not ablation_rows.finished("row", 5, "a" * 64)


def test_recipe_bench_rows_and_rerun(tmp_path, toy_stage):
    """`gencond bench recipe` on toy data: the recipe's set, the faithful preset and the
    coresets, one row each with its per-seed accuracies, the artifact's size beside the pixel
    set's; a rerun condenses and trains nothing again."""
    from helpers import TINY

    data, pre = toy_stage
    out = tmp_path / "recipe.json"
    sets = [s for s in TINY if not s.startswith("eval.")]
    sets += ["ipc=2", "condense.coreset_fit_steps=3", "condense.coreset_fit_warmup=1"]
    args = [
        "bench", "recipe", "--data", data, "--preset", "mnist-smoke", "--pretrained", pre,
        "--seeds", "2", "--epochs", "2", "--workdir", tmp_path / "work", "--out", out,
        *[a for s in [*sets, "eval.width=8"] for a in ("--set", s)],
    ]  # fmt: skip
    r = run_cli(*args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["partial"] is False and payload["config"]["recipe"] == "herding-dm"
    rows = {row["set"]: row for row in payload["rows"]}
    assert set(rows) == {"condensed", "random", "herding", "plain_generator", "faithful"}
    for name, row in rows.items():
        assert len(row["accs"]) == row["seeds"] == 2, name
        assert row["mean"] == pytest.approx(sum(row["accs"]) / 2)
    runs = payload["runs"]
    assert runs["faithful"]["config"]["recipe"] == "paper"
    assert runs["condensed"]["config"]["condense"]["coreset_init"] == "herding"
    loop = runs["condensed"]["config"]["condense"]
    steps = loop["outer_iterations"] * loop["inner_iterations"] * loop["gen_steps"]
    assert runs["condensed"]["steps"] == steps  # the artifact's own count
    assert payload["pixel_set_values"] == 8 * 2 * 1 * 28 * 28
    assert payload["artifact_values"] > 0 and payload["artifact_bytes"] > 0
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "work").rglob("*.pt")}
    r = run_cli(*args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(out.read_text())["rows"] == payload["rows"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_recipe_bench_ablation_plan_leaves_out_one_departure_a_run():
    from benchmarks.recipe_bench import RecipeBenchConfig, planned_runs
    from engine.recipes import HERDING_DM

    cfg = RecipeBenchConfig(data="d", preset="fashion-mnist-smoke", ablate=True, seeds=10)
    runs = planned_runs(cfg)
    assert [r[0] for r in runs[:2]] == ["condensed", "faithful"]
    assert runs[0][2:] == (10, ("random", "herding", "plain")) and runs[1][2:] == (10, ())
    ablations = runs[2:]
    assert [r[0] for r in ablations] == [f"without_{d.name}" for d in HERDING_DM.departures]
    for (_row, sets, seeds, baselines), d in zip(ablations, HERDING_DM.departures, strict=True):
        assert sets[:2] == ["recipe=herding-dm", f"recipe_without={d.name}"]
        assert (seeds, baselines) == (5, ())
