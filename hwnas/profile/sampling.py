"""Which whole networks a profile measures: spread over the latency range, not bunched in its middle.

Uniform sampling per layer puts almost every net near the mean latency (a sum of 21 independent
choices). Here a large candidate pool is drawn with a per-net bias towards cheap or expensive ops
(beta in [-4, 4] on each layer's z-scored op cost), and the nets closest to evenly spaced cost
targets between the cheapest and the costliest candidate are kept; the all-cheapest and
all-costliest nets are always in. Cost is the lookup-table latency when the ops are measured,
otherwise MACs.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from hwnas.space import Arch, SearchSpace


def net_id(arch: Arch) -> str:
    """A short stable id of an arch (its canonical JSON)."""
    return hashlib.sha1(json.dumps(arch.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def layer_costs(space: SearchSpace, cost: dict[str, float] | None = None) -> list[np.ndarray]:
    """Per layer, the cost of each choice (0 for a skipped layer)."""
    out = []
    for i in range(len(space.layers)):
        vals = [float(sum(cost[op.key] if cost else op.macs for op in space.choice_ops(i, j)))
                for j in range(len(space.layers[i].choices))]
        out.append(np.asarray(vals))
    return out


def plan_nets(space: SearchSpace, n: int, cost: dict[str, float] | None = None,
              seed: int = 0, pool_factor: int = 50) -> list[Arch]:
    """`n` distinct archs whose costs spread evenly over the space's cost range."""
    rng = np.random.default_rng(seed)
    costs = layer_costs(space, cost)
    z = [(c - c.mean()) / (c.std() + 1e-12) for c in costs]
    pool = max(pool_factor * n, 1000)
    betas = rng.uniform(-4.0, 4.0, size=pool)
    idx = np.empty((pool, len(costs)), dtype=np.int64)
    for j, zj in enumerate(z):
        logits = -betas[:, None] * zj[None, :]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        u = rng.random((pool, 1))
        idx[:, j] = np.minimum((p.cumsum(1) < u).sum(1), len(zj) - 1)
    idx[0] = [int(np.argmin(c)) for c in costs]
    idx[1] = [int(np.argmax(c)) for c in costs]
    idx = np.unique(idx, axis=0)
    total = sum(np.asarray(c)[idx[:, j]] for j, c in enumerate(costs))
    order = np.argsort(total)
    idx, total = idx[order], total[order]
    chosen: list[int] = [0, len(idx) - 1] if n >= 2 else [0]
    used = set(chosen)
    for t in np.linspace(total[0], total[-1], n)[1:-1] if n > 2 else []:
        pos = int(np.searchsorted(total, t))
        for d in range(len(idx)):  # nearest unused candidate around the target
            for q in (pos - d, pos + d):
                if 0 <= q < len(idx) and q not in used:
                    used.add(q)
                    chosen.append(q)
                    break
            else:
                continue
            break
    chosen = sorted(chosen, key=lambda q: total[q])[:n]
    return [space.from_indices(idx[q]) for q in chosen]
