"""The report's figures (matplotlib, Agg backend), each returned as an embeddable PNG data URI."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def predicted_vs_measured(measured: np.ndarray, series: dict[str, np.ndarray],
                          title: str) -> str:
    """Scatter of predicted against measured latency with the y = x line and a +-10% band."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    lo, hi = float(measured.min()) * 0.85, float(measured.max()) * 1.15
    line = np.linspace(lo, hi, 50)
    ax.fill_between(line, line * 0.9, line * 1.1, color="tab:green", alpha=0.15,
                    label="+-10% band")
    ax.plot(line, line, color="tab:green", lw=1)
    for (name, pred), marker in zip(series.items(), ("o", "s", "^"), strict=False):
        within = float(np.mean(np.abs(pred / measured - 1) <= 0.10))
        ax.scatter(measured, pred, s=14, marker=marker, alpha=0.75,
                   label=f"{name} ({within:.0%} within 10%)")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms)",
           ylabel="predicted latency (ms)", title=title)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return to_data_uri(fig)


def layer_breakdown(names: list[str], ms: list[float], title: str) -> str:
    """Horizontal bars: the lookup-table latency of each layer of the chosen network."""
    fig, ax = plt.subplots(figsize=(6.4, max(3.0, 0.22 * len(names) + 1)))
    y = np.arange(len(names))
    ax.barh(y, ms, color="tab:blue")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="latency (ms, lookup table)", title=title)
    ax.grid(axis="x", alpha=0.3)
    return to_data_uri(fig)


def search_trajectory(epochs: np.ndarray, valid_acc: np.ndarray, expected_ms: np.ndarray,
                      argmax_ms: np.ndarray, budget_ms: float, warmup: int) -> str:
    """Accuracy (left axis) and E[LAT], argmax latency and budget (right axis) per epoch."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(epochs, valid_acc, "o-", color="tab:blue", label="valid accuracy (shared weights)")
    ax.set(xlabel="epoch", ylabel="accuracy")
    ax.set_ylim(0, 1)
    if warmup:
        ax.axvspan(-0.5, warmup - 0.5, color="grey", alpha=0.12, label="warm-up")
    right = ax.twinx()
    right.plot(epochs, expected_ms, "s--", color="tab:orange", label="E[LAT]")
    right.plot(epochs, argmax_ms, "^-", color="tab:red", label="argmax network")
    right.axhline(budget_ms, color="black", lw=1, ls=":", label=f"budget {budget_ms:g} ms")
    right.set_ylabel("latency (ms)")
    handles = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    ax.grid(alpha=0.3)
    return to_data_uri(fig)


def latency_accuracy_cloud(ms: np.ndarray, acc: np.ndarray, chosen_ms: float,
                           chosen_acc: float, budget_ms: float | None) -> str:
    """Sampled networks (predicted latency, accuracy) with the chosen one and the budget."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    ax.scatter(ms, acc, s=16, alpha=0.6, color="tab:grey", label="sampled networks")
    ax.scatter([chosen_ms], [chosen_acc], s=160, marker="*", color="tab:red", zorder=3,
               label="chosen network")
    if budget_ms:
        ax.axvline(budget_ms, color="black", lw=1, ls=":", label=f"budget {budget_ms:g} ms")
    ax.set(xlabel="predicted latency (ms)", ylabel="valid accuracy (shared weights)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return to_data_uri(fig)


def bin_distribution(steps: list[int], probs: np.ndarray, edges: list[float]) -> str:
    """ShiftNAS: the probability of each complexity bin after each Eq. 8 update (one line per
    bin; the first point is the uniform start)."""
    probs = np.asarray(probs, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    cmap = plt.get_cmap("viridis", probs.shape[1])
    for k in range(probs.shape[1]):
        ax.plot(steps, probs[:, k], "o-", color=cmap(k), ms=3,
                label=f"{edges[k]:.3g}-{edges[k + 1]:.3g} ms")
    ax.set(xlabel="training step", ylabel="bin probability")
    ax.legend(fontsize=7, ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    return to_data_uri(fig)


def budget_tracking(targets: list[float], costs: list[float], acc: list[float] | None,
                    unit: str = "ms") -> str:
    """ShiftNAS: the generator's architecture for each bin centre, its cost by the run's table
    (ms, or GFLOPs) against the target (the diagonal is exact), coloured by its accuracy when
    known."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    lo, hi = min(targets + costs), max(targets + costs)
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls=":", label="cost = target")
    sc = ax.scatter(targets, costs, c=acc if acc else "tab:blue", cmap="viridis", s=40, zorder=3)
    if acc:
        fig.colorbar(sc, ax=ax, label="valid accuracy (shared weights)")
    ax.set(xlabel=f"target C ({unit})", ylabel=f"generated network, by the run's table ({unit})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return to_data_uri(fig)


def strategy_trajectory(evaluation: np.ndarray, score: np.ndarray, latency: np.ndarray | None,
                        feasible: np.ndarray, budget_ms: float | None, score_name: str) -> str:
    """A strategy search's trials: the score of each evaluation with the best feasible score so
    far (left), and, when the run has a latency constraint, each trial's latency against its
    score with the budget (right)."""
    panels = 2 if latency is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    ok = feasible.astype(bool)
    ax.scatter(evaluation[ok], score[ok], s=10, alpha=0.6, color="tab:blue", label="feasible")
    if (~ok).any():
        ax.scatter(evaluation[~ok], score[~ok], s=10, alpha=0.4, color="tab:grey",
                   label="over the budget")
    best = np.maximum.accumulate(np.where(ok, score, -np.inf))
    shown = np.isfinite(best)
    ax.step(evaluation[shown], best[shown], where="post", color="tab:red",
            label="best feasible so far")
    ax.set(xlabel="evaluation", ylabel=score_name)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if latency is not None:
        ax = axes[0][1]
        ax.scatter(latency[ok], score[ok], s=10, alpha=0.6, color="tab:blue", label="feasible")
        if (~ok).any():
            ax.scatter(latency[~ok], score[~ok], s=10, alpha=0.4, color="tab:grey",
                       label="over the budget")
        if budget_ms is not None:
            ax.axvline(budget_ms, color="black", lw=1, ls=":", label=f"budget {budget_ms:g} ms")
        ax.set(xlabel="latency (ms, the run's predictor)", ylabel=score_name)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return to_data_uri(fig)
