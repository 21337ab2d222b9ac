"""Image folders: train/<class>/... with val/<class>/... or test/<class>/..., and Tiny-ImageNet.

Classes are the sorted train folder names (for Tiny-ImageNet, the sorted wnids.txt, which is the
same set). Images are decoded with PIL, converted to RGB, and resized with bicubic filtering to
image_size x image_size when their size differs (default: the first training image's height).
Tiny-ImageNet's validation images come from val/images with labels from val/val_annotations.txt.
A .zip of either tree is accepted and extracted into the scratch folder first.

Symbolic links are followed (a class folder may be a link to images elsewhere), and every real
folder is read once: a link that leads to a folder already read (a loop such as
train/a/loop -> train/a, a link up to train/, two classes linking the same folder) is refused
with one line naming the link. A symlinked image file is read as the image it points to. A
FIFO, device or socket named like an image is refused in one line (opening a FIFO would wait
forever for a writer).
Images larger than PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS x 2) are refused.
Images of more than 8 bits per channel (16-bit PNG or TIFF, float) are refused in one line:
converting them would clip, not scale (convert them to 8 bits first).
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

from common.errors import DataError
from data_prep import staging
from data_prep.options import PrepOptions
from data_prep.splits import RawDataset, Segment, Split

CHUNK = 512


def _extract(source: Path, workdir: Path) -> Path:
    target = workdir / "extracted"
    try:
        with zipfile.ZipFile(source) as zf:
            zf.extractall(target)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{source}: not a readable zip file ({e})") from None
    return target


def _find_root(source: Path) -> Path:
    """The folder that holds train/: source itself or its only subfolder."""
    if (source / "train").is_dir():
        return source
    children = [c for c in source.iterdir() if c.is_dir()] if source.is_dir() else []
    if len(children) == 1 and (children[0] / "train").is_dir():
        return children[0]
    raise DataError(f"{source}: no train/ folder (expected train/<class>/<images>)")


def _walk_error(error: OSError) -> None:
    raise DataError(f"{error.filename}: cannot list this folder ({error.strerror})")


def _folder_key(path: str) -> tuple[int, int]:
    st = os.stat(path)  # follows links: the real folder
    return st.st_dev, st.st_ino


def scan(split_dir: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """(path, class) of every image under split_dir/<class>/, in torchvision's make_dataset
    order (classes sorted, folders sorted, files sorted), following each real folder once."""
    seen = {_folder_key(str(split_dir)): str(split_dir)}

    def enter(path: str) -> None:
        key = _folder_key(path)
        if key in seen:
            raise DataError(
                f"{path}: leads to {seen[key]}, which is already read (a symlink loop or a second "
                f"path to the same images); remove the link"
            )
        seen[key] = path

    samples = []
    for name in sorted(class_to_idx):
        top = split_dir / name
        if not top.is_dir():
            continue
        enter(str(top))
        walked = []
        for root, dirs, files in os.walk(top, followlinks=True, onerror=_walk_error):
            for d in sorted(dirs):
                enter(os.path.join(root, d))
            walked.append((root, files))
        for root, files in sorted(walked):
            for fname in sorted(files):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    samples.append((regular(os.path.join(root, fname)), class_to_idx[name]))
    return samples


def regular(path: str) -> str:
    """path, when it is (or links to) a regular file; a FIFO (whose open waits forever for a
    writer), a device or a socket named like an image is refused in one line."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a regular file"
        raise DataError(f"{path}: is {kind}, not an image file; remove it from the folder")
    return path


def _tiny_imagenet_samples(
    root: Path, class_to_idx: dict[str, int], known: set[str]
) -> list[tuple[str, int]]:
    """The labelled val images of the classes in class_to_idx (others of `known` skipped)."""
    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DataError(f"{root / 'val'}: missing val_annotations.txt")
    samples = []
    for lineno, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in known:
            raise DataError(f"{annotations}:{lineno}: unknown class in {line.strip()!r}")
        if parts[1] not in class_to_idx:
            continue
        image = regular(str(root / "val" / "images" / parts[0]))
        samples.append((image, class_to_idx[parts[1]]))
    return samples


def _folder_samples(root: Path, class_to_idx: dict[str, int], known: set[str]) -> tuple[list, Path]:
    for name in ("val", "test"):
        folder = root / name
        if folder.is_dir():
            unknown = sorted(c.name for c in folder.iterdir() if c.is_dir() and c.name not in known)
            if unknown:
                raise DataError(f"{folder}: class folder {unknown[0]!r} is not among train/")
            samples = scan(folder, class_to_idx)
            return samples, folder
    raise DataError(f"{root}: no val/ or test/ folder")


def _class_names(root: Path, classes: list[str]) -> list[str]:
    words = root / "words.txt"
    if not words.is_file():
        return classes
    table = dict(line.split("\t", 1) for line in words.read_text().splitlines() if "\t" in line)
    return [table.get(c, c).split(",")[0].strip() for c in classes]


# PIL modes of more than 8 bits per channel (16-bit greyscale PNG / TIFF, 32-bit int, float)
WIDE_MODES = {
    "I": "32-bit integer",
    "I;16": "16-bit",
    "I;16L": "16-bit",
    "I;16B": "16-bit",
    "I;16N": "16-bit",
    "F": "32-bit float",
}


def decode(path: str, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            if img.mode in WIDE_MODES:  # convert("RGB") would clip them to 255, not scale
                raise DataError(
                    f"{path}: {WIDE_MODES[img.mode]} image (PIL mode {img.mode}); gencond reads 8 "
                    "bits per channel: convert the images to 8-bit first"
                )
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: refused, too large to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def stage(task: tuple[Path, int, list[str], int]) -> int:
    """Worker: decode a chunk of image paths into rows [start, start+len) of the staging map."""
    out, start, paths, size = task
    images = staging.open_rw(out)
    for i, p in enumerate(paths):
        images[start + i] = decode(p, size)
    images.flush()
    return len(paths)


def _stage_split(samples, out: Path, size: int, workers: int, split: str) -> np.ndarray:
    paths = [p for p, _ in samples]
    staging.create(out, (len(paths), size, size, 3))
    tasks = [(out, s, paths[s : s + CHUNK], size) for s in range(0, len(paths), CHUNK)]
    staging.run_parallel(tasks, stage, len(paths), workers, f"Decoding {split} images")
    return np.load(out, mmap_mode="r")


def read(dataset: str, source: Path, workdir: Path, options: PrepOptions) -> RawDataset:
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    archive = source if source.is_file() and source.suffix == ".zip" else None
    if archive is not None:
        source = _extract(archive, workdir)
    root = _find_root(source)
    wnids = root / "wnids.txt"
    if dataset == "tiny-imagenet" and wnids.is_file():
        classes = sorted(w.strip() for w in wnids.read_text().split() if w.strip())
    else:
        classes, _ = find_classes(root / "train")
    known = set(classes)
    if options.classes is not None:
        missing = sorted(set(options.classes) - known)
        if missing:
            raise DataError(
                f"--classes: {missing[0]!r} is not a class of {root} "
                f"({len(classes)} classes, e.g. {', '.join(classes[:3])})"
            )
        classes = sorted(set(options.classes))
    class_to_idx = {c: i for i, c in enumerate(classes)}
    train = scan(root / "train", class_to_idx)
    if not train:
        raise DataError(f"{root / 'train'}: no images found")
    tiny_val = dataset == "tiny-imagenet" or (root / "val" / "val_annotations.txt").is_file()
    if tiny_val:
        test, test_source = _tiny_imagenet_samples(root, class_to_idx, known), root / "val"
    else:
        test, test_source = _folder_samples(root, class_to_idx, known)
    if not test:
        raise DataError(f"{test_source}: no images found")
    image_size = options.image_size
    if image_size is None:
        image_size = _first_height(train[0][0])
    if image_size < 1:
        raise DataError(f"--image-size must be positive, got {image_size}")
    train_images = _stage_split(train, workdir / "train.npy", image_size, options.workers, "train")
    test_images = _stage_split(test, workdir / "test.npy", image_size, options.workers, "test")
    labels = lambda s: np.array([y for _, y in s], dtype=np.int64)  # noqa: E731
    return RawDataset(
        dataset,
        _class_names(root, classes),
        Split([Segment(train_images, labels(train), root / "train")]),
        Split([Segment(test_images, labels(test), test_source)]),
        [archive] if archive is not None else [root / "train", test_source],
        class_ids=classes,
    )


def _first_height(path: str) -> int:
    try:
        with Image.open(path) as img:
            return img.size[1]
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: refused, too large to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
