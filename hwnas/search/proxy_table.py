"""`hwnas proxies`: zero-cost proxy scores of many architectures, in one resumable parquet file.

`run_proxies(config)` scores the chosen architectures of a space (`--archs N`: N distinct ones
drawn with `seed`; `--all`: every NAS-Bench-201 cell; `indices`: given NB201 indices) with the
chosen proxies (`hwnas.search.zero_cost`), one row per architecture:

- `index` (the NAS-Bench-201 index; for other spaces the draw number), `arch` (the choices as a
  JSON list), `arch_str` (NB201's arch string, else the choices joined by commas);
- `<proxy>`: the score; for the per-weight proxies also `<proxy>_layer_mean` and
  `<proxy>_layer_sum` (one value per conv/linear layer: the node-wise vectors ParZC consumes);
- the settings (space, resolution, classes, proxies, data spec, batch size, data and init seeds)
  in the parquet metadata (`hwnas_proxies`), so that a reader knows how the scores were made and
  a ParZC model can score new architectures the same way.

Interruption loses at most the architecture being scored: rows are appended to
`<out>.partial.jsonl` (flushed and fsynced per row) and the parquet file is written atomically
at the end. A later call with the same `out` and settings resumes (rows already in the parquet
file or the partial file are not scored again; a torn last line is dropped); other settings are
refused. A lock (`<out>.lock`) refuses a second writer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas._io import atomic_path, write_text
from hwnas.data import check_spec
from hwnas.errors import HwnasError
from hwnas.search.trainer import torch_threads
from hwnas.search.zero_cost import (
    DATA_DEPENDENT,
    LAYERWISE,
    check_proxies,
    compute_proxies,
    proxy_batch,
    proxy_network,
)
from hwnas.space import SearchSpace, get_space
from hwnas.space.nb201 import N_ARCHS, NB201Space

META_KEY = b"hwnas_proxies"
FORMAT = "hwnas-proxies-1"
SETTING_KEYS = ("space", "resolution", "num_classes", "proxies", "data", "batch_size",
                "data_seed", "seed")
# how one architecture's scores are made (a ParZC model, an evaluator and a file must agree)
SCORE_KEYS = ("space", "resolution", "num_classes", "data", "batch_size", "data_seed", "seed")


@dataclass
class ProxiesConfig:
    """What `hwnas proxies` scores (module docstring). `seed` draws the architectures and seeds
    each network's initialisation; `data_seed` picks the minibatch (official: 42)."""

    out: Path
    proxies: tuple[str, ...] = ("synflow",)
    space: str = "nb201"
    archs: int | None = None
    all: bool = False
    indices: list[int] | None = None
    data: str = "digits"
    batch_size: int = 64
    data_seed: int = 42
    seed: int = 0
    resolution: int | None = None
    num_classes: int | None = None
    resume: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.proxies = check_proxies(self.proxies)
        chosen = sum([self.archs is not None, bool(self.all), self.indices is not None])
        if chosen != 1:
            raise HwnasError("choose the architectures with exactly one of --archs N or --all")
        if self.archs is not None and (isinstance(self.archs, bool) or not isinstance(
                self.archs, int) or self.archs < 1):
            raise HwnasError(f"--archs must be a positive integer, got {self.archs!r}")
        if self.out.suffix.lower() not in (".parquet", ".pq"):
            raise HwnasError(f"--out {self.out}: the proxies file is parquet; name it *.parquet")
        if any(p in DATA_DEPENDENT for p in self.proxies):
            check_spec(self.data)  # a malformed spec is refused before anything is scored

    def settings(self, space: SearchSpace) -> dict:
        data_used = any(p in DATA_DEPENDENT for p in self.proxies)
        return {"format": FORMAT, "space": space.name, "resolution": space.resolution,
                "num_classes": space.num_classes, "proxies": list(self.proxies),
                "data": self.data if data_used else None,
                "batch_size": self.batch_size if data_used else None,
                "data_seed": self.data_seed if data_used else None, "seed": self.seed}


def choose_archs(space: SearchSpace, config: ProxiesConfig) -> list[tuple[int, object]]:
    """(index, arch) of the architectures to score, in order."""
    if config.indices is not None:
        if not isinstance(space, NB201Space):
            raise HwnasError("explicit indices are NAS-Bench-201 indices (space nb201)")
        bad = [k for k in config.indices if not 0 <= int(k) < N_ARCHS]
        if bad:
            raise HwnasError(f"NAS-Bench-201 indices are 0..{N_ARCHS - 1}, got {bad[:5]}")
        return [(int(k), space.from_index(int(k))) for k in dict.fromkeys(config.indices)]
    if config.all:
        if not isinstance(space, NB201Space):
            raise HwnasError(f"--all enumerates NAS-Bench-201 (15,625 cells); space "
                             f"{space.name!r} has {space.size():.3g} architectures: use --archs N")
        return [(k, space.from_index(k)) for k in range(N_ARCHS)]
    rng = np.random.default_rng(config.seed)
    if isinstance(space, NB201Space):
        if config.archs > N_ARCHS:
            raise HwnasError(f"--archs {config.archs}: nb201 has {N_ARCHS} cells")
        # a prefix of one seeded permutation: --archs 200 extends an earlier --archs 100
        return [(int(k), space.from_index(int(k)))
                for k in rng.permutation(N_ARCHS)[:config.archs]]
    out, seen = [], set()
    tries = 0
    while len(out) < config.archs and tries < 100 * config.archs:
        tries += 1
        arch = space.sample(rng)
        if arch.choices not in seen:
            seen.add(arch.choices)
            out.append((len(out), arch))
    return out


def score_columns(scores: dict) -> dict:
    """The columns of one architecture's `ProxyScore`s: `<proxy>` and, for the per-weight
    proxies, `<proxy>_layer_mean` / `<proxy>_layer_sum`."""
    row = {}
    for name, s in scores.items():
        row[name] = float(s.score)  # NaN / -inf kept (jacob_cov undefined, naswot singular)
        if name in LAYERWISE and s.layer_means is not None:
            row[f"{name}_layer_mean"] = [float(v) for v in s.layer_means]
            row[f"{name}_layer_sum"] = [float(v) for v in s.layer_sums]
    return row


def check_compatible(mine: dict, theirs: dict, what: str) -> None:
    """Refuse scores made another way: `what` and each of `SCORE_KEYS` that both settings name
    with different values (theirs vs mine; a key one side leaves None does not count)."""
    diff = [k for k in SCORE_KEYS if theirs.get(k) is not None and mine.get(k) is not None
            and theirs.get(k) != mine.get(k)]
    if diff:
        raise HwnasError(f"{what} (" + ", ".join(f"{k}: {theirs.get(k)!r} vs {mine.get(k)!r}"
                                                 for k in diff) + ")")


def _row(index: int, space: SearchSpace, arch: object, scores: dict) -> dict:
    return {"index": int(index), "arch": json.dumps(list(arch.choices)),
            "arch_str": space.arch_str(arch) if isinstance(space, NB201Space)
            else ",".join(arch.choices), **score_columns(scores)}


def read_proxies(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A proxies file (rows, settings), checked: one `HwnasError` naming what is wrong."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise HwnasError(f"{p}: proxies file not found (make one with `hwnas proxies`)")
    try:
        with open(p, "rb") as f:  # one open file: a concurrent rewrite cannot mix versions
            table = pq.read_table(f)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise HwnasError(f"{p}: not a readable parquet file: {type(e).__name__}: {e}") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    try:
        settings = json.loads(raw) if raw is not None else None
    except (TypeError, ValueError):
        settings = None
    if not isinstance(settings, dict) or settings.get("format") != FORMAT:
        raise HwnasError(f"{p}: not an hwnas proxies file (no {META_KEY.decode()} metadata of "
                         f"format {FORMAT})")
    df = table.to_pandas()
    missing = [c for c in ("index", "arch", "arch_str", *settings.get("proxies", []))
               if c not in df.columns]
    if missing:
        raise HwnasError(f"{p}: missing columns {', '.join(missing)}")
    return df, settings


def _read_partial(path: Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if isinstance(row, dict) and "index" in row:
            rows.append(row)
    return rows


def _write_parquet(path: Path, rows: list[dict], settings: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = pd.DataFrame(rows)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           META_KEY: json.dumps(settings).encode()})
    with atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp)


def run_proxies(config: ProxiesConfig, progress: Callable[[int, int], None] | None = None,
                space: SearchSpace | None = None) -> dict:
    """Score the architectures (module docstring); returns a summary. `progress(done, total)`."""
    from filelock import FileLock, Timeout

    t0 = time.monotonic()
    space = space if space is not None else get_space(
        config.space, resolution=config.resolution, num_classes=config.num_classes)
    settings = config.settings(space)
    archs = choose_archs(space, config)
    partial = config.out.with_name(config.out.name + ".partial.jsonl")
    config.out.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(config.out.with_name(config.out.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise HwnasError(f"{config.out} is being written by another hwnas process") from None
    try:
        done: dict[int, dict] = {}
        if config.resume and config.out.exists():
            df, theirs = read_proxies(config.out)
            diff = [k for k in SETTING_KEYS if theirs.get(k) != settings.get(k)]
            if diff:
                raise HwnasError(f"{config.out} holds proxies with other settings ("
                                 + ", ".join(f"{k}: {theirs.get(k)!r} vs {settings.get(k)!r}"
                                             for k in diff)
                                 + "); use another --out, or --no-resume to start over")
            for row in df.to_dict("records"):
                done[int(row["index"])] = {k: (list(v) if isinstance(v, np.ndarray) else v)
                                           for k, v in row.items()}
        partial_meta = partial.with_name(partial.name + ".json")
        if config.resume and partial.exists():
            try:
                theirs = json.loads(partial_meta.read_text())
            except (OSError, ValueError):
                theirs = None
            if theirs != settings:
                raise HwnasError(f"{partial} holds an interrupted run with other settings; "
                                 "use another --out, or --no-resume to start over")
            for row in _read_partial(partial):
                done.setdefault(int(row["index"]), row)
        if not config.resume:
            partial.unlink(missing_ok=True)
        todo = [(k, a) for k, a in archs if k not in done]
        inputs = targets = None
        if any(p in DATA_DEPENDENT for p in config.proxies) and todo:  # bad data: nothing written
            inputs, targets, _ = proxy_batch(config.data, space.resolution, config.batch_size,
                                             config.data_seed)
        write_text(partial_meta, json.dumps(settings))  # atomic: a torn one would block resume
        if partial.exists() and partial.stat().st_size:
            with open(partial, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:  # end the torn line, so that the next row starts on its own
                with open(partial, "a") as f:
                    f.write("\n")
        with torch_threads(config.threads), open(partial, "a") as f:
            for n, (k, arch) in enumerate(todo):
                if progress:
                    progress(len(archs) - len(todo) + n, len(archs))
                net = proxy_network(space, arch, config.seed)
                scores = compute_proxies(net, config.proxies, space.input_shape(),
                                         inputs, targets)
                row = _row(k, space, arch, scores)
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
                done[k] = row
        if progress:
            progress(len(archs), len(archs))
        order = [k for k, _ in archs] + sorted(set(done) - {k for k, _ in archs})
        _write_parquet(config.out, [done[k] for k in order], settings)
        partial.unlink(missing_ok=True)
        partial_meta.unlink(missing_ok=True)
    finally:
        lock.release()
    return {"out": str(config.out), "archs": len(archs), "scored": len(todo),
            "resumed": len(archs) - len(todo), "rows": len(done), "proxies": list(config.proxies),
            "settings": settings, "wall_s": time.monotonic() - t0,
            "config": {k: (str(v) if isinstance(v, Path) else v)
                       for k, v in dataclasses.asdict(config).items()}}


# --- ParZC from a proxies file (`hwnas parzc fit|predict`) ----------------------------------------
def parzc_features(df: pd.DataFrame, proxies: tuple[str, ...], length: int | None = None,
                   path: Path | str = "proxies table") -> tuple[np.ndarray, int]:
    """Node-wise features (`hwnas.search.parzc.nodewise_features`) of each row: the per-layer
    means of `proxies`, concatenated; `length` defaults to the longest layer list."""
    from hwnas.search.parzc import nodewise_features

    cols = [f"{p}_layer_mean" for p in proxies]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise HwnasError(f"{path}: no layer-wise column {', '.join(missing)} (score those proxies "
                         f"with `hwnas proxies --proxies {','.join(proxies)}`)")
    vectors = [[np.asarray(v, dtype=np.float64) for v in vals]
               for vals in zip(*(df[c] for c in cols), strict=True)]
    if length is None:
        length = max(len(v) for vs in vectors for v in vs)
    return nodewise_features(vectors, length), int(length)


@dataclass
class ParZCFitConfig:
    """`hwnas parzc fit`: the proxies file, the accuracy table (labels), which rows train."""

    proxies_table: Path
    accuracy_table: Path
    out: Path
    accuracy_column: str | None = None
    features: tuple[str, ...] = ("grad_norm", "snip", "synflow")
    train: int | None = None  # rows drawn (seed) from the table; None: all rows (or `rows`)
    rows: list[int] | None = None  # or: train on exactly these architecture indices
    length: int | None = None
    seed: int = 0
    options: dict = field(default_factory=dict)  # ParZC hyper-parameters (epochs, loss, ...)


def _accuracy_of(df: pd.DataFrame, settings: dict, table: Path, column: str | None
                 ) -> np.ndarray:
    from hwnas.search.tables import load_accuracy_table

    if settings.get("space") != "nb201":
        raise HwnasError("accuracy tables are NAS-Bench-201 tables; the proxies file is of space "
                         f"{settings.get('space')!r}")
    acc = load_accuracy_table(table, get_space("nb201"), column)
    return acc.values[df["index"].to_numpy(dtype=np.int64)]


def fit_parzc(config: ParZCFitConfig) -> dict:
    """Fit ParZC on `train` rows of a proxies file with their accuracy; save it to `out`
    (safetensors + JSON, with the proxies' settings so that new architectures are scored the same
    way); report Kendall tau / Spearman rho on the rows it did not see."""
    from scipy import stats

    from hwnas.search.parzc import NB201_LENGTH, ParZC

    df, settings = read_proxies(config.proxies_table)
    feats = tuple(config.features)
    length = config.length
    if length is None and settings.get("space") == "nb201":
        length = NB201_LENGTH  # the layers of a cell with six convs: every cell fits
    X, length = parzc_features(df, feats, length, config.proxies_table)
    y = _accuracy_of(df, settings, Path(config.accuracy_table), config.accuracy_column)
    rng = np.random.default_rng(config.seed)
    n = len(df)
    if config.rows is not None:
        if config.train is not None:
            raise HwnasError("give the training rows as a count or as indices, not both")
        pos = {int(k): i for i, k in enumerate(df["index"].to_numpy())}
        missing = [k for k in config.rows if int(k) not in pos]
        if missing:
            raise HwnasError(f"{config.proxies_table}: no row for index {missing[:5]}")
        train = np.sort(np.array([pos[int(k)] for k in dict.fromkeys(config.rows)]))
    elif config.train is None:
        train = np.arange(n)
    else:
        if isinstance(config.train, bool) or not isinstance(config.train, int) \
                or not 2 <= config.train <= n:
            raise HwnasError(f"--train must be 2..{n} (rows of {config.proxies_table}), got "
                             f"{config.train!r}")
        train = np.sort(rng.permutation(n)[:config.train])
    held = np.setdiff1d(np.arange(n), train)
    model = ParZC(seed=config.seed, **config.options).fit(X[train], y[train])
    meta = {"proxies": list(feats), "length": length, "settings": settings,
            "trained_on": [int(k) for k in df["index"].to_numpy()[train]],
            "accuracy_table": str(config.accuracy_table),
            "accuracy_column": config.accuracy_column}
    model.save(config.out, meta=meta)
    out = {"out": str(config.out), "train_rows": int(len(train)), "held_out_rows": int(len(held)),
           "proxies": list(feats), "length": length}
    if len(held) >= 2:
        pred = model.predict(X[held])
        out["held_out_kendall_tau"] = float(stats.kendalltau(pred, y[held])[0])
        out["held_out_spearman_rho"] = float(stats.spearmanr(pred, y[held])[0])
    return out


def predict_parzc(model_dir: Path, proxies_table: Path, accuracy_table: Path | None = None,
                  accuracy_column: str | None = None, samples: int = 32) -> tuple[pd.DataFrame, dict]:
    """ParZC's mean and spread (over weight samples) for each row of a proxies file; with an
    accuracy table, Kendall tau / Spearman rho over the rows the model was not trained on."""
    from scipy import stats

    from hwnas.search.parzc import ParZC

    model = ParZC.load(model_dir)
    meta = model.meta_ or {}
    df, settings = read_proxies(proxies_table)
    check_compatible(meta.get("settings") or {}, settings, f"{proxies_table}: scored with other "
                     "settings than the model was trained on")
    X, _ = parzc_features(df, tuple(meta.get("proxies") or ()), meta.get("length"), proxies_table)
    mean = model.predict(X)  # what the search's ParZCEvaluator scores with
    std = model.predict_dist(X, samples=samples)[1]
    out = pd.DataFrame({"index": df["index"], "arch_str": df["arch_str"], "parzc": mean,
                        "parzc_std": std})
    report: dict = {"rows": len(out)}
    if accuracy_table is not None:
        y = _accuracy_of(df, settings, Path(accuracy_table), accuracy_column)
        seen = set(meta.get("trained_on") or [])
        mask = ~df["index"].isin(seen).to_numpy()
        out["accuracy"] = y
        report["evaluated_rows"] = int(mask.sum())
        if mask.sum() >= 2:
            report["kendall_tau"] = float(stats.kendalltau(mean[mask], y[mask])[0])
            report["spearman_rho"] = float(stats.spearmanr(mean[mask], y[mask])[0])
    return out, report
