"""condense.coreset_init: fitting (Z, G) to a real coreset before Algorithm 1."""

import math

import pytest
import torch

from common.errors import ConfigError
from engine import coreset_init
from engine.config import RunConfig
from engine.coreset_init import FIT_FILE, fit_to_coreset, fitted_start, warmup_cosine
from engine.generator import Generator, generate, init_codebook


def tiny_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(
        z_dim=8, cond_dim=4, proj_dim=4, channels=1, image_size=8, width=8, mean=[0.5], std=[0.5]
    ).eval()


def test_fit_reproduces_the_coreset(capsys):
    cfg = RunConfig()
    cfg.condense.ipc, cfg.condense.coreset_init, cfg.condense.coreset_fit_steps = 2, "random", 150
    cfg.condense.coreset_fit_lr = 0.01
    G, conditions = tiny_generator(), torch.eye(3, 4)
    codebook = torch.nn.Parameter(init_codebook(2, 8, "learned", 0, 0))
    targets = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        before = float(((generate(G, codebook, conditions, [0, 1, 2])[0] - targets) ** 2).mean())
    mse = fit_to_coreset(G, codebook, conditions, targets, [0, 1, 2], 3, cfg)
    with torch.no_grad():
        after = float(((generate(G, codebook, conditions, [0, 1, 2])[0] - targets) ** 2).mean())
    assert mse < 0.1 * before and after < 0.1 * before, (before, mse, after)
    assert "Warning" not in capsys.readouterr().err


def test_a_fit_that_barely_moves_warns(capsys):
    cfg = RunConfig()
    cfg.condense.ipc, cfg.condense.coreset_init, cfg.condense.coreset_fit_steps = 2, "random", 1
    G, conditions = tiny_generator(), torch.eye(3, 4)
    codebook = torch.nn.Parameter(init_codebook(2, 8, "learned", 0, 0))
    targets = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    fit_to_coreset(G, codebook, conditions, targets, [0, 1, 2], 3, cfg)
    err = capsys.readouterr().err
    assert "Warning: the fit barely moved" in err and "coreset_fit_lr" in err


def test_fit_without_generator_moves_the_codebook_only():
    cfg = RunConfig()
    cfg.condense.ipc, cfg.condense.coreset_init, cfg.condense.coreset_fit_steps = 2, "random", 5
    cfg.condense.finetune_generator, cfg.condense.coreset_fit_generator = False, False
    G, conditions = tiny_generator(), torch.eye(3, 4)
    G.requires_grad_(False)
    weights = {k: v.clone() for k, v in G.state_dict().items()}
    codebook = torch.nn.Parameter(init_codebook(2, 8, "learned", 0, 0))
    start = codebook.detach().clone()
    fit_to_coreset(G, codebook, conditions, torch.zeros(6, 1, 8, 8), [0, 1, 2], 3, cfg)
    assert not torch.equal(codebook.detach(), start)
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in weights.items())


def test_fit_trains_a_generator_that_algorithm_1_keeps_frozen():
    cfg = RunConfig()
    cfg.condense.ipc, cfg.condense.coreset_init, cfg.condense.coreset_fit_steps = 2, "random", 5
    cfg.condense.finetune_generator = False  # coreset_fit_generator stays True (the default)
    G, conditions = tiny_generator(), torch.eye(3, 4)
    G.requires_grad_(False)
    weights = {k: v.clone() for k, v in G.named_parameters()}
    codebook = torch.nn.Parameter(init_codebook(2, 8, "learned", 0, 0))
    fit_to_coreset(G, codebook, conditions, torch.zeros(6, 1, 8, 8), [0, 1, 2], 3, cfg)
    assert any(not torch.equal(v, dict(G.named_parameters())[k]) for k, v in weights.items())
    assert not any(p.requires_grad for p in G.parameters())


@pytest.mark.parametrize(
    "setting, message",
    [
        ("condense.coreset_init=kmeans", "coreset_init must be none, herding or random"),
        ("condense.coreset_fit_steps=0", "coreset_fit_steps must be at least 1"),
        ("condense.coreset_fit_warmup=-1", "coreset_fit_warmup must be 0 or more"),
    ],
)
def test_bad_coreset_settings_are_refused(setting, message):
    cfg = RunConfig()
    cfg.override("condense.coreset_init=random")
    cfg.override(setting)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_fit_lr_warms_up_linearly_then_decays_as_a_cosine():
    factor = warmup_cosine(warmup=4, steps=100)
    cosine = [0.5 * (1 + math.cos(math.pi * s / 100)) for s in range(4)]
    assert [factor(s) for s in range(4)] == pytest.approx(
        [(s + 1) / 4 * cosine[s] for s in range(4)]
    )
    assert factor(3) < 1 and factor(3) > 0.99  # full rate reached, barely decayed
    assert factor(50) == pytest.approx(0.5) and factor(100) == pytest.approx(0.0)
    plain = warmup_cosine(warmup=0, steps=100)
    assert plain(0) == 1.0 and plain(50) == pytest.approx(0.5)


def _start(cfg: RunConfig, targets: torch.Tensor, tmp_path, cache=None):
    G, conditions = tiny_generator(), torch.eye(3, 4)
    codebook = torch.nn.Parameter(init_codebook(2, 8, "learned", 0, 0))
    fitted_start(
        G=G,
        codebook=codebook,
        conditions=conditions,
        images=targets,
        mine=[0, 1, 2],
        num_classes=3,
        cfg=cfg,
        run_dir=tmp_path / "run",
        cache_dir=cache,
    )
    return G, codebook


def _fit_cfg(steps: int = 20) -> RunConfig:
    cfg = RunConfig()
    cfg.condense.ipc, cfg.condense.coreset_init, cfg.condense.coreset_fit_steps = 2, "random", steps
    cfg.condense.coreset_fit_lr = 0.01
    return cfg


def test_a_fitted_start_is_reused_from_the_run_folder_and_the_cache(tmp_path, monkeypatch, capsys):
    targets = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cache = tmp_path / "cache"
    G, codebook = _start(_fit_cfg(), targets, tmp_path, cache)
    assert (tmp_path / "run" / FIT_FILE).is_file() and len(list(cache.glob("*.pt"))) == 1

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted again although the start was saved")

    monkeypatch.setattr(coreset_init, "fit_to_coreset", no_fit)
    (tmp_path / "run" / FIT_FILE).unlink()  # another run of the sweep: only the cache has it
    G2, codebook2 = _start(_fit_cfg(), targets, tmp_path, cache)
    assert torch.equal(codebook2, codebook)
    assert all(
        torch.equal(a, b)
        for a, b in zip(G2.state_dict().values(), G.state_dict().values(), strict=True)
    )
    assert "Reusing the fitted start" in capsys.readouterr().err
    G3, codebook3 = _start(_fit_cfg(), targets, tmp_path)  # a resumed run: RUN/ alone
    assert torch.equal(codebook3, codebook)


def test_a_fitted_start_of_other_inputs_or_an_unreadable_one_is_not_reused(tmp_path, capsys):
    targets = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cache = tmp_path / "cache"
    _, first = _start(_fit_cfg(20), targets, tmp_path, cache)
    _, more_steps = _start(_fit_cfg(40), targets, tmp_path, cache)
    _, other_images = _start(_fit_cfg(20), -targets, tmp_path, cache)
    assert len(list(cache.glob("*.pt"))) == 3
    assert not torch.equal(first, more_steps) and not torch.equal(first, other_images)
    for path in [*cache.glob("*.pt"), tmp_path / "run" / FIT_FILE]:
        path.write_bytes(b"not a torch file")
    capsys.readouterr()
    _, again = _start(_fit_cfg(20), targets, tmp_path, cache)
    assert torch.equal(again, first)  # fitted again, to the same start
    assert "not a readable fitted start" in capsys.readouterr().err


def test_a_fit_thrown_off_by_a_step_keeps_its_best_parameters():
    """At too high a rate Adam throws the fit away from its best (seen at IPC 1 on
    Fashion-MNIST: 0.003 -> 0.26 for good); the fit ends on the best parameters it saw."""
    cfg = _fit_cfg(60)
    cfg.condense.coreset_fit_lr, cfg.condense.coreset_fit_warmup = 0.5, 0
    G, conditions = tiny_generator(), torch.eye(3, 4)
    codebook = torch.nn.Parameter(init_codebook(2, 8, "learned", 0, 0))
    targets = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    seen: list[float] = []
    mse = fit_to_coreset(
        G, codebook, conditions, targets, [0, 1, 2], 3, cfg, on_step=lambda s, m: seen.append(m)
    )
    assert seen[-1] > 1.5 * min(seen)  # thrown off: the last state is not the best
    with torch.no_grad():
        after = float(((generate(G, codebook, conditions, [0, 1, 2])[0] - targets) ** 2).mean())
    assert mse == pytest.approx(min(seen), rel=1e-6) and after == pytest.approx(mse, rel=1e-5)
