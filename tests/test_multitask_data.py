"""The multi-task proxy data (`hwnas.data.multitask`): generated digits, user folders, metrics."""

import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwnas.data.multitask import (
    TASK_METRIC,
    TASKS,
    MeanIoU,
    accuracy,
    box_iou,
    check_multitask_spec,
    load_multitask,
    miou,
)
from hwnas.errors import HwnasError

pytestmark = pytest.mark.usefixtures("one_thread")
SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def digits():
    return load_multitask("multitask:digits", resolution=32, seed=0)


def _box_from_mask(stroke: torch.Tensor) -> torch.Tensor:
    """Pixel-edge (x0, y0, x1, y1) / R of each mask's True pixels, one image at a time."""
    r = stroke.shape[-1]
    out = []
    for m in stroke:
        ys, xs = torch.nonzero(m, as_tuple=True)
        out.append([xs.min() / r, ys.min() / r, (xs.max() + 1) / r, (ys.max() + 1) / r])
    return torch.tensor(out, dtype=torch.float32)


# --- generated digits -----------------------------------------------------------------------
def test_digits_deterministic_for_a_seed(digits):
    again = load_multitask("multitask:digits", resolution=32, seed=0)
    other = load_multitask("multitask:digits", resolution=32, seed=1)
    for name in SPLITS:
        a, b, c = digits.split(name), again.split(name), other.split(name)
        assert torch.equal(a.x, b.x)
        for t in TASKS:
            assert torch.equal(a.targets[t], b.targets[t])
        assert not torch.equal(a.x, c.x)
        assert not torch.equal(a.det, c.det)
    assert torch.equal(digits.mean, again.mean) and torch.equal(digits.std, again.std)


def test_digits_shapes_dtypes_and_ranges(digits):
    r = 32
    assert digits.tasks == TASKS == ("cls", "seg", "det")
    assert digits.num_classes == {"cls": 10, "seg": 11, "det": 4}
    assert digits.resolution == r and digits.name == "multitask:digits"
    assert TASK_METRIC == {"cls": "accuracy", "seg": "miou", "det": "box_iou"}
    d = digits.describe()
    assert d["tasks"] == list(TASKS) and d["num_classes"]["seg"] == 11
    assert d["train"] + d["valid"] + d["test"] == 1797
    assert d["test"] == round(1797 * 0.2) and d["valid"] == round((1797 - d["test"]) * 0.2)
    for name in SPLITS:
        s = digits.split(name)
        n = len(s)
        assert s.x.dtype == torch.uint8 and s.x.shape == (n, 3, r, r)
        assert torch.equal(s.x[:, 0], s.x[:, 1]) and torch.equal(s.x[:, 0], s.x[:, 2])
        assert s.cls.dtype == torch.int64 and s.cls.shape == (n,)
        assert int(s.cls.min()) >= 0 and int(s.cls.max()) <= 9
        assert s.seg.dtype == torch.int64 and s.seg.shape == (n, r, r)
        assert int(s.seg.min()) == 0 and int(s.seg.max()) <= 10
        assert s.det.dtype == torch.float32 and s.det.shape == (n, 4)
        assert float(s.det.min()) >= 0.0 and float(s.det.max()) <= 1.0
        assert bool((s.det[:, 0] < s.det[:, 2]).all()) and bool((s.det[:, 1] < s.det[:, 3]).all())
    other = load_multitask("multitask:digits", resolution=24)
    assert other.train.x.shape[-2:] == (24, 24) and other.train.seg.shape[-2:] == (24, 24)


def test_digits_masks_nonempty_and_boxes_tight(digits):
    for name in SPLITS:
        s = digits.split(name)
        stroke = s.seg > 0
        assert bool(stroke.flatten(1).any(1).all()), "every digit has stroke pixels"
        assert torch.equal(s.det, _box_from_mask(stroke))


def test_digits_boxes_vary_with_the_paste_offset(digits):
    det = digits.train.det
    centres = (det[:, :2] + det[:, 2:]) / 2
    assert float(centres[:, 0].std()) > 0.1 and float(centres[:, 1].std()) > 0.1
    assert len({tuple(b) for b in det.tolist()}) > 100


def test_digits_segmentation_class_is_one_plus_digit(digits):
    for name in SPLITS:
        s = digits.split(name)
        expect = (1 + s.cls)[:, None, None].expand_as(s.seg)
        stroke = s.seg > 0
        assert torch.equal(s.seg[stroke], expect[stroke])
        # each canvas holds one digit: one foreground class per image
        assert bool((s.seg.flatten(1).max(1).values == 1 + s.cls).all())


def test_digits_mask_is_the_thresholded_clean_digit(digits):
    from sklearn.datasets import load_digits

    n_stroke = int((load_digits().images > 4).sum())  # value > 4/16 of full scale
    at16 = load_multitask("multitask:digits", resolution=16, seed=0)
    assert sum(int((at16.split(n).seg > 0).sum()) for n in SPLITS) == n_stroke
    # 16 -> 32 nearest neighbour doubles each pixel
    assert sum(int((digits.split(n).seg > 0).sum()) for n in SPLITS) == 4 * n_stroke
    for n in SPLITS:
        assert torch.equal(digits.split(n).seg, at16.split(n).seg.repeat_interleave(2, 1)
                           .repeat_interleave(2, 2))
    # the images are noisy: stroke pixels are bright on average, background dark, not exactly 0
    x, stroke = at16.train.x[:, 0].float(), at16.train.seg > 0
    assert float(x[stroke].mean()) > 150 and float(x[~stroke].mean()) < 30
    assert float((x[~stroke] > 0).float().mean()) > 0.2


def test_batches_normalised_with_train_stats(digits):
    xs, seen = [], 0
    for x, targets in digits.batches("train", 256, shuffle=True, seed=3):
        assert x.dtype == torch.float32 and set(targets) == set(TASKS)
        assert all(len(v) == len(x) for v in targets.values())
        xs.append(x)
        seen += len(x)
    assert seen == len(digits.train)
    x = torch.cat(xs)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-2)
    x, targets = next(digits.batches("valid", 32, shuffle=False))
    assert torch.equal(x, digits.normalize(digits.valid.x[:32]))
    assert torch.equal(targets["seg"], digits.valid.seg[:32])
    assert digits.n_batches("train", 256, drop_last=True) == len(digits.train) // 256
    assert len(list(digits.batches("train", 256, drop_last=True))) == len(digits.train) // 256


def test_tasks_subset():
    d = load_multitask("multitask:digits", resolution=16, tasks=["det", "seg"])
    assert d.tasks == ("seg", "det") and d.num_classes == {"seg": 11, "det": 4}
    assert d.train.cls is None and set(d.train.targets) == {"seg", "det"}
    _, targets = next(d.batches("train", 8))
    assert set(targets) == {"seg", "det"}
    with pytest.raises(HwnasError, match="unknown task 'depth'"):
        load_multitask("multitask:digits", tasks=["cls", "depth"])
    with pytest.raises(HwnasError, match="no task selected"):
        load_multitask("multitask:digits", tasks=[])


def test_spec_check():
    check_multitask_spec("multitask:digits")
    check_multitask_spec("multitask:/some/folder")
    for bad in ("", "digits", "multitask", "multitask:", "folder:/x"):
        with pytest.raises(HwnasError):
            check_multitask_spec(bad)
    with pytest.raises(HwnasError, match="resolution"):
        load_multitask("multitask:digits", resolution=2)


# --- metrics --------------------------------------------------------------------------------
def test_accuracy():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 2, 2])) == 0.75
    assert accuracy(torch.tensor([1, 1]), torch.tensor([1, 0])) == 0.5


def test_miou_hand_cases():
    true = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    assert miou(true, true, 3) == 1.0  # class 2 absent from both: left out, not counted as 0
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 1]]])
    # class 0: inter 3, union 4; class 1: inter 4, union 5
    assert miou(pred, true, 2) == pytest.approx((3 / 4 + 4 / 5) / 2)
    # a class only predicted counts, with IoU 0
    pred2 = torch.tensor([[[0, 0, 1, 2], [0, 0, 1, 1]]])
    assert miou(pred2, true, 3) == pytest.approx((1 + 3 / 4 + 0) / 3)
    # logits are argmax-ed over the class axis
    logits = F.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    assert miou(logits, true, 2) == pytest.approx((3 / 4 + 4 / 5) / 2)
    # an ignore label outside 0..C-1 is skipped
    true_ign = true.clone()
    true_ign[0, 0, 1] = 255
    assert miou(pred, true_ign, 2) == 1.0


def test_mean_iou_accumulates_over_the_set():
    # image A: class 1 is 1 pixel, predicted right; image B: class 1 is 3 pixels, 1 predicted
    ta, pa = torch.tensor([[[1, 0], [0, 0]]]), torch.tensor([[[1, 0], [0, 0]]])
    tb, pb = torch.tensor([[[1, 1], [1, 0]]]), torch.tensor([[[1, 0], [0, 0]]])
    acc = MeanIoU(2).update(pa, ta).update(pb, tb)
    # over the set: class 0 inter 4 union 6, class 1 inter 2 union 4
    assert acc.compute() == pytest.approx((4 / 6 + 2 / 4) / 2)
    assert acc.compute() == pytest.approx(miou(torch.cat([pa, pb]), torch.cat([ta, tb]), 2))
    per_image = (miou(pa, ta, 2) + miou(pb, tb, 2)) / 2
    assert acc.compute() != pytest.approx(per_image)
    assert torch.allclose(acc.per_class(), torch.tensor([4 / 6, 2 / 4], dtype=torch.float64))
    acc.reset()
    with pytest.raises(ValueError):
        acc.compute()
    with pytest.raises(ValueError):
        MeanIoU(2).update(torch.tensor([[[2]]]), torch.tensor([[[0]]]))


def test_box_iou_hand_cases():
    a = torch.tensor([[0.1, 0.2, 0.5, 0.6]])
    assert box_iou(a, a) == pytest.approx(1.0)
    assert box_iou(a, torch.tensor([[0.6, 0.2, 0.9, 0.6]])) == 0.0  # disjoint
    half = a + torch.tensor([[0.2, 0.0, 0.2, 0.0]])  # same box shifted by half its width
    assert box_iou(a, half) == pytest.approx(1 / 3)
    degenerate = torch.tensor([[0.3, 0.3, 0.3, 0.3], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.2, 0.2],
                               [float("nan"), 0.0, 1.0, 1.0]])
    ious = box_iou(degenerate, degenerate, reduction="none")
    assert ious.shape == (4,) and not bool(ious.isnan().any()) and bool((ious == 0).all())
    assert box_iou(degenerate[:2], a.expand(2, 4)) == 0.0
    both = box_iou(torch.cat([a, a]), torch.cat([a, half]), reduction="none")
    assert torch.allclose(both, torch.tensor([1.0, 1 / 3]))
    assert box_iou(torch.cat([a, a]), torch.cat([a, half])) == pytest.approx(2 / 3)


# --- user folders ---------------------------------------------------------------------------
def _write_folder(root, n=10, hw=(8, 6), layout="nhwc", files=("labels", "masks", "boxes")):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    h, w = hw
    rgb = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    images = {"nhwc": rgb, "nchw": rgb.transpose(0, 3, 1, 2), "grey": rgb[..., 0]}[layout]
    np.save(root / "images.npy", images)
    masks = rng.integers(0, 4, size=(n, h, w)).astype(np.int32)
    x0, y0 = rng.uniform(0, 0.5, n), rng.uniform(0, 0.5, n)
    boxes = np.stack([x0, y0, x0 + 0.3, y0 + 0.4], 1)
    arrays = {"labels": np.arange(n, dtype=np.int64), "masks": masks, "boxes": boxes}
    for f in files:
        np.save(root / f"{f}.npy", arrays[f])
    return images, arrays


@pytest.mark.parametrize("layout", ["nhwc", "nchw", "grey"])
def test_user_folder_round_trip(tmp_path, layout):
    images, arrays = _write_folder(tmp_path / "d", layout=layout)
    d = load_multitask(f"multitask:{tmp_path / 'd'}", resolution=16, seed=0)
    assert d.tasks == TASKS and d.name == f"multitask:{tmp_path / 'd'}"
    assert d.num_classes == {"cls": 10, "seg": 4, "det": 4}
    assert sum(len(d.split(s)) for s in SPLITS) == 10 and len(d.test) == 2 and len(d.valid) == 2
    if layout == "nhwc":
        nchw = images.transpose(0, 3, 1, 2)
    else:
        nchw = images if layout == "nchw" else np.repeat(images[:, None], 3, 1)
    for name in SPLITS:
        s = d.split(name)
        idx = s.cls.numpy()  # the labels are the image numbers
        want = F.interpolate(torch.from_numpy(nchw[idx]).float(), size=(16, 16), mode="bilinear",
                             align_corners=False).round().clamp(0, 255).to(torch.uint8)
        assert s.x.dtype == torch.uint8 and torch.equal(s.x, want)
        m = torch.from_numpy(arrays["masks"][idx].astype(np.int64))
        want_m = F.interpolate(m[:, None].float(), size=(16, 16), mode="nearest-exact")[:, 0].long()
        assert s.seg.dtype == torch.int64 and torch.equal(s.seg, want_m)
        assert s.det.dtype == torch.float32
        assert torch.allclose(s.det, torch.from_numpy(arrays["boxes"][idx]).float())
    again = load_multitask(f"multitask:{tmp_path / 'd'}", resolution=16, seed=0)
    assert torch.equal(again.train.cls, d.train.cls) and torch.equal(again.train.x, d.train.x)


def test_user_folder_tasks_are_the_files_present(tmp_path):
    _write_folder(tmp_path / "d", files=("masks",))
    d = load_multitask(f"multitask:{tmp_path / 'd'}", resolution=8)
    assert d.tasks == ("seg",) and d.train.cls is None and d.train.det is None
    with pytest.raises(HwnasError, match="labels.npy"):
        load_multitask(f"multitask:{tmp_path / 'd'}", tasks=["cls"])
    _write_folder(tmp_path / "e", files=("labels", "boxes"))
    e = load_multitask(f"multitask:{tmp_path / 'e'}", resolution=8, tasks=["det"])
    assert e.tasks == ("det",) and e.train.cls is None


class _Payload:
    """Unpickling this creates a directory: proof that the pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_object_array_is_refused_and_nothing_runs(tmp_path):
    control = tmp_path / "control"
    np.save(tmp_path / "control.npy", np.array([_Payload(control)], dtype=object), allow_pickle=True)
    np.load(tmp_path / "control.npy", allow_pickle=True)  # the payload works when unpickled
    assert control.is_dir()
    root = tmp_path / "d"
    _write_folder(root)
    marker = tmp_path / "marker"
    np.save(root / "labels.npy", np.array([_Payload(marker)] * 10, dtype=object), allow_pickle=True)
    with pytest.raises(HwnasError, match="labels.npy") as e:
        load_multitask(f"multitask:{root}")
    assert "\n" not in str(e.value)
    assert not marker.exists()
    with open(root / "labels.npy", "wb") as f:  # a bare pickle under an .npy name
        pickle.dump(_Payload(marker), f)
    with pytest.raises(HwnasError, match="labels.npy"):
        load_multitask(f"multitask:{root}")
    assert not marker.exists()
    with open(root / "boxes.npy", "wb") as f:  # an .npz archive under an .npy name
        np.savez(f, a=np.zeros((10, 4)))
    with pytest.raises(HwnasError, match="boxes.npy"):
        load_multitask(f"multitask:{root}", tasks=["det"])


@pytest.mark.parametrize("file,array,problem", [
    ("labels", np.arange(9), "9 entries"),
    ("labels", np.arange(10) - 1, ">= 0"),
    ("labels", np.zeros(10, np.float32), "integer"),
    ("masks", np.zeros((10, 8, 5), np.int64), "8x5"),
    ("masks", -np.ones((10, 8, 6), np.int64), ">= 0"),
    ("masks", np.zeros((11, 8, 6), np.int64), "11 entries"),
    ("boxes", np.tile([0.1, 0.1, 1.2, 0.5], (10, 1)), r"\[0, 1\]"),
    ("boxes", np.tile([0.1, 0.1, float("nan"), 0.5], (10, 1)), r"\[0, 1\]"),
    ("boxes", np.tile([0.6, 0.1, 0.5, 0.5], (10, 1)), "x0 <= x1"),
    ("boxes", np.zeros((10, 3)), r"\(N, 4\)"),
    ("images", np.zeros((10, 8, 6, 3), np.float32), "uint8"),
    ("images", np.zeros((10, 8, 6, 2), np.uint8), "shape"),
])
def test_bad_files_are_refused(tmp_path, file, array, problem):
    root = tmp_path / "d"
    _write_folder(root)
    np.save(root / f"{file}.npy", array)
    with pytest.raises(HwnasError, match=problem) as e:
        load_multitask(f"multitask:{root}")
    assert f"{file}.npy" in str(e.value) and "\n" not in str(e.value)


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(HwnasError, match="not found"):
        load_multitask(f"multitask:{tmp_path / 'missing'}")
    root = tmp_path / "d"
    _write_folder(root, files=())
    with pytest.raises(HwnasError, match="no task file"):
        load_multitask(f"multitask:{root}")
    os.remove(root / "images.npy")
    np.save(root / "labels.npy", np.arange(10))
    with pytest.raises(HwnasError, match="images.npy"):
        load_multitask(f"multitask:{root}")
    small = tmp_path / "small"
    _write_folder(small, n=2)
    with pytest.raises(HwnasError, match="too few images") as e:
        load_multitask(f"multitask:{small}")
    assert "images.npy" in str(e.value)
    _write_folder(tmp_path / "ok")
    with pytest.raises(HwnasError, match="unknown task 'depth'"):
        load_multitask(f"multitask:{tmp_path / 'ok'}", tasks=["depth"])
    assert math.isfinite(load_multitask(f"multitask:{tmp_path / 'ok'}").mean.sum().item())
