"""Honest job times: an estimate built from costs measured on this machine, learned again after every run.

A job's time is the sum of parts the pipeline already times (engine/pipeline.py `timings`):

- denoise: the transformer forwards. Per step the guidance schedule sets the passes (branches); a long video runs
  every pass once per window (engine/long_video.py plans them); batched branches share one forward. What one
  forward costs at a job's token count is read off a ladder of probes of the model's own transformer on this
  machine (the job's latent frames at 1, 4, 9, ... tokens a frame, up to the job's size or the first probe slower
  than PROBE_STOP_S; beyond it, its local power law), so a run at one size predicts another without assuming how
  time grows with tokens.
- decode: the same with the VAE (2 latent frames at a ladder of sizes), times the frames the job makes.
- both are corrected by how this model's real runs compared with their probes (the median ratio of the last runs:
  the loop's work around the forwards, the machine's load);
- text / audio / image encoders and writing the mp4 (watermark, ffmpeg), fitted as `fixed + per-unit · size`
  over the model's last runs.

Probes need the loaded pipeline and cost about one step, once per size; before a model is loaded nothing is
measured and the estimate says so rather than guessing; before its first run the estimate is the probes' alone (no
encoders, no writing). The studio keeps one `ModelCosts` per model id in `ctx.seconds_per_pass` (the context's
slot for measured speeds); `record` adds a finished job's timings to it, and the job's remaining time
(`remaining_s`) follows the loop's own pace. The costs are kept in the store too (`save_costs` / `load_costs`, under
this machine's name), so a restart starts from what was measured instead of from nothing.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

TEXT_TOKENS = 512  # the prompt embeddings are zero-padded to 512 tokens (engine/pipeline.py `_pad_text`)
KEEP = 24  # runs remembered per part: recent runs win when the machine's speed changes
FPS = 25


# --------------------------------------------------------------------------------------------- what a job runs
@dataclass(frozen=True)
class Plan:
    """The work of one job: what the estimate multiplies the measured costs by."""

    steps: int
    passes: int  # transformer passes over all steps and windows (a batched forward counts its branches)
    forwards: int  # transformer calls (one per window and step when branches are batched)
    tokens: int  # tokens of one forward (one window + the reference slots)
    windows: int  # windows of the longest step (1: a plain clip)
    frames: int
    height: int
    width: int
    references: int
    audio_s: float


def plan_job(
    schedule,
    steps: int,
    frames: int,
    height: int,
    width: int,
    shift: float,
    references: int = 1,
    audio: bool = True,
    window_frames: int | None = None,
    window_overlap: int = 4,
    batched: bool = True,
) -> Plan:
    """Passes, forwards and tokens of a job: the engine's plan of the run (engine.plan, what HuMoPipeline executes)
    on the model's timestep grid."""
    from engine.plan import plan_run
    from engine.schedulers import official_timesteps

    run = plan_run(schedule, official_timesteps(max(1, int(steps)), shift), frames, height, width, references,
                   window_frames, window_overlap, batched=batched)  # fmt: skip
    return Plan(run.steps, run.passes, run.forwards, run.tokens, run.windows, frames, height, width, run.references,
                frames / FPS if audio else 0.0)  # fmt: skip


def batches_branches(device: str, tokens: int, passes_per_step: int) -> bool:
    """Whether the pipeline will batch the guidance branches (engine.plan.batch_pays: HuMoPipeline._auto_batch
    without its memory check)."""
    from engine.plan import batch_pays

    return batch_pays(device, tokens, passes_per_step)


# ------------------------------------------------------------------------------------------- measured costs
@dataclass
class Curve:
    """Seconds of one call as a function of its size, from probes at a ladder of sizes: log-log interpolation
    between neighbours; beyond the ladder, the local power law of its last two points (exponent kept in [0.8, 2]:
    past the per-call overhead, work grows about in proportion to the size, at most like its square)."""

    points: dict = field(default_factory=dict)  # size -> seconds
    max_slope: float = 2.0  # the VAE's convolutions: 1 (in proportion to the pixels)

    def __call__(self, size: float) -> float:
        xs = sorted(self.points)
        ys = [self.points[x] for x in xs]
        if size in self.points or len(xs) == 1:
            return self.points.get(size, ys[0] * size / xs[0])
        if size <= xs[0]:
            return ys[0]  # the per-call overhead: no call is cheaper than the smallest probe
        i = min(max(np.searchsorted(xs, size) - 1, 0), len(xs) - 2)
        slope = np.log(ys[i + 1] / ys[i]) / np.log(xs[i + 1] / xs[i])
        if size > xs[-1]:  # from the largest probe on, at the last two probes' slope
            return float(ys[-1] * (size / xs[-1]) ** float(np.clip(slope, 0.8, self.max_slope)))
        return float(ys[i] * (size / xs[i]) ** slope)

    def measure(self, probe, sizes, target: float, stop_s: float) -> None:
        """Probe `sizes` in increasing order until one reaches `target` or costs more than `stop_s` (then the
        estimate extrapolates from the two largest, which are past the per-call overhead)."""
        for size in sizes:
            if size not in self.points:
                self.points[size] = probe(size)
            if size >= target or self.points[size] > stop_s:
                return


@dataclass
class Part:
    """A small timed part (an encoder, the mp4 writing) fitted as y = fixed · a + per_unit · b over recent runs
    ((a, b), y), by least squares on relative errors with both coefficients >= 0. From runs at one size only, `by`
    says how to read them: "scale" puts it all on the per-unit term, "fixed" on the fixed term."""

    by: str = "scale"
    rows: deque = field(default_factory=lambda: deque(maxlen=KEEP))

    def add(self, a: float, b: float, y: float) -> None:
        self.rows.append((float(a), float(b), max(float(y), 0.0)))

    @property
    def known(self) -> bool:
        return bool(self.rows)

    def coefficients(self) -> tuple[float, float]:
        rows = np.array(self.rows, dtype=np.float64)
        a, b, y = rows[:, 0], rows[:, 1], rows[:, 2]
        w = 1.0 / np.maximum(y, 1e-3)  # relative errors: a 1 s job counts as much as a 100 s one
        design = np.stack([a, b], axis=1) * w[:, None]
        if np.linalg.matrix_rank(design, tol=1e-9 * max(1.0, float(np.abs(design).max()))) == 2:
            fixed, per_unit = np.linalg.lstsq(design, y * w, rcond=None)[0]
            if fixed >= 0 and per_unit >= 0:
                return float(fixed), float(per_unit)
        use_b = (self.by == "scale" and b.any()) or not a.any()  # one coefficient: the `by` one when it has data
        x = b if use_b else a
        coef = float((w * w * x * y).sum() / max((w * w * x * x).sum(), 1e-30))
        return (0.0, coef) if use_b else (coef, 0.0)

    def predict(self, a: float, b: float) -> float:
        fixed, per_unit = self.coefficients()
        return fixed * a + per_unit * b

    def to_dict(self) -> dict:
        return {"by": self.by, "rows": [list(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, data: dict) -> Part:
        part = cls(str(data["by"]))
        for a, b, y in data["rows"]:
            part.add(a, b, y)
        return part


PROBE_STOP_S = 3.0  # a ladder stops at its target size or at the first probe this slow: seconds per model, once
FORWARD_SIDES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]  # tokens per side of each latent frame
DECODE_SIDES = [4, 8, 16, 24, 32, 48, 64, 96, 128]  # latent pixels per side of a 2-latent-frame decode


@dataclass
class ModelCosts:
    """What one model costs on this machine: probe ladders of its transformer forward (per batch of branches) and of
    its VAE decode, each corrected by how the real runs compare to them (`run_factor`: the loop's own work around
    the forwards, and the machine's load), and the small parts fitted over its runs."""

    device: str = "cpu"
    runs: int = 0
    forward: dict = field(default_factory=dict)  # (batch, latent frames of a forward) -> Curve over tokens
    decode_curve: Curve = field(default_factory=lambda: Curve(max_slope=1.0))  # latent pixels -> s, 2 latent frames
    denoise_ratio: deque = field(default_factory=lambda: deque(maxlen=KEEP))  # real / probed, per run
    decode_ratio: deque = field(default_factory=lambda: deque(maxlen=KEEP))
    text: Part = field(default_factory=lambda: Part("fixed"))  # (1, 0)
    audio: Part = field(default_factory=lambda: Part("scale"))  # (has audio, audio seconds)
    image: Part = field(default_factory=lambda: Part("scale"))  # (1, references · pixels)
    write: Part = field(default_factory=lambda: Part("scale"))  # (1, frames · pixels)

    def probe(self, pipe, plan: Plan) -> None:
        """Measure (once, then only what is missing) the ladders up to this plan's sizes."""
        batch, slots = _batch(plan), _slots(plan)
        curve = self.forward.setdefault((batch, slots), Curve())
        sizes = [slots * side * side for side in FORWARD_SIDES]  # the job's frame count: per-frame work is the same
        curve.measure(lambda tokens: probe_forward(pipe, tokens, batch, slots), sizes, plan.tokens, PROBE_STOP_S)
        pixels = (plan.height // 8) * (plan.width // 8)
        self.decode_curve.measure(lambda px: probe_decode(pipe, px), [s * s for s in DECODE_SIDES], pixels,
                                  PROBE_STOP_S)  # fmt: skip

    def probed(self, plan: Plan) -> tuple[float, float] | None:
        """(denoise, decode) seconds the probes predict for a plan, before the runs' correction."""
        curve = self._forward_curve(_batch(plan), _slots(plan))
        if curve is None or not self.decode_curve.points:
            return None
        pixels = (plan.height // 8) * (plan.width // 8)
        return plan.forwards * curve(plan.tokens), self.decode_curve(pixels) * plan.frames / DECODE_PROBE_FRAMES

    def to_dict(self) -> dict:
        """JSON for the store: sizes and seconds as pairs (JSON keys are text)."""
        return {
            "device": self.device, "runs": self.runs,
            "forward": [[b, f, sorted(c.points.items())] for (b, f), c in self.forward.items()],
            "decode": sorted(self.decode_curve.points.items()),
            "denoise_ratio": list(self.denoise_ratio), "decode_ratio": list(self.decode_ratio),
            **{name: getattr(self, name).to_dict() for name in PARTS},
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> ModelCosts:
        """The inverse of `to_dict`; anything malformed raises (the caller then starts from nothing)."""
        costs = cls(str(data["device"]), int(data["runs"]))
        for batch, slots, points in data["forward"]:
            costs.forward[(int(batch), int(slots))] = Curve({float(x): _positive(y) for x, y in points})
        costs.decode_curve.points = {float(x): _positive(y) for x, y in data["decode"]}
        costs.denoise_ratio.extend(_positive(v) for v in data["denoise_ratio"])
        costs.decode_ratio.extend(_positive(v) for v in data["decode_ratio"])
        for name in PARTS:
            setattr(costs, name, Part.from_dict(data[name]))
        return costs

    def _forward_curve(self, batch: int, slots: int):
        """The ladder of this batch and frame count; else the measured one of this batch nearest in frames (its
        curve is over tokens, and per-token work barely depends on how they split into frames), else None."""
        curves = {key: curve for key, curve in self.forward.items() if curve.points}
        if (batch, slots) in curves:
            return curves[(batch, slots)]
        same_batch = [key for key in curves if key[0] == batch]
        return curves[min(same_batch, key=lambda key: abs(key[1] - slots))] if same_batch else None


PARTS = ("text", "audio", "image", "write")


def _positive(value) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"a stored cost must be a finite number >= 0, got {value!r}")
    return value


def _batch(plan: Plan) -> int:
    """Branches per forward (the mean over steps when their passes differ; 1 when they run one by one)."""
    return max(1, round(plan.passes / max(1, plan.forwards)))


def _slots(plan: Plan) -> int:
    """Latent frames of one forward (a window + the reference slots): the audio attention works frame by frame."""
    return max(1, plan.tokens // max(1, (plan.height // 16) * (plan.width // 16)))


def _ratio(values) -> float:
    """The runs' correction: the median of recent real / probed ratios (1 before any run)."""
    return float(np.median(values)) if values else 1.0


def costs_of(ctx, model_id: str) -> ModelCosts | None:
    """The measured costs of a model in this studio (None before its first run)."""
    costs = ctx.seconds_per_pass.get(model_id)
    return costs if isinstance(costs, ModelCosts) else None


def record(ctx, model_id: str, settings: dict, seconds: float, pipe=None) -> ModelCosts | None:
    """Learn from a finished job: `settings` is its record (engine/generate.py, with `timings`), `seconds` the wall
    time of rendering and writing it, `pipe` its loaded pipeline (None in a multi-GPU worker group: nothing to probe
    here, so nothing is learned)."""
    timings = settings.get("timings") or {}
    if "denoise_s" not in timings or pipe is None:
        return None
    costs = costs_of(ctx, model_id)
    if costs is None:
        costs = ctx.seconds_per_pass[model_id] = ModelCosts(pipe.device.type)
    plan = plan_of_settings(settings, model_id, costs.device)
    costs.probe(pipe, plan)
    denoise, decode = costs.probed(plan)
    costs.denoise_ratio.append(timings["denoise_s"] / max(denoise, 1e-9))
    costs.decode_ratio.append(timings.get("decode_s", 0.0) / max(decode, 1e-9))
    costs.text.add(1, 0, timings.get("text_s", 0.0))
    if plan.audio_s:
        costs.audio.add(1, plan.audio_s, timings.get("audio_s", 0.0))
    if settings.get("images"):
        costs.image.add(1, plan.references * plan.height * plan.width, timings.get("image_s", 0.0))
    costs.write.add(1, plan.frames * plan.height * plan.width, max(0.0, seconds - timings.get("total_s", seconds)))
    costs.runs += 1
    save_costs(ctx)
    return costs


# ---------------------------------------------------------------------------------------------- kept in the store
COSTS_KEY = "eta-costs"


def machine_name() -> str:
    """What the costs were measured on: they hold on this machine only (another CPU or GPU starts from nothing)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no gpu"
    return f"{platform.machine()} · {os.cpu_count()} cpus · {gpu}"


def save_costs(ctx) -> None:
    """Every model's measured costs into the store (after each run); a failure only costs the next restart's head
    start."""
    models = {mid: c.to_dict() for mid, c in ctx.seconds_per_pass.items() if isinstance(c, ModelCosts)}
    try:
        ctx.store.set_setting(COSTS_KEY, {"machine": machine_name(), "models": models})
    except Exception as exc:
        log.warning("could not keep the measured costs: %s", exc)


def load_costs(store) -> dict:
    """The costs a studio measured earlier on this machine, by model id; {} when none, another machine's, or a
    stored value that does not read (never trusted: every number is checked)."""
    data = store.get_setting(COSTS_KEY, None)
    if not isinstance(data, dict) or data.get("machine") != machine_name() or not isinstance(data.get("models"), dict):
        return {}
    costs = {}
    for model_id, value in data["models"].items():
        try:
            costs[str(model_id)] = ModelCosts.from_dict(value)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("stored costs of %s ignored: %s", model_id, exc)
    return costs


def plan_of_settings(settings: dict, model_id: str, device: str) -> Plan:
    """The plan a finished job ran: the engine's own, which the loop records in `timings["plan"]` (frames as made,
    windows and batching as they happened); nothing is derived again. `model_id` and `device`: kept for callers."""
    del model_id, device
    run = settings["timings"]["plan"]
    audio = bool(settings.get("audio"))
    return Plan(len(run["passes_per_step"]), int(run["passes"]), int(run["forwards"]), int(run["tokens"]),
                int(run["windows"]), int(run["frames"]), int(settings["height"]), int(settings["width"]),
                int(run["references"]), int(run["frames"]) / FPS if audio else 0.0)  # fmt: skip


DECODE_PROBE_FRAMES = 5  # 2 latent frames decode to 1 + 4 frames; decode time grows with the frames made


def _timed(fn, repeats: int) -> float:
    """Best of `repeats` timed calls after one untimed call (the first pays one-off initialisation); the best, because
    a busy machine only ever makes a call slower."""
    import torch

    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def probe_forward(pipe, tokens: int, batch: int = 1, frames: int = 2) -> float:
    """Seconds of one transformer forward over `tokens` tokens (`frames` latent frames of a square grid), batch
    `batch`, with the 512 text tokens and the audio windows a job has."""
    import torch

    cfg = pipe.transformer.config
    side = max(1, round((tokens / frames) ** 0.5))
    device, dtype = pipe.device, pipe.transformer.dtype
    hidden = torch.zeros(batch, cfg.in_channels, frames, 2 * side, 2 * side, device=device, dtype=dtype)
    text = torch.zeros(batch, TEXT_TOKENS, cfg.text_dim, device=device, dtype=dtype)
    audio = torch.zeros(batch, frames, cfg.audio_window, cfg.audio_bands, cfg.audio_dim, device=device, dtype=dtype)
    timestep = torch.full((batch,), 500.0, device=device)

    def forward():
        with torch.no_grad():
            pipe.transformer(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text,
                             audio_embeds=audio, return_dict=False)  # fmt: skip

    return _timed(forward, 2)


def probe_decode(pipe, pixels: int) -> float:
    """Seconds of decoding 2 latent frames of `pixels` latent pixels (square) with the pipeline's VAE."""
    import torch

    side = max(1, round(pixels**0.5))
    latents = torch.zeros(1, pipe.vae.config.z_dim, 2, side, side, device=pipe.device)
    return _timed(lambda: pipe.decode_latents(latents), 2)


# ----------------------------------------------------------------------------------------------- the estimate
@dataclass(frozen=True)
class Estimate:
    plan: Plan
    parts: dict | None  # seconds per part; None before anything was measured for this model
    runs: int = 0

    @property
    def total_s(self) -> float | None:
        return sum(self.parts.values()) if self.parts else None

    @property
    def after_denoise_s(self) -> float:
        """Decode and writing: what is left once the last step is done."""
        return (self.parts or {}).get("decode", 0.0) + (self.parts or {}).get("write", 0.0)

    @property
    def before_denoise_s(self) -> float:
        parts = self.parts or {}
        return parts.get("text", 0.0) + parts.get("audio", 0.0) + parts.get("image", 0.0)


def estimate(
    ctx,
    model_id: str,
    schedule,
    steps: int,
    frames: int,
    height: int,
    width: int,
    references: int = 1,
    audio: bool = True,
    window_frames: int | None = None,
    window_overlap: int = 4,
    probe: bool = False,
) -> Estimate:
    """The time a job will take on this machine, part by part (parts None before the model's first run).

    `probe`: time the model's transformer and VAE at sizes not measured yet. Only a job does that, at its start and
    in its own GPU slot (the pipeline is then its own); the page's estimate, called on every control change and by
    any visitor, reads what is measured and runs no model work (a probe there would share the pipeline with a
    running job, its step-cache hooks included)."""
    costs = costs_of(ctx, model_id)
    device = costs.device if costs else "cpu"
    max_passes = max(schedule.passes_per_step(_timesteps(steps, model_id)))
    plan = plan_job(schedule, steps, frames, height, width, sampling_shift(model_id), references, audio, window_frames,
                    window_overlap)  # fmt: skip
    if not batches_branches(device, plan.tokens, max_passes):
        plan = plan_job(schedule, steps, frames, height, width, sampling_shift(model_id), references, audio, window_frames,
                        window_overlap, batched=False)  # fmt: skip
    pipe = ctx._pipelines.get(model_id) if probe else None
    if pipe is not None:
        if costs is None:
            costs = ctx.seconds_per_pass[model_id] = ModelCosts(pipe.device.type)
        costs.probe(pipe, plan)  # sizes not probed yet: a probe or two, a fraction of one step of this job
    probed = costs.probed(plan) if costs is not None else None
    if probed is None:
        return Estimate(plan, None)
    volume = frames * height * width
    parts = {
        "text": costs.text.predict(1, 0) if costs.text.known else 0.0,
        "audio": costs.audio.predict(1, plan.audio_s) if plan.audio_s and costs.audio.known else 0.0,
        "image": costs.image.predict(1, references * height * width) if references and costs.image.known else 0.0,
        "denoise": probed[0] * _ratio(costs.denoise_ratio),
        "decode": probed[1] * _ratio(costs.decode_ratio),
        "write": costs.write.predict(1, volume) if costs.write.known else 0.0,
    }
    return Estimate(plan, parts, costs.runs)


def estimate_request(ctx, request, frames: int, model_id: str | None = None, probe: bool = False) -> Estimate:
    """The estimate of a GenerationRequest that will make `frames` frames (jobs.validate_request's count), with the
    schedule the run samples with (engine.plan.run_schedule: its own, else the model's preset for its mode)."""
    from engine import registry
    from engine.plan import run_schedule

    model_id = model_id or ctx.default_model
    spec = registry.get_spec(model_id)
    schedule = run_schedule(request.guidance, spec.sampling_defaults(), spec.variant, request.mode)
    return estimate(ctx, model_id, schedule, request.num_inference_steps, frames, request.height, request.width,
                    len(request.images), bool(request.audio), request.window_frames,
                    request.window_overlap, probe)  # fmt: skip


def describe(est: Estimate) -> str:
    """One line for the page: passes, then the time and what it is made of."""
    plan = est.plan
    windows = f"{plan.windows} windows a step, " if plan.windows > 1 else ""
    text = f"**{plan.passes} transformer passes** in all ({windows}{plan.tokens:,} tokens each)"
    if est.parts is None:
        return text + " · time estimate once this model is loaded (after its first run)"
    parts = est.parts
    encode = parts["text"] + parts["audio"] + parts["image"]
    return text + (
        f" · **about {seconds_text(est.total_s)}**: denoise {seconds_text(parts['denoise'])}, decode "
        f"{seconds_text(parts['decode'])}, encoders {seconds_text(encode)}, writing {seconds_text(parts['write'])} "
        + (
            f"(measured on this machine, {est.runs} run{'s' if est.runs != 1 else ''})"
            if est.runs
            else "(probed on this machine; encoders and writing are learned from the first run)"
        )
    )


def remaining_s(est: Estimate, elapsed_s: float, fraction: float) -> float | None:
    """Seconds left in a running job that is `fraction` through its denoising steps after `elapsed_s`.

    The loop's own pace predicts its rest (after the encoders' estimated share of the elapsed time); the decode and
    the mp4 writing follow it, so the last step does not read "0 s left". Before a step is done: the estimate."""
    if fraction <= 0:
        return est.total_s
    loop_elapsed = max(elapsed_s - est.before_denoise_s, 1e-6)
    return loop_elapsed / min(fraction, 1.0) * max(0.0, 1.0 - fraction) + est.after_denoise_s


def seconds_text(value: float) -> str:
    """'8.5 s', '42 s', '3.1 min': how the page says a time."""
    if value < 10:
        return f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    return f"{value / 60:.1f} min"


def sampling_shift(model_id: str) -> float:
    """The flow shift a model samples with (its timestep grid, on which the schedule's switch step falls): the one
    place the studio learns it; a fine-tune samples on its base's grid (HuMo-nano's: shift 2)."""
    from engine import registry
    from engine.schedulers import DEFAULT_SHIFT

    spec = registry.find_spec(model_id)
    return spec.flow_shift if spec else DEFAULT_SHIFT


def _timesteps(steps: int, model_id: str):
    from engine.schedulers import official_timesteps

    return official_timesteps(max(1, int(steps)), sampling_shift(model_id))


__all__ = ["Estimate", "ModelCosts", "Plan", "describe", "estimate", "plan_job", "record", "remaining_s"]
