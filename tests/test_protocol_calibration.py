"""bench calibrate: coresets trained under the evaluation protocol, saved per run, resumed."""

import json

from helpers import toy

from benchmarks.protocol_calibration import CalibrationConfig, run
from engine.config import EvalConfig, TeacherConfig


def test_calibration_writes_each_run_and_a_rerun_skips_them(tmp_path):
    data = toy(tmp_path / "data")
    cfg = CalibrationConfig(
        datasets={"mnist": str(data)},
        ipcs=(1, 2),
        eval=EvalConfig(seeds=1, epochs=2, width=8, batch_size=8, test_batch_size=64),
        teacher=TeacherConfig(width=8, epochs=1, batch_size=32),
        workdir=str(tmp_path / "work"),
    )
    out = tmp_path / "calibration.json"
    first = run(cfg, out)
    keys = {(r["set"], r["ipc"], r["seed"]) for r in first["rows"]}
    assert keys == {(s, k, i) for s in ("random", "herding") for k in (1, 2) for i in (0,)}
    summary = {(r["set"], r["ipc"]): r for r in first["summary"]}
    assert summary[("random", 1)]["paper"] == 64.9  # MNIST, the paper's Table 2
    assert summary[("random", 1)]["gap"] == round(summary[("random", 1)]["mean"] - 64.9, 2)
    assert "| mnist | herding | 2 |" in out.with_suffix(".md").read_text()
    # a rerun with the same protocol trains nothing: every row is the one already saved
    again = run(cfg, out)
    assert again["rows"] == json.loads(json.dumps(first["rows"]))
    # another protocol starts afresh
    other = CalibrationConfig(**{**cfg.__dict__, "eval": EvalConfig(seeds=1, epochs=1, width=4)})
    assert len(run(other, out)["rows"]) == 4


def test_redraw_random_trains_each_seed_on_its_own_draw(tmp_path, monkeypatch):
    import torch

    import engine.evaluate

    data = toy(tmp_path / "data")
    seen = {}

    def fake_train(model, images, labels, data_dir, cfg, seed, **kw):  # records the set only
        seen[seed] = images.clone()
        return 50.0

    monkeypatch.setattr(engine.evaluate, "train_and_test", fake_train)
    base = dict(
        datasets={"mnist": str(data)},
        ipcs=(1,),
        sets=("random",),
        eval=EvalConfig(seeds=3, epochs=1, width=8),
        workdir=str(tmp_path / "w"),
    )
    run(CalibrationConfig(**base), tmp_path / "one.json")
    assert all(torch.equal(seen[0], seen[s]) for s in (1, 2))  # one draw for every seed
    seen.clear()
    run(CalibrationConfig(**base, redraw_random=True), tmp_path / "redraw.json")
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


def test_a_rerun_on_part_of_the_grid_keeps_the_other_rows_and_their_herding_net(tmp_path):
    data = toy(tmp_path / "data")
    common = dict(
        datasets={"mnist": str(data)},
        eval=EvalConfig(seeds=1, epochs=1, width=8, batch_size=8, test_batch_size=64),
        teacher=TeacherConfig(width=8, epochs=1, batch_size=32),
        workdir=str(tmp_path / "work"),
    )
    out = tmp_path / "calibration.json"
    first = run(CalibrationConfig(**common, ipcs=(1,)), out)
    assert set(first["herding_nets"]) == {"mnist"}
    other_baselines = EvalConfig(**{**common["eval"].__dict__, "baselines": ("random",)})
    more = run(
        CalibrationConfig(**{**common, "eval": other_baselines}, ipcs=(2,), sets=("random",)), out
    )
    assert {(r["set"], r["ipc"]) for r in more["rows"]} == {
        ("random", 1),
        ("herding", 1),
        ("random", 2),
    }
    assert more["herding_nets"] == first["herding_nets"]  # not lost by a random-only rerun
    assert {(r["set"], r["ipc"]) for r in more["summary"]} == {
        ("random", 1),
        ("herding", 1),
        ("random", 2),
    }  # the table covers every row the file holds
    assert more["config"]["ipcs"] == [1, 2] and more["config"]["sets"] == ["herding", "random"]
