"""Small media files the tests make (one definition each): a syllable-like voice and a face-ish image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from engine.audio import write_wav as write_wav_samples


def voice(seconds: float, sr: int = 16000, freq: float = 220.0, amplitude: float = 0.3, channels: int = 1):
    """A tone under a 3 Hz envelope ([N] or [N, channels] in [-1, 1]): not silent, not constant."""
    t = np.arange(int(round(seconds * sr))) / sr
    mono = amplitude * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * freq * t)
    return np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono


def write_wav(path, seconds: float, freq: float = 220.0, sr: int = 16000, amplitude: float = 0.3,
              channels: int = 1) -> str:  # fmt: skip
    """`voice(...)` as a 16-bit WAV file (through the engine's own writer); returns the path as a string."""
    return str(write_wav_samples(path, voice(seconds, sr, freq, amplitude, channels), sr))


def wav_bytes(seconds: float, **kw) -> bytes:
    """The bytes of `write_wav` (for uploads built in memory)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return Path(write_wav(Path(folder) / "voice.wav", seconds, **kw)).read_bytes()


def write_image(path, color=(200, 120, 90), size=(40, 24), mode: str = "RGB", fmt: str | None = None):
    """A flat image with a darker square (so it is not constant); a path (str) or, for a BytesIO, the buffer."""
    image = Image.new("RGB", size, color)
    image.paste((20, 40, 200), (size[0] // 8, size[1] // 8, max(size[0] // 3, size[0] // 8 + 1),
                                max(size[1] // 3, size[1] // 8 + 1)))  # fmt: skip
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path if isinstance(path, io.BytesIO) else str(path)
