"""A profile's best predictor, and one arch's `Prediction` from it (`hwnas predict`, `hwnas export`).

`best_predictor(profile)`: an adapted profile's `AdaptedPredictor` (`hwnas adapt`); the learned
correction saved in the profile (`hwnas validate`) when there is one, else the lookup-table sum;
for a nets-only profile (imported whole-network latencies, no lookup table) the table of its
measured networks.

`predict(profile, arch)`: the arch's latency, interval, per-op breakdown and predictor name. An
arch with another number of classes than the profile's space (a net trained on a small dataset)
is priced as the profiled arch with the same choices, plus the op predictor's price of its
classifier head (`hwnas.latency.op_predictor`) minus the table's price of the profiled head.
"""

from __future__ import annotations

from hwnas.errors import HwnasError
from hwnas.latency.base import LatencyPredictor, Prediction
from hwnas.latency.learned import NetworkPredictor
from hwnas.latency.lut import LookupTablePredictor
from hwnas.latency.nets_table import NetsTablePredictor
from hwnas.profile.reader import Profile
from hwnas.space import Arch, get_space, space_of


def best_predictor(profile: Profile) -> LatencyPredictor:
    """The profile's saved learned predictor when present, else the lookup-table sum; the table
    of measured networks for a profile without a lookup table; for an adapted profile
    (`hwnas adapt`) its `AdaptedPredictor`."""
    if profile.record.adapted is not None:
        from hwnas.latency.adapted import AdaptedPredictor

        return AdaptedPredictor.from_profile(profile)
    if not len(profile.ops):
        return NetsTablePredictor.from_profile(profile)
    lut = LookupTablePredictor.from_profile(profile)
    if (profile.root / "predictor.json").exists():
        return NetworkPredictor.load(profile.root, lut)
    return lut


def _as_profiled(profile: Profile, arch: Arch) -> Arch:
    """The arch in the profile's space: the same arch, or with the profile's number of classes
    when only that differs (anything else that differs is an error naming it)."""
    space = profile.space
    if arch.num_classes == space.num_classes:
        space.validate(arch)
        return arch
    space.validate(Arch(arch.space, arch.choices, arch.resolution, arch.width,
                        space.num_classes, arch.channels))
    return space.arch(arch.choices)


MIN_NETS_FOR_TRANSFER = 10


def sibling_predictor(profile: Profile, space) -> LatencyPredictor:
    """The predictor of the archs of `space`, a space the profile's space prices
    (`SearchSpace.priced_spaces`: a task's space of the `fbnetv5` profiling space, whose other
    heads the profile measured but whose networks it did not): the profile's lookup table over
    `space`'s ops, corrected by a linear map of the table sum, latency = w * S + b, fitted on
    the profile's own measured networks (`NetworkPredictor` with the `lut` and `linear`
    families; the table sum misses what the runtime does between ops, much of it a per-call
    overhead that a linear map of the sum captures). With fewer than 10 measured networks, the
    plain table."""
    lut = LookupTablePredictor().fit(space, profile.lut)
    if len(profile.nets) < MIN_NETS_FOR_TRANSFER or not len(profile.ops):
        return lut
    own = LookupTablePredictor.from_profile(profile)
    corr = NetworkPredictor(families=("lut", "linear")).fit(own, profile.archs(),
                                                            profile.net_latency())
    return corr.transfer(lut)


def _predict_sibling(profile: Profile, arch: Arch, predictor: LatencyPredictor | None
                     ) -> Prediction:
    """An arch of another space that the profile's space prices (`SearchSpace.priced_spaces`:
    a task's space of the `fbnetv5` profiling space): its own space at the profile's settings,
    priced by `sibling_predictor`."""
    s = profile.space
    sibling = get_space(arch.space, s.resolution, s.width, arch.num_classes, s.channels)
    sibling.validate(arch)
    if predictor is None:
        predictor = sibling_predictor(profile, sibling)
    ms = float(predictor.predict([arch])[0])
    bounds = predictor.interval([arch])
    interval = (float(bounds[0][0]), float(bounds[1][0])) if bounds is not None else None
    lut = profile.lut
    breakdown = [{"key": op.key, "kind": op.kind, "ms": lut[op.key], "source": "table"}
                 for op in sibling.ops(arch) if op.key in lut]
    return Prediction(ms, interval, predictor.name, breakdown,
                      f"space {arch.space} priced by the lookup table of profile space {s.name}"
                      f" ({predictor.name})",
                      predictor.coverage if interval else None)


def predict(profile: Profile, arch: Arch, predictor: LatencyPredictor | None = None
            ) -> Prediction:
    """One arch's `Prediction` on a profile, by `predictor` (default: `best_predictor`)."""
    from hwnas.latency.op_predictor import load_or_fit

    space = profile.space
    if arch.space != space.name and arch.space in space.priced_spaces():
        return _predict_sibling(profile, arch, predictor)
    predictor = predictor if predictor is not None else best_predictor(profile)
    as_profiled = _as_profiled(profile, arch)
    ms = float(predictor.predict([as_profiled])[0])
    bounds = predictor.interval([as_profiled])
    interval = (float(bounds[0][0]), float(bounds[1][0])) if bounds is not None else None
    lut = profile.lut
    ops = space.ops(as_profiled)
    table = "adapted table" if profile.record.adapted is not None else "table"
    priced = {op.key: (lut[op.key], table) for op in ops if op.key in lut}
    note = ""
    if as_profiled is not arch:
        arch_ops = space_of(arch).ops(arch)
        mine = {op.key: op for op in arch_ops}
        theirs = {op.key: op for op in ops}
        new = [op for k, op in mine.items() if k not in theirs]
        old = [theirs[k] for k in theirs if k not in mine]
        ops_model, _how = load_or_fit(profile)
        if ops_model is None or any(op.key not in lut for op in old):
            raise HwnasError(f"{profile.root}: cannot price a {arch.num_classes}-class head: the "
                             f"profile has no lookup table to fit an op predictor on (it "
                             f"measured {space.num_classes} classes)")
        new_ms = [float(v) for v in ops_model.predict(new)]
        delta = sum(new_ms) - sum(lut[op.key] for op in old)
        priced.update({op.key: (v, "op predictor") for op, v in zip(new, new_ms, strict=True)})
        ms += delta
        interval = (interval[0] + delta, interval[1] + delta) if interval else None
        note = (f"{arch.num_classes}-class head priced by the op predictor "
                f"({delta:+.3f} ms vs the profile's {space.num_classes}-class head)")
        ops = arch_ops
    breakdown = None
    if lut:
        breakdown = [{"key": op.key, "kind": op.kind, "ms": priced[op.key][0],
                      "source": priced[op.key][1]} for op in ops]
    return Prediction(ms, interval, predictor.name, breakdown, note,
                      predictor.coverage if interval else None)
