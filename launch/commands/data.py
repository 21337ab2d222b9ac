"""`gencond prep` and `gencond inspect`: raw files to betons, and a check of a prepared folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.console import console
from launch.commands.common import positive

SOURCES_HELP = """\
dataset ids and the --source each expects (files as their publishers ship them):
  mnist, fashion-mnist  folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
                        (or torchvision's <root>/MNIST/raw, <root>/FashionMNIST/raw)
  cifar10, cifar100     folder holding cifar-10-batches-py / cifar-100-python (or that folder)
  svhn                  folder with train_32x32.mat and test_32x32.mat
  imagefolder           folder with train/<class>/<images> and val/<class>/ or test/<class>/;
                        classes in sorted order; JPEG/PNG; resized to --image-size
  tiny-imagenet         the tiny-imagenet-200 tree (wnids.txt, words.txt, train/<wnid>/images,
                        val/images + val/val_annotations.txt), or its .zip
  imagenet64            folder with train_data_batch_{1..10}.npz and val_data.npz
                        (Downsampled ImageNet 64x64; data (N, 12288) uint8, labels 1..1000)

output: DIR/train.beton, DIR/test.beton, DIR/train_class_index.npy and DIR/meta.json (written
last: a folder without meta.json is incomplete and every loader refuses it).

exit status: 0 done; 2 refused or failed; 3 stopped by SIGTERM / SIGUSR2 (DIR left as it was:
the new folder is built aside and swapped in only once complete): run it again; 130
interrupted (Ctrl-C)."""


def add_prep(sub) -> None:
    from data_prep.options import DATASETS, default_workers

    p = sub.add_parser(
        "prep",
        help="convert a raw dataset to FFCV betons + meta.json",
        description="Convert a raw dataset to FFCV betons and meta.json.",
        epilog=SOURCES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", help=f"dataset id: {', '.join(DATASETS)}")
    p.add_argument("--source", required=True, type=Path, help="the raw files (see below)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--workers",
        type=positive,
        default=default_workers(),
        help="processes for decoding and writing (default: %(default)s)",
    )
    p.add_argument(
        "--image-size",
        type=positive,
        default=None,
        help="imagefolder / tiny-imagenet: resize images to this side "
        "(default: the first image's height)",
    )
    p.add_argument(
        "--classes",
        default=None,
        metavar="A,B,...",
        help="imagefolder / tiny-imagenet: keep only these class folders or wnids (labels "
        "follow their sorted order), e.g. a 10-class subset (default: every class)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace a dataset already prepared in --out"
    )
    p.set_defaults(handler=_run_prep)


def _run_prep(args) -> int:
    from common.errors import ConfigError
    from data_prep.options import PrepOptions
    from data_prep.prepare import prepare
    from launch.tables import show_pairs

    classes = None
    if args.classes is not None:
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
        if not classes:
            raise ConfigError("--classes: no class names given")
        if args.dataset not in ("imagefolder", "tiny-imagenet"):
            raise ConfigError(
                f"--classes applies to imagefolder and tiny-imagenet, not {args.dataset}"
            )
    options = PrepOptions(
        workers=args.workers, image_size=args.image_size, force=args.force, classes=classes
    )
    from engine.checkpoint import stop_raises

    unfinished = f"{args.out} is replaced only once complete; left as it was"
    with stop_raises(unfinished):
        meta = prepare(args.dataset, args.source, args.out, options)
    show_pairs(
        f"Prepared {meta.dataset} in {args.out}",
        [
            ("classes", meta.num_classes),
            ("image", f"{meta.image_size}x{meta.image_size}x{meta.channels}"),
            ("train images", meta.train_count),
            ("test images", meta.test_count),
            (
                "images per class (train)",
                f"{min(meta.train_class_counts)}..{max(meta.train_class_counts)}",
            ),
            ("mean", " ".join(f"{m:.4f}" for m in meta.mean)),
            ("std", " ".join(f"{s:.4f}" for s in meta.std)),
            ("sources", len(meta.sources)),
        ],
    )
    return 0


def add_inspect(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="check a prepared folder with a pass of every loader; optional image grid",
        description="Run one epoch of the random loader, some class-grouped steps and the "
        "sequential test loader over a prepared folder, check them against meta.json, and "
        "optionally write a PNG grid of real images (rows: classes).",
    )
    p.add_argument("data", type=Path, help="a folder written by `gencond prep`")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument(
        "--batch-size",
        type=positive,
        default=256,
        help="images per batch of the random and test loaders (default: %(default)s)",
    )
    p.add_argument("--grid", type=Path, default=None, help="write a PNG grid of real images here")
    p.set_defaults(handler=_run_inspect)


def _run_inspect(args) -> int:
    from data_prep.inspect import class_grid, loader_pass
    from launch.tables import show_rows

    rows = loader_pass(args.data, args.device, args.batch_size)
    if args.grid:
        class_grid(args.data, args.grid)
    show_rows(f"Loader pass over {args.data}", rows)
    if args.grid:
        console.print(f"grid of real images: {args.grid}")
    return 0
