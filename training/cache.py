"""Encode training clips into a cache with the pipeline's own encoders (so training sees what inference sees).

Input: a folder made by `training.raw.build_clips` (`manifest.jsonl` + `clips/<id>/...`). Output folder:

    cache/<id>.safetensors   latents [16, F_lat, h, w] (clip), ref_latents [16, 1, h, w], prompt_embeds [512, D],
                             audio_embeds [F_lat, 8, 5, C] (windowed Whisper features), face_mask [F_lat, h, w]
    negative.safetensors     the negative-prompt embedding (CFG "null text")
    index.json               clip ids, shapes, encoder identity

Resumable: a clip whose file exists is not encoded again. Written atomically per clip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from engine import media
from engine.errors import InputError


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """RGB uint8 [T, H, W, 3] -> [1, 3, T, H, W] in [-1, 1] (the VAE's input)."""
    return torch.from_numpy(frames).float().div(127.5).sub(1.0).permute(3, 0, 1, 2)[None]


def _video_tensor(path: Path) -> torch.Tensor:
    return frames_to_tensor(media.read_video_frames(path))


def _face_mask(path: Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """[F_lat, h, w] in [0, 1] (build_clips stores the fraction of each 8x8 cell covered by a face, as uint8)."""
    if not path.exists():
        return torch.zeros(shape)
    mask = np.load(path).astype(np.float32)
    if mask.max() > 1.0:
        mask = mask / 255.0
    mask = torch.from_numpy(mask)
    if tuple(mask.shape) != tuple(shape):
        mask = torch.nn.functional.interpolate(mask[None], size=shape[1:], mode="area")[0][: shape[0]]
    return mask.clamp(0, 1)


@torch.no_grad()
def encode_clip(pipe, clip_dir_root: Path, entry: dict) -> dict[str, torch.Tensor]:
    """Every tensor the trainer needs for one clip of a `build_clips` folder."""
    video = _video_tensor(clip_dir_root / entry["video"])
    audio_path = clip_dir_root / entry["audio"] if entry.get("audio") else None
    has_audio = audio_path is not None and audio_path.exists()
    return encode_example(
        pipe,
        video,
        clip_dir_root / entry["reference"],
        entry.get("caption") or "",
        str(audio_path) if has_audio else None,
        mask_path=clip_dir_root / entry.get("face_mask", "-"),
        audio_task_ok=has_audio and "av" in entry.get("task_ok", ["av"]),
    )


@torch.no_grad()
def encode_example(
    pipe,
    video: torch.Tensor,
    reference,
    caption: str,
    audio,
    *,
    mask_path: Path | None = None,
    face_mask: torch.Tensor | None = None,
    audio_task_ok: bool = True,
) -> dict[str, torch.Tensor]:
    """One training example from in-memory inputs: video [1, 3, F, H, W] in [-1, 1], a reference image (path, PIL
    or array), the caption, audio (path, 16 kHz waveform or None) and the face mask ([F_lat, h, w] in [0, 1], or a
    `.npy` path as written by build_clips)."""
    num_frames = video.shape[2]
    height, width = video.shape[-2:]
    latents = pipe._vae_encode(video)[0]
    ref = pipe.encode_image([reference], height, width)[0]
    prompt_embeds, _ = pipe.encode_prompt(caption, None)
    audio_embeds = None
    if audio is not None:
        try:
            audio_embeds, _ = pipe.encode_audio(audio, num_frames)
        except InputError:  # silent clip: keep it for the subject task, audio as the null input
            audio_embeds = None
    has_audio = audio_embeds is not None and audio_task_ok
    if audio_embeds is None:
        cfg = pipe.transformer.config
        audio_embeds = torch.zeros(latents.shape[1], cfg.audio_window, cfg.audio_bands, cfg.audio_dim)
    shape = tuple(latents.shape[1:])
    mask = face_mask if face_mask is not None else _face_mask(mask_path or Path("-"), shape)
    extra = {}
    if pipe.variant == "17b":  # the grey-video latents of the 36-channel conditioning (video + 1 reference slot)
        extra["zero_latents"] = pipe.zero_vae_latents(latents.shape[1] + 1, height, width)[0].float()
    return {
        **extra,
        "latents": latents.float(),
        "ref_latents": ref.float(),
        "prompt_embeds": prompt_embeds[0].float(),
        "audio_embeds": audio_embeds.float(),
        "face_mask": mask.float(),
        "has_audio": torch.tensor(float(has_audio)),
    }


def build_cache(pipe, clips_dir: str | Path, cache_dir: str | Path, progress: bool = True) -> dict:
    """Encode every clip of `clips_dir/manifest.jsonl` into `cache_dir`. Returns the index."""
    clips_dir, cache_dir = Path(clips_dir), Path(cache_dir)
    manifest = clips_dir / "manifest.jsonl"
    if not manifest.exists():
        raise InputError(f"{manifest} not found: run `python -m training prepare` first.", field="dataset")
    entries = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    if not entries:
        raise InputError(f"{manifest} lists no clips: every source was skipped (see skipped.jsonl).", field="dataset")
    cache_dir.mkdir(parents=True, exist_ok=True)
    negative = cache_dir / "negative.safetensors"
    if not negative.exists():
        _, neg = pipe.encode_prompt("", None)
        _atomic_save({"negative_prompt_embeds": neg[0].float()}, negative)
    done, failed = [], {}
    for entry in tqdm(entries, desc="encode", disable=not progress):
        out = cache_dir / f"{entry['id']}.safetensors"
        if not out.exists():
            try:
                _atomic_save(encode_clip(pipe, clips_dir, entry), out)
            except InputError as exc:  # a clip the encoders refuse is skipped with its reason
                failed[entry["id"]] = str(exc)
                continue
        done.append(entry["id"])
    from engine.registry import encoder_fingerprints

    index = {"clips": done, "failed": failed, "model_id": pipe.model_id, "source": str(clips_dir),
             "encoders": encoder_fingerprints(pipe)}  # fmt: skip
    return write_index(cache_dir, index)


def write_index(cache_dir: str | Path, index: dict) -> dict:
    """index.json of a cache folder, written atomically (a half-written index never names missing clips)."""
    tmp = Path(cache_dir) / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=2))
    os.replace(tmp, Path(cache_dir) / "index.json")
    return index


def cache_index(cache_dir: str | Path) -> dict:
    """index.json of a cache folder: clip ids, the model id and encoder fingerprints it was encoded with."""
    index_path = Path(cache_dir) / "index.json"
    if not index_path.exists():
        raise InputError(
            f"{cache_dir} is not a training cache (no index.json): run `python -m training cache`.", field="dataset"
        )
    return json.loads(index_path.read_text())


def load_cached(cache_dir: str | Path) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """(clips, negative_prompt_embeds) of a cache folder."""
    cache_dir = Path(cache_dir)
    index = cache_index(cache_dir)
    clips = [load_file(str(cache_dir / f"{clip_id}.safetensors")) for clip_id in index["clips"]]
    negative = load_file(str(cache_dir / "negative.safetensors"))["negative_prompt_embeds"]
    return clips, negative
