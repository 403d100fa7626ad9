"""Multi-task proxy data (classification, segmentation, detection) for an FBNetV5-style search.

FBNetV5 trains its supernet on "a multitask dataset (generated from ImageNet)" whose box and mask
labels are pseudo-labels. Ours is generated from scikit-learn's digits, so nothing is downloaded.
A multi-task spec is one of:

- `multitask:digits`: scikit-learn's `load_digits` (1,797 8x8 grey images, values 0..16, shipped
  with scikit-learn; read through `hwnas.data._digits`, which scales them to uint8 0..255). Each
  digit is pasted once, at a seeded random offset (row and column uniform in 0..8, so the whole
  digit fits), on a 16x16 black canvas; Gaussian pixel noise (std 0.1 of full scale, seeded) is
  added to the canvas, which is rounded to uint8, repeated to 3 channels and resized (bilinear,
  `_resize_uint8`) to the training resolution R. The targets are:
  * `cls`: the digit, int64 (N,), 10 classes;
  * `seg`: the "pseudo-label" mask: the clean (noise-free) pasted digit thresholded at > 4/16 of
    full scale (digit value 5..16 of 16), resized to R x R with nearest neighbour (pixel centres,
    as torch's `nearest-exact`); a stroke pixel gets class 1 + digit and the background class 0,
    int64 (N, R, R), 11 classes. Segmentation is thus semantic (which digit each pixel belongs
    to), not only foreground/background: a head must recognise the digit as well as find it;
  * `det`: the box of the mask's stroke pixels, float32 (N, 4) as (x0, y0, x1, y1) normalised by
    R with pixel-edge coordinates: x0 = first stroke column / R, x1 = (last stroke column + 1) / R
    (same for rows), so a one-pixel mask has a box 1/R wide. Below R = 16 nearest-neighbour
    downsampling can drop every stroke pixel of a thin digit; such an image keeps the box of its
    16x16 mask (normalised by 16).
  The paste offsets and noise are drawn for all 1,797 digits from one generator seeded by `seed`,
  then the digits are split (below); each source digit is in one split only.
- `multitask:PATH`: a user's folder (a folder named `digits` is `multitask:./digits`) with
  `images.npy` (uint8, (N, H, W, 3), (N, 3, H, W) or grey (N, H, W); a 4-d array whose last axis is
  3 is read as channels-last) and any of `labels.npy` ((N,) int >= 0: `cls`), `masks.npy`
  ((N, H, W) int or bool class ids 0..1023: `seg`) and `boxes.npy` ((N, 4) float, (x0, y0, x1, y1)
  normalised to [0, 1] with x0 <= x1 and y0 <= y1: `det`). The tasks present are the files
  present. Every file is read with `np.load(path, allow_pickle=False)`: an object array, a pickle
  or an .npz archive is refused, so a file can never run code. Images are resized bilinear and
  masks nearest-neighbour (as above) to R x R; boxes are normalised already and kept. The number
  of classes is max label + 1 (`cls`) and max mask value + 1, at least 2 (`seg`).

Splits (as `hwnas.data.load_data`): a seeded `test_frac` of the images (`_holdout`), then a seeded
`valid_frac` of the rest for validation; a generator `numpy.random.default_rng(seed)` draws both.
Images are kept as uint8 (N, 3, R, R) and normalised per batch with the training split's
per-channel mean and std. `tasks=` keeps a subset of the tasks.

Metrics (`TASK_METRIC` names the one per task): `accuracy`, `miou` / `MeanIoU` and `box_iou`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hwnas.data import SplitData, _digits, _holdout, _resize_uint8
from hwnas.errors import HwnasError

TASKS = ("cls", "seg", "det")
TASK_METRIC = {"cls": "accuracy", "seg": "miou", "det": "box_iou"}
TASK_FILES = {"cls": "labels.npy", "seg": "masks.npy", "det": "boxes.npy"}
IMAGES_FILE = "images.npy"
SPEC_HELP = "use 'multitask:digits' or 'multitask:PATH' (a folder with images.npy and labels/masks/boxes.npy)"
CANVAS, NOISE, MASK_THRESHOLD = 16, 0.1, 4  # canvas side, noise std (of full scale), digit value > 4/16
MAX_SEG_CLASSES = 1024  # a (C, C) confusion matrix must stay small


@dataclass
class MultiTaskSplit:
    """Images and the targets of the tasks present (None for a task absent)."""

    x: torch.Tensor  # uint8 (N, 3, R, R)
    cls: torch.Tensor | None = None  # int64 (N,)
    seg: torch.Tensor | None = None  # int64 (N, R, R)
    det: torch.Tensor | None = None  # float32 (N, 4) normalised (x0, y0, x1, y1)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def targets(self) -> dict[str, torch.Tensor]:
        return {t: getattr(self, t) for t in TASKS if getattr(self, t) is not None}

    def subset(self, idx: torch.Tensor | np.ndarray) -> MultiTaskSplit:
        idx = torch.as_tensor(idx, dtype=torch.int64)
        return MultiTaskSplit(self.x[idx], *(None if v is None else v[idx]
                                             for v in (self.cls, self.seg, self.det)))


@dataclass
class MultiTaskData(SplitData):
    """Train / valid / test splits of one multi-task dataset at one resolution; a batch's
    targets are {task: targets}."""

    name: str
    tasks: tuple[str, ...]
    num_classes: dict[str, int]  # per task; "det" is 4 (the box coordinates)
    train: MultiTaskSplit
    valid: MultiTaskSplit
    test: MultiTaskSplit
    resolution: int
    mean: torch.Tensor  # (3,) in [0, 1]
    std: torch.Tensor

    def _targets(self, split: MultiTaskSplit, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {t: v[idx] for t, v in split.targets.items()}

    def describe(self) -> dict:
        return {"name": self.name, "tasks": list(self.tasks), "num_classes": dict(self.num_classes),
                "metrics": {t: TASK_METRIC[t] for t in self.tasks}, "resolution": self.resolution,
                "train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


# --- specs --------------------------------------------------------------------------------------
def _parse(spec: str) -> tuple[str, Path | None]:
    """('digits', None) or ('folder', path); refuses a malformed spec."""
    if not isinstance(spec, str) or not spec.strip():
        raise HwnasError(f"empty multi-task data spec; {SPEC_HELP}")
    kind, sep, arg = spec.strip().partition(":")
    if kind.lower() != "multitask" or not sep:
        raise HwnasError(f"unknown multi-task data spec {spec!r}; {SPEC_HELP}")
    if not arg.strip():
        raise HwnasError(f"multi-task data spec {spec!r} needs 'digits' or a path after the colon; "
                         f"{SPEC_HELP}")
    if arg == "digits":
        return "digits", None
    return "folder", Path(arg).expanduser()


def check_multitask_spec(spec: str) -> None:
    """Refuse a malformed multi-task data spec without loading anything (a folder is not opened)."""
    _parse(spec)


def load_multitask(spec: str, resolution: int = 32, seed: int = 0, valid_frac: float = 0.2,
                   test_frac: float = 0.2, tasks: Sequence[str] | None = None) -> MultiTaskData:
    """Load a multi-task spec (see the module docstring) at `resolution`; `tasks` keeps a subset
    (default: every task present)."""
    kind, root = _parse(spec)
    if resolution < 4:
        raise HwnasError(f"data resolution must be at least 4, got {resolution}")
    if not 0.0 < valid_frac < 1.0 or not 0.0 <= test_frac < 1.0:
        raise HwnasError("valid_frac must be in (0, 1) and test_frac in [0, 1)")
    wanted = _check_tasks(tasks)
    if kind == "digits":
        name = "multitask:digits"
        full, num_classes = _digits_multitask(resolution, seed)
        where = name
    else:
        assert root is not None
        name = f"multitask:{root}"
        full, num_classes = _folder_multitask(root, resolution, wanted)
        where = str(root / IMAGES_FILE)
    present = tuple(t for t in TASKS if getattr(full, t) is not None)
    if wanted is None:
        wanted = present
    for t in wanted:
        if t not in present:  # only the digits set can get here (a folder is checked per file)
            raise HwnasError(f"{name}: task {t!r} is not in this dataset (tasks: {', '.join(present)})")
    for t in TASKS:
        if t not in wanted:
            setattr(full, t, None)
    train_idx, valid_idx, test_idx = _split_indices(len(full), valid_frac, test_frac,
                                                    np.random.default_rng(seed), where)
    train, valid, test = full.subset(train_idx), full.subset(valid_idx), full.subset(test_idx)
    xf = train.x.float() / 255.0
    mean = xf.mean((0, 2, 3))
    std = xf.std((0, 2, 3)).clamp_min(1e-3)
    return MultiTaskData(name, tuple(wanted), {t: num_classes[t] for t in wanted}, train, valid, test,
                         resolution, mean, std)


def _check_tasks(tasks: Sequence[str] | None) -> tuple[str, ...] | None:
    if tasks is None:
        return None
    if isinstance(tasks, str):
        tasks = [tasks]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise HwnasError(f"unknown task {unknown[0]!r}; tasks are {', '.join(TASKS)}")
    if not tasks:
        raise HwnasError(f"no task selected; tasks are {', '.join(TASKS)}")
    return tuple(t for t in TASKS if t in tasks)


def _split_indices(n: int, valid_frac: float, test_frac: float, rng: np.random.Generator,
                   where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (train, valid, test) index arrays, drawn as `load_data` draws its splits."""
    idx = torch.arange(n)
    (tr, _), (te, _) = _holdout(idx, idx, test_frac, rng)
    perm = rng.permutation(len(tr))
    n_valid = max(1, int(round(len(perm) * valid_frac)))
    if len(perm) - n_valid < 1 or (test_frac > 0 and len(te) < 1):
        raise HwnasError(f"{where}: too few images ({n}) for train/valid/test splits with "
                         f"valid_frac={valid_frac} and test_frac={test_frac}")
    tr = tr.numpy()
    return np.sort(tr[perm[n_valid:]]), np.sort(tr[perm[:n_valid]]), te.numpy()


# --- sources ------------------------------------------------------------------------------------
def _digits_multitask(resolution: int, seed: int) -> tuple[MultiTaskSplit, dict[str, int]]:
    """`multitask:digits`: paste, add noise, threshold, resize (see the module docstring)."""
    x8, y, _ = _digits()  # uint8 (N, 3, 8, 8), 0..255 = digit value 0..16
    n, h, w = x8.shape[0], x8.shape[-2], x8.shape[-1]
    rng = np.random.default_rng((seed, 1))
    off = rng.integers(0, CANVAS - h + 1, size=(n, 2))  # (row, col) of the digit's top left
    noise = rng.normal(0.0, NOISE * 255.0, size=(n, CANVAS, CANVAS))
    grey = x8[:, 0].numpy()
    value = np.rint(grey.astype(np.float64) * 16.0 / 255.0)  # back to the exact 0..16 value
    rows = off[:, 0, None, None] + np.arange(h)[None, :, None]  # (N, h, 1)
    cols = off[:, 1, None, None] + np.arange(w)[None, None, :]  # (N, 1, w)
    ni = np.arange(n)[:, None, None]
    clean = np.zeros((n, CANVAS, CANVAS), np.float64)
    clean[ni, rows, cols] = grey
    stroke16 = np.zeros((n, CANVAS, CANVAS), bool)
    stroke16[ni, rows, cols] = value > MASK_THRESHOLD
    img = np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)
    x = torch.from_numpy(img)[:, None].expand(-1, 3, -1, -1).contiguous()
    x = _resize_uint8(x, resolution)
    stroke = _resize_nearest(torch.from_numpy(stroke16), resolution)
    box = _mask_box(stroke)
    empty = ~stroke.flatten(1).any(1)
    if bool(empty.any()):  # only below R = 16: the 16x16 mask's box instead
        box[empty] = _mask_box(torch.from_numpy(stroke16[empty.numpy()]))
    seg = stroke.to(torch.int64) * (1 + y)[:, None, None]
    return MultiTaskSplit(x, y.clone(), seg, box), {"cls": 10, "seg": 11, "det": 4}


def _folder_multitask(root: Path, resolution: int, wanted: tuple[str, ...] | None
                      ) -> tuple[MultiTaskSplit, dict[str, int]]:
    if not root.is_dir():
        raise HwnasError(f"multi-task data folder not found: {root}")
    files = {t: root / f for t, f in TASK_FILES.items() if (root / f).is_file()}
    if not (root / IMAGES_FILE).is_file():
        raise HwnasError(f"{root}: no {IMAGES_FILE} (uint8 (N, H, W, 3), (N, 3, H, W) or (N, H, W))")
    if not files:
        raise HwnasError(f"{root}: no task file (one of {', '.join(TASK_FILES.values())})")
    for t in wanted or ():
        if t not in files:
            raise HwnasError(f"{root}: task {t!r} needs {TASK_FILES[t]}, not found "
                             f"(tasks present: {', '.join(t for t in TASKS if t in files)})")
    use = {t: p for t, p in files.items() if wanted is None or t in wanted}
    x = _read_images(root / IMAGES_FILE)
    n, hw = x.shape[0], tuple(x.shape[-2:])
    out = MultiTaskSplit(_resize_uint8(x, resolution))
    num_classes: dict[str, int] = {}
    if "cls" in use:
        p = use["cls"]
        a = _load_npy(p)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise HwnasError(f"{p}: expected an integer array of shape (N,), got {a.dtype} {a.shape}")
        _check_n(p, len(a), n)
        if len(a) and int(a.min()) < 0:
            raise HwnasError(f"{p}: labels must be >= 0, found {int(a.min())}")
        out.cls = torch.from_numpy(a.astype(np.int64))
        num_classes["cls"] = int(a.max()) + 1 if len(a) else 0
    if "seg" in use:
        p = use["seg"]
        a = _load_npy(p)
        if a.ndim != 3 or a.dtype.kind not in "iub":
            raise HwnasError(f"{p}: expected an integer array of shape (N, H, W), got {a.dtype} {a.shape}")
        _check_n(p, len(a), n)
        if tuple(a.shape[1:]) != hw:
            raise HwnasError(f"{p}: masks are {a.shape[1]}x{a.shape[2]} but the images are "
                             f"{hw[0]}x{hw[1]}")
        a = a.astype(np.int64)
        if a.size and int(a.min()) < 0:
            raise HwnasError(f"{p}: mask class ids must be >= 0, found {int(a.min())}")
        if a.size and int(a.max()) >= MAX_SEG_CLASSES:
            raise HwnasError(f"{p}: mask class ids must be below {MAX_SEG_CLASSES}, found {int(a.max())}")
        out.seg = _resize_nearest(torch.from_numpy(a), resolution)
        num_classes["seg"] = max(2, int(a.max()) + 1) if a.size else 2
    if "det" in use:
        p = use["det"]
        a = _load_npy(p)
        if a.ndim != 2 or a.shape[1:] != (4,) or a.dtype.kind != "f":
            raise HwnasError(f"{p}: expected a float array of shape (N, 4) (x0, y0, x1, y1), got "
                             f"{a.dtype} {a.shape}")
        _check_n(p, len(a), n)
        bad = ~((a >= 0.0) & (a <= 1.0))  # NaN is outside too
        if bad.any():
            i = int(np.argwhere(bad)[0, 0])
            raise HwnasError(f"{p}: box values must be normalised to [0, 1], box {i} is {a[i].tolist()}")
        inv = (a[:, 0] > a[:, 2]) | (a[:, 1] > a[:, 3])
        if inv.any():
            i = int(np.argmax(inv))
            raise HwnasError(f"{p}: boxes need x0 <= x1 and y0 <= y1, box {i} is {a[i].tolist()}")
        out.det = torch.from_numpy(a.astype(np.float32))
        num_classes["det"] = 4
    return out, num_classes


def _load_npy(path: Path) -> np.ndarray:
    """One .npy array, never unpickled: an object array, a pickle or an .npz archive is refused."""
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        if "pickle" in msg.lower() or "object" in msg.lower():
            msg = "it holds an object array or a pickle; only plain numeric arrays are read, never unpickled"
        raise HwnasError(f"{path}: not a plain numpy .npy array ({msg})") from None
    if not isinstance(a, np.ndarray):  # an .npz archive
        close = getattr(a, "close", None)
        if close is not None:
            close()
        raise HwnasError(f"{path}: not a plain numpy .npy array (an .npz archive)")
    if a.dtype.hasobject or a.dtype.kind not in "biuf":
        raise HwnasError(f"{path}: unsupported dtype {a.dtype} (a plain numeric array is needed)")
    return a


def _read_images(path: Path) -> torch.Tensor:
    a = _load_npy(path)
    if a.dtype != np.uint8:
        raise HwnasError(f"{path}: images must be uint8, got {a.dtype}")
    if a.ndim == 3:
        a = np.repeat(a[:, None], 3, axis=1)
    elif a.ndim == 4 and a.shape[3] == 3:
        a = a.transpose(0, 3, 1, 2)
    elif not (a.ndim == 4 and a.shape[1] == 3):
        raise HwnasError(f"{path}: expected images of shape (N, H, W, 3), (N, 3, H, W) or (N, H, W), "
                         f"got {a.shape}")
    if a.shape[0] < 1 or a.shape[2] < 1 or a.shape[3] < 1:
        raise HwnasError(f"{path}: no images (shape {a.shape})")
    return torch.from_numpy(np.ascontiguousarray(a))


def _check_n(path: Path, n: int, n_images: int) -> None:
    if n != n_images:
        raise HwnasError(f"{path}: {n} entries but {IMAGES_FILE} has {n_images} images")


# --- helpers ------------------------------------------------------------------------------------
def _resize_nearest(m: torch.Tensor, resolution: int) -> torch.Tensor:
    """Nearest-neighbour resize of (N, H, W) masks to (resolution, resolution) by pixel centres
    (source index floor((i + 0.5) * H / R), as torch's `nearest-exact`); integer-exact, any dtype."""
    h, w = m.shape[-2], m.shape[-1]
    if h == resolution and w == resolution:
        return m.clone()
    ri = ((torch.arange(resolution) + 0.5) * (h / resolution)).floor().long().clamp_max(h - 1)
    ci = ((torch.arange(resolution) + 0.5) * (w / resolution)).floor().long().clamp_max(w - 1)
    return m[:, ri[:, None], ci[None, :]]


def _mask_box(stroke: torch.Tensor) -> torch.Tensor:
    """Pixel-edge (x0, y0, x1, y1) / side of the True pixels of (N, H, W) bool masks, float32;
    an empty mask gives (0, 0, 0, 0)."""
    h, w = stroke.shape[-2], stroke.shape[-1]
    rows, cols = stroke.any(2), stroke.any(1)  # (N, H), (N, W)
    y0 = rows.int().argmax(1)
    y1 = h - rows.flip(1).int().argmax(1)
    x0 = cols.int().argmax(1)
    x1 = w - cols.flip(1).int().argmax(1)
    box = torch.stack([x0 / w, y0 / h, x1 / w, y1 / h], 1).float()
    box[~rows.any(1)] = 0.0
    return box


# --- metrics ------------------------------------------------------------------------------------
def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy = (1/N) sum_i [argmax_c logits[i, c] == y[i]]; `logits` (N, C), or (N,)
    predicted labels."""
    logits, y = torch.as_tensor(logits), torch.as_tensor(y)
    pred = logits.argmax(-1) if logits.ndim == y.ndim + 1 else logits
    if pred.shape != y.shape or y.numel() == 0:
        raise ValueError(f"accuracy: predictions {tuple(pred.shape)} and labels {tuple(y.shape)} "
                         "must have the same non-empty shape")
    return float((pred == y).float().mean())


class MeanIoU:
    """Semantic segmentation mIoU accumulated over a whole set.

    A (C, C) confusion matrix M[t, p] (pixels of true class t predicted p) is summed over every
    image passed to `update`; then IoU_c = M[c, c] / (sum_p M[c, p] + sum_t M[t, c] - M[c, c]),
    i.e. intersection over union of the pixels of class c over the whole set (not per image), and
    mIoU = the mean of IoU_c over the classes present in the prediction or the truth (union > 0);
    a class absent from both is left out, not counted as 1 or 0. Pixels whose true class is outside
    0..C-1 (e.g. an ignore label 255) are ignored; a predicted class outside 0..C-1 is an error.
    """

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ValueError(f"MeanIoU needs at least one class, got {num_classes}")
        self.num_classes = int(num_classes)
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, true: torch.Tensor) -> MeanIoU:
        """Add a batch: `pred` class ids (N, H, W), or logits (N, C, H, W); `true` (N, H, W)."""
        pred, true = torch.as_tensor(pred), torch.as_tensor(true)
        if pred.ndim == true.ndim + 1:
            pred = pred.argmax(1)
        if pred.shape != true.shape:
            raise ValueError(f"MeanIoU: prediction {tuple(pred.shape)} and truth {tuple(true.shape)} differ")
        c = self.num_classes
        pred, true = pred.reshape(-1).long(), true.reshape(-1).long()
        keep = (true >= 0) & (true < c)
        pred, true = pred[keep], true[keep]
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= c):
            raise ValueError(f"MeanIoU: predicted class ids must be in 0..{c - 1}")
        self.confusion += torch.bincount(true * c + pred, minlength=c * c).reshape(c, c)
        return self

    def per_class(self) -> torch.Tensor:
        """IoU per class, float64 (C,); NaN for a class absent from prediction and truth."""
        m = self.confusion.double()
        inter = m.diag()
        union = m.sum(0) + m.sum(1) - inter
        return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))

    def compute(self) -> float:
        iou = self.per_class()
        present = ~iou.isnan()
        if not bool(present.any()):
            raise ValueError("MeanIoU: no pixels accumulated")
        return float(iou[present].mean())


def miou(pred_mask: torch.Tensor, true_mask: torch.Tensor, num_classes: int) -> float:
    """Mean IoU over a set of masks, accumulated over all pixels first (see `MeanIoU`)."""
    return MeanIoU(num_classes).update(pred_mask, true_mask).compute()


def box_iou(pred: torch.Tensor, true: torch.Tensor, reduction: str = "mean") -> float | torch.Tensor:
    """IoU of paired (N, 4) boxes (x0, y0, x1, y1), per image: inter / (area_p + area_t - inter),
    inter = max(0, min(x1) - max(x0)) * max(0, min(y1) - max(y0)), area = max(0, x1 - x0) *
    max(0, y1 - y0). A pair with zero union (degenerate boxes) or a non-finite value has IoU 0, never
    NaN. `reduction="mean"` gives the mean over images (the reported number), "none" the (N,) IoUs."""
    p = torch.as_tensor(pred, dtype=torch.float64).reshape(-1, 4)
    t = torch.as_tensor(true, dtype=torch.float64).reshape(-1, 4)
    if p.shape != t.shape or p.shape[0] == 0:
        raise ValueError(f"box_iou: boxes {tuple(p.shape)} and {tuple(t.shape)} must be paired (N, 4)")
    iw = (torch.minimum(p[:, 2], t[:, 2]) - torch.maximum(p[:, 0], t[:, 0])).clamp_min(0)
    ih = (torch.minimum(p[:, 3], t[:, 3]) - torch.maximum(p[:, 1], t[:, 1])).clamp_min(0)
    inter = iw * ih
    area_p = (p[:, 2] - p[:, 0]).clamp_min(0) * (p[:, 3] - p[:, 1]).clamp_min(0)
    area_t = (t[:, 2] - t[:, 0]).clamp_min(0) * (t[:, 3] - t[:, 1]).clamp_min(0)
    union = area_p + area_t - inter
    ok = (union > 0) & inter.isfinite() & union.isfinite()
    iou = torch.where(ok, inter / torch.where(ok, union, torch.ones_like(union)), torch.zeros_like(union))
    if reduction == "none":
        return iou.float()
    if reduction != "mean":
        raise ValueError(f"box_iou: reduction must be 'mean' or 'none', got {reduction!r}")
    return float(iou.mean())
