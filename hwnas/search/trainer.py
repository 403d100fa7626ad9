"""The ProxylessNAS training loops: weight steps, gradient and REINFORCE architecture steps.

Follows mit-han-lab/proxylessnas `search/nas_manager.py` (`ArchSearchRunManager.warm_up`,
`.train`, `.gradient_step`, `.rl_update_step`, `GradientArchSearchConfig.add_regularization_loss`,
`RLArchSearchConfig.calculate_reward`) with the supernet of `hwnas.search.supernet`:

- weight step (`train`, and `warm_up`): sample one path per layer from p (`reset_binary_gates`),
  run it alone, cross-entropy with label smoothing 0.1, SGD (Nesterov momentum 0.9, weight decay
  4e-5), cosine learning rate (`warm_up`: cosine from 0.05 over the warm-up steps);
- gradient architecture step (`gradient_step`): a batch of the held-out validation split, binary
  gates (`full_v2` or `two`), loss = `LatencyLoss(CE, E[LAT])` (mul#log / add#linear), backward,
  `set_arch_param_grad`, Adam step on alpha, then in `two` mode `rescale_updated_arch_param`;
- REINFORCE step (`rl_update_step`): sample `rl_batch` networks, evaluate each on one validation
  batch without gradient (train-mode BatchNorm, as the reference), reward
  R = acc * (ref / LAT) ** (w * weight) (`calculate_reward`, w = tradeoff ratio 0.1), moving
  baseline updated as the reference does (b += decay * (mean R - b), decay 0.99), gradient
  mean_k (R_k - b) * grad(-log p(a_k)), Adam step.

hwnas additions: the budget controller (`BudgetController`) that scales the latency term, and the
accuracy of the current argmax network after each epoch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.data import ImageData
from hwnas.latency.loss import ExpectedLatency, LatencyLoss
from hwnas.search.supernet import SuperNet

LABEL_SMOOTHING = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 4e-5
WARMUP_LR = 0.05  # `warm_up`: lr_max = 0.05
ARCH_BETAS = (0.0, 0.999)  # `--arch_adam_beta1 0 --arch_adam_beta2 0.999`
RL_TRADEOFF = 0.1  # `--rl_tradeoff_ratio`
RL_BASELINE_DECAY = 0.99  # `--rl_baseline_decay_weight`


@dataclass
class BudgetController:
    """A Lagrangian-style multiplier on the latency term that makes the budget hold.

    After each architecture step, with L the controlled latency: gap = clip((L - budget) / budget,
    -1, 1); `mul`: weight <- weight * exp(rate * gap) (geometric growth while over, decay while
    under); `add`: weight <- weight + rate * gap (dual ascent on L <= budget). The weight stays
    within [min_weight, max_weight]. It multiplies the exponent beta of mul#log, lambda of
    add#linear and the tradeoff exponent of the REINFORCE reward. Not in ProxylessNAS (which fixes
    the trade-off and moves `ref_value` by hand); `kind="none"` keeps weight = 1.

    `signal` picks L: `argmax` (default), the predicted latency of the argmax network, the network
    the search delivers; `expected`, E[LAT] under p; `max`, the larger of the two. With E[LAT]
    alone a short search (p still close to uniform, E[LAT] near the space's mean latency) keeps
    raising the weight long after the argmax network is under budget, and ends far below it.
    """

    budget_ms: float
    kind: str = "mul"
    rate: float = 0.1
    signal: str = "argmax"
    weight: float = 1.0
    min_weight: float = 1e-3
    max_weight: float = 1e3

    def __post_init__(self) -> None:
        if self.kind not in ("mul", "add", "none"):
            raise ValueError(f"unknown budget controller {self.kind!r}; use mul, add or none")
        if self.signal not in ("argmax", "expected", "max"):
            raise ValueError(f"unknown controller signal {self.signal!r}; "
                             "use argmax, expected or max")

    def latency(self, expected_ms: float, argmax_ms: float) -> float:
        """The latency the controller holds to the budget (see `signal`)."""
        if self.signal == "expected":
            return expected_ms
        if self.signal == "argmax":
            return argmax_ms
        return max(expected_ms, argmax_ms)

    def update(self, latency_ms: float) -> float:
        gap = max(-1.0, min(1.0, (latency_ms - self.budget_ms) / self.budget_ms))
        if self.kind == "mul":
            self.weight *= math.exp(self.rate * gap)
        elif self.kind == "add":
            self.weight += self.rate * gap
        self.weight = min(self.max_weight, max(self.min_weight, self.weight))
        return self.weight


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """`torch.set_num_threads(threads)` inside the block (unchanged for None or 0), restored
    after it, exception or not: the `threads` setting of every training flow."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def cosine_lr(base: float, step: int, total: int) -> float:
    """0.5 * base * (1 + cos(pi * step / total)) (`warm_up` and the cosine `adjust_learning_rate`)."""
    return 0.5 * base * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def weight_optimizer(params: list[nn.Parameter], lr: float) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, nesterov=True,
                           weight_decay=WEIGHT_DECAY)


def arch_optimizer(params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with beta1 = 0 as the reference: an alpha with zero gradient does not move."""
    return torch.optim.Adam(params, lr=lr, betas=ARCH_BETAS, eps=1e-8, weight_decay=0.0)


def cycle(batches: Callable[[int], Iterator]) -> Iterator:
    """Endless batches (`valid_next_batch`): a new seeded shuffle each pass."""
    k = 0
    while True:
        empty = True
        for b in batches(k):
            empty = False
            yield b
        if empty:
            return
        k += 1


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")


class SearchLoop:
    """Holds the supernet, the optimizers, the latency objective and the controller."""

    def __init__(self, net: SuperNet, data: ImageData, expected: ExpectedLatency,
                 loss: LatencyLoss, controller: BudgetController, grad_mode: str,
                 predict_ms: Callable[[np.ndarray], np.ndarray], lr: float, arch_lr: float,
                 batch_size: int, arch_every: int = 1, rl_batch: int = 10,
                 warmup_lr: float = WARMUP_LR, max_batches: int | None = None,
                 seed: int = 0) -> None:
        self.net, self.data, self.expected, self.loss = net, data, expected, loss
        self.controller, self.grad_mode, self.predict_ms = controller, grad_mode, predict_ms
        self.lr, self.warmup_lr, self.batch_size = lr, warmup_lr, batch_size
        self.arch_every, self.rl_batch = max(1, arch_every), rl_batch
        self.max_batches, self.seed = max_batches, seed
        self.w_opt = weight_optimizer(net.weight_parameters(), lr)
        self.a_opt = arch_optimizer(net.arch_parameters(), arch_lr)
        self.rl_baseline: float | None = None
        self._valid = cycle(lambda k: data.batches("valid", batch_size, True,
                                                   seed=seed * 7919 + 100003 + k, drop_last=True))
        self.valid_used = 0  # validation batches drawn so far (a resume skips as many)

    def _next_valid(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.valid_used += 1
        return next(self._valid)

    # --- checkpoint state beyond the weights (an exact resume) ----------------------------------
    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        """Both optimizers' state (SGD momentum buffers; Adam moments and step counts) as flat
        tensors `w.<param index>.<name>` / `a.<param index>.<name>`, for a checkpoint."""
        out = {}
        for tag, opt in (("w", self.w_opt), ("a", self.a_opt)):
            for idx, state in opt.state_dict()["state"].items():
                for name, value in state.items():
                    if value is not None:
                        out[f"{tag}.{idx}.{name}"] = torch.as_tensor(value).detach().clone()
        return out

    def restore(self, optimizer_tensors: dict[str, torch.Tensor], valid_used: int) -> None:
        """Load `optimizer_tensors` and skip the `valid_used` validation batches an interrupted
        run drew, so that the run continues exactly as it would have."""
        for tag, opt in (("w", self.w_opt), ("a", self.a_opt)):
            sd = opt.state_dict()
            state: dict[int, dict] = {}
            for key, value in optimizer_tensors.items():
                t, idx, name = key.split(".", 2)
                if t == tag:
                    state.setdefault(int(idx), {})[name] = value
            sd["state"] = state
            opt.load_state_dict(sd)
        for _ in range(valid_used):
            self._next_valid()

    @property
    def batches_per_epoch(self) -> int:
        return self.data.n_batches("train", self.batch_size, True, self.max_batches)

    # --- one epoch ----------------------------------------------------------------------------
    def epoch(self, epoch: int, warmup_epochs: int, search_epochs: int) -> dict:
        """Weight steps over the train split, with arch steps interleaved after warm-up."""
        nb = self.batches_per_epoch
        warm = epoch < warmup_epochs
        losses, accs, arch_losses = [], [], []
        for i, (x, y) in enumerate(self.data.batches("train", self.batch_size, True,
                                                     seed=self.seed * 1000003 + epoch,
                                                     drop_last=True,
                                                     max_batches=self.max_batches)):
            if warm:
                lr = cosine_lr(self.warmup_lr, epoch * nb + i, warmup_epochs * nb)
            else:
                lr = cosine_lr(self.lr, (epoch - warmup_epochs) * nb + i, search_epochs * nb)
            for g in self.w_opt.param_groups:
                g["lr"] = lr
            loss, acc = self.weight_step(x, y)
            losses.append(loss)
            accs.append(acc)
            if not warm and (i + 1) % self.arch_every == 0:
                arch_losses.append(self.arch_step())
        return {"lr": lr if losses else float("nan"),
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "train_acc": float(np.mean(accs)) if accs else float("nan"),
                "arch_loss": float(np.mean(arch_losses)) if arch_losses else float("nan")}

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One sampled path, CE with label smoothing, SGD (`train`: the weight update)."""
        net = self.net
        net.train()
        net.sample_paths()
        out = net(x)
        loss = F.cross_entropy(out, y, label_smoothing=LABEL_SMOOTHING)
        self.w_opt.zero_grad(set_to_none=True)
        net.alpha.grad = None
        loss.backward()
        self.w_opt.step()
        return float(loss.detach()), accuracy(out.detach(), y)

    # --- architecture steps -------------------------------------------------------------------
    def arch_step(self) -> float:
        if self.grad_mode == "reinforce":
            return self.reinforce_step()
        return self.gradient_step()

    def gradient_step(self) -> float:
        """`gradient_step`: binary gates on a validation batch, CE + latency, Adam on alpha."""
        net = self.net
        x, y = self._next_valid()
        net.train()
        net.binarize(self.grad_mode)
        out = net(x)
        ce = F.cross_entropy(out, y)
        expected = self.expected(net.latency_alpha())
        self.loss.weight = self.controller.weight
        loss = self.loss(ce, expected)
        self.w_opt.zero_grad(set_to_none=True)
        self.a_opt.zero_grad(set_to_none=True)
        loss.backward()
        net.set_arch_param_grad()
        self.a_opt.step()
        if self.grad_mode == "two":
            net.rescale_updated_arch_param()
        net.clear_gates()
        self.w_opt.zero_grad(set_to_none=True)
        self.update_controller()
        return float(loss.detach())

    def reinforce_step(self) -> float:
        """`rl_update_step`: REINFORCE with a moving-average baseline."""
        net = self.net
        x, y = self._next_valid()
        net.train()
        rewards, log_probs = [], []
        for _ in range(self.rl_batch):
            idx = net.sample_paths()
            with torch.no_grad():
                acc = accuracy(net(x), y)
            lat = float(self.predict_ms(idx[None, :])[0])
            power = RL_TRADEOFF * self.controller.weight
            rewards.append(acc * (self.controller.budget_ms / lat) ** power)
            lp = net.log_probs()
            log_probs.append(lp[torch.arange(len(idx)), torch.as_tensor(idx)].sum())
        avg = float(np.mean(rewards))
        if self.rl_baseline is None:
            self.rl_baseline = avg
        else:
            self.rl_baseline += RL_BASELINE_DECAY * (avg - self.rl_baseline)
        adv = torch.tensor(rewards) - self.rl_baseline
        loss = -(adv * torch.stack(log_probs)).mean()
        self.a_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.a_opt.step()
        self.w_opt.zero_grad(set_to_none=True)
        self.update_controller()
        return avg

    def update_controller(self) -> float:
        return self.controller.update(self.controller.latency(self.expected_ms(),
                                                              self.argmax_ms()))

    # --- evaluation ---------------------------------------------------------------------------
    def argmax_ms(self) -> float:
        """Predicted latency (best predictor) of the current argmax network."""
        return float(self.predict_ms(self.net.argmax_indices()[None, :])[0])

    def expected_ms(self) -> float:
        with torch.no_grad():
            return float(self.expected(self.net.masked_alpha()))

    @torch.no_grad()
    def evaluate(self, indices: np.ndarray, split: str = "valid",
                 max_batches: int | None = None) -> float:
        """Accuracy of one path of the supernet (train-mode BatchNorm: batch statistics, as the
        reference's `validate(use_train_mode=True)`; running statistics left untouched)."""
        net = self.net
        net.set_paths(indices)
        net.train()
        correct = total = 0
        bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in bns]
        for m in bns:
            m.momentum = 0.0
        try:
            for x, y in self.data.batches(split, max(self.batch_size, 128), shuffle=False,
                                          max_batches=max_batches):
                correct += int((net(x).argmax(1) == y).sum())
                total += len(y)
        finally:
            for m, mom in zip(bns, saved, strict=True):
                m.momentum = mom
        return correct / total if total else float("nan")


def train_network(model: nn.Module, data: ImageData, epochs: int, batch_size: int, lr: float,
                  seed: int = 0, max_batches: int | None = None,
                  progress: Callable[[dict], None] | None = None,
                  evaluate_each_epoch: bool = True) -> list[dict]:
    """Plain training of one network (`train_arch`): SGD Nesterov, cosine LR, label smoothing;
    BatchNorm statistics recalibrated before each evaluation (`recalibrate_bn`). With
    `evaluate_each_epoch=False` only the last epoch is recalibrated and evaluated."""
    opt = weight_optimizer(list(model.parameters()), lr)
    nb = data.n_batches("train", batch_size, True, max_batches)
    history = []
    for epoch in range(epochs):
        model.train()
        losses = []
        for i, (x, y) in enumerate(data.batches("train", batch_size, True,
                                                seed=seed * 1000003 + epoch, drop_last=True,
                                                max_batches=max_batches)):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(lr, epoch * nb + i, epochs * nb)
            loss = F.cross_entropy(model(x), y, label_smoothing=LABEL_SMOOTHING)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        last = epoch == epochs - 1
        if evaluate_each_epoch or last:
            recalibrate_bn(model, data, seed=seed + epoch)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "valid_acc": evaluate_network(model, data, "valid", batch_size)
               if evaluate_each_epoch or last else float("nan")}
        history.append(row)
        if progress is not None:
            progress({**row, "epochs": epochs})
    return history


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: ImageData, batch_size: int = 128,
                   max_batches: int = 20, seed: int = 0) -> None:
    """Re-estimate BatchNorm running statistics on training batches (cumulative average).

    A network trained for few steps at a high learning rate has running statistics that lag its
    weights; evaluation with them badly underestimates its accuracy. As OFA's
    `set_running_statistics` / SPOS's BN recalibration: reset, then average over `max_batches`.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    try:
        for x, _ in data.batches("train", batch_size, True, seed=seed + 7,
                                 max_batches=max_batches):
            model(x)
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom


@torch.no_grad()
def evaluate_network(model: nn.Module, data: ImageData, split: str, batch_size: int = 128) -> float:
    """Accuracy of a trained network in eval mode (BatchNorm running statistics)."""
    model.eval()
    correct = total = 0
    for x, y in data.batches(split, max(batch_size, 128), shuffle=False):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total if total else float("nan")
