"""Peak memory of one search step as the candidates per layer grow: binary gates vs all paths.

ProxylessNAS's claim (Cai et al., ICLR 2019, Sec. 3.1-3.2): with binary gates only one path is
active, so the training memory is that of one compact network and stays flat as the candidate set
grows, while a DARTS-style mixed op (y = sum_j p_j o_j(x), every path in autograd) grows with it.

Each configuration runs in a fresh subprocess (torch keeps freed memory in its allocator, so
measuring several in one process would be meaningless): it builds the model, records the peak RSS
so far (`resource.getrusage(RUSAGE_SELF).ru_maxrss`), runs one training step and reports the
growth of the peak: the memory the step itself needed (activations, gradients, optimizer state),
beyond the built model.

- binary gates (`full_v2`): a weight step (one path, SGD) + an architecture step (binary gates
  with the same path active, the other candidates re-run without autograd in the backward, Adam
  on alpha);
- all paths: a weight step and an architecture step both on the weighted sum of all candidates;
- one network: `space.build` of that same path as a standalone network, a weight step: the
  reference for "the memory of training one compact network".

The path is one arch sampled from the 7-candidate space (seeded) and is the same for every
candidate count, so that the binary-gate column shows what the candidate count itself costs (a
path drawn per run would mix in the size of the path drawn).

Candidates per layer: k{3,5,7} x e{3,6} + zero = 7, then + k3_e4, k5_e4, k7_e4, k9_e3, k9_e4,
k9_e6 up to 13 (the first layer of each stage has no zero and one fewer).

    .venv/bin/python benchmarks/supernet_memory.py [--resolution 64] [--batch 32]

Writes benchmarks/results/supernet_memory.md and .json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import Results  # noqa: E402

EXTRA = [(3, 4), (5, 4), (7, 4), (9, 3), (9, 4), (9, 6)]
SIZES = (7, 9, 11, 13)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _candidates(space, n: int):
    """Each layer's candidates: the space's (6 MBConv [+ zero]) plus n - 7 extra MBConvs."""
    out = []
    for i in range(len(space.layers)):
        cands = space.candidates(i)
        base = next(op for op in cands if op is not None)
        extra = [base.replace(kernel=k, expand=e) for k, e in EXTRA[:n - 7]]
        out.append([op for op in cands if op is not None] + extra
                   + [None for op in cands if op is None])
    return out


def one(kind: str, n: int, resolution: int, batch: int, seed: int) -> dict:
    """Run in the child: build, measure the step's peak RSS growth."""
    import torch
    import torch.nn.functional as F

    from hwnas.latency.loss import ExpectedLatency, LatencyLoss
    from hwnas.search.supernet import SuperNet
    from hwnas.search.trainer import arch_optimizer, weight_optimizer
    from hwnas.space import get_space

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    space = get_space("proxyless", resolution=resolution, num_classes=10)
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, 10, (batch,))
    path = space.indices(space.sample(seed))
    if kind == "fixed":
        model = space.build(space.from_indices(path)).train()
        params = sum(p.numel() for p in model.parameters())
        w_opt = weight_optimizer(list(model.parameters()), 0.01)
        base = _maxrss_mb()
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        w_opt.zero_grad()
        loss.backward()
        w_opt.step()
        return {"base_mb": base, "peak_mb": _maxrss_mb(), "params": params,
                "step_s": time.perf_counter() - t0}
    cands = _candidates(space, n)
    net = SuperNet(space, cands, seed=seed, weight_sharing="independent")  # the reference's
    # the same path in the extended candidate lists (the skip choice is last there)
    path = [len(c) - 1 if layer.choices[j] == "zero" else j
            for layer, c, j in zip(space.layers, cands, path, strict=True)]
    params = sum(p.numel() for p in net.parameters())
    table = torch.where(net.mask, torch.rand(net.mask.shape), torch.tensor(float("nan")))
    expected = ExpectedLatency(table.numpy(), fixed_ms=1.0)
    latency_loss = LatencyLoss("add#linear", ref_ms=5.0)
    w_opt = weight_optimizer(net.weight_parameters(), 0.01)
    a_opt = arch_optimizer(net.arch_parameters(), 6e-3)
    base = _maxrss_mb()
    t0 = time.perf_counter()
    # weight step
    if kind == "binary":
        net.set_paths(path)
    else:
        net.set_all_paths()
    loss = F.cross_entropy(net(x), y)
    w_opt.zero_grad(set_to_none=True)
    loss.backward()
    w_opt.step()
    del loss
    # architecture step
    if kind == "binary":
        net.binarize("full_v2", active=path)
    else:
        net.set_all_paths()
    loss = latency_loss(F.cross_entropy(net(x), y), expected(net.alpha))
    w_opt.zero_grad(set_to_none=True)
    a_opt.zero_grad(set_to_none=True)
    loss.backward()
    if kind == "binary":
        net.set_arch_param_grad()
    a_opt.step()
    return {"base_mb": base, "peak_mb": _maxrss_mb(), "params": params,
            "step_s": time.perf_counter() - t0}


def run_child(kind: str, n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(n), "--resolution",
           str(args.resolution), "--batch", str(args.batch), "--seed", str(args.seed)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"child {kind} {n} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", type=str, default=",".join(map(str, SIZES)))
    ap.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.child[0], int(args.child[1]), args.resolution, args.batch,
                             args.seed)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    res = Results("supernet_memory", "Supernet memory: binary gates against all paths",
                  seed=args.seed, timing=True)
    res.text("Peak memory of one search step (weights + architecture), each configuration in a "
             "fresh process (growth of ru_maxrss over the built model): binary gates "
             "(ProxylessNAS) should stay flat as the candidates per layer grow and cost no more "
             "than training one sampled network (targets: largest / smallest <= 1.2x, binary / "
             "one net <= 1.5x); an all-paths (DARTS-style) mixed op grows with the candidates. "
             "Step seconds are single runs on a shared machine: indicative only.")
    fixed = run_child("fixed", 7, args)
    fixed_mb = fixed["peak_mb"] - fixed["base_mb"]
    rows = []
    for n in sizes:
        b = run_child("binary", n, args)
        a = run_child("all", n, args)
        b_mb, a_mb = b["peak_mb"] - b["base_mb"], a["peak_mb"] - a["base_mb"]
        rows.append({"candidates": n, "supernet params (M)": b["params"] / 1e6,
                     "binary gates step (MB)": b_mb, "all paths step (MB)": a_mb,
                     "all / binary": a_mb / b_mb, "binary / one net": b_mb / fixed_mb,
                     "binary step (s)": b["step_s"], "all paths step (s)": a["step_s"]})
    res.table(rows, f"Peak memory of one search step (weights + arch), proxyless space, "
                      f"{args.resolution}x{args.resolution}, batch {args.batch}, 1 thread; "
                      f"one sampled network: {fixed_mb:.0f} MB "
                      f"({fixed['params'] / 1e6:.2f} M params)")
    flat = max(r["binary gates step (MB)"] for r in rows) / rows[0]["binary gates step (MB)"]
    worst = max(r["binary / one net"] for r in rows)
    grow = rows[-1]["all paths step (MB)"] / rows[0]["all paths step (MB)"]
    res.text(f"Binary gates, largest / smallest candidate set: {flat:.2f}x (target <= 1.2x: "
             f"{'met' if flat <= 1.2 else 'missed'}); binary / one sampled net: at most "
             f"{worst:.2f}x (target <= 1.5x: {'met' if worst <= 1.5 else 'missed'}); all paths "
             f"grow {grow:.2f}x from {sizes[0]} to {sizes[-1]} candidates.")
    res.write(data={"one_net": fixed})


if __name__ == "__main__":
    main()
