"""Guidance as a first-class schedule: which model branches to evaluate at each step and how to mix them.

A *branch* is one conditioning of the transformer, named by (text, image, audio):
text "pos" (the prompt, T) or "neg" (the negative prompt, N); image "ref" (the reference, I) or "null" (∅);
audio "on" (A) or "off" (zero windows, 0). The pipeline maps "ref"/"null" to each variant's conditioning
(17B: y_c / y_∅; 1.7B: reference slot = z_ref / zeros), see reference/humo-official.md §4.6.

A *phase* is a set of weights {branch: w}; the guided prediction is Σ_k w_k · v(branch_k). Every official formula
is a nest of differences, s_1·[v_1 − v_2] + s_2·[v_2 − v_3] + v_3, whose weights sum to 1. A *schedule* is an
ordered list of phases chosen by the integer timestep: a phase with `above=t0` applies while t > t0 (strict, as in
the official 17B switch), a phase with `above=None` always applies; the first matching phase wins.

Presets reproduce §4.8 exactly:
- 17B TIA: t > 980: s_a[v(T,I,A) − v(T,I,0)] + s_t[v(T,I,0) − v(N,I,0)] + v(N,I,0);
  otherwise s_a[v(T,I,A) − v(T,I,0)] + (s_t − 2)[v(T,I,0) − v(N,∅,0)] + v(N,∅,0). 3 passes per step.
- 17B TA: s_a[v(T,∅,A) − v(T,∅,0)] + s_t[v(T,∅,0) − v(N,∅,0)] + v(N,∅,0).
- 1.7B TIA: s_i[v(T,I,A) − v(T,∅,A)] + s_a[v(T,∅,A) − v(T,∅,0)] + s_t[v(T,∅,0) − v(N,∅,0)] + v(N,∅,0). 4 passes.
- 1.7B TA: as 17B TA with the 1.7B scales.
Extensions (no official code path): TI mode s_i[v(T,I,0) − v(T,∅,0)] + s_t[v(T,∅,0) − v(N,∅,0)] + v(N,∅,0), and
T mode s_t[v(T,∅,0) − v(N,∅,0)] + v(N,∅,0).

Studio presets (`GUIDANCE_PRESETS`):
- "official": the formulas above with the official scales.
- "tighter lip-sync": audio scale +2 over the official default. Stronger mouth motion and sync; more risk of
  exaggerated motion and over-saturated colours. Same number of passes. No change in modes without audio.
- "faster": plain two-branch CFG, scale_t·[v(all inputs) − v(N,∅,0)] + v(N,∅,0). 2 passes per step instead of 3
  (1.5x faster) or 4 (2x, 1.7B TIA), but text, image and audio share one scale: weaker lip-sync and identity
  control, and no early text-dominant phase.
- "single pass": the fully conditioned branch alone (no CFG), 1 pass per step: for distilled students, whose
  training folded the teacher's guidance into the weights (training/distill.py). On a model that was not distilled
  it gives weak, unguided results.
- "distilled + audio": for a step-distilled model that folded text (and image) guidance but not HuMo's audio
  guidance (a Wan step-distill LoRA on HuMo): v(T,I,0) + s_a[v(T,I,A) − v(T,I,0)], 2 passes per step.
  "distilled + early audio": the same while t > switch (default 900), then the single pass (`distilled_audio`).
  What they buy on HuMo-nano: docs/weights.md (the measurement was blocked by CPU time in this session).

Only user scales are validated as non-negative; derived weights may be negative (every CFG weight on a "minus"
branch is, and the official 17B gives text weight s_t − 2 after the switch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.errors import InputError

TEXT_VALUES = ("pos", "neg")
IMAGE_VALUES = ("ref", "null")
AUDIO_VALUES = ("on", "off")
MODES = ("TIA", "TA", "TI", "T")
VARIANTS = ("17b", "1.7b")
MAX_SCALE = 100.0  # far above any useful guidance scale; larger values only produce noise
FORMAT = "humo-guidance/1"

# official defaults (§4.8, §4.12); TI / T defaults are this project's choice (see `default_schedule`)
DEFAULT_SCALES = {
    "17b": {"scale_t": 5.0, "scale_a": 5.5, "scale_i": 3.0},
    "1.7b": {"scale_t": 7.0, "scale_a": 7.5, "scale_i": 4.0},
}
DEFAULT_SWITCH_TIMESTEP = 980
LATE_TEXT_OFFSET = 2.0

_SYMBOLS = {"text": {"pos": "T", "neg": "N"}, "image": {"ref": "I", "null": "∅"}, "audio": {"on": "A", "off": "0"}}
_PARSE = {
    "text": {"T": "pos", "POS": "pos", "N": "neg", "NEG": "neg"},
    "image": {"I": "ref", "REF": "ref", "∅": "null", "0": "null", "-": "null", "NULL": "null"},
    "audio": {"A": "on", "ON": "on", "0": "off", "-": "off", "OFF": "off"},
}


def _error(message: str) -> InputError:
    return InputError(message, field="guidance")


@dataclass(frozen=True)
class Branch:
    """One conditioning of the transformer: text "pos"/"neg", image "ref"/"null", audio "on"/"off"."""

    text: str = "pos"
    image: str = "ref"
    audio: str = "on"

    def __post_init__(self):
        for name, allowed in (("text", TEXT_VALUES), ("image", IMAGE_VALUES), ("audio", AUDIO_VALUES)):
            if getattr(self, name) not in allowed:
                raise _error(f"Branch {name} must be one of {allowed}, got {getattr(self, name)!r}.")

    def __str__(self) -> str:
        return "·".join(_SYMBOLS[k][getattr(self, k)] for k in ("text", "image", "audio"))

    @classmethod
    def parse(cls, value: str | Branch | Sequence[str]) -> Branch:
        """From "T·I·A" / "N·∅·0" (also "T.I.A", "N.-.0"), a (text, image, audio) tuple, or a Branch."""
        if isinstance(value, Branch):
            return value
        if isinstance(value, str):
            parts = value.replace(".", "·").replace(",", "·").split("·")
            if len(parts) != 3:
                raise _error(f"Cannot read guidance branch {value!r}: write it like 'T·I·A' or 'N·∅·0'.")
            try:
                return cls(*(_PARSE[k][p.strip().upper()] for k, p in zip(("text", "image", "audio"), parts)))
            except KeyError:
                raise _error(f"Cannot read guidance branch {value!r}: write it like 'T·I·A' or 'N·∅·0'.") from None
        return cls(*value)

    def has(self, modality: str) -> bool:
        """Whether this branch carries the given modality ("text", "image" or "audio")."""
        return getattr(self, modality) in ("pos", "ref", "on")


@dataclass
class GuidancePhase:
    """Weights {branch: w} of one part of the run; applies while the integer timestep t > `above` (None: always)."""

    weights: dict[Branch, float]
    above: int | None = None
    name: str = ""

    def branches(self) -> list[Branch]:
        """Branches with a nonzero weight, in formula order (zero-weight branches are never evaluated)."""
        return [b for b, w in self.weights.items() if w != 0.0]

    def applies(self, timestep: int) -> bool:
        return self.above is None or int(timestep) > self.above

    def formula(self) -> str:
        """Human-readable weighted sum, e.g. "5.5·[T·I·A] − 0.5·[T·I·0] − 4·[N·I·0]"."""
        text = ""
        for branch, w in self.weights.items():
            if w == 0.0:
                continue
            sign = "−" if w < 0 else "+"
            mag = f"{abs(w):g}"
            term = f"[{branch}]" if mag == "1" else f"{mag}·[{branch}]"
            text += (f" {sign} " if text else ("−" if w < 0 else "")) + term
        return text or "0"


def _nested(terms: Sequence[tuple[float, Branch, Branch]], base: Branch) -> dict[Branch, float]:
    """Weights of Σ s·[v(plus) − v(minus)] + v(base)."""
    weights: dict[Branch, float] = {}
    for scale, plus, minus in terms:
        weights[plus] = weights.get(plus, 0.0) + float(scale)
        weights[minus] = weights.get(minus, 0.0) - float(scale)
    weights[base] = weights.get(base, 0.0) + 1.0
    return weights


@dataclass
class GuidanceSchedule:
    """Ordered guidance phases selected by the integer timestep, plus the user scales they derive from."""

    phases: list[GuidancePhase]
    scales: dict[str, float] = field(default_factory=dict)
    variant: str | None = None
    mode: str | None = None
    preset: str = "custom"
    # What the schedule was made from when an editor made it (`curve_schedule`: base preset, start scales, switch,
    # keyframes, steps), so a page can show the same controls again. The phases above are what runs.
    source: dict | None = None

    # ------------------------------------------------------------------ selection
    def phase_for(self, timestep: int | torch.Tensor) -> GuidancePhase:
        t = int(timestep)
        for phase in self.phases:
            if phase.applies(t):
                return phase
        raise _error(f"No guidance phase covers timestep {t}: the last phase must apply at every timestep.")

    def branches_for(self, timestep: int | torch.Tensor) -> list[Branch]:
        """The branches to evaluate at this timestep (nonzero weights only)."""
        return self.phase_for(timestep).branches()

    def all_branches(self, timesteps: Iterable) -> list[Branch]:
        """Every branch used somewhere in the run, in first-use order."""
        seen: dict[Branch, None] = {}
        for t in timesteps:
            seen.update(dict.fromkeys(self.branches_for(t)))
        return list(seen)

    def passes_per_step(self, timesteps: Iterable) -> list[int]:
        """Transformer passes (branches) at each step."""
        return [len(self.branches_for(t)) for t in timesteps]

    # ------------------------------------------------------------------ combination
    def combine(self, timestep: int | torch.Tensor, outputs: Mapping[Branch, torch.Tensor]) -> torch.Tensor:
        """Σ_k w_k · outputs[branch_k] for the phase of this timestep, in float32."""
        phase = self.phase_for(timestep)
        result = None
        for branch in phase.branches():
            if branch not in outputs:
                raise KeyError(f"guidance needs the output of branch {branch} at timestep {int(timestep)}")
            term = phase.weights[branch] * outputs[branch].float()
            result = term if result is None else result + term
        if result is None:
            raise _error("The guidance phase has no branch with a nonzero weight.")
        return result

    def effective_weights(self, timesteps: Iterable) -> dict[str, list[float]]:
        """Per-step weight of the text, image and audio directions (for plotting).

        The weight of a modality is the total weight on branches that carry it. For a nested formula this is the
        scale of that modality's difference term: 0 = ignored, 1 = plain conditioning, > 1 = guided towards it.
        E.g. official 17B TIA before the switch: text 5.0, image 1, audio 5.5; after: text 3.0, image 3.0, audio 5.5.
        """
        result: dict[str, list[float]] = {"text": [], "image": [], "audio": []}
        for t in timesteps:
            weights = self.phase_for(t).weights
            for modality, values in result.items():
                values.append(float(sum(w for b, w in weights.items() if b.has(modality))))
        return result

    # ------------------------------------------------------------------ checks
    def validate(self) -> GuidanceSchedule:
        """Raise InputError(field="guidance") for bad scales or weights; returns self."""
        for name, value in self.scales.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise _error(f"Guidance scale {name} must be a finite number (got {value!r}).")
            if value < 0:
                raise _error(f"Guidance scale {name} must be 0 or more (got {value:g}).")
            if value > MAX_SCALE:
                raise _error(f"Guidance scale {name} = {value:g} is too large: use at most {MAX_SCALE:g}.")
        if not self.phases:
            raise _error("The guidance schedule has no phases.")
        previous = None
        for i, phase in enumerate(self.phases):
            last = i == len(self.phases) - 1
            if phase.above is None and not last:
                raise _error(f"Guidance phase {i + 1} applies at every timestep, so the phases after it never run.")
            if phase.above is not None:
                if last:
                    raise _error("The last guidance phase must apply at every timestep (no switch timestep).")
                if not isinstance(phase.above, int) or isinstance(phase.above, bool) or not 0 <= phase.above <= 1000:
                    raise _error(f"Switch timestep must be a whole number from 0 to 1000 (got {phase.above!r}).")
                if previous is not None and phase.above >= previous:
                    raise _error("Guidance phases must be ordered from high to low switch timesteps.")
                previous = phase.above
            total = 0.0
            for branch, w in phase.weights.items():
                if not isinstance(branch, Branch):
                    raise _error(f"Guidance weights must be keyed by Branch, got {branch!r}.")
                if not isinstance(w, (int, float)) or not math.isfinite(w):
                    raise _error(f"Guidance weight of branch {branch} must be a finite number (got {w!r}).")
                total += w
            if not phase.branches():
                raise _error(f"Guidance phase {i + 1} has no branch with a nonzero weight.")
            scale = max(1.0, sum(abs(w) for w in phase.weights.values()))
            if abs(total - 1.0) > 1e-6 * scale:
                raise _error(
                    f"Guidance weights of phase {i + 1} sum to {total:g}; they must sum to 1 (a mix of "
                    "differences plus one base branch), otherwise the prediction is scaled."
                )
        return self

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the mp4 settings)."""
        return {
            "format": FORMAT,
            "preset": self.preset,
            "variant": self.variant,
            "mode": self.mode,
            "scales": dict(self.scales),
            "phases": [
                {"name": p.name, "above": p.above, "weights": {str(b): float(w) for b, w in p.weights.items()}}
                for p in self.phases
            ],
            **({"source": self.source} if self.source is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuidanceSchedule:
        if not isinstance(data, Mapping) or not isinstance(data.get("phases"), list):
            raise _error("A guidance schedule must be a dict with a 'phases' list (see GuidanceSchedule.to_dict).")
        phases = []
        for p in data["phases"]:
            if not isinstance(p, Mapping) or not isinstance(p.get("weights"), Mapping):
                raise _error("Each guidance phase needs a 'weights' mapping of branch -> weight.")
            weights = {Branch.parse(k): _number(v, f"weight of {k}") for k, v in p["weights"].items()}
            above = p.get("above")
            if above is not None and (isinstance(above, bool) or float(above) != int(above)):
                raise _error(f"Switch timestep must be a whole number (got {above!r}).")
            phases.append(GuidancePhase(weights, None if above is None else int(above), str(p.get("name", ""))))
        scales = {str(k): _number(v, k) for k, v in (data.get("scales") or {}).items()}
        source = data.get("source")
        if source is not None and not isinstance(source, Mapping):
            raise _error("A guidance schedule's 'source' must be a mapping (see curve_schedule).")
        return cls(phases, scales, data.get("variant"), data.get("mode"), str(data.get("preset", "custom")),
                   dict(source) if source is not None else None)  # fmt: skip

    def describe(self) -> str:
        """One line per phase, e.g. "t > 980: 5.5·[T·I·A] − 0.5·[T·I·0] − 4·[N·I·0]"."""
        return "\n".join(
            f"{'t > ' + str(p.above) if p.above is not None else 'else'}: {p.formula()}" for p in self.phases
        )


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise _error(f"Guidance {name} must be a number (got {value!r}).") from None
    return float(value)


# ---------------------------------------------------------------------------------------------- presets
T_I_A, T_I_0, N_I_0 = Branch("pos", "ref", "on"), Branch("pos", "ref", "off"), Branch("neg", "ref", "off")
T_0_A, T_0_0, N_0_0 = Branch("pos", "null", "on"), Branch("pos", "null", "off"), Branch("neg", "null", "off")


def humo_17b_tia(
    scale_a: float = 5.5,
    scale_t: float = 5.0,
    switch_timestep: int = DEFAULT_SWITCH_TIMESTEP,
    late_text_offset: float = LATE_TEXT_OFFSET,
) -> GuidanceSchedule:
    """Official HuMo-17B TIA: text-dominant while t > switch_timestep, then text+image jointly with s_t − 2."""
    if isinstance(switch_timestep, bool) or not math.isfinite(_number(switch_timestep, "switch timestep")):
        raise _error(f"Switch timestep must be a whole number from 0 to 1000 (got {switch_timestep!r}).")
    early = _nested([(scale_a, T_I_A, T_I_0), (scale_t, T_I_0, N_I_0)], base=N_I_0)
    late = _nested([(scale_a, T_I_A, T_I_0), (scale_t - late_text_offset, T_I_0, N_0_0)], base=N_0_0)
    return GuidanceSchedule(
        [GuidancePhase(early, above=int(switch_timestep), name="text-dominant"), GuidancePhase(late, name="main")],
        {"scale_a": scale_a, "scale_t": scale_t},
        "17b",
        "TIA",
        "official",
    )


def _ta(variant: str, scale_a: float, scale_t: float) -> GuidanceSchedule:
    """Official TA (both variants, their own script scales): s_a[v(T,∅,A) − v(T,∅,0)] + s_t[v(T,∅,0) − v(N,∅,0)]
    + v(N,∅,0)."""
    weights = _nested([(scale_a, T_0_A, T_0_0), (scale_t, T_0_0, N_0_0)], base=N_0_0)
    return GuidanceSchedule(
        [GuidancePhase(weights, name="main")], {"scale_a": scale_a, "scale_t": scale_t}, variant, "TA", "official"
    )


def humo_1_7b_tia(scale_i: float = 4.0, scale_a: float = 7.5, scale_t: float = 7.0) -> GuidanceSchedule:
    """Official HuMo-1.7B TIA, 4 passes: image nested outside audio."""
    weights = _nested([(scale_i, T_I_A, T_0_A), (scale_a, T_0_A, T_0_0), (scale_t, T_0_0, N_0_0)], base=N_0_0)
    return GuidanceSchedule(
        [GuidancePhase(weights, name="main")],
        {"scale_i": scale_i, "scale_a": scale_a, "scale_t": scale_t},
        "1.7b",
        "TIA",
        "official",
    )


def ti(scale_t: float, scale_i: float, variant: str | None = None) -> GuidanceSchedule:
    """TI mode (extension): s_i[v(T,I,0) − v(T,∅,0)] + s_t[v(T,∅,0) − v(N,∅,0)] + v(N,∅,0)."""
    weights = _nested([(scale_i, T_I_0, T_0_0), (scale_t, T_0_0, N_0_0)], base=N_0_0)
    return GuidanceSchedule(
        [GuidancePhase(weights, name="main")], {"scale_i": scale_i, "scale_t": scale_t}, variant, "TI", "official"
    )


def text_only(scale_t: float, variant: str | None = None) -> GuidanceSchedule:
    """T mode (extension): s_t[v(T,∅,0) − v(N,∅,0)] + v(N,∅,0)."""
    weights = _nested([(scale_t, T_0_0, N_0_0)], base=N_0_0)
    return GuidanceSchedule([GuidancePhase(weights, name="main")], {"scale_t": scale_t}, variant, "T", "official")


def plain_cfg(scale: float, positive: Branch, negative: Branch = N_0_0) -> GuidanceSchedule:
    """Two-pass CFG: scale·[v(positive) − v(negative)] + v(negative)."""
    weights = _nested([(scale, positive, negative)], base=negative)
    return GuidanceSchedule([GuidancePhase(weights, name="main")], {"scale": scale}, preset="faster")


def conditional_only(branch: Branch) -> GuidanceSchedule:
    """No CFG: v(branch) alone, one transformer pass per step (a distilled student folds the guidance in)."""
    return GuidanceSchedule([GuidancePhase({branch: 1.0}, name="main")], {}, preset="single pass")


def _normalise(variant: str, mode: str) -> tuple[str, str]:
    v = str(variant).lower().removeprefix("humo-").removeprefix("humo_")
    if v not in VARIANTS:
        raise _error(f"Unknown model variant {variant!r}: use '17b' or '1.7b'.")
    m = str(mode).upper()
    if m not in MODES:
        raise _error(f"Unknown mode {mode!r}: use one of {', '.join(MODES)}.")
    return v, m


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


def _apply_overrides(schedule: GuidanceSchedule, overrides: Mapping | None) -> GuidanceSchedule:
    """Replace whole phases' weights: {phase name or index: {"T·I·A": w, ...}}."""
    if not overrides:
        return schedule
    for key, weights in overrides.items():
        matches = [i for i, p in enumerate(schedule.phases) if p.name == key or i == key or str(i) == str(key)]
        if not matches:
            names = ", ".join(repr(p.name) for p in schedule.phases)
            raise _error(f"No guidance phase {key!r} to override; phases are {names} (or their index).")
        phase = schedule.phases[matches[0]]
        phase.weights = {Branch.parse(b): _number(w, f"weight of {b}") for b, w in weights.items()}
    schedule.preset = "custom"
    return schedule


def default_schedule(
    variant: str,
    mode: str,
    scale_t: float | None = None,
    scale_i: float | None = None,
    scale_a: float | None = None,
    switch_timestep: int | None = None,
    overrides: Mapping | None = None,
) -> GuidanceSchedule:
    """The official schedule of a variant ("17b" | "1.7b") and mode ("TIA" | "TA" | "TI" | "T").

    Scales left None take the official defaults (17B: s_t 5.0, s_a 5.5; 1.7B: s_t 7.0, s_a 7.5, s_i 4.0).
    `switch_timestep` (default 980) only exists in 17B TIA; `scale_i` is not used by 17B TIA (the official 17B
    guides image and text jointly) nor by TA / T. TI defaults: the variant's s_t, and s_i 4.0 (1.7B) / 3.0 (17B:
    the image weight of the official TIA main phase). `overrides` replaces whole phases' weights by phase name
    ("text-dominant", "main") or index. The result is not validated here; call `validate()`.
    """
    v, m = _normalise(variant, mode)
    d = DEFAULT_SCALES[v]
    st, si, sa = _pick(scale_t, d["scale_t"]), _pick(scale_i, d["scale_i"]), _pick(scale_a, d["scale_a"])
    if m == "TIA" and v == "17b":
        switch = DEFAULT_SWITCH_TIMESTEP if switch_timestep is None else switch_timestep
        schedule = humo_17b_tia(sa, st, switch)
    elif m == "TIA":
        schedule = humo_1_7b_tia(si, sa, st)
    elif m == "TA":
        schedule = _ta(v, sa, st)
    elif m == "TI":
        schedule = ti(st, si, v)
    else:
        schedule = text_only(st, v)
    return _apply_overrides(schedule, overrides)


def _official(variant, mode, **kw) -> GuidanceSchedule:
    return default_schedule(variant, mode, **kw)


def _tighter_lip_sync(variant, mode, scale_a=None, **kw) -> GuidanceSchedule:
    v, _ = _normalise(variant, mode)
    scale_a = DEFAULT_SCALES[v]["scale_a"] + 2.0 if scale_a is None else scale_a
    schedule = default_schedule(variant, mode, scale_a=scale_a, **kw)
    schedule.preset = "tighter lip-sync" if schedule.preset == "official" else schedule.preset
    return schedule


def _faster(variant, mode, scale_t=None, scale_i=None, scale_a=None, switch_timestep=None, overrides=None):
    v, m = _normalise(variant, mode)
    positive = Branch("pos", "ref" if "I" in m else "null", "on" if "A" in m else "off")
    schedule = plain_cfg(_pick(scale_t, DEFAULT_SCALES[v]["scale_t"]), positive)
    schedule.scales = {"scale_t": schedule.scales.pop("scale")}
    schedule.variant, schedule.mode = v, m
    return _apply_overrides(schedule, overrides)


def _single_pass(variant, mode, scale_t=None, scale_i=None, scale_a=None, switch_timestep=None, overrides=None):
    """The mode's fully conditioned branch alone (scales are ignored: there is nothing to scale)."""
    v, m = _normalise(variant, mode)
    schedule = conditional_only(Branch("pos", "ref" if "I" in m else "null", "on" if "A" in m else "off"))
    schedule.variant, schedule.mode = v, m
    return _apply_overrides(schedule, overrides)


DISTILLED_AUDIO_SCALE = 2.0  # a choice, not yet measured (docs/weights.md: the HuMo-nano run was blocked)


def distilled_audio(variant: str, mode: str, scale_a: float = DISTILLED_AUDIO_SCALE,
                    switch_timestep: int | None = None) -> GuidanceSchedule:  # fmt: skip
    """A step-distilled model (a CFG/step-distill LoRA such as lightx2v's, or a student) with HuMo's audio guidance
    kept: v(T,I,0) + s_a·[v(T,I,A) − v(T,I,0)], 2 passes per step. The distilled branch carries the text (and image)
    guidance it was trained to fold in; what such a LoRA never saw is the audio condition, whose guidance against the
    no-audio branch is what keeps lip sync apart from identity in HuMo. With `switch_timestep` t0 the audio term is
    kept only while t > t0 (the early steps, where motion is laid out) and later steps take the single pass."""
    v, m = _normalise(variant, mode)
    image = "ref" if "I" in m else "null"
    full = Branch("pos", image, "on" if "A" in m else "off")
    if "A" not in m:
        schedule = conditional_only(full)
    else:
        guided = GuidancePhase(_nested([(scale_a, full, Branch("pos", image, "off"))], base=Branch("pos", image, "off")),
                               above=switch_timestep, name="audio")  # fmt: skip
        phases = [guided] + ([GuidancePhase({full: 1.0}, name="single")] if switch_timestep is not None else [])
        schedule = GuidanceSchedule(phases, {"scale_a": scale_a}, preset="distilled + audio")
    schedule.variant, schedule.mode, schedule.preset = v, m, "distilled + audio"
    return schedule


EARLY_AUDIO_SWITCH = 900  # "distilled + early audio": the audio term while t > 900 (2 of 4 steps at shift 5)


def _distilled_audio(variant, mode, scale_t=None, scale_i=None, scale_a=None, switch_timestep=None, overrides=None):
    """Every step: the switch belongs to "distilled + early audio" (the studio sends its slider to every preset)."""
    schedule = distilled_audio(variant, mode, _pick(scale_a, DISTILLED_AUDIO_SCALE))
    return _apply_overrides(schedule, overrides)


def _distilled_early_audio(variant, mode, scale_t=None, scale_i=None, scale_a=None, switch_timestep=None,
                           overrides=None):  # fmt: skip
    switch = EARLY_AUDIO_SWITCH if switch_timestep is None else switch_timestep
    schedule = distilled_audio(variant, mode, _pick(scale_a, DISTILLED_AUDIO_SCALE), switch)
    schedule.preset = "distilled + early audio"
    return _apply_overrides(schedule, overrides)


GUIDANCE_PRESETS: dict[str, Callable[..., GuidanceSchedule]] = {
    "official": _official,
    "tighter lip-sync": _tighter_lip_sync,
    "faster": _faster,
    "single pass": _single_pass,  # for distilled students (engine.registry ModelSpec.guidance_preset)
    "distilled + audio": _distilled_audio,  # a step-distill LoRA that keeps HuMo's audio guidance (engine.speed)
    "distilled + early audio": _distilled_early_audio,  # the same in the early steps only
}


def preset_schedule(
    name: str,
    variant: str,
    mode: str,
    scale_t: float | None = None,
    scale_i: float | None = None,
    scale_a: float | None = None,
    switch_timestep: int | None = None,
    overrides: Mapping | None = None,
) -> GuidanceSchedule:
    """A studio preset for a variant and mode; explicit scales override the preset's defaults."""
    key = str(name or "official").strip().lower().replace("_", " ").replace("-", " ")
    aliases = {
        "official": "official",
        "tighter lip sync": "tighter lip-sync",
        "lip sync": "tighter lip-sync",
        "faster": "faster",
        "fast": "faster",
        "single pass": "single pass",
        "distilled": "single pass",
        "distilled + audio": "distilled + audio",
        "distilled audio": "distilled + audio",
        "distilled + early audio": "distilled + early audio",
    }
    if key not in aliases:
        raise _error(f"Unknown guidance preset {name!r}: use one of {', '.join(GUIDANCE_PRESETS)}.")
    return GUIDANCE_PRESETS[aliases[key]](
        variant,
        mode,
        scale_t=scale_t,
        scale_i=scale_i,
        scale_a=scale_a,
        switch_timestep=switch_timestep,
        overrides=overrides,
    )


# ---------------------------------------------------------------------------------------------- scale curves
SCALE_NAMES = ("scale_t", "scale_i", "scale_a")
SEGMENTS = ("hold", "linear")


@dataclass(frozen=True)
class Keyframe:
    """Scales from a point of the run on: `at` is a step ("12", 1-based) or a timestep ("t950": the first step whose
    timestep is at or below 950). `segment` is how the curve gets here from the previous keyframe: "hold" keeps
    the previous scales up to this step, "linear" ramps to these over the steps between. A scale left out (None)
    keeps its previous value."""

    at: str
    scale_t: float | None = None
    scale_i: float | None = None
    scale_a: float | None = None
    segment: str = "hold"

    def __post_init__(self):
        text = str(self.at).strip().lower()
        if not (text.removeprefix("t").isdigit()):
            raise _error(f"Keyframe position {self.at!r}: write a step (12) or a timestep (t950).")
        if self.segment not in SEGMENTS:
            raise _error(f"Keyframe segment must be 'hold' or 'linear' (got {self.segment!r}).")
        for name in SCALE_NAMES:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0 <= value <= MAX_SCALE):
                raise _error(f"Keyframe {name} must be from 0 to {MAX_SCALE:g} (got {value!r}).")

    def step_index(self, timesteps: Sequence[int]) -> int:
        """The 0-based step this keyframe starts at on this timestep grid."""
        text = str(self.at).strip().lower()
        try:
            if text.startswith("t"):
                limit = int(text[1:])
                return next((i for i, t in enumerate(timesteps) if int(t) <= limit), len(timesteps) - 1)
            step = int(text)
        except ValueError:
            raise _error(f"Keyframe position {self.at!r}: write a step (12) or a timestep (t950).") from None
        if not 1 <= step <= len(timesteps):
            raise _error(f"Keyframe step {step} is outside the run: use 1 to {len(timesteps)}.")
        return step - 1

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, **{n: getattr(self, n) for n in SCALE_NAMES}, "segment": self.segment}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Keyframe:
        scales = {n: None if data.get(n) is None else _number(data[n], n) for n in SCALE_NAMES}
        return cls(str(data.get("at", "")), **scales, segment=str(data.get("segment", "hold")))


def scale_curve(start: Mapping[str, float], keyframes: Sequence[Keyframe], timesteps: Sequence[int]) -> list[dict]:
    """The scales of every step: `start` at step 1, then each keyframe's values from its step on (held, or reached
    by a linear ramp from the previous keyframe's step)."""
    steps = len(timesteps)
    points = sorted(((k.step_index(timesteps), k) for k in keyframes), key=lambda p: p[0])
    curve = [dict(start) for _ in range(steps)]
    for name in SCALE_NAMES:
        if name not in start:
            continue
        at, value = 0, start[name]
        for index, key in points:
            target = getattr(key, name)
            if target is None:
                continue
            for i in range(at + 1, index):  # between keyframes: held, or interpolated
                fraction = (i - at) / (index - at)
                curve[i][name] = value + (target - value) * fraction if key.segment == "linear" else value
            for i in range(index, steps):
                curve[i][name] = target
            at, value = index, target
    return curve


def curve_schedule(
    preset: str,
    variant: str,
    mode: str,
    timesteps: Sequence[int],
    scales: Mapping[str, float] | None = None,
    keyframes: Sequence[Keyframe] = (),
    switch_timestep: int | None = None,
) -> GuidanceSchedule:
    """A schedule from a preset's formula with scales that change over the run (`scale_curve`).

    With no keyframes this *is* the preset (`preset_schedule` with these scales), so the official schedules are
    exact instances. With keyframes, each step gets the preset's phase at its timestep for its own scales; equal
    neighbours merge into one phase, and a phase boundary falls on the preset's own switch timestep where one lies
    between two steps (else on the next step's timestep). `source` records the inputs for an editor."""
    timesteps = [int(t) for t in timesteps]
    start = {k: float(v) for k, v in (scales or {}).items() if v is not None}
    base = preset_schedule(preset, variant, mode, switch_timestep=switch_timestep, **start)
    full = {**DEFAULT_SCALES[base.variant or "17b"], **base.scales, **start}  # every scale, for the editor
    source = {"preset": base.preset, "scales": full, "switch_timestep": switch_timestep,
              "keyframes": [k.to_dict() for k in keyframes], "steps": len(timesteps)}  # fmt: skip
    if keyframes:
        base = _compiled(preset, variant, mode, timesteps, scale_curve(full, keyframes, timesteps), base,
                         switch_timestep)  # fmt: skip
    base.source = source
    if keyframes or any(base.scales.get(k) != v for k, v in _preset_defaults(preset, variant, mode).items()):
        base.preset = "custom"
    if base.mode == "TIA" and base.variant == "17b" and switch_timestep not in (None, DEFAULT_SWITCH_TIMESTEP):
        base.preset = "custom"
    return base


def _preset_defaults(preset: str, variant: str, mode: str) -> dict[str, float]:
    return dict(preset_schedule(preset, variant, mode).scales)


def _compiled(preset, variant, mode, timesteps, curve, base, switch_timestep) -> GuidanceSchedule:
    """One phase per run of steps with equal weights (see `curve_schedule`)."""
    runs: list[tuple[GuidancePhase, int, int]] = []  # (phase, highest timestep, lowest timestep)
    for t, step_scales in zip(timesteps, curve, strict=True):
        phase = preset_schedule(preset, variant, mode, switch_timestep=switch_timestep, **step_scales).phase_for(t)
        if runs and (runs[-1][0].weights == phase.weights or runs[-1][2] == t):  # equal, or same timestep
            runs[-1] = (runs[-1][0], runs[-1][1], t)
        else:
            runs.append((phase, t, t))
    switches = [p.above for p in base.phases if p.above is not None]
    phases = []
    for i, (phase, _, low) in enumerate(runs):
        above = None
        if i + 1 < len(runs):
            following = runs[i + 1][1]
            above = next((b for b in switches if following <= b < low), following)
        name = phase.name if not phase.name or i == 0 or runs[i - 1][0].name != phase.name else f"{phase.name} {i + 1}"
        phases.append(GuidancePhase(dict(phase.weights), above, name))
    return GuidanceSchedule(phases, dict(base.scales), base.variant, base.mode, "custom")


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_branches(
    model_fn: Callable[..., torch.Tensor], branches: Sequence[Mapping[str, Any]], batched: bool
) -> list[torch.Tensor]:
    """Evaluate `model_fn(**inputs)` for every branch's inputs (tensors with a batch dim).

    batched=True concatenates every tensor input along dim 0 and runs one forward (faster, more memory);
    non-tensor inputs must then be equal across branches. batched=False runs one forward per branch, as the
    official code does. Returns one output per branch, in order.
    """
    branches = list(branches)
    if not batched or len(branches) <= 1:
        return [model_fn(**inputs) for inputs in branches]
    keys = list(branches[0])
    if any(list(b) != keys for b in branches[1:]):
        raise ValueError("every branch must have the same input names to be batched")
    merged: dict[str, Any] = {}
    sizes: list[int] | None = None
    for key in keys:
        values = [b[key] for b in branches]
        if all(isinstance(v, torch.Tensor) for v in values):
            merged[key] = torch.cat(values, dim=0)
            if sizes is None:
                sizes = [v.shape[0] for v in values]
        elif all(v is values[0] or v == values[0] for v in values):
            merged[key] = values[0]
        else:
            raise ValueError(f"input {key!r} differs between branches and is not a tensor; cannot batch")
    if sizes is None:
        raise ValueError("no tensor inputs to batch")
    return list(model_fn(**merged).split(sizes, dim=0))


__all__ = [
    "Branch",
    "GuidancePhase",
    "GuidanceSchedule",
    "GUIDANCE_PRESETS",
    "DEFAULT_SCALES",
    "humo_17b_tia",
    "humo_1_7b_tia",
    "ti",
    "text_only",
    "plain_cfg",
    "conditional_only",
    "default_schedule",
    "preset_schedule",
    "Keyframe",
    "scale_curve",
    "curve_schedule",
    "evaluate_branches",
]
