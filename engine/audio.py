"""Audio in: decode any container to 16 kHz mono, Whisper hidden states, 5 layer bands at 25 fps, 8-frame windows.

Follows reference/humo-official.md §4.4:

1. decode to float32 mono at 16 kHz (the official code uses `librosa.load(path, sr=16000)`; here the ffmpeg
   binary shipped with imageio-ffmpeg decodes any audio or video container, resamples with soxr at 20-bit
   precision, the quality librosa's default `soxr_hq` uses, and channels are averaged like librosa's `to_mono`);
2. N25 = floor(samples / 640) video frames at 25 fps;
3. 30 s chunks -> `WhisperFeatureExtractor` (pads each to 30 s) -> Whisper encoder with all hidden states ->
   stack [1500, L+1, C] per chunk -> concatenate over time -> keep the first 2·N25 frames (50 Hz);
4. bands: means of hidden states 0-7, 8-15, 16-23, 24-31 and state 32, each interpolated 50 -> 25 fps
   (linear, `align_corners=True`, length `int(T50 / 50 * 25)`);
5. windows of 8 audio frames per latent frame ([0,0,0,a-2..a2] for latent 0, a[4j-5 .. 4j+2] after).
"""

from __future__ import annotations

import math
import os
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import InputError
from engine.media import ffmpeg_exe, probe_header

SAMPLING_RATE = 16000
SAMPLES_PER_FRAME = 640  # 16000 / 25: one 25-fps video frame
CHUNK_SAMPLES = 480_000  # 30 s, the Whisper input window
WHISPER_FPS = 50  # encoder output rate (1500 frames per 30 s)
VIDEO_FPS = 25
NUM_BANDS = 5
WINDOW = 8  # audio frames per latent frame: 4 covered + 2 context either side
SILENCE_PEAK = 1e-3  # peak amplitude below -60 dBFS counts as silence

_HINT = "Use a WAV, MP3, M4A, FLAC or OGG file, or a video with a sound track."


# ---------------------------------------------------------------------------------------------- probing
MAX_PEAK = 2.0  # decoded float samples beyond this are a broken export, not loud audio (PCM decodes to within ±1)
_DECODE_MARGIN_S = 1.0  # ffmpeg `-t` cap = max_seconds + this, so a lying header cannot make it decode more
_LENGTH_SLACK_S = 0.5  # decoded audio may exceed max_seconds by this much (codec padding) before it is refused
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "7.1": 8}


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream of a file, from its container header. `duration_s` is None when the header has no
    duration (raw streams, some piped ogg/webm); `sample_rate` / `channels` None when ffmpeg does not say."""

    duration_s: float | None
    sample_rate: int | None
    channels: int | None
    codec: str | None


def _channels(layout: str | None) -> int | None:
    if not layout:
        return None
    m = re.match(r"(\d+) channels", layout)
    return int(m.group(1)) if m else _LAYOUT_CHANNELS.get(layout.split("(")[0].strip())


def _format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = round(seconds)
    h, m, sec = total // 3600, total // 60 % 60, total % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d} min"


def _check_file(path: Path, name: str, display_name: str | None) -> None:
    if not path.is_file():
        raise InputError(
            f"Audio file not found: {display_name or path}. Choose an existing audio or video file.", field="audio"
        )
    if path.stat().st_size == 0:
        raise InputError(f"The audio file {name} is empty (0 bytes). {_HINT}", field="audio")


def _no_audio_track(name: str) -> InputError:
    return InputError(
        f"{name} has no audio track. Choose a file with sound (a voice recording, or a video with a sound track), or "
        "leave the audio empty to make a video without a voice.",
        field="audio",
    )


def probe_audio(path: str | os.PathLike, *, display_name: str | None = None) -> AudioInfo:
    """Duration, sample rate, channels and codec of the first audio stream, from the container header only.

    Nothing is decoded (`ffmpeg -i FILE` with no output), so any length costs the same few milliseconds. Raises
    `InputError(field="audio")`, naming `display_name` (default: the file name), when the file is missing, empty,
    not audio (text, an image), has no audio track (a silent video) or cannot be opened (corrupt).
    """
    path = Path(path)
    name = display_name or path.name
    _check_file(path, name, display_name)
    try:
        info = probe_header(path, field="audio", display_name=name)
    except InputError as exc:  # not a container ffmpeg can open: text, random bytes, a damaged header
        raise InputError(f"{exc} {_HINT}", field="audio") from None
    stream = info["audio"]
    if stream is None:
        fmt, codec = info.get("format") or "", (info["video"] or {}).get("codec")
        if fmt.endswith("_pipe") or fmt in ("gif", "apng") or (fmt == "image2" and codec not in (None, "rawvideo")):
            raise InputError(f"{name} is an image, not audio. {_HINT}", field="audio")
        if fmt == "image2":  # ffmpeg's last-resort guess (e.g. headerless raw samples)
            raise InputError(f"Could not read {name} as audio (ffmpeg found no audio stream). {_HINT}", field="audio")
        if info["video"] is not None:
            raise _no_audio_track(name)
        raise InputError(f"{name} contains no audio stream. {_HINT}", field="audio")
    return AudioInfo(
        duration_s=info["duration"],
        sample_rate=stream.get("sample_rate"),
        channels=_channels(stream.get("channel_layout")),
        codec=stream.get("codec"),
    )


def _too_long(name: str, seconds: float, max_seconds: float, advice: str | None, at_least: bool) -> InputError:
    length = f"{'at least ' if at_least else ''}{_format_duration(seconds)}"
    advice = advice or f"Trim it to {_format_duration(max_seconds)} or less and try again."
    return InputError(f"{name} is {length} long; the limit is {_format_duration(max_seconds)}. {advice}", field="audio")


# ---------------------------------------------------------------------------------------------- decoding
def load_audio(
    path: str | os.PathLike,
    sampling_rate: int = SAMPLING_RATE,
    *,
    max_seconds: float | None = None,
    display_name: str | None = None,
    too_long_advice: str | None = None,
) -> np.ndarray:
    """Decode the first audio stream of any audio/video file to a float32 mono waveform at `sampling_rate`.

    The header is probed first (`probe_audio`). With `max_seconds`, audio whose header says it is longer is refused
    before decoding, and ffmpeg is capped at max_seconds + 1 s (`-t`), so a lying or missing header cannot make it
    decode more; decoded audio longer than max_seconds + 0.5 s is then refused too. The refusal says the length, the
    limit and `too_long_advice` (default: trim it). Decoded samples must be finite and within ±MAX_PEAK.

    Raises `InputError(field="audio")`, naming `display_name` (default: the file name), when the file is missing,
    empty, not audio, has no audio track or no samples, is corrupt, too long, or holds invalid samples.
    """
    path = Path(path)
    name = display_name or path.name
    info = probe_audio(path, display_name=display_name)
    if max_seconds is not None and info.duration_s is not None and info.duration_s > max_seconds:
        raise _too_long(name, info.duration_s, max_seconds, too_long_advice, at_least=False)
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn"]
    if max_seconds is not None:
        cmd += ["-t", f"{max_seconds + _DECODE_MARGIN_S:.3f}"]
    cmd += ["-af", f"aresample={sampling_rate}:resampler=soxr:precision=20", "-c:a", "pcm_f32le", "-f", "wav"]
    proc = subprocess.run([*cmd, "pipe:1"], capture_output=True)
    err = proc.stderr.decode("utf-8", "replace").strip().replace(str(path), name)
    if proc.returncode != 0:
        if "matches no streams" in err:
            raise _no_audio_track(name)
        detail = err.splitlines()[-1] if err else f"ffmpeg exit code {proc.returncode}"
        raise InputError(f"Could not read {name} as audio ({detail}). {_HINT}", field="audio")
    channels, data = _parse_wav_f32(proc.stdout)
    del proc
    if channels < 1 or data.size < channels:
        raise InputError(f"{name} contains no audio samples. {_HINT}", field="audio")
    data = data[: data.size - data.size % channels].reshape(-1, channels)
    seconds = len(data) / sampling_rate
    if max_seconds is not None and seconds > max_seconds + _LENGTH_SLACK_S:
        raise _too_long(name, seconds, max_seconds, too_long_advice, at_least=True)
    peak = max(float(data.max()), -float(data.min()))
    if not math.isfinite(peak):
        raise InputError(
            f"{name} contains invalid samples (NaN or infinity): export the file again as normal PCM.", field="audio"
        )
    if peak > MAX_PEAK:
        raise InputError(
            f"{name} has samples out of range (peak {peak:.3g}; expected within ±1): export the file again as "
            "normal PCM.",
            field="audio",
        )
    waveform = data.mean(axis=1) if channels > 1 else data[:, 0]
    return np.ascontiguousarray(waveform, dtype=np.float32)


def _parse_wav_f32(blob: bytes) -> tuple[int, np.ndarray]:
    """(channels, interleaved float32 samples) of a piped WAV. The sizes in a piped header are placeholders, so
    the data chunk is taken to run to the end of the stream."""
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        return 0, np.zeros(0, np.float32)
    pos, channels = 12, 0
    while pos + 8 <= len(blob):
        chunk_id, size = blob[pos : pos + 4], struct.unpack("<I", blob[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            channels = struct.unpack("<H", blob[body + 2 : body + 4])[0]
        elif chunk_id == b"data":
            payload = blob[body:]
            payload = payload[: len(payload) - len(payload) % 4]
            return channels, np.frombuffer(payload, dtype="<f4").astype(np.float32)
        pos = body + size + (size & 1)
    return channels, np.zeros(0, np.float32)


def write_wav(
    path: str | os.PathLike, waveform: np.ndarray, sampling_rate: int = SAMPLING_RATE, *, dtype: str = "int16"
) -> Path:
    """A waveform in [-1, 1] ([N] mono or [N, C]) -> a WAV file, written atomically (temporary file, then rename).

    dtype "int16": 16-bit PCM (clipped to [-1, 1], scaled by 32767); "float32": IEEE float, lossless, so `load_audio`
    gives back exactly these samples when `sampling_rate` is its own (no resampling happens then).
    """
    data = np.asarray(waveform, dtype=np.float32)
    data = data.reshape(-1, 1) if data.ndim == 1 else data
    if data.ndim != 2 or data.shape[1] < 1:
        raise ValueError(f"waveform must be [N] or [N, channels], got shape {np.shape(waveform)}")
    if dtype == "int16":
        tag, payload = 1, (np.clip(data, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    elif dtype == "float32":
        tag, payload = 3, data.astype("<f4").tobytes()
    else:
        raise ValueError(f"dtype must be 'int16' or 'float32', got {dtype!r}")
    channels, width = data.shape[1], 2 if dtype == "int16" else 4
    rate, block = int(sampling_rate), channels * width
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, 8 * width)
    chunks = [(b"fmt ", fmt + (b"\0\0" if tag == 3 else b""))]  # non-PCM formats carry cbSize and a fact chunk
    chunks += [(b"fact", struct.pack("<I", len(data)))] if tag == 3 else []
    body = b"WAVE" + b"".join(c + struct.pack("<I", len(d)) + d for c, d in [*chunks, (b"data", payload)])
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------- frame counts
def num_video_frames(num_samples: int, sampling_rate: int = SAMPLING_RATE) -> int:
    """N25: the number of whole 25-fps video frames the audio covers (640 samples each at 16 kHz)."""
    return int(num_samples) * VIDEO_FPS // int(sampling_rate)


def snap_frames(frames: int) -> int:
    """Snap a frame count down to the 4n+1 grid of the causal VAE: 4·floor((frames-1)/4)+1."""
    frames = int(frames)
    if frames < 1:
        raise InputError(f"Number of frames must be at least 1 (got {frames}).", field="num_frames")
    return 4 * ((frames - 1) // 4) + 1


def latent_frame_count(num_frames: int) -> int:
    """F_vid = (frames-1)//4 + 1 latent frames for a 4n+1-frame video."""
    return (int(num_frames) - 1) // 4 + 1


# ---------------------------------------------------------------------------------------------- Whisper
def _band_slices(num_hidden_states: int) -> list[slice]:
    """The 5 layer bands. Official (33 or more hidden states, as in the precomputed-feature path): means of states
    0-7, 8-15, 16-23, 24-31, then state 32 alone.

    Generalisation for shallower encoders (tiny test models, H < 33): the first H-1 states are cut into 4
    near-equal consecutive groups (group k = [floor(k·n/4), floor((k+1)·n/4)), at least one state each, so with
    fewer than 4 such states some groups repeat a state) and the last state is the fifth band.
    """
    if num_hidden_states >= 33:
        return [slice(0, 8), slice(8, 16), slice(16, 24), slice(24, 32), slice(32, 33)]
    n = num_hidden_states - 1
    if n < 1:
        raise ValueError(f"need at least 2 hidden states to form the 5 bands, got {num_hidden_states}")
    slices = []
    for k in range(4):
        start = min(k * n // 4, n - 1)
        end = max((k + 1) * n // 4, start + 1)
        slices.append(slice(start, end))
    slices.append(slice(n, n + 1))
    return slices


def _band_means(hidden_states: torch.Tensor) -> torch.Tensor:
    """[T, H, C] -> [T, 5, C] float32 (per-frame means, so it can run chunk by chunk)."""
    hidden_states = hidden_states.float()
    return torch.stack([hidden_states[:, s].mean(dim=1) for s in _band_slices(hidden_states.shape[1])], dim=1)


def _to_25fps(bands: torch.Tensor) -> torch.Tensor:
    """[T50, 5, C] -> [int(T50/50*25), 5, C], linear with align_corners=True (per band and channel)."""
    t50, b, c = bands.shape
    # the official float expression; it gives N-1 for some even T50 = 2N (e.g. T50 = 58 -> 28), kept for parity
    out_len = int(t50 / float(WHISPER_FPS) * VIDEO_FPS)
    if out_len < 1:
        raise InputError("The audio is shorter than one video frame (40 ms). Use a longer recording.", field="audio")
    x = bands.reshape(t50, b * c).T[None]  # [1, 5C, T50]
    x = F.interpolate(x, size=out_len, mode="linear", align_corners=True)
    return x[0].T.reshape(out_len, b, c)


def group_whisper_layers(hidden_states: torch.Tensor) -> torch.Tensor:
    """Whisper hidden states [T50, H, C] (or [1, T50, H, C]) -> 25-fps band features [T25, 5, C] (float32).

    H = 33 for Whisper-large-v3 (embeddings + 32 layers); more states use the first 33 like the official code;
    see `_band_slices` for shallower encoders.
    """
    if hidden_states.ndim == 4:
        if hidden_states.shape[0] != 1:
            raise ValueError(f"expected a batch of one, got shape {tuple(hidden_states.shape)}")
        hidden_states = hidden_states[0]
    if hidden_states.ndim != 3:
        raise ValueError(f"expected hidden states [T50, H, C], got shape {tuple(hidden_states.shape)}")
    return _to_25fps(_band_means(hidden_states))


def window_audio_features(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """25-fps features [T25, 5, C] -> per-latent-frame windows [F_vid, 8, 5, C], F_vid = (num_frames-1)//4+1.

    Latent 0 gets 3 zero slots then audio frames -2..2 (effectively [0,0,0,0,0,a0,a1,a2]); latent j >= 1 gets
    audio frames 4j-5 .. 4j+2. Frames outside [0, T25) are zero vectors.
    """
    f_vid = latent_frame_count(num_frames)
    if f_vid < 1:
        raise InputError(f"Number of frames must be at least 1 (got {num_frames}).", field="num_frames")
    t25 = features.shape[0]
    j = torch.arange(f_vid)[:, None]
    slot = torch.arange(WINDOW)[None, :]
    index = 4 * j - 5 + slot  # j >= 1: 4j-5 .. 4j+2
    first = torch.tensor([-1, -1, -1, -2, -1, 0, 1, 2])  # j = 0: 3 padding slots, then -2..2
    index[0] = first
    valid = (index >= 0) & (index < t25)
    padded = torch.cat([features, features.new_zeros(1, *features.shape[1:])])  # row t25 is the zero vector
    index = torch.where(valid, index, torch.full_like(index, t25))
    return padded[index]


def _encoder_of(audio_encoder):
    """The Whisper encoder of a `WhisperModel` (`.encoder`) or `WhisperForConditionalGeneration` (`.model.encoder`),
    or the encoder itself."""
    for owner in (audio_encoder, getattr(audio_encoder, "model", None)):
        inner = getattr(owner, "encoder", None)
        if isinstance(inner, torch.nn.Module):
            return inner
    return audio_encoder


def _iter_whisper_chunks(waveform, audio_encoder, feature_extractor, device=None, dtype=None):
    """Yield the stacked hidden states [1500, L+1, C] of each 30 s chunk of the waveform."""
    encoder = _encoder_of(audio_encoder)
    param = next(encoder.parameters())
    device = torch.device(device) if device is not None else param.device
    dtype = dtype or param.dtype
    waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
    sampling_rate = getattr(feature_extractor, "sampling_rate", SAMPLING_RATE)
    for start in range(0, len(waveform), CHUNK_SAMPLES):
        chunk = waveform[start : start + CHUNK_SAMPLES]
        mel = feature_extractor(chunk, sampling_rate=sampling_rate, return_tensors="pt").input_features
        out = encoder(mel.to(device=device, dtype=dtype), output_hidden_states=True)
        yield torch.stack(out.hidden_states, dim=2)[0]


@torch.no_grad()
def extract_whisper_features(
    waveform: np.ndarray | torch.Tensor,
    audio_encoder,
    feature_extractor,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """All Whisper hidden states of a 16 kHz waveform, [T50, L+1, C] with T50 = 2·N25 (§4.4 step 3-4).

    `audio_encoder` is a transformers `WhisperEncoder` or a model with `.encoder` (e.g. `WhisperModel`).
    Runs on the encoder's device and dtype unless given (the official code uses fp32).
    """
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().float().numpy()
    n25 = num_video_frames(len(np.asarray(waveform).reshape(-1)))
    chunks = list(_iter_whisper_chunks(waveform, audio_encoder, feature_extractor, device, dtype))
    if not chunks:
        raise InputError("The audio contains no samples. Use a longer recording.", field="audio")
    return torch.cat(chunks, dim=0)[: 2 * n25]


def check_voice(waveform: np.ndarray, name: str = "The audio") -> None:
    """Raise when the waveform cannot drive a video: shorter than one frame, invalid samples, or (near) silent.

    The studio calls it on the user's upload before any job exists, so the message names their file.
    """
    if num_video_frames(len(waveform)) < 1:
        raise InputError(f"{name} is shorter than one video frame (40 ms). Use a longer recording.", field="audio")
    peak = float(np.max(np.abs(waveform))) if len(waveform) else 0.0
    if not math.isfinite(peak):
        raise InputError(f"{name} contains invalid samples (NaN or infinity). Re-export the file.", field="audio")
    if peak < SILENCE_PEAK:
        raise InputError(
            f"{name} is silent (peak {20 * math.log10(max(peak, 1e-12)):.0f} dBFS). Use a recording with a voice, "
            "or remove the audio to make a video from the text and image only.",
            field="audio",
        )


@torch.no_grad()
def encode_audio(
    path_or_waveform: str | os.PathLike | np.ndarray | torch.Tensor,
    audio_encoder,
    feature_extractor,
    num_frames: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, int]:
    """Audio (path or 16 kHz float waveform) -> (windows [F_vid, 8, 5, C] float32, num_frames).

    `num_frames` None -> snap(N25), the whole audio; otherwise snapped to 4n+1. Windows past the end of the audio
    are zeros. Bands are reduced chunk by chunk, which gives the same numbers as grouping all hidden states at once
    (the band means are per frame) without holding every layer of a long recording in memory.
    """
    if isinstance(path_or_waveform, (str, os.PathLike)):
        name = Path(path_or_waveform).name
        waveform = load_audio(path_or_waveform)
    else:
        name = "The audio"
        waveform = path_or_waveform
        if isinstance(waveform, torch.Tensor):
            waveform = waveform.detach().cpu().float().numpy()
        waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
    check_voice(waveform, name)
    n25 = num_video_frames(len(waveform))
    features = audio_features(waveform, audio_encoder, feature_extractor, device, dtype)
    num_frames = snap_frames(n25 if num_frames is None else num_frames)
    return window_audio_features(features, num_frames), num_frames


@torch.no_grad()
def audio_features(waveform: np.ndarray, audio_encoder, feature_extractor, device=None, dtype=None) -> torch.Tensor:
    """25-fps band features [N25, 5, C] of a checked 16 kHz waveform: what `window_audio_features` windows. Chunked
    generation (engine/live.py) encodes a voice once and windows each chunk's frames from it."""
    n25 = num_video_frames(len(waveform))
    bands = [_band_means(h) for h in _iter_whisper_chunks(waveform, audio_encoder, feature_extractor, device, dtype)]
    return _to_25fps(torch.cat(bands, dim=0)[: 2 * n25])


__all__ = [
    "SAMPLING_RATE",
    "AudioInfo",
    "probe_audio",
    "load_audio",
    "write_wav",
    "num_video_frames",
    "snap_frames",
    "latent_frame_count",
    "group_whisper_layers",
    "window_audio_features",
    "extract_whisper_features",
    "encode_audio",
    "audio_features",
    "check_voice",
    "ffmpeg_exe",
]
