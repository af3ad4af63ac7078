"""``model.size: auto``: measure this machine, then choose the model and its training for the budget.

Before training, a probe times a few real training steps (forward, backward, clipping, AdamW) of two
or three LSTM widths at each precision the device can use, within about 3 % of a time budget, and
fits each precision's cost per token as a line in the model's arithmetic (``SpeedModel``). For every
candidate width that gives the tokens it can read in the budget; the rule (``choose``, a pure
function) takes the width whose tokens per parameter come closest to the target for the budget's
compute (``target_ratio``: fewer per parameter as the compute grows), the faster precision for it, a
learning rate for its width and dropout for the passes over the text it will make. The constants
come from the sweeps in ``configs/sweeps/auto/`` (``make auto-measure`` reruns them; the evidence is
in ``docs/auto.md``). Every key the user gave wins.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    import torch

    from charlm.config import Config, TrainConfig

# The constants of the rule, each fitted to the sweeps of configs/sweeps/auto/: docs/auto.md shows the
# runs behind every one (make auto-measure reruns them).
WIDTHS = (128, 192, 256, 320, 384, 448, 512, 640, 768)  # two-layer LSTMs; wider ones stalled
PROBE_WIDTH = 256  # timed first, in every precision; then one of SIDE_WIDTHS, on the side of the choice
SIDE_WIDTHS = (128, 512)  # the others are predicted from the line through the two
PROBE_SHARE = 0.03  # of a time budget, at most
TIMED_SECONDS = 0.25  # each timing runs steps for at least this long
PROBE_SECONDS = 3.0  # without a time budget (steps or epochs), the probe only chooses the precision
EVAL_SHARE = 0.03  # of the budget that evaluations during training may take
# A lower precision must be this much faster to be chosen: near a tie the timings are noise (two runs
# would choose differently), and fp32 is the more accurate.
PRECISION_MARGIN = 1.15
# The tokens per parameter that train best fall as a budget's compute grows: a power law through the
# measured optima, with (about) the exponent Kaplan et al. (2020) fitted for transformers.
TOKENS_PER_PARAMETER = 4.0  # at REFERENCE_COMPUTE
REFERENCE_COMPUTE = 3e12  # tokens x parameters
COMPUTE_EXPONENT = 0.5
# Dropout only for a run that reads its text many times over, and more where the text holds few
# distinct tokens per parameter.
DROPOUT_FROM_PASSES = 4.5
DROPOUT, MOST_DROPOUT = 0.25, 0.5
FEW_TOKENS_PER_PARAMETER = 0.12
EMBEDDING = 64
# The horizon: from this many passes over the text the text binds a run, not the compute (it memorises), and
# the rule regularises as AWD-LSTM does: one dropout mask per sequence and the activation penalties, which
# at ten minutes on tinyshakespeare gained 0.04-0.05 over dropout alone (docs/auto.md, "The horizon").
TEXT_BINDS_FROM = DROPOUT_FROM_PASSES
REGULARISERS = {"model.dropout_mask": "locked", "train.ar": 2.0, "train.tar": 1.0}
# The most compute (tokens x parameters) of the runs the rule was fitted and checked on (ten minutes of a
# 2x768 on 2 cores); past it the auto: line says the choice is extrapolated.
MEASURED_COMPUTE = 4e13
# The other family the rule weighs: min cells in residual blocks (charlm/model/cells.py) whose gates read their
# last two inputs, the one that learned most of those measured (docs/auto.md).
MIN_FAMILY = dict(cell="mingru", layers=4, block="residual", ffn=2, input_conv=2)
# What its compute (tokens x parameters) is worth against the LSTM's, from side-by-side runs on three CPUs
# (docs/auto.md): about twice as much up to 1e12 (a minute on two cores), falling to a third by 1.4e13 (ten).
WORTH_AT_LOW, LOW_COMPUTE, WORTH_FALL = 2.0, 1e12, 0.6
FAMILY_KEYS = ("model.cell", "model.num_layers", "model.block", "model.ffn", "model.norm", "model.embedding_size",
               "model.input_conv")


@dataclass(frozen=True)
class Shape:
    """A candidate model and its batches."""

    hidden: int
    layers: int = 2
    embedding: int = EMBEDDING
    cell: str = "lstm"
    batch: int = 32
    seq_len: int = 64
    block: str = "plain"
    ffn: int = 0
    norm: str = "layer"
    input_conv: int = 1

    def __post_init__(self) -> None:
        # each layer adds its output to its input, or carries its last inputs in the state: as wide as the cells
        if self.block == "residual" or self.input_conv > 1:
            object.__setattr__(self, "embedding", self.hidden)

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len

    def parameters(self, vocab: int) -> int:
        """As CharRNN counts them (torch's two bias vectors per gate of a classic cell, one of a min cell;
        a residual block's norms and feed-forward part; the embedding and the head)."""
        from charlm.model.cells import GATES, MIN_CELLS

        hidden, gates = self.hidden, GATES[self.cell] * self.hidden
        own = 0 if self.cell in MIN_CELLS else gates * hidden + gates  # hidden-to-hidden weights, b_hh
        widths = [self.embedding] + [hidden] * (self.layers - 1)
        recurrent = sum(gates * width * self.input_conv + gates + own for width in widths)
        if self.block == "residual":
            norm = {"layer": 2, "rms": 1, "none": 0}[self.norm] * hidden
            ffn = 2 * self.ffn * hidden * hidden + self.ffn * hidden + hidden if self.ffn else 0
            recurrent += self.layers * (norm * (2 if self.ffn else 1) + ffn) + norm
        return vocab * self.embedding + recurrent + (hidden + 1) * vocab

    def flops_per_token(self, vocab: int) -> float:
        """Multiply-adds of one token's forward pass, times 2; training does about 3 times that."""
        return 2.0 * (self.parameters(vocab) - vocab * self.embedding)

    def describe(self) -> str:
        from charlm.model.cells import describe_shape

        return describe_shape(self.layers, self.hidden, self.cell, self.block, self.ffn, self.input_conv)


@dataclass
class SpeedModel:
    """Seconds per training token at each precision, as ``base + per_flop * flops_per_token``,
    fitted to the probe's timings (one timing: proportional to the arithmetic)."""

    lines: dict[str, tuple[float, float]]  # precision -> (base, per_flop)
    timings: list[dict[str, Any]] = field(default_factory=list)  # what the probe measured

    def tokens_per_s(self, shape: Shape, precision: str, vocab: int) -> float:
        base, per_flop = self.lines[precision]
        return 1.0 / max(base + per_flop * shape.flops_per_token(vocab), 1e-12)

    def like(self, timing: dict[str, Any]) -> "SpeedModel":
        """Another family's speeds from one timing of it, with this line's cost per token that does
        not grow with the model (embedding, head, optimizer, the loop): its timing gives the rest."""
        base, _ = self.lines[timing["precision"]]
        per_flop = max(timing["seconds_per_token"] - base, 0.0) / timing["flops"]
        return SpeedModel({timing["precision"]: (base, per_flop)}, [timing])

    @classmethod
    def fit(cls, timings: list[dict[str, Any]]) -> "SpeedModel":
        lines = {}
        for precision in dict.fromkeys(t["precision"] for t in timings):
            points = [(t["flops"], t["seconds_per_token"]) for t in timings if t["precision"] == precision]
            if len(points) == 1:
                lines[precision] = (0.0, points[0][1] / points[0][0])
                continue
            (x0, y0), (x1, y1) = min(points), max(points)
            per_flop = max((y1 - y0) / (x1 - x0), 0.0) if x1 > x0 else y1 / x1
            lines[precision] = (max(y0 - per_flop * x0, 0.0), per_flop)
        return cls(lines, timings)


# ---- the probe ----------------------------------------------------------------------------------

def _sync(device: "torch.device") -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(device: "torch.device", precisions: list[str], cell: str) -> None:
    """One tiny training step in each precision first: the first step starts the CUDA context and cuDNN and
    picks kernels on a GPU, and the first optimizer imports half of torch (1.6 s on a CPU): paid by any
    run, so no timing should count it."""
    for precision in precisions if device.type != "cpu" else ["fp32"]:  # a CPU has no kernels to pick
        Trial(Shape(16, 1, 8, cell, batch=2, seq_len=4), precision, 8, device).step()


class Trial:
    """A model of ``shape`` training on random characters, one real step at a time: forward from the carried
    state, loss, backward, clipping, a fused AdamW update."""

    def __init__(self, shape: Shape, precision: str, vocab: int, device: "torch.device") -> None:
        import torch

        from charlm.model.network import CharRNN
        from charlm.runtime import fused_kernels

        generator = torch.Generator().manual_seed(0)  # not the global one: training's seeds stay as they were
        self.shape, self.precision, self.device = shape, precision, device
        self.model = CharRNN(vocab, shape.cell, shape.hidden, shape.embedding, shape.layers, block=shape.block,
                             ffn=shape.ffn, norm=shape.norm, input_conv=shape.input_conv).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), fused=fused_kernels(device))
        self.tokens = torch.randint(0, vocab, (shape.batch, shape.seq_len + 1), generator=generator).to(device)
        self.state: Any = None

    def step(self) -> float:
        """One training step; its seconds, waited for on a GPU (which queues steps)."""
        import torch
        import torch.nn.functional as F

        from charlm.runtime import autocast, fused_kernels

        started = time.perf_counter()
        with autocast(self.device, self.precision):
            logits, state = self.model(self.tokens[:, :-1], self.state)
        loss = F.cross_entropy(logits.float().flatten(0, 1), self.tokens[:, 1:].flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0, foreach=fused_kernels(self.device))
        self.optimizer.step()
        self.state = tuple(t.detach() for t in state)
        _sync(self.device)
        return time.perf_counter() - started


def time_trainings(runs: "list[tuple[Shape, str]]", vocab: int, device: "torch.device",
                   min_seconds: float = TIMED_SECONDS) -> list[float]:
    """Seconds per token of each (shape, precision)'s real training steps: two steps each to warm up, then
    one step of each in turn, until each has three and all together ``min_seconds`` apiece; each run's
    median step. Taking turns puts whatever else the machine does meanwhile on every run alike, so the
    ratios that choose a precision or a family hold even where single timings swing by a third."""
    trials = [Trial(shape, precision, vocab, device) for shape, precision in runs]
    for trial in trials:
        trial.step(), trial.step()
    steps: list[list[float]] = [[] for _ in trials]
    started = time.perf_counter()
    while len(steps[0]) < 3 or time.perf_counter() - started < min_seconds * len(trials):
        for trial, seconds in zip(trials, steps):
            seconds.append(trial.step())
    return [statistics.median(seconds) / trial.shape.tokens_per_step for trial, seconds in zip(trials, steps)]


# ---- the rule -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """What a run may spend: whichever of its limits comes first."""

    seconds: float | None = None
    steps: int | None = None
    epochs: float | None = None

    @classmethod
    def of(cls, train: "TrainConfig") -> "Budget":
        return cls(train.max_time, train.max_steps, train.max_epochs)

    @property
    def unlimited(self) -> bool:
        """No limit at all (every one null): nothing to size a model for."""
        return not (self.seconds or self.steps or self.epochs)

    def tokens(self, tokens_per_s: float, tokens_per_step: int, train_tokens: int, spent: float = 0.0) -> float:
        """Training tokens the budget allows at ``tokens_per_s`` (``spent``: seconds already used)."""
        limits = [math.inf]
        if self.seconds:
            limits.append(max(self.seconds * (1 - EVAL_SHARE) - spent, 0.0) * tokens_per_s)
        if self.steps:
            limits.append(self.steps * tokens_per_step)
        if self.epochs:
            limits.append(self.epochs * train_tokens)
        return min(limits)


@dataclass
class Choice:
    shape: Shape
    precision: str
    lr: float
    dropout: float
    eval_interval: int
    tokens_per_s: float
    tokens: float  # expected over the run
    epochs: float  # passes over the training text
    parameters: int

    @property
    def compute(self) -> float:
        """Tokens x parameters in the budget: what the rule weighs."""
        return self.tokens * self.parameters

    @property
    def text_binds(self) -> bool:
        """Whether the run reads its text often enough to memorise it (the horizon)."""
        return self.tokens != math.inf and self.epochs >= TEXT_BINDS_FROM

    def regularisers(self) -> dict[str, Any]:
        """What the horizon sets beyond dropout: the off values where the compute binds."""
        return dict(REGULARISERS) if self.text_binds else {"model.dropout_mask": "element", "train.ar": 0.0,
                                                           "train.tar": 0.0}

    def settings(self) -> dict[str, Any]:
        """The config keys auto sets (those the user did not)."""
        s = self.shape
        return {**self.regularisers(), "model.cell": s.cell, "model.hidden_size": s.hidden, "model.num_layers": s.layers,
                "model.embedding_size": s.embedding, "model.block": s.block, "model.ffn": s.ffn, "model.norm": s.norm,
                "model.input_conv": s.input_conv, "model.dropout": self.dropout, "model.forget_bias": 0.0,
                "train.lr": self.lr, "train.batch_size": s.batch, "train.seq_len": s.seq_len,
                "train.precision": self.precision, "train.eval_interval": self.eval_interval}


def faster(rates: dict[str, float]) -> str:
    """The precision to train in, given tokens/s at each: fp32 unless another is PRECISION_MARGIN faster."""
    best = max(rates, key=rates.get)
    return best if "fp32" not in rates or rates[best] >= PRECISION_MARGIN * rates["fp32"] else "fp32"


def learning_rate_for(hidden: int) -> float:
    """AdamW's peak rate for a width, through the best measured at 256 and at 768; never above 8e-3."""
    return min(8e-3, 8e-3 * (256 / hidden) ** 0.63)


def dropout_for(passes: float, text_per_parameter: float) -> float:
    """Dropout for the passes over the text a run will make and the distinct tokens it holds a parameter."""
    if passes < DROPOUT_FROM_PASSES:
        return 0.0
    scarcity = math.log2(FEW_TOKENS_PER_PARAMETER / max(text_per_parameter, 1e-9))
    return DROPOUT + (MOST_DROPOUT - DROPOUT) * min(max(scarcity, 0.0), 1.0)


def target_ratio(compute: float) -> float:
    """The tokens per parameter that train best for a budget of ``compute`` (tokens x parameters)."""
    return TOKENS_PER_PARAMETER * (max(compute, 1.0) / REFERENCE_COMPUTE) ** -COMPUTE_EXPONENT


class Candidate(NamedTuple):
    """A width the rule weighs, at the faster precision for it."""

    shape: Shape
    precision: str
    tokens_per_s: float
    tokens: float  # in the budget
    parameters: int

    def miss(self) -> float:
        """How far (in log) its tokens per parameter lie from the target for its compute."""
        tokens = max(self.tokens, 1.0)
        return abs(math.log(tokens / (self.parameters * target_ratio(tokens * self.parameters))))


def choose(speeds: SpeedModel, budget: Budget, train_tokens: int, vocab: int, spent: float = 0.0,
           eval_tokens: int = 0, template: Shape | None = None, widths: tuple[int, ...] = WIDTHS) -> Choice:
    """The rule, given measured speeds: of ``widths`` (of ``template``'s shape), the one whose tokens per
    parameter in the budget come closest to ``target_ratio`` for its compute, at the faster precision for
    it (bf16 only if clearly faster on this machine), with a learning rate for its width, dropout for its
    passes over the text, and about one evaluation a minute."""
    template = template or Shape(256)
    candidates = []
    for width in widths:
        shape = replace(template, hidden=width, embedding=min(template.embedding, width))
        precision = faster({p: speeds.tokens_per_s(shape, p, vocab) for p in speeds.lines})
        rate = speeds.tokens_per_s(shape, precision, vocab)
        tokens = budget.tokens(rate, shape.tokens_per_step, train_tokens, spent)
        candidates.append(Candidate(shape, precision, rate, tokens, shape.parameters(vocab)))
    if budget.unlimited:  # nothing to fit: the default width
        shape, precision, rate, tokens, parameters = min(candidates, key=lambda c: abs(math.log(c.shape.hidden / 256)))
        return Choice(shape, precision, learning_rate_for(shape.hidden), 0.0, 250, rate, tokens, tokens, parameters)
    shape, precision, rate, tokens, parameters = min(candidates, key=Candidate.miss)
    epochs = tokens / max(train_tokens, 1)
    steps = max(1, int(tokens // shape.tokens_per_step))
    evals = 10
    if budget.seconds:  # about one a minute, within EVAL_SHARE (forward only: a third of a step's work a token)
        affordable = EVAL_SHARE * budget.seconds * rate * 3 / eval_tokens if eval_tokens else math.inf
        evals = int(max(1, min(20, budget.seconds // 60, affordable)))
    lr = float(f"{learning_rate_for(shape.hidden):.2g}")  # rounded as a person writes them
    dropout = round(dropout_for(epochs, train_tokens / parameters), 2)
    return Choice(shape, precision, lr, dropout, max(1, math.ceil(steps / evals)), rate, tokens, epochs, parameters)


def min_cell_worth(compute: float) -> float:
    """What the min family's ``compute`` is worth in the LSTM's: it learns faster at first and levels off sooner."""
    return WORTH_AT_LOW * min(1.0, (compute / LOW_COMPUTE) ** -WORTH_FALL)


def better(lstm: Choice, rival: Choice, worth: Callable[[float], float] = min_cell_worth) -> Choice:
    """The choice that learns more: compute (tokens x parameters) in the budget, the rival's counted at
    ``worth`` of it in the LSTM's. A run with no budget keeps the LSTM, and so does one past the horizon
    (either would read its text often enough to memorise it): there the min family lost by 0.06-0.18
    (docs/auto.md, "The horizon")."""
    if lstm.tokens == math.inf or rival.tokens == math.inf or lstm.text_binds or rival.text_binds:
        return lstm
    return rival if worth(rival.compute) * rival.compute > lstm.compute else lstm


# ---- from a config to a choice ----------------------------------------------------------------

SHAPE_KEYS = {"cell": "model.cell", "hidden": "model.hidden_size", "layers": "model.num_layers",
              "embedding": "model.embedding_size", "batch": "train.batch_size", "seq_len": "train.seq_len",
              "block": "model.block", "ffn": "model.ffn", "norm": "model.norm", "input_conv": "model.input_conv"}


@dataclass
class Decision:
    """What auto measured and chose, and the config keys it set."""

    choice: Choice | None  # None: only the precision was chosen (model.size fixed)
    speeds: SpeedModel
    probe_seconds: float
    proposed: dict[str, Any]  # what the rule chose
    budget: Budget
    settings: dict[str, Any] = field(default_factory=dict)  # what it sets: the proposed keys the user did not give
    given: dict[str, Any] = field(default_factory=dict)  # the proposed keys the user gave, as given: they win

    @property
    def run(self) -> dict[str, Any]:
        """The proposed keys as the run will have them: a key the user gave wins."""
        return {**self.proposed, **self.given}

    def line(self, text_bytes: int) -> str:
        """One line on what was chosen and why."""
        c = self.choice
        if c is None:
            rates = ", ".join(f"{t['tokens_per_s'] / 1000:.0f}k tok/s in {t['precision']}" for t in self.speeds.timings)
            return f"auto: precision {self.proposed['train.precision']} — {rates} for this {self.speeds.timings[0]['shape']}"
        budget = self.budget
        if budget.unlimited:
            return (f"auto: {c.shape.describe()} {c.precision}, lr {c.lr:.2g} — {c.tokens_per_s / 1000:.0f}k tok/s"
                    " here; no budget was given (max_time, max_steps or max_epochs), so the default width")
        spend = (f"in {_duration(budget.seconds)}" if budget.seconds else
                 f"in {budget.steps:,} steps" if budget.steps else f"in {budget.epochs:g} epochs")
        run = self.run
        return (f"auto: {c.shape.describe()} {run['train.precision']}, lr {run['train.lr']:.2g},"
                f" dropout {run['model.dropout']:.2g} —"
                f" {c.tokens_per_s / 1000:.0f}k tok/s here, ~{_count(c.tokens)} tokens {spend}"
                f" ({c.tokens / c.parameters:.1f} per parameter, {c.epochs:.1f} passes over a"
                f" {text_bytes / 1e6:.1f} MB text); {self.horizon()}")

    def horizon(self) -> str:
        """Which regime the budget is in, what that set (as the run has it: a key given wins), and whether
        the choice lies past the runs the rule was fitted on."""
        c = self.choice
        assert c is not None
        if c.text_binds:
            mask, ar, tar = (self.run[key] for key in ("model.dropout_mask", "train.ar", "train.tar"))
            said = (f"the text binds (from {TEXT_BINDS_FROM:g} passes on): {mask} dropout masks,"
                    f" AR {ar:g}, TAR {tar:g}")
        else:
            said = f"the compute binds (under {TEXT_BINDS_FROM:g} passes): no dropout or activation penalties chosen"
        if c.compute > MEASURED_COMPUTE:
            said += (f"; {c.compute:.0e} tokens x parameters is past the longest runs the rule was"
                     f" fitted on ({MEASURED_COMPUTE:.0e}): extrapolated")
        return said

    def event(self) -> dict[str, Any]:
        """The ``probe`` event of metrics.jsonl."""
        expected = {} if self.choice is None or self.budget.unlimited else {
            "tokens_per_s": round(self.choice.tokens_per_s), "expected_tokens": round(self.choice.tokens),
            "passes": round(self.choice.epochs, 2), "regime": "text" if self.choice.text_binds else "compute",
            "compute": float(f"{self.choice.compute:.3g}")}
        return {"seconds": round(self.probe_seconds, 3), "timings": self.speeds.timings, "chosen": self.settings,
                **expected}


def _duration(seconds: float) -> str:
    from charlm.config import format_duration

    return format_duration(seconds)


def _count(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def template(config: "Config", fixed: "Collection[str]") -> tuple[Shape, tuple[int, ...]]:
    """The candidate shape with the ``fixed`` keys (those the user gave) as the config has them, and
    the widths left to choose from."""
    m, t = config.model, config.train
    values = {"cell": m.cell, "hidden": m.hidden_size, "layers": m.num_layers,
              "embedding": m.embedding_size or m.hidden_size, "batch": t.batch_size, "seq_len": t.seq_len,
              "block": m.block, "ffn": m.ffn, "norm": m.norm, "input_conv": m.input_conv}
    kept = {name: values[name] for name, key in SHAPE_KEYS.items() if key in fixed}
    if "embedding" not in kept and "hidden" in kept:
        kept["embedding"] = min(EMBEDDING, kept["hidden"])
    shape = replace(Shape(kept.get("hidden", 256)), **{k: v for k, v in kept.items() if k != "hidden"})
    return shape, (kept["hidden"],) if "hidden" in kept else WIDTHS


@dataclass(frozen=True)
class Text:
    """What the rule needs to know of a run's text."""

    train_tokens: int
    eval_tokens: int  # what an evaluation during training reads
    vocab: int
    window_length: float | None = None  # a training example's length, where the text fixes it (lines)


def _timings(runs: "list[tuple[Shape, str]]", vocab: int, device: "torch.device") -> list[dict[str, Any]]:
    return [{"shape": shape.describe(), "precision": precision, "flops": shape.flops_per_token(vocab),
             "seconds_per_token": seconds, "tokens_per_s": round(1 / seconds)}
            for (shape, precision), seconds in zip(runs, time_trainings(runs, vocab, device))]


def _at(shape: Shape, width: int) -> Shape:
    return replace(shape, hidden=width, embedding=min(shape.embedding, width))


def probe(shape: Shape, widths: tuple[int, ...], rival: Shape | None, precisions: list[str], allowance: float,
          vocab: int, device: "torch.device", width_for: Callable[[SpeedModel, Shape], int]
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The LSTM's timings and the rival family's (none: not timed). Every precision side by side at one width
    first (that settles which is faster); then, while within ``allowance`` seconds, the faster one at a second
    width on the side of the width those timings would choose (``width_for``), beside the rival at the width
    they would choose for it; then the rival once more where its own timing would choose another width (a min
    family's elementwise work does not shrink with its arithmetic, so a line through one timing overrates it
    narrower). Each is timed near where the rule will choose."""
    first = widths[0] if len(widths) == 1 else PROBE_WIDTH
    started = time.perf_counter()
    timings = _timings([(_at(shape, first), precision) for precision in precisions], vocab, device)
    precision, rough = faster({t["precision"]: t["tokens_per_s"] for t in timings}), SpeedModel.fit(timings)
    later = [] if len(widths) == 1 else [(_at(shape, SIDE_WIDTHS[width_for(rough, shape) > first]), precision)]
    rival_width = width_for(rough, rival) if rival and len(widths) > 1 else first
    if rival:
        later.append((_at(rival, rival_width), precision))
    if not later or time.perf_counter() - started > allowance:
        return timings, []
    more = _timings(later, vocab, device)
    timings += more[:1] if len(widths) > 1 else []
    if not rival:
        return timings, []
    family = more[-1:]
    width = width_for(family_speeds(SpeedModel.fit(timings), family), rival)
    if width != rival_width and time.perf_counter() - started <= allowance:
        family += _timings([(_at(rival, width), precision)], vocab, device)
    return timings, family


def family_speeds(lstm: SpeedModel, timings: list[dict[str, Any]]) -> SpeedModel:
    """The rival family's speeds: its own line through two timings, or one timing on the LSTM's base."""
    return SpeedModel.fit(timings) if len(timings) > 1 else lstm.like(timings[0])


def decide(config: "Config", fixed: "Collection[str]", text: Text, device: "torch.device",
           precisions: list[str]) -> Decision:
    """Probe this machine (within PROBE_SHARE of a time budget) and choose every key not in ``fixed``."""
    shape, widths = template(config, fixed)
    if text.window_length is not None:  # the text cuts its own windows (a list: a line each): time them so, set none
        if "train.seq_len" not in fixed:
            shape = replace(shape, seq_len=max(2, round(text.window_length)))
        fixed = frozenset(fixed) | {"train.seq_len"}
    vocab, budget = text.vocab, Budget.of(config.train)
    family = None if any(key in fixed for key in FAMILY_KEYS) else replace(shape, **MIN_FAMILY)
    warm_up(device, precisions, shape.cell)
    started = time.perf_counter()

    def width_for(speeds: SpeedModel, of: Shape) -> int:
        spent = time.perf_counter() - started
        return choose(speeds, budget, text.train_tokens, vocab, spent, text.eval_tokens, of, widths).shape.hidden

    allowance = PROBE_SHARE * budget.seconds if budget.seconds else PROBE_SECONDS
    timings, family_timings = probe(shape, widths, family, precisions, allowance, vocab, device, width_for)
    speeds = SpeedModel.fit(timings)
    choice = choose(speeds, budget, text.train_tokens, vocab, time.perf_counter() - started, text.eval_tokens,
                    shape, widths)
    if family_timings:
        rival = choose(family_speeds(speeds, family_timings), budget, text.train_tokens, vocab,
                       time.perf_counter() - started, text.eval_tokens, family, widths)
        choice = better(choice, rival)
        speeds = SpeedModel(speeds.lines, timings + family_timings)  # the LSTM's lines; every timing reported
    proposed = choice.settings()
    given = {key: getattr(getattr(config, key.split(".")[0]), key.split(".")[1]) for key in proposed if key in fixed}
    return Decision(choice, speeds, time.perf_counter() - started, proposed, budget, _unfixed(proposed, fixed), given)


def decide_precision(config: "Config", fixed: "Collection[str]", vocab: int, device: "torch.device",
                     precisions: list[str]) -> Decision:
    """model.size fixed, precision auto: time the configured shape at each precision and take the faster
    (bf16 only where it is faster here: a GRU on a CPU is often no faster in bf16 than in fp32)."""
    m, t = config.model, config.train
    shape = Shape(m.hidden_size, m.num_layers, m.embedding_size or m.hidden_size, m.cell, t.batch_size, t.seq_len,
                  m.block, m.ffn, m.norm, m.input_conv)
    warm_up(device, precisions, shape.cell)
    started = time.perf_counter()
    timings = _timings([(shape, precision) for precision in precisions], vocab, device)
    proposed = {"train.precision": faster({t["precision"]: t["tokens_per_s"] for t in timings})}
    return Decision(None, SpeedModel.fit(timings), time.perf_counter() - started, proposed, Budget.of(t),
                    _unfixed(proposed, fixed))


def _unfixed(proposed: dict[str, Any], fixed: "Collection[str]") -> dict[str, Any]:
    return {key: value for key, value in proposed.items() if key not in fixed}


def apply(config: "Config", settings: dict[str, Any]) -> "Config":
    """``config`` with what auto chose (``Decision.settings``) applied, validated: a new config."""
    from charlm.config import with_settings

    return with_settings(config, settings, "model.size auto")
