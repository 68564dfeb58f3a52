"""Plans: which attention runs FP8, with which numerics, in which blocks and at which denoising
steps; presets are named plans. Plans are JSON files so that a tuned plan can ship with a model.

A plan is an ordered list of rules. Every attention starts in bf16; each rule that matches an
attention (its kind, its block, the current step) sets it to FP8 with the rule's numerics or back
to bf16; the last matching rule wins.

    {"format": "accel-plan", "version": 1, "rules": [
        {"attention": "self", "fp8": {"granularity": "token", "smooth_k": true}},
        {"attention": "self", "edge_blocks": 0.05, "fp8": null},
        {"steps": [0.0, 0.2], "fp8": null}]}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = "accel-plan"
VERSION = 1
ATTENTION_KINDS = ("self", "cross", "image", "any")
GRANULARITIES = ("head", "token")


class PlanError(ValueError):
    """A plan (file) is malformed; the message names the field."""


@dataclass(frozen=True)
class FP8Config:
    """Numerics of an FP8 attention (see :func:`accel.fp8_sdpa`)."""

    granularity: str = "token"
    smooth_k: bool = True
    smooth_v: bool = False
    smooth_q: bool = False
    hadamard: bool = False
    #: attentions with fewer keys run bf16, where the quantization passes cost more than FP8
    #: saves. None: the measured crossover of the device the call runs on (see
    #: accel.processors.common.CUDA_MIN_KEYS; none on the CPU, where FP8 runs for its numerics).
    min_keys: int | None = None


@dataclass(frozen=True)
class Rule:
    """Where and when a decision applies.

    Attributes:
        fp8: the numerics, or None for bf16.
        attention: "self" (Wan video self-attention, every Flux attention), "cross" (Wan text),
            "image" (Wan image-to-video branch) or "any".
        blocks: block indices (negative count from the end); None: every block.
        edge_blocks: alternatively, the first and last ceil(edge_blocks * n_blocks) blocks.
        steps: [start, end) as fractions of the denoising schedule (0 = first step, pure noise).
    """

    fp8: FP8Config | None
    attention: str = "self"
    blocks: tuple[int, ...] | None = None
    edge_blocks: float | None = None
    steps: tuple[float, float] = (0.0, 1.0)

    def covers(self, kind: str, block: int, n_blocks: int) -> bool:
        if self.attention not in ("any", kind):
            return False
        if self.blocks is not None:
            return block in {b % n_blocks for b in self.blocks}
        if self.edge_blocks is not None:
            edge = math.ceil(self.edge_blocks * n_blocks)
            return block < edge or block >= n_blocks - edge
        return True


@dataclass(frozen=True)
class Schedule:
    """One attention's decision over the denoising progress: sorted (start, end, FP8Config | None)."""

    pieces: tuple[tuple[float, float, FP8Config | None], ...]

    def at(self, progress: float) -> FP8Config | None:
        for start, end, config in self.pieces:
            if start <= progress < end or (end == 1.0 and progress == 1.0):
                return config
        return None

    @property
    def step_dependent(self) -> bool:
        return len({config for _, _, config in self.pieces}) > 1


@dataclass(frozen=True)
class Plan:
    rules: tuple[Rule, ...] = field(default_factory=tuple)
    name: str | None = None

    def schedule(self, kind: str, block: int, n_blocks: int) -> Schedule:
        """The decision for one attention at every point of the denoising progress."""
        matching = [r for r in self.rules if r.covers(kind, block, n_blocks)]
        cuts = sorted({0.0, 1.0, *(x for r in matching for x in r.steps)})
        pieces = []
        for start, end in zip(cuts, cuts[1:]):
            decision = None
            for rule in matching:
                if rule.steps[0] <= start and end <= rule.steps[1]:
                    decision = rule.fp8
            if pieces and pieces[-1][2] == decision:
                pieces[-1] = (pieces[-1][0], end, decision)
            else:
                pieces.append((start, end, decision))
        return Schedule(tuple(pieces))

    # --- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        rules = []
        for r in self.rules:
            d: dict = {"attention": r.attention,
                       "fp8": None if r.fp8 is None else {"granularity": r.fp8.granularity,
                                                          "smooth_k": r.fp8.smooth_k,
                                                          "smooth_v": r.fp8.smooth_v,
                                                          "smooth_q": r.fp8.smooth_q,
                                                          "hadamard": r.fp8.hadamard,
                                                          "min_keys": r.fp8.min_keys}}
            if r.blocks is not None:
                d["blocks"] = list(r.blocks)
            if r.edge_blocks is not None:
                d["edge_blocks"] = r.edge_blocks
            if r.steps != (0.0, 1.0):
                d["steps"] = list(r.steps)
            rules.append(d)
        return {"format": FORMAT, "version": VERSION, **({"name": self.name} if self.name else {}), "rules": rules}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data) -> Plan:
        if not isinstance(data, dict):
            raise PlanError(f"a plan is a JSON object, got {type(data).__name__}")
        _check_keys(data, {"format", "version", "name", "rules"}, "plan")
        if data.get("format") != FORMAT:
            raise PlanError(f"format: expected {FORMAT!r}, got {data.get('format')!r}")
        if data.get("version") != VERSION:
            raise PlanError(f"version: this accel reads version {VERSION}, got {data.get('version')!r}")
        rules = data.get("rules")
        if not isinstance(rules, list):
            raise PlanError("rules: expected a list of rules")
        return cls(tuple(_rule_from_dict(r, f"rules[{i}]") for i, r in enumerate(rules)), data.get("name"))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise PlanError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _check_keys(d: dict, allowed: set, where: str) -> None:
    unknown = set(d) - allowed
    if unknown:
        raise PlanError(f"{where}.{sorted(unknown)[0]}: unknown field; expected one of {sorted(allowed)}")


def _rule_from_dict(d, where: str) -> Rule:
    if not isinstance(d, dict):
        raise PlanError(f"{where}: expected an object")
    _check_keys(d, {"attention", "fp8", "blocks", "edge_blocks", "steps"}, where)
    if "fp8" not in d:
        raise PlanError(f"{where}.fp8: required (null for bf16, or {{\"granularity\": ..., \"smooth_k\": ...}})")
    fp8 = d["fp8"]
    if fp8 is not None:
        if not isinstance(fp8, dict):
            raise PlanError(f"{where}.fp8: expected null or an object")
        _check_keys(fp8, {"granularity", "smooth_k", "smooth_v", "smooth_q", "hadamard", "min_keys"},
                    f"{where}.fp8")
        granularity = fp8.get("granularity", "token")
        if granularity not in GRANULARITIES:
            raise PlanError(f"{where}.fp8.granularity: expected one of {GRANULARITIES}, got {granularity!r}")
        flags = {"smooth_k": fp8.get("smooth_k", True), "smooth_v": fp8.get("smooth_v", False),
                 "smooth_q": fp8.get("smooth_q", False), "hadamard": fp8.get("hadamard", False)}
        for flag, value in flags.items():
            if not isinstance(value, bool):
                raise PlanError(f"{where}.fp8.{flag}: expected true or false, got {value!r}")
        min_keys = fp8.get("min_keys")
        if min_keys is not None and not (isinstance(min_keys, int) and not isinstance(min_keys, bool)
                                         and min_keys >= 0):
            raise PlanError(f"{where}.fp8.min_keys: expected null (the device's crossover) or a whole "
                            f"number >= 0, got {min_keys!r}")
        fp8 = FP8Config(granularity, **flags, min_keys=min_keys)
    attention = d.get("attention", "self")
    if attention not in ATTENTION_KINDS:
        raise PlanError(f"{where}.attention: expected one of {ATTENTION_KINDS}, got {attention!r}")
    blocks = d.get("blocks")
    if blocks is not None and not (isinstance(blocks, list) and all(isinstance(b, int) and not isinstance(b, bool)
                                                                     for b in blocks)):
        raise PlanError(f"{where}.blocks: expected a list of block indices")
    edge = d.get("edge_blocks")
    if edge is not None and not (isinstance(edge, (int, float)) and 0 <= edge <= 0.5):
        raise PlanError(f"{where}.edge_blocks: expected a fraction in [0, 0.5], got {edge!r}")
    if blocks is not None and edge is not None:
        raise PlanError(f"{where}: give blocks or edge_blocks, not both")
    steps = d.get("steps", [0.0, 1.0])
    if not (isinstance(steps, list) and len(steps) == 2 and all(isinstance(x, (int, float)) for x in steps)
            and 0 <= steps[0] < steps[1] <= 1):
        raise PlanError(f"{where}.steps: expected [start, end] with 0 <= start < end <= 1, got {steps!r}")
    return Rule(fp8, attention, None if blocks is None else tuple(blocks), edge,
                (float(steps[0]), float(steps[1])))


_HEAD_SMOOTHED = FP8Config("head", smooth_k=True, smooth_v=True)
_TOKEN_SMOOTHED = FP8Config("token", smooth_k=True, smooth_v=True)
_EDGES_BF16 = Rule(None, edge_blocks=0.05)

#: Named plans. ``speed``: every self-attention FP8 with one scale per head (``auto``: our Gluon
#: kernel at D = 128 on Hopper, else FA3's kernel when it is installed). ``balanced``: one scale
#: per head with smooth_k and smooth_v, the first and last ~5% of blocks bf16. ``quality``:
#: per-token scales with smooth_k and smooth_v, the same edge blocks bf16, and bf16 everywhere for
#: the first ~20% and last ~10% of the denoising steps, where the layout of the image and its fine
#: detail are decided. On a GPU all of them keep attentions
#: shorter than the measured crossover (FP8Config.min_keys) in bf16.
#: smooth_v is exact and costs one add per output element; it cut the per-block attention error of
#: a random-weight Wan-1.3B at 480p from 0.11-0.20 to 0.009-0.015 (rel. L2; H200). Per-token
#: scales gave ``balanced`` no measurable gain there (final latent 0.0157 against 0.0158 with one
#: scale per head; Flux 2048x2048 0.0060 both) for 1.07x instead of 1.30x cuDNN (H200,
#: benchmarks/RESULTS.md, 2026-12-02), so they stay in ``quality``, for real models' outlier
#: channels, where they lower the error by 10-20% (activation-like inputs, kernel benchmark).
PRESETS: dict[str, Plan] = {
    "off": Plan((), "off"),
    "speed": Plan((Rule(FP8Config("head", True)),), "speed"),
    "balanced": Plan((Rule(_HEAD_SMOOTHED), _EDGES_BF16), "balanced"),
    "quality": Plan((Rule(_TOKEN_SMOOTHED), _EDGES_BF16, Rule(None, "any", steps=(0.0, 0.2)),
                     Rule(None, "any", steps=(0.9, 1.0))), "quality"),
}


def resolve_plan(preset: str | None, plan: Plan | str | Path | None) -> Plan:
    """A Plan from ``plan`` (object or JSON path) if given, else the named preset."""
    if plan is not None:
        return plan if isinstance(plan, Plan) else Plan.load(plan)
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    return PRESETS[preset]
