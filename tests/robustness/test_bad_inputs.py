"""Hundreds of bad inputs through the `/generate` API (raw HTTP, so NaN, infinity and lone surrogates reach the
server): every answer is a video or the studio's own sentence, never Gradio's opaque error or a Python exception,
and the data folder is clean afterwards.

A deterministic generator (fixed seed) builds the cases; `pytest -s` prints the summary table, which is also
written as JSON (HUMO_ROBUSTNESS_DIR, else the test's tmp folder).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from studio import admission
from tests.robustness import helpers as h
from tests.robustness.rawapi import RawClient, generate_fn_index
from tests.studio_server import running_studio

FACE = (64, 64)

SEED = 20261201
API = ("prompt", "image", "audio", "negative_prompt", "model", "resolution", "height", "width", "frames", "steps",
       "seed", "preset", "scale_t", "scale_i", "scale_a", "switch", "extra_images", "long_video", "consent")  # fmt: skip
ERROR_BOXES = ("prompt", "image", "audio", "height", "num_frames", "steps", "guidance", "seed", "consent")
NUMBER_FIELDS = ("height", "width", "frames", "steps", "seed", "scale_t", "scale_i", "scale_a", "switch")
BOX_OF = {"height": "height", "width": "height", "frames": "num_frames", "steps": "steps", "seed": "seed",
          "scale_t": "guidance", "scale_i": "guidance", "scale_a": "guidance", "switch": "guidance",
          "prompt": "prompt", "negative_prompt": "prompt", "image": "image", "extra_images": "image",
          "audio": "audio", "consent": "consent", "preset": "guidance", "model": "prompt"}  # fmt: skip

# (value, expectation): "refuse" = clearly invalid for every number field; "any" = valid for some fields.
NUMBER_VALUES: list[tuple[object, str]] = [
    (float("nan"), "refuse"), (float("inf"), "refuse"), (float("-inf"), "refuse"), (-1e300, "refuse"),
    (1e300, "refuse"), (2**63, "refuse"), (2**64, "refuse"), (10**40, "refuse"), (-(10**40), "refuse"),
    (-17, "refuse"), ("abc", "refuse"), ("nan", "refuse"), ("1e999", "refuse"), ("0x10", "refuse"), ([], "refuse"),
    ({}, "refuse"), ([32], "refuse"), (True, "refuse"), (-1, "any"), (0, "any"), (1.5, "any"), ("", "any"),
    (None, "any"), ("٢", "any"),
]  # fmt: skip


@dataclass
class Case:
    kind: str  # group in the summary (e.g. "number:steps", "image", "audio", "prompt")
    name: str
    expect: str  # "refuse" | "any"
    build: Callable[[Env], list]  # the 19 raw values
    field: str | None = None  # the input at fault, whose error box must be filled
    raw_json: Callable[[str], str] | None = None  # edits of the JSON text (lone surrogates)


class Env:
    """One visitor's view while its case is built: uploads go through this visitor's client."""

    def __init__(self, client: RawClient, base: dict, files: dict[str, Path], foreign: dict[str, Path]):
        self.client, self.base, self.files, self.foreign = client, base, files, foreign

    def up(self, key: str, name: str | None = None) -> dict:
        path = self.files[key]
        return self.client.upload(path, name or path.name)

    def values(self, **changes) -> list:
        merged = {**self.base, **changes}
        return [merged[k] for k in API]


def make_files(folder: Path) -> dict[str, Path]:
    """Every bad (and odd-but-valid) file of the run, from a seeded generator."""
    rng = random.Random(SEED)
    folder.mkdir(parents=True, exist_ok=True)
    png, jpg, wav05 = h.png_bytes(), h.jpeg_bytes(), h.wav_bytes(0.5)
    f: dict[str, Path] = {}

    def put(key: str, name: str, data: bytes) -> None:
        (folder / key).mkdir(exist_ok=True)
        f[key] = folder / key / name
        f[key].write_bytes(data)

    put("text.png", "text.png", b"this is not an image, just a few words of text\n" * 20)
    put("random.png", "random.png", rng.randbytes(4096))
    put("zero.png", "zero.png", b"")
    put("truncated.png", "truncated.png", png[: len(png) // 2])
    put("truncated.jpg", "truncated.jpg", jpg[: len(jpg) // 2])
    put("png-signature-only.png", "png-signature-only.png", png[:8])
    h.png_header_only(folder / "huge.png", 20000, 20000)
    f["huge.png"] = folder / "huge.png"
    h.png_header_only(folder / "huge-wide.png", 1_000_000, 1)
    f["huge-wide.png"] = folder / "huge-wide.png"
    put("html.png", "page.png", h.HTML)
    put("page.html", "page.html", h.HTML)
    put("wav-as.png", "voice.png", wav05)
    put("svg.png", "drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>')
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # inside IHDR's CRC
    put("badcrc.png", "badcrc.png", bytes(bad_crc))
    put("random.webp", "random.webp", b"RIFF" + rng.randbytes(4) + b"WEBP" + rng.randbytes(500))
    put("random.exe", "setup.exe", b"MZ" + rng.randbytes(2000))
    put("noext", "noextension", rng.randbytes(700))
    put("jpeg-header-png-body.jpg", "mixed.jpg", jpg[:200] + png[200:])
    # odd but valid images
    h.write_image(folder / "one.png", size=(1, 1))
    f["one.png"] = folder / "one.png"
    h.write_image(folder / "gray16.png", size=FACE, mode="I;16")
    f["gray16.png"] = folder / "gray16.png"
    h.write_image(folder / "cmyk.jpg", size=FACE, mode="CMYK", fmt="JPEG")
    f["cmyk.jpg"] = folder / "cmyk.jpg"
    h.write_image(folder / "palette.png", size=FACE, mode="P")
    f["palette.png"] = folder / "palette.png"
    h.write_image(folder / "strip.png", size=(4000, 1))
    f["strip.png"] = folder / "strip.png"
    h.write_image(folder / "face.bmp", size=FACE, fmt="BMP")
    f["face.bmp"] = folder / "face.bmp"
    h.write_image(folder / "face.gif", size=FACE, fmt="GIF")
    f["face.gif"] = folder / "face.gif"
    put("face.png", "face.png", png)
    # audio
    put("text.wav", "text.wav", b"hello, this is text and not audio at all\n" * 30)
    put("random.wav", "random.wav", rng.randbytes(8000))
    put("zero.wav", "zero.wav", b"")
    put("riff-random.wav", "riff.wav", b"RIFF" + rng.randbytes(4) + b"WAVE" + rng.randbytes(3000))
    put("truncated.wav", "truncated.wav", h.wav_header(32000) + rng.randbytes(100))
    put("header-only.wav", "header-only.wav", h.wav_header(0))
    put("zero-channels.wav", "zero-channels.wav", h.wav_header(8000, channels=0) + b"\x01\x02" * 4000)
    put("zero-rate.wav", "zero-rate.wav", h.wav_header(8000, sr=0) + b"\x01\x02" * 4000)
    put("huge-header.wav", "huge-header.wav", h.wav_header(0xFFFFFFF0) + wav05[44:])
    put("silent.wav", "silent.wav", h.wav_header(16000) + b"\x00" * 16000)
    nan_wav = h.wav_header(4 * 8000, bits=32, fmt=3) + (b"\x00\x00\xc0\x7f" * 8000)
    put("nan.wav", "nan.wav", nan_wav)
    put("png-as.wav", "voice.wav", png)
    put("html.wav", "voice.wav", h.HTML)
    put("random.mp3", "voice.mp3", b"ID3" + rng.randbytes(3000))
    put("random.ogg", "voice.ogg", b"OggS" + rng.randbytes(3000))
    h.mp4_without_audio(folder / "noaudio.mp4")
    f["noaudio.mp4"] = folder / "noaudio.mp4"
    put("noaudio-named.wav", "voice.wav", (folder / "noaudio.mp4").read_bytes())
    h.write_wav(folder / "one-ms.wav", 0.001)
    f["one-ms.wav"] = folder / "one-ms.wav"
    h.write_wav(folder / "voice70.wav", 70.0)
    f["voice70.wav"] = folder / "voice70.wav"
    h.write_wav(folder / "voice10.wav", 10.0)
    f["voice10.wav"] = folder / "voice10.wav"
    # odd but valid audio
    put("wav-named.png", "voice.png", wav05)
    h.write_wav(folder / "stereo44k.wav", 0.4, sr=44100, channels=2)
    f["stereo44k.wav"] = folder / "stereo44k.wav"
    put("voice.wav", "voice.wav", h.wav_bytes(0.3))
    return f


def build_cases() -> list[Case]:
    """The whole run, in a fixed order (the generator's seed fixes the random bytes)."""
    cases: list[Case] = []

    def add(kind, name, expect, build, field=None, raw_json=None):
        cases.append(Case(kind, name, expect, build, field, raw_json))

    # every number field x every bad value
    for name in NUMBER_FIELDS:
        for value, expect in NUMBER_VALUES:
            add(f"number:{name}", f"{name}={value!r}"[:60], expect, lambda e, n=name, v=value: e.values(**{n: v}), name)

    # prompts
    big = "a singer on a stage " * 10_240  # 200 KiB
    for label, value, expect in [
        ("lone high surrogate", "a \ud800 man", "refuse"),
        ("lone low surrogate", "\udfff", "refuse"),
        ("high surrogate then letter", "\ud83dx sings", "refuse"),
        ("NUL byte", "a man\x00 talks", "refuse"),
        ("only NUL", "\x00", "refuse"),
        ("bell", "a man \x07 talks", "refuse"),
        ("ANSI escape", "\x1b[31mred\x1b[0m", "refuse"),
        ("200 KiB", big, "refuse"),
        ("10,001 chars", "x" * 10_001, "refuse"),
        ("whitespace only", "   \n\t  ", "refuse"),
        ("line separators only", "\u2028\u2029", "refuse"),
        ("empty", "", "refuse"),
        ("None", None, "refuse"),
        ("number", 123, "refuse"),
        ("list", ["a man talks"], "refuse"),
        ("dict", {"text": "a man"}, "refuse"),
        ("bool", True, "refuse"),
        ("emoji", "😀 a man talks 🎤", "any"),
        ("zero-width only", "\u200b\u200b", "any"),
        ("RTL override", "\u202eklat nam a", "any"),
        ("HTML", "<script>alert(1)</script><img src=x onerror=alert(2)>", "any"),
        ("SQL", "'; DROP TABLE generations; --", "any"),
        ("LIKE wildcards", "100% _real_ \\ man", "any"),
    ]:
        add("prompt", label, expect, lambda e, v=value: e.values(prompt=v), "prompt")
    add("prompt", "raw JSON \\ud800 escape", "refuse", lambda e: e.values(prompt="RAWSURROGATE"), "prompt",
        raw_json=lambda text: text.replace('"RAWSURROGATE"', '"a \\ud800 b"'))  # fmt: skip
    add("prompt", "raw JSON \\udc00\\ud800 swapped pair", "refuse", lambda e: e.values(prompt="RAWSURROGATE"),
        "prompt", raw_json=lambda text: text.replace('"RAWSURROGATE"', '"\\udc00\\ud800"'))  # fmt: skip
    for label, value, expect in [
        ("lone surrogate", "no \ud800", "refuse"),
        ("NUL", "blurry\x00", "refuse"),
        ("200 KiB", big, "refuse"),
        ("number", 5, "refuse"),
        ("list", ["blurry"], "refuse"),
        ("None", None, "any"),
    ]:
        add("negative_prompt", label, expect, lambda e, v=value: e.values(negative_prompt=v), "negative_prompt")

    # choices
    for label, value, expect in [
        ("humo-17b (absent)", "humo-17b", "refuse"),
        ("humo-1.7b (absent)", "humo-1.7b", "refuse"),
        ("unknown id", "no-such-model", "refuse"),
        ("checkpoint path", "checkpoint:/etc/passwd", "refuse"),
        ("traversal", "../../tiny", "refuse"),
        ("case", "TINY", "refuse"),
        ("trailing NUL", "tiny\x00", "refuse"),
        ("number", 7, "refuse"),
        ("list", ["tiny"], "refuse"),
        ("empty", "", "any"),
        ("None", None, "any"),
    ]:
        add("model", label, expect, lambda e, v=value: e.values(model=v), "model")
    for label, value, expect in [
        ("unknown", "999x999", "refuse"),
        ("custom with space", "custom ", "refuse"),
        ("number", 7, "refuse"),
        ("dict", {"h": 32}, "refuse"),
        ("64x64 preset", "64×64 (HuMo-nano, tiny)", "any"),
        ("None", None, "any"),
    ]:
        add("resolution", label, expect, lambda e, v=value: e.values(resolution=v), "height")
    for label, value, expect in [
        ("unknown", "nope", "refuse"),
        ("case", "OFFICIAL", "refuse"),
        ("number", 3, "refuse"),
        ("dict", {"a": 1}, "refuse"),
        ("empty", "", "any"),
        ("None", None, "any"),
    ]:
        add("preset", label, expect, lambda e, v=value: e.values(preset=v), "preset")
    for label, value in [("text yes", "yes"), ("2", 2), ("list", []), ("dict", {"a": 1}), ("text maybe", "maybe")]:
        add("long_video", label, "any", lambda e, v=value: e.values(long_video=v))

    # image files
    refused_images = ["text.png", "random.png", "zero.png", "truncated.png", "truncated.jpg", "png-signature-only.png",
                      "huge.png", "huge-wide.png", "html.png", "page.html", "wav-as.png", "svg.png", "badcrc.png",
                      "random.webp", "random.exe", "noext", "jpeg-header-png-body.jpg", "noaudio.mp4", "voice.wav"]  # fmt: skip
    for key in refused_images:
        add("image", key, "refuse", lambda e, k=key: e.values(image=e.up(k)), "image")
    for key in ["one.png", "gray16.png", "cmyk.jpg", "palette.png", "strip.png", "face.bmp", "face.gif"]:
        add("image", key, "any", lambda e, k=key: e.values(image=e.up(k)), "image")
    for label, name in [("traversal name", "../../etc/passwd.png"), ("unicode name", "visage é 😀.png"),
                        ("300-char name", "n" * 300 + ".png"), ("no extension name", "face")]:  # fmt: skip
        add("image", label, "any", lambda e, n=name: e.values(image=e.up("face.png", n)), "image")
    add("image", "no image at all", "any", lambda e: e.values(image=None))

    # audio files
    refused_audio = ["text.wav", "random.wav", "zero.wav", "riff-random.wav", "header-only.wav", "zero-channels.wav",
                     "zero-rate.wav", "silent.wav", "nan.wav", "png-as.wav", "html.wav", "random.mp3", "random.ogg",
                     "noaudio.mp4", "noaudio-named.wav", "huge.png", "page.html"]  # fmt: skip
    for key in refused_audio:
        add("audio", key, "refuse", lambda e, k=key: e.values(audio=e.up(k)), "audio")
    for key in ["truncated.wav", "huge-header.wav", "one-ms.wav", "wav-named.png", "stereo44k.wav"]:
        add("audio", key, "any", lambda e, k=key: e.values(audio=e.up(k)), "audio")
    add("audio", "no audio at all", "any", lambda e: e.values(audio=None))

    # more reference images
    add("extra_images", "4 extra (cap 3)", "refuse", lambda e: e.values(extra_images=[e.up("face.png")] * 4), "image")
    add("extra_images", "12 extra", "refuse", lambda e: e.values(extra_images=[e.up("face.png")] * 12), "image")
    add("extra_images", "one corrupt among two", "refuse",
        lambda e: e.values(extra_images=[e.up("face.png"), e.up("truncated.png")]), "image")  # fmt: skip
    add("extra_images", "a wav", "refuse", lambda e: e.values(extra_images=[e.up("voice.wav")]), "image")
    add("extra_images", "a 20000x20000 header", "refuse", lambda e: e.values(extra_images=[e.up("huge.png")]), "image")
    add("extra_images", "3 extra", "any", lambda e: e.values(extra_images=[e.up("face.png")] * 3))
    add("extra_images", "empty list", "any", lambda e: e.values(extra_images=[]))
    add("extra_images", "extras without a main image", "any",
        lambda e: e.values(image=None, extra_images=[e.up("face.png")]))  # fmt: skip

    # wrong JSON types in the file slots (an API caller's mistake)
    for label, change in [
        ("image=5", {"image": 5}),
        ("image=text", {"image": "face.png"}),
        ("image=[]", {"image": []}),
        ("image={path: 5}", {"image": {"path": 5}}),
        ("audio=text", {"audio": "voice.wav"}),
        ("audio=5", {"audio": 5}),
        ("audio={}", {"audio": {}}),
        ("extra=text", {"extra_images": "abc"}),
        ("extra=[5]", {"extra_images": [5]}),
        ("extra=[None]", {"extra_images": [None]}),
    ]:
        add("file_json_type", label, "refuse", lambda e, c=change: e.values(**c))

    # files that were never uploaded: server paths (another visitor's input, the database, system files)
    add("foreign_path", "image {path} outside the upload folder", "refuse",
        lambda e: e.values(image={"path": str(e.foreign["outside_image"])}), "image")  # fmt: skip
    add(
        "foreign_filedata",
        "image {path, meta} outside the upload folder",
        "refuse",
        lambda e: e.values(image={"path": str(e.foreign["outside_image"]), "meta": {"_type": "gradio.FileData"}}),
    )
    add("foreign_path", "image {path} = /etc/hostname", "refuse", lambda e: e.values(image={"path": "/etc/hostname"}))
    add(
        "foreign_filedata",
        "image {path, meta} = the database",
        "refuse",
        lambda e: e.values(image={"path": str(e.foreign["database"]), "meta": {"_type": "gradio.FileData"}}),
    )
    add("foreign_filedata", "audio {path, meta} = /etc/passwd", "refuse",
        lambda e: e.values(audio={"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}))  # fmt: skip

    # public-mode caps
    for label, change, field in [
        ("steps 31", {"steps": 31}, "steps"),
        ("steps 1000", {"steps": 1000}, "steps"),
        ("frames 98", {"frames": 98}, "frames"),
        ("frames 401", {"frames": 401}, "frames"),
        ("720x1280 custom", {"height": 720, "width": 1280}, "height"),
        ("1280x1280 custom", {"height": 1280, "width": 1280}, "height"),
        ("1296 side", {"height": 1296, "width": 32}, "height"),
        ("720x1280 resolution", {"resolution": "720×1280 (landscape, official)"}, "height"),
        ("1280x720 resolution", {"resolution": "1280×720 (portrait)"}, "height"),
        ("no consent", {"consent": False}, "consent"),
        ("consent None", {"consent": None}, "consent"),
        ("consent 'false'", {"consent": "false"}, "consent"),
        ("consent 0", {"consent": 0}, "consent"),
    ]:
        add("public_cap", label, "refuse", lambda e, c=change: e.values(**c), field)
    add("public_cap", "70-s voice", "refuse", lambda e: e.values(audio=e.up("voice70.wav")), "audio")
    add("public_cap", "long video, 70-s voice", "refuse",
        lambda e: e.values(audio=e.up("voice70.wav"), long_video=True), "audio")  # fmt: skip
    add("public_cap", "long video, 10-s voice (250 frames)", "refuse",
        lambda e: e.values(audio=e.up("voice10.wav"), long_video=True), "audio")  # fmt: skip
    add("public_cap", "10-s voice (250 frames)", "refuse", lambda e: e.values(audio=e.up("voice10.wav")), "audio")
    return cases


def run_cases(url: str, cases: list[Case], base_of: Callable[[RawClient], dict], files, foreign, private) -> list:
    fn_index = generate_fn_index(url)
    results = []
    with httpx.Client(timeout=120) as http:  # one connection pool; every case is its own visitor (session)
        for case in cases:
            client = RawClient(url, fn_index=fn_index, http=http)
            env = Env(client, base_of(client), files, foreign)
            text = json.dumps(case.build(env), allow_nan=True)
            if case.raw_json:
                text = case.raw_json(text)
            answer = client.generate_json(text)
            results.append((case, answer, h.classify(answer, private)))
    return results


def summarize(results) -> dict:
    by_class = Counter(cls for _, _, cls in results)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for case, _, cls in results:
        by_kind[case.kind.split(":")[0] if case.kind.startswith("number") else case.kind][cls] += 1
    return {"total": len(results), "by_class": dict(by_class), "by_kind": {k: dict(v) for k, v in by_kind.items()}}


def table(summary: dict, title: str) -> str:
    cols = h.CLASSES
    lines = [title, f"{'input kind':<18}" + "".join(f"{c:>13}" for c in cols) + f"{'total':>8}"]
    for kind, counts in summary["by_kind"].items():
        lines.append(f"{kind:<18}" + "".join(f"{counts.get(c, 0):>13}" for c in cols) + f"{sum(counts.values()):>8}")
    counts = summary["by_class"]
    lines.append(f"{'ALL':<18}" + "".join(f"{counts.get(c, 0):>13}" for c in cols) + f"{summary['total']:>8}")
    return "\n".join(lines)


def problems(results, ctx) -> dict[str, list]:
    """Every answer that breaks a rule, by rule."""
    out: dict[str, list] = defaultdict(list)
    for case, answer, cls in results:
        shown = f"[{case.kind}] {case.name}: {answer.kind} {h.answer_text(answer)[:300]!r}"
        if cls in (h.OPAQUE, h.UNTYPED, h.LEAK, h.OTHER):
            out[cls].append(shown)
        if case.expect == "refuse" and cls == h.DONE:
            out["accepted although invalid"].append(shown)
        if any(w in h.answer_text(answer) for w in h.BUSY_WORDS):
            out["busy refusal in a sequential run (an admission ticket leaked)"].append(shown)
        status = answer.status
        if answer.kind == "output" and status.startswith("✖ "):
            boxes = dict(zip(ERROR_BOXES, (answer.data or [])[4:]))
            want = BOX_OF.get(case.field or "")
            if not any(boxes.values()):
                out["refusal with no error box filled"].append(shown)
            elif want and not boxes.get(want):
                filled = [k for k, v in boxes.items() if v]
                out["refusal in another input's error box"].append(f"{shown} -> box {filled}, expected {want}")
    return out


def report(results, ctx, tmp_path: Path, name: str, seconds: float) -> dict:
    summary = summarize(results)
    summary["seconds"] = round(seconds, 1)
    summary["problems"] = problems(results, ctx)
    summary["answers"] = [
        {"kind": c.kind, "case": c.name, "expect": c.expect, "class": cls, "answer": a.kind,
         "text": h.answer_text(a)[:500], "seconds": round(a.seconds, 3)}
        for c, a, cls in results
    ]  # fmt: skip
    print("\n" + table(summary, f"{name}: {summary['total']} bad inputs in {seconds:.0f} s"))
    for rule, items in summary["problems"].items():
        print(f"\n{rule}: {len(items)}")
        for item in items[:40]:
            print("   ", item)
    out_dir = Path(os.environ.get("HUMO_ROBUSTNESS_DIR") or tmp_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    print(f"summary written to {path}")
    return summary


def check(summary: dict, ctx, results) -> None:
    audit = h.audit(ctx.store)
    print("data folder after the run:", {k: v for k, v in audit.items() if k not in ("partial", "unaccounted")},
          "partial:", audit["partial"][:5], "unaccounted:", audit["unaccounted"][:5])  # fmt: skip
    assert admission.tickets(ctx) == {}, f"admission tickets left after every job ended: {admission.tickets(ctx)}"
    counts = summary["by_class"]
    bad = {rule: items for rule, items in summary["problems"].items() if items}
    assert counts.get(h.OPAQUE, 0) == 0 and counts.get(h.UNTYPED, 0) == 0 and not bad, json.dumps(bad, indent=1)
    h.assert_clean(audit)


def base_values(image: dict, audio: dict) -> dict:
    return {"prompt": "a person talks in a quiet room", "image": image, "audio": audio, "negative_prompt": "",
            "model": "tiny", "resolution": "custom", "height": 32, "width": 32, "frames": 0, "steps": 1, "seed": 7,
            "preset": "official", "scale_t": None, "scale_i": None, "scale_a": None, "switch": None,
            "extra_images": None, "long_video": False, "consent": True}  # fmt: skip


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    return make_files(tmp_path_factory.mktemp("bad-files"))


# Values Gradio itself answers (HTTP 400 from its payload checks, before the studio's validator or callback runs):
# wrong JSON types in the file slots, and FileData values naming a file that was never uploaded.
GRADIO_KINDS = ("file_json_type", "foreign_filedata")


def test_generator_is_deterministic_and_large():
    a, b = build_cases(), build_cases()
    assert [c.name for c in a] == [c.name for c in b]
    assert len([c for c in a if c.kind not in GRADIO_KINDS]) >= 300


@pytest.mark.slow
def test_bad_inputs_public_studio(tmp_path, bad_files, gradio_cache):
    cases = [c for c in build_cases() if c.kind not in GRADIO_KINDS]
    foreign = {
        "outside_image": h.write_image(tmp_path / "outside.png", size=FACE),
        "database": tmp_path / "data" / "humo.db",
    }
    with running_studio(tmp_path / "data", public=True) as (url, ctx):
        private = [str(ctx.store.data_dir), str(gradio_cache), str(tmp_path)]
        with RawClient(url) as uploader:  # uploaded once; every case is a new visitor that sends these values
            image, audio = uploader.upload(bad_files["face.png"]), uploader.upload(bad_files["voice.wav"])
        started = time.perf_counter()
        results = run_cases(url, cases, lambda c: base_values(image, audio), bad_files, foreign, private)
        summary = report(results, ctx, tmp_path, "bad_inputs_public", time.perf_counter() - started)
        check(summary, ctx, results)


def test_bad_numbers_local_studio(tmp_path, bad_files, gradio_cache):
    """Local mode (no consent, higher caps, owner "local"): the number fields' worst values and broken files."""
    worst = [(float("nan"), "refuse"), (float("inf"), "refuse"), (1e300, "refuse"), (10**40, "refuse"),
             ("abc", "refuse"), ({}, "refuse")]  # fmt: skip
    cases = [
        Case(f"number:{n}", f"{n}={v!r}", e, lambda env, n=n, v=v: env.values(**{n: v}), n)
        for n in NUMBER_FIELDS
        for v, e in worst
    ]
    cases += [Case("number:steps", "steps=201 (local cap 200)", "refuse", lambda env: env.values(steps=201), "steps")]
    cases += [Case("number:height", "height 4112 (local cap 4096)", "refuse", lambda env: env.values(height=4112),
                   "height")]  # fmt: skip
    for key in ("truncated.png", "huge.png", "html.png"):
        cases.append(Case("image", key, "refuse", lambda env, k=key: env.values(image=env.up(k)), "image"))
    for key in ("silent.wav", "noaudio.mp4", "png-as.wav"):
        cases.append(Case("audio", key, "refuse", lambda env, k=key: env.values(audio=env.up(k)), "audio"))
    with running_studio(tmp_path / "data") as (url, ctx):
        private = [str(ctx.store.data_dir), str(gradio_cache), str(tmp_path)]
        with RawClient(url) as uploader:
            image, audio = uploader.upload(bad_files["face.png"]), uploader.upload(bad_files["voice.wav"])
        started = time.perf_counter()
        results = run_cases(url, cases, lambda c: {**base_values(image, audio), "consent": None}, bad_files, {},
                            private)  # fmt: skip
        summary = report(results, ctx, tmp_path, "bad_inputs_local", time.perf_counter() - started)
        check(summary, ctx, results)


def test_wrong_file_values_public_studio(tmp_path, bad_files, gradio_cache):
    """The same rules for the values Gradio answers before the studio sees them (GRADIO_KINDS): an API caller who
    sends text, a number or an un-uploaded path where a file goes must get a sentence, not pydantic's report or
    Gradio's "Cannot move <server path> to the gradio cache dir"."""
    cases = [c for c in build_cases() if c.kind in GRADIO_KINDS]
    foreign = {
        "outside_image": h.write_image(tmp_path / "outside.png", size=FACE),
        "database": tmp_path / "data" / "humo.db",
    }
    with running_studio(tmp_path / "data", public=True) as (url, ctx):
        private = [str(ctx.store.data_dir), str(gradio_cache), str(tmp_path)]
        with RawClient(url) as uploader:
            image, audio = uploader.upload(bad_files["face.png"]), uploader.upload(bad_files["voice.wav"])
        started = time.perf_counter()
        results = run_cases(url, cases, lambda c: base_values(image, audio), bad_files, foreign, private)
        summary = report(results, ctx, tmp_path, "bad_inputs_gradio_level", time.perf_counter() - started)
        check(summary, ctx, results)
