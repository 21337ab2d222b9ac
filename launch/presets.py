"""Presets: `<dataset>-ipc<K>` for every dataset and `<dataset>-smoke` CPU budgets.

Full presets hold the paper's rates and our GPU-budget loop counts; smoke presets shrink the
nets and loops to fit a 2-core CPU (their measured cost is in `budget_note`)."""

from __future__ import annotations

from engine.config import RunConfig
from engine.errors import ConfigError

IPCS = {
    "mnist": (1, 10, 50),
    "fashion-mnist": (1, 10, 50),
    "cifar10": (1, 10, 50),
    "cifar100": (1, 10, 50),
    "svhn": (1, 10, 50),
    "tiny-imagenet": (1, 10, 50),
    "imagenet64": (1, 2, 10, 50),
}
SMOKE = ("mnist", "fashion-mnist")


def _full(dataset: str, ipc: int) -> RunConfig:
    cfg = RunConfig(preset=f"{dataset}-ipc{ipc}", dataset=dataset)
    cfg.condense.ipc = ipc
    cfg.eval.seeds = 20
    if dataset in ("tiny-imagenet", "imagenet64"):
        cfg.teacher.epochs = 20 if dataset == "imagenet64" else 30
        cfg.gan.steps = 50_000
        cfg.condense.classes_per_step = 100 if dataset == "imagenet64" else 50
        cfg.condense.assoc_per_image = 4
    else:
        cfg.teacher.epochs = 20
    if dataset == "imagenet64":  # soft labels from the teacher: the paper's ImageNet-1K setting
        cfg.condense.soft_labels = True
    cfg.budget_note = "GPU budget; not yet timed"
    return cfg


def _smoke(dataset: str) -> RunConfig:
    cfg = RunConfig(preset=f"{dataset}-smoke", dataset=dataset)
    cfg.teacher.width, cfg.teacher.epochs = 64, 1
    cfg.gan.steps, cfg.gan.width, cfg.gan.disc_width, cfg.gan.z_dim = 2500, 16, 16, 64
    c = cfg.condense
    c.ipc, c.phi_width, c.assoc_per_image = 10, 64, 4
    c.outer_iterations, c.inner_iterations, c.gen_steps = 6, 50, 2
    # Measured on Fashion-MNIST at this budget (single-seed, 150-epoch proxies; benchmarks/
    # results/fashion-mnist-smoke_tuning_cpu.json): per-image matching collapsed the K images of
    # a class, and fine-tuning G for a few hundred CPU steps lost 3-4 points, so the CPU preset
    # matches class means and learns the codebook only.
    c.feature_match, c.finetune_generator = "class", False
    c.intra_temperature = 0.5
    cfg.eval.seeds = 5
    cfg.budget_note = (
        "CPU budget, measured on 2 cores for fashion-mnist with these settings (benchmarks/"
        "results/fashion-mnist-smoke_previous_cpu.json): pretrain 16.2 min, condensation 4.8 min"
    )
    if dataset == "fashion-mnist":
        # Tuned at the bar's protocol (300 epochs; benchmarks/results/smoke_trials_300ep_cpu.json):
        # start from G and the codebook fitted to the herding coreset (IT-GAN-style inversion),
        # then DM-style class-mean matching with the teacher as L_c's classifier and a fresh phi
        # every 10 steps. The matching weight is 100 (at 1 the loop sat idle: L_f ~0.01 against
        # L_intra ~2) and G is fine-tuned at 3e-5: the paper's 1e-3 destroyed the fitted detail
        # (row T1), 3e-5 scored 75.97 and 1e-4 75.33 over 10 seeds (rows P2, P1).
        c.coreset_init, c.coreset_fit_steps, c.coreset_fit_lr = "herding", 4000, 0.002
        c.classifier, c.feature_match = "teacher", "mean"
        c.outer_iterations, c.inner_iterations = 60, 10
        c.weight_feature, c.finetune_generator, c.lr_generator = 100.0, True, 3e-5
        cfg.budget_note = (
            "CPU budget, measured on 2 cores (benchmarks/results/fashion-mnist-smoke_cpu.json): "
            "pretrain 16.2 min, condensation 22.5 min (herding and the fit 9.9, 1200 steps 12.6); "
            "38.7 min in all"
        )
    return cfg


PRESETS = {f"{d}-ipc{k}": (d, k) for d, ks in IPCS.items() for k in ks}
PRESETS.update({f"{d}-smoke": (d, 0) for d in SMOKE})


def load_preset(name: str, overrides: list[str] | None = None) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (e.g. {', '.join(list(PRESETS)[:4])}, ...; "
                          "all in docs/config_reference.md)")  # fmt: skip
    dataset, ipc = PRESETS[name]
    cfg = _smoke(dataset) if ipc == 0 else _full(dataset, ipc)
    for assignment in overrides or []:
        cfg.override(assignment)
    cfg.validate()
    return cfg
