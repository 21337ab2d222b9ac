"""Analytic cost of one condensation step (engine.step.condense_step plus the amortised phi
update of the loop): FLOPs by part and an estimate of the bytes moved through device memory.

Counting conventions
- `flops`: 2 x multiply-accumulates of convolutions, linear layers and batched matrix products,
  forward and backward: exactly what torch.utils.flop_counter.FlopCounterMode counts, so a test
  checks it against a real step. A backward counts the input gradient only where autograd
  needs it (the first layer's input must require grad) and the weight gradient only where the
  weights require grad: phi is frozen during the (Z, G) update (input gradients only), the
  teacher is always frozen, D and the head get weight gradients in both updates (the (Z, G)
  backward also fills them; opt_dh.zero_grad drops them), G gets weight gradients only when
  fine-tuned. This is the model-FLOP count used for MFU.
- `other_flops`: a rough estimate of the rest (bias adds, norms, activations, pooling,
  upsampling; about 2x the forward count in backward). Not in MFU: these ops are memory-bound.
- `bytes`: each layer reads its input and writes its output once per op, with no fusion and no
  cache reuse (conv, then norm reading twice and writing once, activation, pooling), activations
  at 4 bytes (2 under bf16); a backward moves about twice its forward's activations; every
  pass reads the weights (fp32); every trainable parameter costs its gradient write plus SGD
  with momentum (read p, grad, buffer; write p, buffer). A lower bound for unfused kernels
  would be smaller, real kernels with re-reads larger: the figure is for the arithmetic
  intensity (FLOPs per byte), not a prediction of time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from engine.class_plan import ClassPlan
from engine.config import RunConfig

PARAM_BYTES = 4  # parameters, gradients and optimizer state stay fp32 under bf16 autocast
SGD_MOMENTUM_BYTES = 5 * PARAM_BYTES  # read p, grad, momentum buffer; write p, buffer


@dataclass(frozen=True)
class Layer:
    """One matmul-like layer and the elementwise ops after it, per sample."""

    name: str
    macs: int  # multiply-accumulates of the conv / linear
    params: int
    inp: int  # input elements
    out: int  # output elements of the conv / linear
    other: int = 0  # elementwise FLOPs after it (bias, norm, activation, pooling), forward
    traffic: int = 0  # elements read + written by the layer and its elementwise ops, forward


@dataclass
class PartCost:
    name: str
    region: str  # the record_function range of condense_step it runs in
    flops: float = 0.0
    other_flops: float = 0.0
    bytes: float = 0.0

    def add(self, other: PartCost) -> None:
        self.flops += other.flops
        self.other_flops += other.other_flops
        self.bytes += other.bytes


@dataclass
class StepCost:
    """Cost of one step (one (Z, G) update, one D / head update, 1/gen_steps of a phi update)."""

    shape: dict
    parts: list[PartCost] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return sum(p.flops for p in self.parts)

    @property
    def other_flops(self) -> float:
        return sum(p.other_flops for p in self.parts)

    @property
    def bytes(self) -> float:
        return sum(p.bytes for p in self.parts)

    def part(self, name: str) -> PartCost:
        return next(p for p in self.parts if p.name == name)

    def by_region(self) -> dict[str, float]:
        """Model FLOPs per record_function range of condense_step."""
        out: dict[str, float] = {}
        for p in self.parts:
            out[p.region] = out.get(p.region, 0.0) + p.flops
        return out

    def as_dict(self) -> dict:
        return {
            "shape": self.shape,
            "flops": self.flops,
            "other_flops": self.other_flops,
            "bytes": self.bytes,
            "flops_per_byte": self.flops / self.bytes if self.bytes else None,
            "parts": [asdict(p) for p in self.parts],
            "by_region": self.by_region(),
        }


# --- the nets as layer lists -------------------------------------------------------------


def _conv(name: str, cin: int, cout: int, size: int, k: int = 3) -> Layer:
    hw = size * size
    return Layer(
        name,
        macs=cin * cout * k * k * hw,
        params=cout * cin * k * k + cout,
        inp=cin * hw,
        out=cout * hw,
    )


def _linear(name: str, fin: int, fout: int, other: int = 0) -> Layer:
    return Layer(
        name,
        macs=fin * fout,
        params=fin * fout + fout,
        inp=fin,
        out=fout,
        other=other + fout,
        traffic=fin + 2 * fout,
    )


def convnet_layers(
    channels: int, image_size: int, width: int, num_classes: int = 0, depth: int | None = None
) -> list[Layer]:
    """engine.nets.ConvNet: depth x [conv3x3, GroupNorm(c, c), ReLU, avgpool 2x2] (+ classifier)."""
    depth = depth if depth is not None else (3 if image_size <= 32 else 4)
    layers, cin, size = [], channels, image_size
    for i in range(depth):
        conv = _conv(f"conv{i}", cin, width, size)
        o = conv.out
        # bias 1, norm ~7 (two reductions, normalise, affine), relu 1, pool 1.25 per element;
        # traffic: conv in+out, norm 3 passes, relu 2, pool 1.25
        layers.append(
            Layer(
                conv.name,
                conv.macs,
                conv.params + 2 * width,
                conv.inp,
                o,
                other=int(10.25 * o),
                traffic=conv.inp + 7 * o + o // 4,
            )
        )
        cin, size = width, size // 2
    if num_classes:
        layers.append(_linear("classifier", width * size * size, num_classes))
    return layers


def generator_layers(cfg: RunConfig, channels: int, image_size: int, cond_dim: int) -> list[Layer]:
    """engine.generator.Generator: project, fc, blocks of [upsample, (ReLU, conv, BN) x 2], out."""
    g = cfg.gan
    blocks = 3 if image_size <= 32 else 4
    gen_size = 1 << max(0, (image_size - 1).bit_length())
    start = gen_size // 2**blocks
    chans = [g.width * 2 ** (blocks - i) for i in range(blocks)] + [g.width]
    fc_out = chans[0] * start * start
    layers = [
        _linear("project", cond_dim, g.proj_dim),
        _linear("fc", g.z_dim + g.proj_dim, fc_out, other=2 * fc_out),
    ]
    size = start
    for b, (cin, cout) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
        size *= 2
        for j, c_in in enumerate((cin, cout)):
            conv = _conv(f"block{b}.conv{j}", c_in, cout, size)
            up = 3 * cin * size * size if j == 0 else 0  # upsample reads 1/4, writes 1
            # relu 1, bias 1, eval BN 2 per element; traffic: relu 2, conv in+out, bias+BN 2
            layers.append(
                Layer(
                    conv.name,
                    conv.macs,
                    conv.params + 2 * cout,
                    conv.inp,
                    conv.out,
                    other=2 * conv.inp + 2 * conv.out,
                    traffic=up + 2 * conv.inp + conv.inp + conv.out + 2 * conv.out,
                )
            )
    conv = _conv("out", g.width, channels, gen_size)
    # relu, bias, tanh, (x+1)/2, crop, normalise: ~8 per output element, ~10 passes
    layers.append(
        Layer(
            conv.name,
            conv.macs,
            conv.params,
            conv.inp,
            conv.out,
            other=conv.inp + 8 * conv.out,
            traffic=3 * conv.inp + 10 * conv.out,
        )
    )
    return layers


def discriminator_layers(feat_dim: int, cond_dim: int, hidden: int = 256) -> list[Layer]:
    """engine.discriminators.FeatureDiscriminator: an MLP on concat(features, condition)."""
    return [
        _linear("d0", feat_dim + cond_dim, hidden, other=hidden),
        _linear("d1", hidden, hidden, other=hidden),
        _linear("d2", hidden, 1),
    ]


# --- passes ---------------------------------------------------------------------------------


def _act_bytes(precision: str) -> int:
    return 2 if precision == "bf16" else 4


def forward(name: str, region: str, layers: list[Layer], n: int, act: int) -> PartCost:
    macs = sum(layer.macs for layer in layers)
    params = sum(layer.params for layer in layers)
    traffic = sum(layer.traffic or (layer.inp + layer.out) for layer in layers)
    return PartCost(
        name,
        region,
        flops=2.0 * n * macs,
        other_flops=float(n * sum(layer.other for layer in layers)),
        bytes=float(n * traffic * act + params * PARAM_BYTES),
    )


def backward(
    name: str,
    region: str,
    layers: list[Layer],
    n: int,
    act: int,
    *,
    input_grad: bool,
    weight_grad: bool,
) -> PartCost:
    """Backward through `layers`: input gradients of every layer but the first unless its input
    requires grad (`input_grad`), weight gradients of all when `weight_grad`."""
    macs = sum(layer.macs for layer in layers)
    grad_in = macs - (0 if input_grad else layers[0].macs)
    grad_w = macs if weight_grad else 0
    params = sum(layer.params for layer in layers)
    traffic = sum(layer.traffic or (layer.inp + layer.out) for layer in layers)
    weight_bytes = params * PARAM_BYTES * (2 if weight_grad else 1)  # read W; write dW
    return PartCost(
        name,
        region,
        flops=2.0 * n * (grad_in + grad_w),
        other_flops=2.0 * n * sum(layer.other for layer in layers),
        bytes=float(2 * n * traffic * act + weight_bytes),
    )


def _resamples(strategy: str) -> int:
    ops = strategy.split("_") if strategy.strip().lower() not in ("", "none") else []
    return sum(op in ("scale", "rotate") for op in ops)


def step_sizes(cfg: RunConfig, num_classes: int) -> tuple[int, int, int]:
    """(classes, synthetic images, real association images) of the largest step."""
    c = cfg.condense
    classes = ClassPlan.of(c, num_classes, cfg.seed).largest
    return classes, classes * c.ipc, classes * c.ipc * c.assoc_per_image


def steps_per_sweep(cfg: RunConfig, num_classes: int) -> int:
    """Steps that visit every class once."""
    return ClassPlan.of(cfg.condense, num_classes, cfg.seed).sweep_steps


def condense_step_cost(
    cfg: RunConfig, channels: int, image_size: int, num_classes: int
) -> StepCost:
    """FLOPs and bytes of one condensation step of `cfg` on `channels` x `image_size`^2 images
    with `num_classes` classes, on one process (the whole step's classes)."""
    c = cfg.condense
    act = _act_bytes(getattr(c, "precision", "fp32"))
    classes, n_syn, n_real = step_sizes(cfg, num_classes)
    cond_dim = num_classes if cfg.gan.condition == "one_hot" else cfg.teacher.width
    phi = convnet_layers(channels, image_size, c.phi_width)
    gen = generator_layers(cfg, channels, image_size, cond_dim)
    # phi's feature f: the flattened last block (the classifier's input) or its spatial mean
    flat = convnet_layers(channels, image_size, c.phi_width, num_classes)[-1].inp
    feat = flat if c.phi_feature == "flat" else c.phi_width
    disc = discriminator_layers(feat, cond_dim)
    head = [_linear("head", feat, num_classes)]
    teacher = convnet_layers(channels, image_size, cfg.teacher.width, num_classes)
    learn_z, tune_g = c.codebook == "learned", c.finetune_generator
    cost = StepCost(
        shape={
            "channels": channels,
            "image_size": image_size,
            "num_classes": num_classes,
            "classes_per_step": classes,
            "synthetic_images": n_syn,
            "real_images": n_real,
            "phi_batch": c.phi_batch,
            "gen_steps": c.gen_steps,
            "precision": getattr(c, "precision", "fp32"),
        }
    )
    parts = cost.parts

    # augmentation: elementwise and resampling (affine_grid's small product is not a bmm in
    # torch's count); ~20 FLOPs per pixel and op, the synthetic side also backward
    aug = PartCost("augment", "phi_real")
    ops = len(c.dsa_strategy.split("_")) + _resamples(c.dsa_strategy)
    aug.other_flops = 20.0 * ops * channels * image_size**2 * (n_real + 2 * n_syn)
    # ~5 elementwise read+write passes per op; the synthetic side also backward
    aug.bytes = 10.0 * len(c.dsa_strategy.split("_")) * channels * image_size**2 * act
    aug.bytes *= n_real + 2 * n_syn
    parts.append(aug)

    # (Z, G) update
    parts.append(forward("phi_real_fwd", "phi_real", phi, n_real, act))
    # G forward: `project` only matters for the backward; the fc input needs grad when z or
    # project's output does
    parts.append(forward("generator_fwd", "generate", gen, n_syn, act))
    parts.append(forward("phi_syn_fwd", "phi_syn", phi, n_syn, act))
    if c.classifier == "teacher":
        parts.append(forward("classifier_fwd", "losses", teacher, n_syn, act))
    else:
        parts.append(forward("classifier_fwd", "losses", head, n_syn, act))
    if c.soft_labels:
        parts.append(forward("soft_label_teacher_fwd", "losses", teacher, n_syn, act))
    parts.append(forward("disc_fwd", "losses", disc, n_syn, act))
    k, d = c.ipc, feat
    intra = PartCost(
        "intra_loss",
        "losses",
        flops=2.0 * classes * (k * d + k * k * d),
        bytes=4.0 * classes * (k * d + k * k) * act,
    )
    parts.append(intra)

    bwd = "backward_zg"
    parts.append(backward("disc_bwd", bwd, disc, n_syn, act, input_grad=True, weight_grad=True))
    if c.classifier == "teacher":
        parts.append(
            backward("classifier_bwd", bwd, teacher, n_syn, act, input_grad=True, weight_grad=False)
        )
    else:
        parts.append(
            backward("classifier_bwd", bwd, head, n_syn, act, input_grad=True, weight_grad=True)
        )
    parts.append(
        PartCost(
            "intra_loss_bwd",
            bwd,
            flops=2.0 * classes * (k * d + 2 * k * k * d),
            bytes=2 * intra.bytes,
        )
    )
    parts.append(backward("phi_syn_bwd", bwd, phi, n_syn, act, input_grad=True, weight_grad=False))
    # G backward: project has a gradient only when fine-tuned (its input is the condition)
    g_bwd = backward(
        "generator_bwd", bwd, gen[1:], n_syn, act, input_grad=learn_z or tune_g, weight_grad=tune_g
    )
    if tune_g:
        g_bwd.add(backward("", bwd, gen[:1], n_syn, act, input_grad=False, weight_grad=True))
    parts.append(g_bwd)
    zg_params = (c.ipc * cfg.gan.z_dim if learn_z else 0) + (
        sum(layer.params for layer in gen) if tune_g else 0
    )
    parts.append(PartCost("optimizer_zg", bwd, bytes=float(zg_params * SGD_MOMENTUM_BYTES)))

    # disc_steps D / head updates on real associations and the detached synthetic features
    dh = PartCost("update_dh", "update_dh")
    dh_params = sum(layer.params for layer in disc + head)
    for _ in range(c.disc_steps):
        for n in (n_real, n_syn):
            dh.add(forward("", "", disc, n, act))
            dh.add(forward("", "", head, n, act))
            dh.add(backward("", "", disc, n, act, input_grad=False, weight_grad=True))
            dh.add(backward("", "", head, n, act, input_grad=False, weight_grad=True))
        dh.bytes += dh_params * SGD_MOMENTUM_BYTES
    parts.append(dh)

    # phi's classification step on a real batch, once every gen_steps steps (none at rate 0)
    if not c.phi_trains:
        return cost
    phi_cls = convnet_layers(channels, image_size, c.phi_width, num_classes)
    up = forward("phi_update", "phi_update", phi_cls, c.phi_batch, act)
    up.add(backward("", "", phi_cls, c.phi_batch, act, input_grad=False, weight_grad=True))
    up.bytes += sum(layer.params for layer in phi_cls) * SGD_MOMENTUM_BYTES
    m = c.gen_steps
    parts.append(
        PartCost("phi_update", "phi_update", up.flops / m, up.other_flops / m, up.bytes / m)
    )
    return cost


# shapes of the datasets the presets name: (channels, image size, classes)
DATASET_SHAPES = {
    "mnist": (1, 28, 10),
    "fashion-mnist": (1, 28, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
    "svhn": (3, 32, 10),
    "tiny-imagenet": (3, 64, 200),
    "imagenet64": (3, 64, 1000),
}


def preset_costs(presets: list[str]) -> list[dict]:
    """One row per preset (`name` or `name+key=value+...`): its step's FLOPs by part, bytes and
    FLOPs per sweep over the classes."""
    from engine.presets import load_preset

    rows = []
    for name in presets:
        preset, *overrides = name.split("+")
        cfg = load_preset(preset, overrides)
        shape = DATASET_SHAPES[cfg.dataset]
        cost = condense_step_cost(cfg, *shape)
        rows.append(
            {
                "preset": name,
                **cost.as_dict(),
                "steps_per_sweep": steps_per_sweep(cfg, shape[2]),
                "flops_per_sweep": cost.flops * steps_per_sweep(cfg, shape[2]),
            }
        )
    return rows
