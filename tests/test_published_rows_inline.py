"""The spaces' encodings against a few published rows held inline (`inline_reference_data`), so
that they are checked on a clean checkout: `test_space.py::test_fbnet_matches_hwnasbench_encoding`
(20 rows) and `test_nb201.py::test_all_15625_rows_match_the_published_order` (every row) read
the full tables in ../shared/data and skip without them.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from inline_reference_data import HELP_FBNET_CSV, NB201_HELP_CSV

from hwnas.space import Arch, get_space
from hwnas.space.fbnet import FBNET_CHOICES
from hwnas.space.nb201 import NB201_OPS, all_indices, arch_string, official_index, parse_arch_string


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# --- FBNet: HW-NAS-Bench's L00..L21 op indices and ops_str ------------------------------------

def test_fbnet_matches_hwnasbench_encoding() -> None:
    rows = _rows(HELP_FBNET_CSV)
    assert len(rows) == 5
    space = get_space("fbnet")
    assert (space.resolution, space.num_classes) == (32, 100)
    assert space.layers[0].choices == FBNET_CHOICES
    for row in rows:
        idx = [int(row[f"L{i:02d}"]) for i in range(22)]
        arch = space.from_indices(idx)
        assert space.indices(arch) == idx
        assert "-".join(arch.choices) == row["ops_str"]
        assert [FBNET_CHOICES[i] for i in idx] == row["ops_str"].split("-")
        assert space.indices(Arch.from_json(arch.to_json())) == idx
        enc = space.encode(arch)
        assert [int(np.argmax(seg)) for seg in np.split(enc, 22)] == idx


def test_fbnet_published_row_builds_and_runs() -> None:
    """The first published row as a network: every block has the shape its op says."""
    space = get_space("fbnet")
    row = _rows(HELP_FBNET_CSV)[0]
    arch = space.from_indices([int(row[f"L{i:02d}"]) for i in range(22)])
    net = space.build(arch)
    ops = space.ops(arch)
    assert len(net.blocks) == len(ops) and not net.training
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        y = x
        for block, op in zip(net.blocks, ops, strict=True):
            y = block(y)
            want = (2, op.cout) if op.kind == "classifier" else (2, op.cout, op.out_h, op.out_w)
            assert tuple(y.shape) == want, op.key
        assert tuple(y.shape) == (2, 100) and torch.isfinite(y).all()


# --- NAS-Bench-201: row i of the published tables is index i ----------------------------------

EDGE_COLUMNS = ["e1_from0", "e2_from0", "e2_from1", "e3_from0", "e3_from1", "e3_from2"]


@pytest.mark.parametrize("row", _rows(NB201_HELP_CSV), ids=lambda r: f"index{r['arch_idx']}")
def test_published_nb201_rows_match_the_index_order(row: dict[str, str]) -> None:
    i = int(row["arch_idx"])
    ops = [NB201_OPS[j] for j in all_indices()[i]]
    assert arch_string(ops) == row["arch_str"]
    assert [row[e] for e in EDGE_COLUMNS] == ops
    parsed = [NB201_OPS.index(c) for c in parse_arch_string(row["arch_str"])]
    assert official_index(np.asarray([parsed]))[0] == i
    space = get_space("nb201")
    assert space.arch_str(space.from_index(i)) == row["arch_str"]
    assert space.index(space.from_arch_str(row["arch_str"])) == i
