"""Invisible watermark (engine/provenance.py): bit accuracy after our encode, a re-encode at half the bitrate and a
downscale to half size (detected at half size, and after upscaling back), false positives on unmarked videos, and
embed/detect time per frame. Prints a markdown table and writes bench/watermark_results.json.

Content is synthetic, "natural-ish": `texture` = a panning 1/f (pink) noise field in colour with moving ellipses and
sensor noise (natural-image statistics); `smooth` = gradients, soft moving shapes and light noise (like a studio
background: the hard case, few strong coefficients to carry bits). No model frames (the tiny model outputs noise).

    .venv/bin/python bench/watermark_bench.py [--frames 17] [--scale 36] [--negatives 100] [--no-library]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import media, provenance  # noqa: E402

SIZES = [(480, 832), (720, 1280)]


def pink_field(rng: np.random.Generator, h: int, w: int, slope: float = 1.0) -> np.ndarray:
    """A [h, w] field with a 1/f**slope amplitude spectrum, scaled to [0, 1]."""
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.rfftfreq(w), indexing="ij")
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(h, w)) ** slope
    spectrum = amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape))
    field = np.fft.irfft2(spectrum, s=(h, w))
    return (field - field.min()) / (np.ptp(field) + 1e-9)


def clip(kind: str, frames: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = None
    if kind == "texture":
        slope = rng.uniform(0.8, 1.4)
        base = np.stack([pink_field(rng, h + frames * 4, w + frames * 4, slope) for _ in range(3)], -1) * 220 + 15
    colours = rng.uniform(30, 225, (3, 3))
    out = []
    for t in range(frames):
        if base is not None:
            img = base[t * 2 : t * 2 + h, t * 4 : t * 4 + w].copy()
        else:
            img = np.stack(
                [colours[0, c] + (colours[1, c] - colours[0, c]) * (x / w + 0.3 * y / h) for c in range(3)], -1
            )
        for k in range(3):  # moving ellipses, soft-edged
            cx = w * (0.2 + 0.3 * k) + 60 * np.cos(t / 5 + k)
            cy = h * 0.5 + 50 * np.sin(t / 4 + 2 * k)
            mask = np.clip(1.5 - np.hypot((x - cx) / (w * 0.08), (y - cy) / (h * 0.15)), 0, 1)[..., None]
            img = img * (1 - mask) + colours[2] * mask * (0.7 + 0.1 * k)
        img += rng.normal(0, 3 if kind == "texture" else 1.5, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def ffmpeg(*args: str) -> None:
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def bitrate(path: Path, frames: int, fps: float = 25) -> float:
    return path.stat().st_size * 8 / (frames / fps)


def accuracy(frames: np.ndarray, payload: int, library: bool = False) -> dict:
    scores = library_scores(frames) if library else provenance.read_scores(frames)
    acc = float(((scores * 255 > 127) == provenance.payload_bits(payload)).mean())
    confidence = float(np.maximum(scores, 1 - scores).mean())
    detected = provenance.decode_scores(scores) == payload
    return {"bit_acc": round(acc, 4), "detected": detected, "confidence": round(confidence, 4)}


def library_embed(frames: np.ndarray, payload: int) -> np.ndarray:
    """The unmodified library's dwtDct, as diffusers' StableDiffusionXLWatermarker calls it (BGR, default scales)."""
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", [int(b) for b in provenance.payload_bits(payload)])
    return np.stack([encoder.encode(np.ascontiguousarray(f[..., ::-1]), "dwtDct")[..., ::-1] for f in frames])


def library_scores(frames: np.ndarray) -> np.ndarray:
    """Per bit, the share of sampled frames whose own dwtDct read-out (the unmodified library) says 1."""
    from imwatermark import WatermarkDecoder

    decoder = WatermarkDecoder("bits", provenance.MARK_BITS)
    sample = frames[np.linspace(0, len(frames) - 1, min(len(frames), provenance.DETECT_FRAMES)).round().astype(int)]
    return np.mean([decoder.decode(np.ascontiguousarray(f[..., ::-1]), "dwtDct") for f in sample], axis=0)


def upscale(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in frames])


def run_positive(kind: str, h: int, w: int, frames: int, work: Path, library: bool = False) -> dict:
    payload = int(np.random.default_rng(h + w).integers(0, 2**32))
    raw = clip(kind, frames, h, w, seed=h)
    started = time.perf_counter()
    marked = library_embed(raw, payload) if library else provenance.embed_watermark(raw, payload)
    embed_s = (time.perf_counter() - started) / frames
    psnr = 10 * np.log10(255**2 / np.mean((marked.astype(np.float64) - raw) ** 2))
    ours = media.write_video(marked, work / f"{kind}{h}.mp4")
    decoded = media.read_video_frames(ours)
    started = time.perf_counter()
    library_scores(decoded) if library else provenance.read_scores(decoded)
    detect_s = (time.perf_counter() - started) / min(frames, provenance.DETECT_FRAMES)
    half_rate = work / f"{kind}{h}_halfrate.mp4"
    rate = bitrate(ours, frames)
    ffmpeg("-i", str(ours), "-c:v", "libx264", "-b:v", f"{int(rate / 2)}", "-pix_fmt", "yuv420p", str(half_rate))
    half_size = work / f"{kind}{h}_halfsize.mp4"
    ffmpeg(
        "-i",
        str(ours),
        "-vf",
        "scale=iw/2:ih/2",
        "-c:v",
        "libx264",
        "-crf",
        "23",
        "-pix_fmt",
        "yuv420p",
        str(half_size),
    )
    small = media.read_video_frames(half_size)
    return {
        "method": "library dwtDct (diffusers)" if library else f"ours {provenance.METHOD} scale {provenance.SCALE:g}",
        "content": kind,
        "size": f"{w}x{h}",
        "frames": frames,
        "psnr_db": round(float(psnr), 2),
        "embed_ms_per_frame": round(embed_s * 1000, 1),
        "detect_ms_per_frame": round(detect_s * 1000, 1),
        "raw": accuracy(marked, payload, library),
        "our_mp4": {**accuracy(decoded, payload, library), "kbps": round(rate / 1000)},
        "half_bitrate": accuracy(media.read_video_frames(half_rate), payload, library),
        "half_size": accuracy(small, payload, library),
        "half_size_upscaled": accuracy(upscale(small, h, w), payload, library),
    }


def run_negatives(count: int, work: Path) -> dict:
    """Unmarked 17-frame clips of varied content and size, through our encode, scanned with the real detector."""
    rng = np.random.default_rng(1234)
    passed, crc_passed, confidences = 0, 0, []
    for i in range(count):
        kind = ["texture", "smooth"][i % 2]
        h, w = [(256, 256), (288, 352), (320, 320), (256, 448)][i % 4]
        frames = clip(kind, 17, h, w, seed=10_000 + i)
        if i % 5 == 4:  # some flat, some pure noise
            frames = np.full_like(frames, rng.integers(0, 256, 3, dtype=np.uint8)) if i % 10 == 4 else frames
            frames = rng.integers(0, 256, frames.shape, dtype=np.uint8) if i % 10 == 9 else frames
        decoded = media.read_video_frames(media.write_video(frames, work / "neg.mp4"))
        found, confidence = provenance.detect_watermark(decoded)
        passed += found is not None
        crc_passed += provenance.bits_payload(provenance.read_scores(decoded) * 255 > 127) is not None
        confidences.append(confidence)
    return {
        "videos": count,
        "detected": passed,
        "crc_passed": crc_passed,
        "confidence_max": round(max(confidences), 4),
        "confidence_mean": round(float(np.mean(confidences)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--scale", type=float, default=provenance.SCALE, help="quantisation step (library default 36)")
    parser.add_argument("--negatives", type=int, default=100)
    parser.add_argument("--no-library", action="store_true", help="skip the unmodified library's dwtDct rows")
    parser.add_argument("--out", default=str(Path(__file__).with_name("watermark_results.json")))
    args = parser.parse_args()
    provenance.SCALE = args.scale
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        cases = [(h, w, kind) for h, w in SIZES for kind in ("texture", "smooth")]
        rows = [run_positive(kind, h, w, args.frames, work) for h, w, kind in cases]
        if not args.no_library:
            rows += [run_positive(kind, h, w, args.frames, work, library=True) for h, w, kind in cases]
        negatives = run_negatives(args.negatives, work)

    def cell(r: dict) -> str:
        return f"{r['bit_acc']:.3f} {'✓' if r['detected'] else '✗'} ({r['confidence']:.2f})"

    print(f"{args.frames} frames per clip, detection reads {provenance.DETECT_FRAMES} of them; cells: bit accuracy, "
          "payload detected (CRC), confidence")  # fmt: skip
    print("| method | content | size | PSNR dB | embed ms/f | detect ms/f | raw | our mp4 (kbps) | half bitrate "
          "| half size | half size, upscaled |\n|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in rows:
        print(f"| {r['method']} | {r['content']} | {r['size']} | {r['psnr_db']} | {r['embed_ms_per_frame']} | "
              f"{r['detect_ms_per_frame']} | {cell(r['raw'])} | {cell(r['our_mp4'])} ({r['our_mp4']['kbps']}) | "
              f"{cell(r['half_bitrate'])} | {cell(r['half_size'])} | {cell(r['half_size_upscaled'])} |")  # fmt: skip
    n = negatives
    print(f"\nfalse positives: {n['detected']} of {n['videos']} unmarked videos detected (CRC passed by chance: "
          f"{n['crc_passed']} without correction); confidence mean {n['confidence_mean']}, max "
          f"{n['confidence_max']}")  # fmt: skip
    result = {"scale": args.scale, "rows": rows, "negatives": negatives}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
