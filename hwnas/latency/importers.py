"""Importers of published latency data into hwnas's formats.

- `import_proxyless_yaml`: the ProxylessNAS mobile lookup table (Cai et al., ICLR 2019; released
  with mit-han-lab/proxylessnas, Google Pixel 1, TFLite) -> a profile folder of the `proxyless`
  space (224x224, width 1.0) that `Profile.load` and `LookupTablePredictor` read.
- `import_fbnet_table_json`: the per-layer FBNet table of jh88/fbnet (Raspberry Pi 4B, TF2,
  microseconds) -> a `LayerTable` (its strides differ from hwnas's FBNet space, see there).
- `import_latency_csv`: whole-network latencies of HW-NAS-Bench (Li et al., ICLR 2021) as HELP
  (Lee et al., NeurIPS 2021) redistributes them, one `L00..L21` op-index row per net, or HELP's
  own Once-for-All MobileNetV3 latencies (`resolution, d0..d4, ks00..ks19, e00..e19` per net,
  the `ofa` space) -> a "nets only" profile (no lookup table, `nets.parquet` only).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas._io import check_csv_width, now, read_json
from hwnas.errors import HwnasError
from hwnas.profile.record import ProfileRecord, write_record
from hwnas.profile.sampling import net_id
from hwnas.profile.store import write_parquet
from hwnas.space import Arch, OpSpec, SearchSpace, get_space
from hwnas.space.fbnet import FBNET_CHOICES
from hwnas.space.ofa import HELP_COLUMNS, OFASpace

log = logging.getLogger(__name__)

PROXYLESS_DEVICE = "Google Pixel 1 (published ProxylessNAS table)"
PROXYLESS_ORIGIN = "mit-han-lab/proxylessnas (MIT), copy from itouchz/Neural-Predictor-Tensorflow"


# --- shared -------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise HwnasError(f"file not found: {p}")
    return p


def _settings(space: SearchSpace) -> dict:
    """The space settings as the profiler stores them in device.json."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in space.settings().items()}


def _new_profile_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if (out / "device.json").exists():
        raise HwnasError(f"{out} already holds a profile; choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _record(space: SearchSpace, fingerprint: dict, notes: str, nets_only: bool = False,
            **extra: object) -> ProfileRecord:
    """The record of an imported profile (`extra`: importer-specific fields)."""
    return ProfileRecord(space=space.name, space_settings=_settings(space),
                         fingerprint=fingerprint, created=now(), updated=now(),
                         status="complete", backend="imported", imported=True, notes=notes,
                         nets_only=nets_only, extra=dict(extra))


# --- ProxylessNAS YAML --------------------------------------------------------------------------
def proxyless_yaml_key(space: SearchSpace, op: OpSpec) -> str:
    """The key the ProxylessNAS lookup-table YAML uses for one op of the `proxyless` space."""
    io = f"input:{op.h}x{op.w}x{op.cin}-output:"
    if op.kind == "classifier":
        return f"Logits-{io}{op.cout}"
    out = f"{op.out_h}x{op.out_w}x{op.cout}"
    if op.kind == "conv":
        name = "Conv" if op == space.stem_ops()[0] else "Conv_1"
        return f"{name}-{io}{out}"
    return (f"expanded_conv-{io}{out}-expand:{op.expand}-kernel:{op.kernel}-stride:{op.stride}"
            f"-idskip:{int(op.residual)}")


def _read_yaml(path: Path) -> dict:
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml ships with the dev environment
        raise HwnasError("reading a ProxylessNAS YAML table needs pyyaml (pip install pyyaml)") \
            from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise HwnasError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") \
            from None
    except yaml.YAMLError as e:
        raise HwnasError(f"{path}: malformed YAML ({e})") from None
    except RecursionError:
        raise HwnasError(f"{path}: malformed YAML (nested too deeply)") from None
    if not isinstance(data, dict) or not data:
        raise HwnasError(f"{path}: expected a YAML mapping of op keys to count/mean/var, "
                         f"got {type(data).__name__}")
    return data


def _yaml_entry(path: Path, key: str, value: object) -> tuple[float, int, float]:
    """(mean ms, count, var) of one YAML entry, type-checked."""
    if not isinstance(value, dict) or "mean" not in value:
        raise HwnasError(f"{path}: entry {key!r} must be a mapping with 'mean' (and 'count', "
                         f"'var'), got {value!r}")
    try:
        mean = float(value["mean"])
        count = int(value.get("count", 0))
        var = float(value.get("var", math.nan))
    except (TypeError, ValueError):
        raise HwnasError(f"{path}: entry {key!r} has a non-numeric value: {value!r}") from None
    if not mean > 0 or not math.isfinite(mean):
        raise HwnasError(f"{path}: entry {key!r} has a mean of {mean}, not a positive latency")
    return mean, count, var


def import_proxyless_yaml(path: str | Path, out_dir: str | Path) -> Path:
    """Import the ProxylessNAS mobile lookup table (YAML of `key: {count, mean, var}`, ms).

    Each entry is matched to an op of `get_space("proxyless")` (224x224, width 1.0): `Conv` is the
    stem conv, `expanded_conv` an MBConv (its `idskip` must agree with the op's residual), `Conv_1`
    the 1x1 head conv, `Logits` the pool + linear classifier. Entries that match no op (e.g. the
    first block at kernels 5 and 7, which the space never runs) are logged and listed in
    device.json `unmatched_entries` (in `ProfileRecord.extra`); an op of the space missing from
    the YAML is an error. The published *mean* becomes `median_ms` (the table has no median),
    `count` becomes `n`; no percentiles are invented. Returns the profile folder.
    """
    src = _check_file(path)
    data = _read_yaml(src)
    space = get_space("proxyless")
    by_key = {proxyless_yaml_key(space, op): op for op in space.distinct_ops()}
    missing = [k for k in by_key if k not in data]
    if missing:
        raise HwnasError(f"{src}: {len(missing)} op(s) of the proxyless space are missing from the "
                         f"table: {', '.join(missing)}")
    rows, unmatched = [], []
    for key, value in data.items():
        mean, count, var = _yaml_entry(src, str(key), value)
        op = by_key.get(str(key))
        if op is None:
            unmatched.append(str(key))
            continue
        rows.append({"key": op.key, **op.to_dict(), "macs": op.macs, "params": op.params,
                     "source": f"imported:{src.name}", "source_key": str(key),
                     "median_ms": mean, "n": count, "var_ms2": var})
    if unmatched:
        log.info("%s: %d entries match no op of the proxyless space: %s", src, len(unmatched),
                 ", ".join(unmatched))
    out = _new_profile_dir(out_dir)
    fingerprint = {"backend": "imported", "source": PROXYLESS_ORIGIN, "file": src.name,
                   "sha256": _sha256(src), "device": PROXYLESS_DEVICE, "runtime": "TFLite",
                   "threads": 1, "batch": 1, "dtype": "float32"}
    notes = ("Imported from the published ProxylessNAS lookup table. median_ms holds the published "
             "MEAN latency (the table has no median or percentiles), n the published count, var_ms2 "
             "the published variance.")
    write_parquet(out / "ops.parquet", pd.DataFrame(rows).sort_values("key", ignore_index=True))
    write_record(out, _record(space, fingerprint, notes, unmatched_entries=unmatched))
    return out


# --- FBNet per-layer JSON -----------------------------------------------------------------------
@dataclass(frozen=True)
class LayerTable:
    """A per-layer latency table outside any hwnas space: `table[i, j]` ms of choice j at layer i.

    NaN marks a choice that the source does not allow at that layer. `fixed_ms` is the cost of the
    layers outside the table (0 when the source did not time them). Prediction is the same sum as
    `LookupTablePredictor` (ProxylessNAS Sec. 3.3, FBNet Eq. 4).
    """

    fixed_ms: float
    table: np.ndarray
    choices: tuple[str, ...]
    strides: tuple[int, ...] = ()
    source: str = ""

    @property
    def allowed(self) -> np.ndarray:
        return ~np.isnan(self.table)

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        """Latency (ms) of each row of an (N, layers) choice-index matrix."""
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        if idx.shape[1] != self.table.shape[0]:
            raise HwnasError(f"the table has {self.table.shape[0]} layers, got {idx.shape[1]} "
                             f"indices per row")
        if (idx < 0).any() or (idx >= self.table.shape[1]).any():
            raise HwnasError(f"choice indices must be within 0..{self.table.shape[1] - 1}")
        vals = self.table[np.arange(self.table.shape[0])[None, :], idx]
        bad = np.argwhere(np.isnan(vals))
        if len(bad):
            r, layer = bad[0]
            raise HwnasError(f"row {r}: choice {self.choices[idx[r, layer]]!r} is not allowed at "
                             f"layer {layer} ({len(bad)} such entries)")
        return self.fixed_ms + vals.sum(axis=1)

    def expected(self, probs: np.ndarray) -> float:
        """E[latency] under per-layer choice probabilities ((layers, choices), rows sum to 1)."""
        return float(self.fixed_ms + (np.asarray(probs) * np.nan_to_num(self.table)).sum())


# jh88/fbnet generate_lookup_table.py: config ss=[1,1,2,2,1,1,1,1,1] (stem, 7 stages, head).
JH88_STAGE_STRIDES = (1, 2, 2, 1, 1, 1, 1)
JH88_DEPTHS = (1, 4, 4, 4, 4, 4, 1)


def import_fbnet_table_json(path: str | Path) -> LayerTable:
    """Import the FBNet per-layer table of jh88/fbnet (`lookup_table_pi.json`, Raspberry Pi 4B).

    The file is a list with one entry per layer of its supernet: `null` for the fixed layers (stem
    conv and BN, head conv and BN, pool, FC: not timed, so `fixed_ms` is 0), else the latency of
    each op in microseconds (TF2 eager, mean of 10 calls, 1x32x32x3 input) in HW-NAS-Bench's op
    order; 8 values where `skip` is not allowed (the first layer of a stage that changes the width),
    9 otherwise. The 22 list entries are the searchable layers, returned in ms as a (22, 9) table.

    Not forced into hwnas's `fbnet` space: that space follows HW-NAS-Bench (stage strides
    [1,1,2,2,1,2,1], a 1x1 conv for `skip` where the width changes), while this table was measured
    with stage strides [1,2,2,1,1,1,1], 10 classes, head 1984 and no `skip` there, so its ops have
    other shapes than the space's.
    """
    src = _check_file(path)
    data = read_json(src)
    if not isinstance(data, list):
        raise HwnasError(f"{src}: expected a JSON list of per-layer entries, got "
                         f"{type(data).__name__}")
    layers = [(i, e) for i, e in enumerate(data) if e is not None]
    n_layers = sum(JH88_DEPTHS)
    if len(layers) != n_layers:
        raise HwnasError(f"{src}: expected {n_layers} searchable (list) entries, found {len(layers)}")
    width = len(FBNET_CHOICES)
    table = np.full((n_layers, width), np.nan)
    for row, (i, entry) in enumerate(layers):
        if not isinstance(entry, list) or len(entry) not in (width - 1, width):
            raise HwnasError(f"{src}: entry {i} must be a list of {width - 1} or {width} latencies")
        try:
            us = np.array([float(v) for v in entry])
        except (TypeError, ValueError):
            raise HwnasError(f"{src}: entry {i} has a non-numeric latency: {entry!r}") from None
        if not (np.isfinite(us) & (us > 0)).all():
            raise HwnasError(f"{src}: entry {i} has a latency that is not a positive number")
        table[row, :len(us)] = us / 1000.0
    strides = tuple(s if d == 0 else 1 for s, depth in zip(JH88_STAGE_STRIDES, JH88_DEPTHS,
                                                           strict=True) for d in range(depth))
    return LayerTable(0.0, table, FBNET_CHOICES, strides, f"jh88/fbnet {src.name} (Raspberry Pi 4B)")


# --- HW-NAS-Bench / HELP CSV --------------------------------------------------------------------
def _layer_columns(space: SearchSpace) -> list[str]:
    return [f"L{i:02d}" for i in range(len(space.layers))]


def _device_column(df: pd.DataFrame, name: str, src: Path) -> str:
    if name in df.columns:
        return name
    if f"{name}_ms" in df.columns:
        return f"{name}_ms"
    available = [c for c in df.columns if c.endswith("_ms")]
    raise HwnasError(f"{src}: no device column {name!r}; available: {', '.join(available)}")


def _cost_tables(space: SearchSpace) -> tuple[tuple[int, int], np.ndarray]:
    """(fixed macs, fixed params) and a (layers, choices, 2) table of each choice's macs/params."""
    fixed = space.stem_ops() + space.head_ops()
    width = max(len(layer.choices) for layer in space.layers)
    table = np.zeros((len(space.layers), width, 2), dtype=np.int64)
    for i in range(len(space.layers)):
        for j, op in enumerate(space.candidates(i)):
            if op is not None:
                table[i, j] = (op.macs, op.params)
    return (sum(op.macs for op in fixed), sum(op.params for op in fixed)), table


def _read_indices(df: pd.DataFrame, cols: list[str], space: SearchSpace, src: Path) -> np.ndarray:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise HwnasError(f"{src}: the {space.name!r} space needs op-index columns "
                         f"{cols[0]}..{cols[-1]}; missing: {', '.join(missing)}")
    idx = df[cols].apply(pd.to_numeric, errors="coerce")
    if idx.isna().any().any() or (idx % 1 != 0).any().any():
        r = int(np.argwhere((idx.isna() | (idx % 1 != 0)).to_numpy())[0][0])
        raise HwnasError(f"{src}: row {r}: op indices must be integers, got "
                         f"{df.loc[df.index[r], cols].tolist()}")
    idx = idx.to_numpy(dtype=np.int64)
    limits = np.array([len(layer.choices) for layer in space.layers])
    bad = np.argwhere((idx < 0) | (idx >= limits[None, :]))
    if len(bad):
        r, layer = bad[0]
        raise HwnasError(f"{src}: row {r}, {cols[layer]}: op index {idx[r, layer]} is out of range "
                         f"0..{limits[layer] - 1}")
    return idx


def _read_latency(df: pd.DataFrame, col: str, src: Path) -> np.ndarray:
    ms = pd.to_numeric(df[col], errors="coerce")
    bad = ms.isna() | ~(ms > 0) | ~np.isfinite(ms.astype(float))
    if bad.any():
        r = int(np.flatnonzero(bad.to_numpy())[0])
        raise HwnasError(f"{src}: column {col!r}, row {r}: {df[col].iloc[r]!r} is not a positive "
                         f"latency in ms")
    return ms.to_numpy(dtype=float)


def _ofa_archs(df: pd.DataFrame, space: OFASpace, src: Path) -> list[Arch]:
    """The archs of HELP's OFA rows (`OFASpace.from_help_row`), each at its row's resolution."""
    missing = [c for c in HELP_COLUMNS if c not in df.columns]
    if missing:
        raise HwnasError(f"{src}: the 'ofa' space needs HELP's columns resolution, d0..d4, "
                         f"ks00..ks19, e00..e19; missing: {', '.join(missing)}")
    archs = []
    for r, row in enumerate(df[list(HELP_COLUMNS)].to_dict("records")):
        try:
            archs.append(space.from_help_row(row))
        except HwnasError as e:
            raise HwnasError(f"{src}: row {r}: {str(e).removeprefix('HELP ofa row: ')}") \
                from None
    return archs


def _layout(df: pd.DataFrame) -> str:
    """The space of a HELP/HW-NAS-Bench CSV by its columns: `ofa` for HELP's OFA layout
    (`resolution`, `d0..`, `ks00..`, `e00..`), else `fbnet` (`L00..L21`)."""
    return "ofa" if all(c in df.columns for c in HELP_COLUMNS) else "fbnet"


def import_latency_csv(path: str | Path, device_column: str, out_dir: str | Path,
                       space: str | None = None) -> Path:
    """Import one device column of a HW-NAS-Bench/HELP latency CSV as a nets-only profile.

    The CSV has one net per row and `<device>_ms` latency columns (`device_column` with or without
    the `_ms`). The nets are either `L00..L{n-1}` (the op index of each searchable layer, in the
    space's choice order; for `fbnet` HW-NAS-Bench's 0..8), or, in HELP's Once-for-All layout
    (`ofa_mbv3_latency_help.csv`), `resolution, d0..d4, ks00..ks19, e00..e19`
    (`OFASpace.from_help_row`): each net at its own resolution. `space` None: `ofa` when the file
    has the OFA columns, else `fbnet`. Writes device.json (`nets_only: true`, the space's default
    settings: for `fbnet` 32x32, 100 classes; for `ofa` 224x224, 1000 classes, the resolution of
    each net in its arch) and nets.parquet (net_id, arch JSON, median_ms = the published value,
    macs, params, and the CSV row). Returns the profile folder.
    """
    src = _check_file(path)
    sp = get_space(space) if space is not None else None
    check_csv_width(src)
    try:
        df = pd.read_csv(src)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise HwnasError(f"{src}: not a readable CSV ({e})") from None
    if df.empty:
        raise HwnasError(f"{src}: the CSV has no rows (no networks to import)")
    if sp is None:
        sp = get_space(_layout(df))
    col = _device_column(df, device_column, src)
    if isinstance(sp, OFASpace):
        archs = _ofa_archs(df, sp, src)
        ms = _read_latency(df, col, src)
        ops = [sp.ops(a) for a in archs]
        macs = np.array([sum(op.macs for op in o) for o in ops], dtype=np.int64)
        params = np.array([sum(op.params for op in o) for o in ops], dtype=np.int64)
        origin = "HELP (Lee et al., NeurIPS 2021): Once-for-All MobileNetV3 nets"
        extra: dict = {"resolutions": sorted({a.resolution for a in archs})}
    else:
        idx = _read_indices(df, _layer_columns(sp), sp, src)
        ms = _read_latency(df, col, src)
        archs = [sp.from_indices(row) for row in idx]
        (fixed_macs, fixed_params), costs = _cost_tables(sp)
        per = costs[np.arange(len(sp.layers))[None, :], idx]
        macs = fixed_macs + per[..., 0].sum(axis=1)
        params = fixed_params + per[..., 1].sum(axis=1)
        origin, extra = "HW-NAS-Bench / HELP (MIT)", {}
    ids = [net_id(a) for a in archs]
    dup = pd.Series(ids).duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        raise HwnasError(f"{src}: row {r} repeats the architecture of an earlier row")
    nets = pd.DataFrame({"net_id": ids, "arch": [a.to_json(indent=None) for a in archs],
                         "median_ms": ms, "macs": macs, "params": params,
                         "source_row": np.arange(len(df))})
    out = _new_profile_dir(out_dir)
    fingerprint = {"backend": "imported", "source": origin, "file": src.name,
                   "sha256": _sha256(src), "device": col.removesuffix("_ms"), "column": col}
    notes = (f"Whole-network latencies imported from column {col!r} of {src.name}; median_ms holds "
             f"the published value (no per-run statistics are available). No lookup table.")
    write_parquet(out / "nets.parquet", nets)
    write_record(out, _record(sp, fingerprint, notes, nets_only=True, **extra))
    return out
