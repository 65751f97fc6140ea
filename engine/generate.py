"""One generation from request to finished mp4: the entry point the CLI, the studio and a Space share."""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers

from engine import media, provenance
from engine.guidance import GuidanceSchedule
from engine.pipeline import HuMoPipeline, HuMoPipelineOutput
from engine.plan import mode_of, run_schedule
from engine.provenance import ENGINE_VERSION
from engine.registry import MODELS, display_id


@dataclass
class GenerationRequest:
    """Everything a user chooses for one video. Fields mirror `HuMoPipeline.__call__`; those left None are the
    model's (`with_model_defaults`). The guidance travels as the `GuidanceSchedule` object; `to_dict` / `from_dict`
    are the request's plain-data form at the edges (the gallery row, a worker group or a Ray worker, JSON input)."""

    prompt: str
    images: list[str] = field(default_factory=list)
    audio: str | None = None
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    num_inference_steps: int | None = None
    seed: int | None = None
    guidance: GuidanceSchedule | None = None  # None -> the model's preset for the request's mode
    resize_mode: str = "pad"
    batch_branches: bool | None = None
    vae_tiling: bool = False
    window_frames: int | None = None  # long videos: temporal windows of this many frames (engine/long_video.py)
    window_overlap: int = 4  # latent frames shared by neighbouring windows

    @property
    def mode(self) -> str:
        """TIA / TA / TI / T of this request's inputs (engine.plan.mode_of)."""
        return mode_of(self.images, self.audio)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: every field, the guidance as `GuidanceSchedule.to_dict()`."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["images"] = list(self.images)
        data["guidance"] = self.guidance.to_dict() if self.guidance is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """The request `to_dict` wrote (a worker's job, a JSON case); InputError for a malformed guidance."""
        guidance = data.get("guidance")
        schedule = GuidanceSchedule.from_dict(guidance) if guidance else None
        return cls(**{**data, "guidance": schedule})

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "image": list(self.images) or None,
            "audio": self.audio,
            "negative_prompt": self.negative_prompt,
            "height": None if self.height is None else int(self.height),
            "width": None if self.width is None else int(self.width),
            "num_frames": self.num_frames,
            "num_inference_steps": None if self.num_inference_steps is None else int(self.num_inference_steps),
            "seed": self.seed,
            "guidance": self.guidance,
            "resize_mode": self.resize_mode,
            "batch_branches": self.batch_branches,
            "vae_tiling": self.vae_tiling,
            "window_frames": self.window_frames,
            "window_overlap": self.window_overlap,
        }


def with_model_defaults(pipe: HuMoPipeline, request: GenerationRequest) -> GenerationRequest:
    """The request with every field it leaves None set to what the model samples with (`pipe.sampling_defaults`),
    exactly what `pipe(**request.pipeline_kwargs())` would use, so the mp4 and the gallery row record them."""
    defaults = pipe.sampling_defaults
    return replace(
        request,
        height=defaults.height if request.height is None else request.height,
        width=defaults.width if request.width is None else request.width,
        num_inference_steps=request.num_inference_steps or defaults.num_inference_steps,
        guidance=run_schedule(request.guidance, defaults, pipe.variant, request.mode),
    )


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    return {
        "humo_studio": ENGINE_VERSION,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def settings_record(
    pipe: HuMoPipeline, request: GenerationRequest, output: HuMoPipelineOutput, schedule: GuidanceSchedule
) -> dict[str, Any]:
    """Every setting needed to reproduce the video, stored as JSON in the mp4 (read back by media.read_settings).

    Input files are named by base name only (never a server path); their SHA-256 is in `input_hashes`.
    """
    record = request.to_dict()
    record.update(
        {
            "images": [Path(str(p)).name for p in request.images],
            "audio": Path(str(request.audio)).name if request.audio else None,
            "seed": output.seed,
            "mode": output.mode,
            "num_frames": output.num_frames,
            "guidance": schedule.to_dict(),
            "model_id": display_id(pipe.model_id),  # a folder or file by its name: never a server path
            "model_hashes": pipe.model_hashes,
            "variant": pipe.variant,
            "scheduler": type(pipe.scheduler).__name__,
            "input_hashes": {
                **{f"image{i}": file_sha256(p) for i, p in enumerate(request.images) if Path(str(p)).is_file()},
                **({"audio": file_sha256(request.audio)} if request.audio and Path(request.audio).is_file() else {}),
            },
            "timings": {k: v for k, v in output.timings.items() if k != "step_s"},
            "versions": versions(),
            "untrained_demo_model": pipe.model_id in MODELS and MODELS[pipe.model_id].untrained,
        }
    )
    return record


def generate_to_file(
    pipe: HuMoPipeline,
    request: GenerationRequest,
    out_path: str | Path,
    callback_on_step_end=None,
    fps: int = 25,
    advanced: dict | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run the pipeline and write an H.264 + AAC mp4 (audio trimmed to the video) with the settings embedded, an
    AI-generated label in its standard tags and an invisible watermark in its frames (engine/provenance.py); signed
    with C2PA too when HUMO_C2PA_CERT and HUMO_C2PA_KEY are set. `advanced`: the run's speed and LoRA options
    (`engine.speed.options_record`), kept in the settings so that loading the mp4 gives them back.

    Returns the path and the settings record. Nothing is written when generation fails or is stopped.
    """
    signer = c2pa_signer()
    request = with_model_defaults(pipe, request)
    kwargs = request.pipeline_kwargs()
    # One loop for short and long clips: with window_frames the callback runs after every window of a step, with
    # {"latents": the whole clip's, "window": (index, count), "window_span": (start, end)} (engine/long_video.py).
    # A callback may name the loop's tensors it reads (the studio's previews read the step's noise_pred).
    tensor_inputs = getattr(callback_on_step_end, "tensor_inputs", ("latents",))
    output = pipe(**kwargs, output_type="np", callback_on_step_end=callback_on_step_end,
                  callback_on_step_end_tensor_inputs=tensor_inputs)  # fmt: skip
    record = settings_record(pipe, request, output, request.guidance)
    if advanced:
        record["advanced"] = advanced
    path = write_generated(media.to_uint8(output.frames[0]), record, out_path, request.audio, fps, signer)
    return path, record


def c2pa_signer():
    """The C2PA signer when HUMO_C2PA_CERT and HUMO_C2PA_KEY are set, else None. Called before the render, so a bad
    certificate fails before minutes of work."""
    if not provenance.c2pa_configured():
        return None
    return provenance.c2pa_signer(os.environ[provenance.C2PA_CERT_ENV], os.environ[provenance.C2PA_KEY_ENV])


def write_generated(frames, record: dict, out_path, audio, fps: int, signer=None) -> Path:
    """How every video made here leaves the engine (generations and dubs): watermarked (the payload goes into
    `record["provenance"]`), labelled AI-generated in its standard tags, written with the settings and the voice,
    then signed when a signer is given. A file that should be signed and is not is removed."""
    frames, record["provenance"] = provenance.mark_frames(frames, record)
    label = provenance.ai_label(record["model_id"])
    path = media.write_video(frames, out_path, fps=fps, audio=audio, metadata=record, ai_label=label)
    if signer is not None:
        try:
            provenance.sign_c2pa(path, signer=signer)
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
    return Path(path)
