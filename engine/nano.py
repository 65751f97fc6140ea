"""HuMo-nano on disk: the trained CPU-sized model in assets/humo-nano (made by `python -m training nano`).

It is the default model wherever no larger one is present (engine.registry.PREFERENCE): the same
HuMoTransformer3DModel, AutoencoderKLWan, UMT5EncoderModel and WhisperEncoder classes as the real models, at a
size that renders a 2-second 64x64 clip on two CPU cores in well under a minute.

`HUMO_NANO_DIR` points somewhere else (tests build a seconds-long nano in a temporary folder).

HuMo-nano-4step (assets/humo-nano-4step, `python -m training distill-nano`) is its distilled student: only its
transformer is stored (student.json says how it samples); the VAE and encoders are the teacher's, loaded from
the HuMo-nano folder. `HUMO_NANO_STUDENT_DIR` points somewhere else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from engine.components import ASSETS

# Flow-matching shift of training and sampling. Wan's 5 suits 480p (tens of thousands of tokens); a 64x64 clip has
# 16 tokens per frame, so less of the schedule needs to sit at high noise (SD3's resolution-dependent shift).
NANO_SHIFT = 2.0
PARTS = ("transformer/config.json", "vae/config.json", "text_encoder/config.json", "audio_encoder/config.json")


def nano_dir() -> Path:
    return Path(os.environ.get("HUMO_NANO_DIR") or ASSETS / "humo-nano")


def is_present(root: str | Path | None = None) -> bool:
    root = Path(root) if root else nano_dir()
    return all((root / part).exists() for part in PARTS)


def info(root: str | Path | None = None) -> dict:
    """nano.json: the build's budget, timings and held-out scores ({} when absent)."""
    path = (Path(root) if root else nano_dir()) / "nano.json"
    return json.loads(path.read_text()) if path.exists() else {}


def default_size(root: str | Path | None = None) -> tuple[int, int]:
    height, width = info(root).get("size", (64, 64))
    return int(height), int(width)


def load_nano_pipeline(device=None, torch_dtype: torch.dtype | None = None, scheduler: str = "unipc", root=None):
    """A HuMoPipeline of the nano files (float32 unless asked otherwise; it is small)."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5EncoderModel

    from engine.components import build_feature_extractor, load_tiny_tokenizer, load_whisper_encoder
    from engine.errors import MissingWeightsError
    from engine.models import HuMoTransformer3DModel
    from engine.pipeline import HuMoPipeline
    from engine.schedulers import make_scheduler

    root = Path(root) if root else nano_dir()
    if not is_present(root):
        raise MissingWeightsError(
            f"HuMo-nano is not in {root}: build it with `python -m training nano` (about 3 hours on 2 CPU cores)."
        )
    dtype = torch_dtype or torch.float32
    pipe = HuMoPipeline(
        vae=AutoencoderKLWan.from_pretrained(root / "vae").eval(),
        text_encoder=UMT5EncoderModel.from_pretrained(root / "text_encoder").eval(),
        tokenizer=load_tiny_tokenizer(),
        transformer=HuMoTransformer3DModel.from_pretrained(root / "transformer", torch_dtype=dtype).eval(),
        scheduler=make_scheduler(scheduler, shift=NANO_SHIFT),
        audio_encoder=load_whisper_encoder(root / "audio_encoder"),
        feature_extractor=build_feature_extractor(),
    )
    pipe.default_size = default_size(root)
    pipe.default_frames = int(info(root).get("frames", 49))  # its trained length: live generation's chunk
    return pipe.to(device) if device is not None else pipe


def student_dir() -> Path:
    return Path(os.environ.get("HUMO_NANO_STUDENT_DIR") or ASSETS / "humo-nano-4step")


def student_info(root: str | Path | None = None) -> dict:
    """student.json: steps, scheduler, guidance preset, training and held-out comparison ({} when absent)."""
    path = (Path(root) if root else student_dir()) / "student.json"
    return json.loads(path.read_text()) if path.exists() else {}


def is_student_present(root: str | Path | None = None) -> bool:
    root = Path(root) if root else student_dir()
    return (root / "transformer" / "config.json").exists() and (root / "student.json").exists() and is_present()


def load_nano_student_pipeline(device=None, torch_dtype: torch.dtype | None = None, scheduler=None, root=None):
    """The teacher's pipeline with the student's transformer and sampler (Euler: the student learnt Euler segments;
    another sampler would leave its trajectory, so `scheduler` only says which one was asked for)."""
    from engine.errors import MissingWeightsError
    from engine.models import HuMoTransformer3DModel

    root = Path(root) if root else student_dir()
    if not is_student_present(root):
        raise MissingWeightsError(
            f"HuMo-nano-4step is not in {root} (or HuMo-nano, whose VAE and encoders it uses, is missing): build it "
            "with `python -m training distill-nano` (about 40 minutes on 2 CPU cores)."
        )
    meta = student_info(root)
    pipe = load_nano_pipeline(torch_dtype=torch_dtype, scheduler=meta.get("scheduler", "euler"))
    dtype = torch_dtype or torch.float32
    pipe.register_modules(
        transformer=HuMoTransformer3DModel.from_pretrained(root / "transformer", torch_dtype=dtype).eval()
    )
    del scheduler
    return pipe.to(device) if device is not None else pipe
