"""Image classification data for the proxy task of a search, with nothing downloaded.

A data spec is one of:

- `digits`: scikit-learn's `load_digits` (1,797 8x8 grey images of 10 digits, shipped with
  scikit-learn), resized with bilinear `torch.nn.functional.interpolate` to the training
  resolution and repeated to 3 channels;
- `digits-shift`: the same digits, split into train and test images first, then each image
  pasted 4 times at random offsets on a 16x16 black canvas with Gaussian pixel noise (std 0.2 of
  full scale; offsets and noise fixed by seed), then resized: a proxy task where receptive field
  and capacity matter, so that architectures differ in accuracy (on plain digits every cell
  network of NB201 ends within 2 points: no ranking to measure), with 4x the images so that a
  test accuracy is precise to about 1 point (the validation split shares source digits with the
  training split, the test split does not);
- `folder:PATH`: a user's image folder, one subfolder per class (png, jpg, jpeg, bmp, gif, webp,
  tif), read with pillow, converted to RGB and resized (bilinear) to the training resolution;
- `cifar10:PATH`: the CIFAR-10 "python version" batches the user points to (`data_batch_1` ..
  `data_batch_5`, `test_batch`, optional `batches.meta`).

Splits: a test split (CIFAR's `test_batch`, else a seeded `test_frac` of the images) and a
validation split held out of the training images (`valid_frac`): the architecture steps use the
validation split, as ProxylessNAS does (it holds out part of ImageNet's training set,
`valid_size`). Images are kept as uint8 (N, 3, R, R) at the training resolution and normalised
per batch with the training split's per-channel mean and std.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.errors import HwnasError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# input sizes refused before anything is allocated: the largest side an arch may have
# (hwnas.space.arch.MAX_RESOLUTION) and the images of a dataset held in memory, as uint8
MAX_RESOLUTION = 4096
MAX_IMAGE_BYTES = 16 << 30
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
SPEC_HELP = ("use 'digits', 'digits-shift', 'folder:PATH' (one subfolder per class) or "
             "'cifar10:PATH'")
SHIFT_CANVAS, SHIFT_NOISE, SHIFT_COPIES = 16, 0.2, 4


@dataclass
class Split:
    x: torch.Tensor  # uint8 (N, 3, R, R)
    y: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.y.numel())


class SplitData:
    """What every dataset of a proxy task shares: its `train` / `valid` / `test` splits (each
    with uint8 images `x`), the training split's per-channel `mean` / `std`, and seeded
    batches. A subclass says what a batch's targets are (`_targets`)."""

    def split(self, name: str):
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, name)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    def _targets(self, split, idx: torch.Tensor):
        raise NotImplementedError

    def batches(self, split: str, batch_size: int, shuffle: bool = True, seed: int = 0,
                drop_last: bool = False, max_batches: int | None = None) -> Iterator[tuple]:
        """(normalised float images, targets) batches; shuffled by a seeded permutation."""
        s = self.split(split)
        n = len(s)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle \
            else torch.arange(n)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for k, start in enumerate(range(0, stop, batch_size)):
            if max_batches is not None and k >= max_batches:
                return
            idx = order[start:start + batch_size]
            yield self.normalize(s.x[idx]), self._targets(s, idx)

    def n_batches(self, split: str, batch_size: int, drop_last: bool = False,
                  max_batches: int | None = None) -> int:
        n = len(self.split(split))
        k = n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)
        return min(k, max_batches) if max_batches is not None else k


@dataclass
class ImageData(SplitData):
    """Train / valid / test splits of one dataset at one resolution; a batch's targets are the
    labels."""

    name: str
    classes: list[str]
    train: Split
    valid: Split
    test: Split
    resolution: int
    mean: torch.Tensor  # (3,) in [0, 1]
    std: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _targets(self, split: Split, idx: torch.Tensor) -> torch.Tensor:
        return split.y[idx]

    def describe(self) -> dict:
        return {"name": self.name, "classes": self.num_classes, "resolution": self.resolution,
                "train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def check_spec(spec: str) -> None:
    """Refuse a malformed data spec (unknown kind, missing path) without loading anything."""
    if not isinstance(spec, str) or not spec.strip():
        raise HwnasError(f"empty data spec; {SPEC_HELP}")
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind in ("digits", "digits-shift") and not arg:
        return
    if kind in ("folder", "cifar10"):
        _path(arg, spec)
        return
    raise HwnasError(f"unknown data spec {spec!r}; {SPEC_HELP}")


def load_data(spec: str, resolution: int = 32, seed: int = 0, valid_frac: float = 0.2,
              test_frac: float = 0.2, limit: int | None = None) -> ImageData:
    """Load a data spec (see the module docstring) at `resolution`; `limit` caps the train images."""
    if not isinstance(spec, str) or not spec.strip():
        raise HwnasError(f"empty data spec; {SPEC_HELP}")
    if not 4 <= resolution <= MAX_RESOLUTION:
        raise HwnasError(f"data resolution must be within 4..{MAX_RESOLUTION}, got {resolution}")
    if not 0.0 < valid_frac < 1.0 or not 0.0 <= test_frac < 1.0:
        raise HwnasError("valid_frac must be in (0, 1) and test_frac in [0, 1)")
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    rng = np.random.default_rng(seed)
    if kind == "digits" and not arg:
        x, y, classes = _digits()
        _check_size("digits", len(x), resolution)
        x = _resize_uint8(x, resolution)
        (x_tr, y_tr), (x_te, y_te) = _holdout(x, y, test_frac, rng)
        name = "digits"
    elif kind == "digits-shift" and not arg:
        x, y, classes = _digits()
        (x_tr, y_tr), (x_te, y_te) = _holdout(x, y, test_frac, rng)
        x_tr, y_tr = _shifted(x_tr, y_tr, seed=1)
        x_te, y_te = _shifted(x_te, y_te, seed=2)
        _check_size("digits-shift", len(x_tr) + len(x_te), resolution)
        x_tr, x_te = _resize_uint8(x_tr, resolution), _resize_uint8(x_te, resolution)
        name = "digits-shift"
    elif kind == "folder":
        root = _path(arg, spec)
        x, y, classes = _folder(root, resolution)
        (x_tr, y_tr), (x_te, y_te) = _holdout(x, y, test_frac, rng)
        name = f"folder:{root}"
    elif kind == "cifar10":
        root = _path(arg, spec)
        x_tr, y_tr, x_te, y_te, classes = _cifar10(root)
        _check_size(f"cifar10:{root}", len(x_tr) + len(x_te), resolution)
        x_tr, x_te = _resize_uint8(x_tr, resolution), _resize_uint8(x_te, resolution)
        name = f"cifar10:{root}"
    else:
        raise HwnasError(f"unknown data spec {spec!r}; {SPEC_HELP}")
    perm = rng.permutation(len(y_tr))
    if limit is not None:
        if limit < 2:
            raise HwnasError(f"data limit must be at least 2 images, got {limit}")
        perm = perm[:limit]
    n_valid = max(1, int(round(len(perm) * valid_frac)))
    if len(perm) - n_valid < 1:
        raise HwnasError(f"{name}: too few images ({len(perm)}) for a train/valid split")
    valid_idx, train_idx = np.sort(perm[:n_valid]), np.sort(perm[n_valid:])
    train = Split(x_tr[train_idx], y_tr[train_idx])
    valid = Split(x_tr[valid_idx], y_tr[valid_idx])
    test = Split(x_te, y_te)
    xf = train.x.float() / 255.0
    mean = xf.mean((0, 2, 3))
    std = xf.std((0, 2, 3)).clamp_min(1e-3)
    return ImageData(name, classes, train, valid, test, resolution, mean, std)


# --- sources ------------------------------------------------------------------------------------
def _digits() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0 * 255.0  # (N, 1, 8, 8)
    x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.as_tensor(d.target, dtype=torch.int64)
    return x, y, [str(c) for c in d.target_names]


def _shifted(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`digits-shift`: each 8x8 image `SHIFT_COPIES` times at seeded random offsets on a 16x16
    canvas, plus noise."""
    g = torch.Generator().manual_seed(seed)
    x, y = x.repeat(SHIFT_COPIES, 1, 1, 1), y.repeat(SHIFT_COPIES)
    n = len(x)
    span = SHIFT_CANVAS - x.shape[-1] + 1
    off = torch.randint(0, span, (n, 2), generator=g)
    canvas = torch.zeros(n, 1, SHIFT_CANVAS, SHIFT_CANVAS)
    for k in range(n):
        r, c = int(off[k, 0]), int(off[k, 1])
        canvas[k, 0, r:r + x.shape[-2], c:c + x.shape[-1]] = x[k, 0].float()
    canvas += torch.randn(canvas.shape, generator=g) * SHIFT_NOISE * 255.0
    out = canvas.round().clamp(0, 255).to(torch.uint8)
    return out.expand(-1, 3, -1, -1).contiguous(), y


def _folder(root: Path, resolution: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise HwnasError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise HwnasError(f"{root}: an image folder needs one subfolder per class (at least 2), "
                         f"found {len(classes)}")
    per_class = []
    for name in classes:
        files = sorted(p for p in (root / name).rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise HwnasError(f"{root / name}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        per_class.append(files)
    _check_size(str(root), sum(map(len, per_class)), resolution)
    xs, ys = [], []
    for c, files in enumerate(per_class):
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB").resize((resolution, resolution),
                                                  Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError
                    ) as e:  # not an image, truncated, or a header claiming billions of pixels
                raise HwnasError(f"{f}: not a readable image ({e})") from None
            xs.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
            ys.append(c)
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.int64), classes


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle dicts/lists/bytes/numpy arrays only (the content of CIFAR's python batches)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """Read one CIFAR python batch.

    These files are pickles: they are read with pickle only because that is the format in which
    the dataset is published and the user points to the folder explicitly; `encoding="bytes"` as
    the dataset's instructions say (the files were written by Python 2). The unpickler refuses any
    global except numpy's array reconstruction, so a tampered file cannot run code.
    """
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise HwnasError(f"{path}: not a CIFAR-10 python batch ({e})") from None
    if not isinstance(d, dict):
        raise HwnasError(f"{path}: not a CIFAR-10 python batch (expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    d = _unpickle(path)
    if "data" not in d or "labels" not in d:
        raise HwnasError(f"{path}: a CIFAR-10 batch needs 'data' and 'labels'")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise HwnasError(f"{path}: expected data of shape (N, 3072) and N labels, got "
                         f"{data.shape} and {labels.shape}")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return x, torch.from_numpy(labels)


def _cifar10(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                  list[str]]:
    if not root.is_dir():
        raise HwnasError(f"CIFAR-10 folder not found: {root}")
    missing = [n for n in (*CIFAR_TRAIN, CIFAR_TEST) if not (root / n).is_file()]
    if missing:
        raise HwnasError(f"{root}: not a CIFAR-10 python folder, missing {', '.join(missing)} "
                         "(expected data_batch_1..5 and test_batch of 'cifar-10-python')")
    parts = [_cifar_batch(root / n) for n in CIFAR_TRAIN]
    x_tr = torch.cat([p[0] for p in parts])
    y_tr = torch.cat([p[1] for p in parts])
    x_te, y_te = _cifar_batch(root / CIFAR_TEST)
    classes = [str(i) for i in range(10)]
    meta = root / "batches.meta"
    if meta.is_file():
        names = _unpickle(meta).get("label_names")
        if isinstance(names, list) and len(names) == 10:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    bad = int(((y_tr < 0) | (y_tr > 9)).sum() + ((y_te < 0) | (y_te > 9)).sum())
    if bad:
        raise HwnasError(f"{root}: {bad} labels outside 0..9")
    return x_tr, y_tr, x_te, y_te, classes


# --- helpers ------------------------------------------------------------------------------------
def _path(arg: str, spec: str) -> Path:
    if not arg:
        raise HwnasError(f"data spec {spec!r} needs a path after the colon; {SPEC_HELP}")
    return Path(arg).expanduser()


def _check_size(name: str, n: int, resolution: int) -> None:
    """Refuse a dataset whose images at `resolution` would not fit in memory, before any is
    resized (n images of 3 x resolution^2 bytes)."""
    size = n * 3 * resolution * resolution
    if size > MAX_IMAGE_BYTES:
        raise HwnasError(f"{name}: {n} images at {resolution}x{resolution} are {size / 2**30:.3g} "
                         f"GiB, more than hwnas holds in memory ({MAX_IMAGE_BYTES >> 30} GiB); "
                         "use a lower resolution")


def _resize_uint8(x: torch.Tensor, resolution: int, chunk: int = 2048) -> torch.Tensor:
    """Bilinear resize of uint8 (N, C, H, W) images to (resolution, resolution), in chunks
    (of at most 256 MiB of float32 output)."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    chunk = max(1, min(chunk, (256 << 20) // (4 * x.shape[1] * resolution * resolution)))
    out = []
    for start in range(0, len(x), chunk):
        xf = x[start:start + chunk].float()
        r = F.interpolate(xf, size=(resolution, resolution), mode="bilinear", align_corners=False)
        out.append(r.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def _holdout(x: torch.Tensor, y: torch.Tensor, test_frac: float, rng: np.random.Generator
             ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A seeded (train, test) split."""
    perm = rng.permutation(len(y))
    n_test = int(round(len(y) * test_frac))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return (x[tr], y[tr]), (x[te], y[te])
