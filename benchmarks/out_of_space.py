"""Any-model latency prediction: classic CNNs that no search space contains, measured vs predicted.

Each network (plain torch, written here) is exported to ONNX, measured end to end with the
`ort-cpu` backend (the profile's thread count, the default protocol, interleaved in chunks), and
predicted by `hwnas.latency.onnx_graph.predict_onnx` from the profile's op measurements: table
rows where the op was measured, the op predictor (fitted on the profile's ops, generic ones
included) elsewhere. The profile should hold generic ops:

    hwnas profile --device ort-cpu --space proxyless --resolution 224 --nets 0 --generic 300 \
        --out /tmp/generic-prof
    python benchmarks/out_of_space.py --profile /tmp/generic-prof

Writes benchmarks/results/out_of_space.md and .json: per network (measured, predicted, error,
where the op prices came from) and a summary (share within +-10%, MAPE, Kendall tau).

Development set, not test set: these networks were used while the generic-op sampler and the op
predictor were developed (the sampler was reshaped towards them), so their figures are an
optimistic, in-sample estimate. Run it under the CPU lock (it times the device).

Drift: the profiler times a fixed reference net inside every chunk and `Profile.load` scales
each row to the median reference time. This benchmark times the same reference net inside every
chunk of networks and scales each measured network the same way, so that measured and predicted
stand on the same machine speed; the summary gives both the raw and the drift-corrected accuracy.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Results  # noqa: E402

# --- the networks -----------------------------------------------------------------------------


def cbr(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv -> BN -> activation ('same' padding)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class VGG11ish(nn.Module):
    """VGG-11 (Simonyan & Zisserman 2015, config A) at half width, FC 512 -> classes."""

    def __init__(self, res: int, classes: int = 1000) -> None:
        super().__init__()
        cfg = [32, "M", 64, "M", 128, 128, "M", 256, 256, "M", 256, 256, "M"]
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(cbr(c, v))
                c = v
        self.features = nn.Sequential(*layers)
        s = res // 32
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, 512), nn.ReLU(),
                                        nn.Linear(512, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = cbr(cin, cout, 3, stride)
        self.conv2 = cbr(cout, cout, 3, 1, act=None)
        self.down = cbr(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return self.relu(y + (self.down(x) if self.down is not None else x))


class ResNet(nn.Module):
    """ResNet-18/34 (He et al. 2016): 7x7 stem, max pool, basic blocks, global pool, FC."""

    def __init__(self, depths: tuple[int, ...], classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [cbr(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
        c = 64
        for i, (d, w) in enumerate(zip(depths, (64, 128, 256, 512), strict=True)):
            for j in range(d):
                layers.append(BasicBlock(c, w, 2 if j == 0 and i > 0 else 1))
                c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class MobileNetV1(nn.Module):
    """MobileNet (Howard et al. 2017): depthwise separable convs, ReLU."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5,
               (1024, 2), (1024, 1)]
        layers, c = [cbr(3, 32, 3, 2)], 32
        for cout, s in cfg:
            layers += [cbr(c, c, 3, s, groups=c), cbr(c, cout, 1)]
            c = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        layers = [cbr(cin, mid, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [cbr(mid, mid, 3, stride, groups=mid, act=nn.ReLU6), cbr(mid, cout, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018), width 1.0, written out here (not the hwnas space)."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]
        layers, c = [cbr(3, 32, 3, 2, act=nn.ReLU6)], 32
        for t, cout, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        layers.append(cbr(c, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        mid = max(8, c // 4)
        self.reduce, self.expand = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.expand(torch.relu(self.reduce(nn.functional.adaptive_avg_pool2d(x, 1))))
        return x * nn.functional.hardsigmoid(s)


class MBv3Block(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, k: int, s: int, se: bool, hs: bool) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers = [cbr(cin, mid, 1, act=act)] if mid != cin else []
        layers.append(cbr(mid, mid, k, s, groups=mid, act=act))
        if se:
            layers.append(SqueezeExcite(mid))
        layers.append(cbr(mid, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small (Howard et al. 2019): SE, hard-swish, 5x5 depthwise."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        cfg = [(16, 16, 16, 3, 2, True, False), (16, 72, 24, 3, 2, False, False),
               (24, 88, 24, 3, 1, False, False), (24, 96, 40, 5, 2, True, True),
               (40, 240, 40, 5, 1, True, True), (40, 240, 40, 5, 1, True, True),
               (40, 120, 48, 5, 1, True, True), (48, 144, 48, 5, 1, True, True),
               (48, 288, 96, 5, 2, True, True), (96, 576, 96, 5, 1, True, True),
               (96, 576, 96, 5, 1, True, True)]  # cin, mid, cout, kernel, stride, SE, hswish
        layers: list[nn.Module] = [cbr(3, 16, 3, 2, act=nn.Hardswish)]
        layers += [MBv3Block(*row) for row in cfg]
        layers.append(cbr(96, 576, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(576, 1024), nn.Hardswish(),
                                  nn.Linear(1024, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.adaptive_avg_pool2d(self.features(x), 1))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1 (Iandola et al. 2016): fire modules (1x1 squeeze, 1x1 + 3x3 expand, concat)."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
            Fire(64, 16, 64), Fire(128, 16, 64), nn.MaxPool2d(3, 2, 1),
            Fire(128, 32, 128), Fire(256, 32, 128), nn.MaxPool2d(3, 2, 1),
            Fire(256, 48, 192), Fire(384, 48, 192), Fire(384, 64, 256), Fire(512, 64, 256))
        self.classifier = nn.Sequential(nn.Conv2d(512, classes, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class PlainNet(nn.Module):
    """A plain conv stack: two 3x3 conv-BN-ReLU per stage, stride-2 downsampling, GAP, FC."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers, c = [], 3
        for w in (32, 64, 128, 256, 512):
            layers += [cbr(c, w, 3, 2), cbr(w, w, 3, 1)]
            c = w
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


NETS: dict[str, Callable[[int], nn.Module]] = {
    "vgg11-half": lambda res: VGG11ish(res),
    "resnet18": lambda res: ResNet((2, 2, 2, 2)),
    "resnet34": lambda res: ResNet((3, 4, 6, 3)),
    "mobilenet-v1": lambda res: MobileNetV1(),
    "mobilenet-v2": lambda res: MobileNetV2(),
    "mobilenet-v3-small": lambda res: MobileNetV3Small(),
    "squeezenet-1.1": lambda res: SqueezeNet(),
    "plain-conv": lambda res: PlainNet(),
}


def build(name: str, res: int) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    return NETS[name](res).eval(), (1, 3, res, res)


# --- the benchmark ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from hwnas.devices.measurement import Protocol
    from hwnas.devices.registry import get_backend
    from hwnas.latency.metrics import accuracy
    from hwnas.latency.onnx_graph import predict_module
    from hwnas.latency.op_predictor import OpPredictor
    from hwnas.profile.drift import Drift, reference_item
    from hwnas.profile.profiler import Item, measure_items
    from hwnas.profile.reader import Profile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", type=Path, required=True, help="profile folder (with generic ops)")
    ap.add_argument("--resolutions", default="96,128,160,224")
    ap.add_argument("--nets", default=",".join(NETS), help="comma-separated subset of the nets")
    ap.add_argument("--quick", action="store_true", help="Protocol.quick() (a smoke run)")
    args = ap.parse_args(argv)

    out = Results("out_of_space", "Networks outside the space (development set)", timing=True,
                  argv=argv)
    prof = Profile.load(args.profile)
    out.profile(prof)
    if (prof.record.backend or "ort-cpu") != "ort-cpu":
        print(f"note: the profile is for {prof.record.backend}; measuring with ort-cpu")
    generic = int((prof.ops["source"] == "generic").sum()) if "source" in prof.ops else 0
    if generic == 0:
        print("warning: the profile has no generic ops (hwnas profile --generic N); "
              "predictions for ops outside its space are extrapolations")
    threads = int(prof.record.backend_options.get("threads", 1))
    t0 = time.monotonic()
    predictor = OpPredictor().fit(prof.ops)
    fit_s = time.monotonic() - t0

    cases = [(n, int(r)) for n in args.nets.split(",") for r in args.resolutions.split(",")]
    preds = {}
    for name, res in cases:
        module, shape = build(name, res)
        preds[(name, res)] = predict_module(module, shape, prof.lut, predictor)
    backend = get_backend("ort-cpu", threads=threads)
    items = [Item(f"{n}@{r}", functools.partial(build, n, r), (1, 3, r, r)) for n, r in cases]
    chunk = 7
    ref, base = prof.reference_arch(), prof.reference_ms()
    protocol = Protocol.quick() if args.quick else Protocol()
    # the profile's drift reference net is timed inside every chunk of nets
    measured = measure_items(backend, items, protocol, chunk=chunk,
                             reference=reference_item(ref) if ref is not None and base else None)

    def drift(key: str) -> float:
        """This net's chunk reference / the profile's reference (1 when there is none)."""
        scale = Drift(measured[key].extra["reference_ms"], base).scale
        return 1 / scale if scale else 1.0

    rows = []
    for name, res in cases:
        p, m = preds[(name, res)], measured[f"{name}@{res}"]
        counts = p.counts()
        rows.append({"net": name, "input": res, "measured ms": m.median,
                     "predicted ms": p.total_ms, "error %": 100 * (p.total_ms / m.median - 1),
                     "drift": drift(f"{name}@{res}"),
                     "drift-corrected error %": 100 * (p.total_ms * drift(f"{name}@{res}")
                                                       / m.median - 1),
                     "ops table/pred/free/unknown": "/".join(
                         str(counts.get(k, 0)) for k in ("table", "predicted", "free", "unknown"))})
    out.text(f"{len(NETS)} classic CNNs written in plain torch ({', '.join(NETS)}) at "
             f"{args.resolutions}, exported to ONNX, measured end to end with ort-cpu "
             f"({threads} thread) beside the profile's drift reference, and predicted by "
             f"`hwnas predict MODEL.onnx` from `{prof.name}`'s op measurements. These networks "
             "are the **development set** of the generic-op sampler and the op predictor (it "
             "was shaped while looking at them): the figures are in-sample, not a held-out "
             "test. \"drift-corrected\" scales the measured time to the profile's speed.")
    out.table(rows, f"Out-of-space networks on {prof.name} (ort-cpu, {threads} thread(s))")
    y = np.array([r["measured ms"] for r in rows])
    yp = np.array([r["predicted ms"] for r in rows])
    scale = np.array([r["drift"] for r in rows])
    summary = []
    for label, corr in (("as predicted", 1.0), ("drift-corrected", scale)):
        acc = accuracy(y, yp * corr)
        summary.append({"prediction": label, "networks": acc["n"], "within 10%": acc["within_10"],
                        "within 5%": acc["within_5"], "MAPE": acc["mape"], "bias": acc["bias"],
                        "Kendall tau": acc["kendall_tau"]})
    out.table(summary, f"Summary ({generic} generic ops in the profile; op predictor fitted in "
                         f"{fit_s:.1f} s)")
    unknown = sorted({f"{u.op_type}: {u.message.split(':')[-1].strip()}"
                      for p in preds.values() for u in p.unknown if "0 ms" in u.message})
    unknown_types = sorted({u.op_type for p in preds.values() for u in p.unknown})
    if unknown_types:
        print(f"\nunknown op types (priced as a copy of their output): {', '.join(unknown_types)}")
    for u in unknown:
        print(f"  {u}")
    out.write(data={"unknown_op_types": unknown_types})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
