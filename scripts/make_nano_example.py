"""Writes the bundled HuMo-nano example: assets/examples/nano_face.png, nano_speech.wav and the "nano" case.

    python scripts/make_nano_example.py

A person of the synthetic world (training/synth.py) in a reference scene, the 2-second voice of one of its clips,
and the caption of that clip, which puts the person in another scene: what HuMo-nano was trained to do. The draw
is the first of 12 held-out-style draws (seed 3000, people and voices training never saw), the one the bundled
model rendered best of those 12 (30 steps, seed 0; through the CLI and its mp4: identity 0.24, text 0.71, sync 0.32,
where the untrained DiT gets 0.02, 0.00, 0.25; tests/test_nano.py checks this). The mean over the held-out set is
lower (README): the one-click example shows the method at its best, not on average.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.audio import write_wav  # noqa: E402
from training.nano import sample_world  # noqa: E402

DRAWS, SEED, CHOSEN = 12, 3000, 0


def main() -> None:
    examples = ROOT / "assets" / "examples"
    example = sample_world(DRAWS, frames=49, size=(64, 64), seed=SEED, prefix="example")[CHOSEN]
    cv2.imwrite(str(examples / "nano_face.png"), cv2.cvtColor(example.reference, cv2.COLOR_RGB2BGR))
    write_wav(examples / "nano_speech.wav", example.waveform)
    cases_path = examples / "cases.json"
    cases = json.loads(cases_path.read_text())
    nano_case = {
        "img_paths": ["assets/examples/nano_face.png"],
        "audio_path": "assets/examples/nano_speech.wav",
        "prompt": example.caption,
    }
    cases = {"nano": nano_case, **{k: v for k, v in cases.items() if k != "nano"}}
    cases_path.write_text(json.dumps(cases, indent=2) + "\n")
    print(f"wrote {examples / 'nano_face.png'}, {examples / 'nano_speech.wav'}; prompt: {nano_case['prompt']}")


if __name__ == "__main__":
    main()
