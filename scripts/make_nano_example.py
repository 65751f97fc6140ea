"""Writes the bundled HuMo-nano example: assets/examples/nano_face.png, nano_speech.wav and the "nano" case.

    python scripts/make_nano_example.py

A character of the synthetic world (training/synth.py) in a reference scene, a 2-second synthetic voice, and a
prompt that puts the character in another scene: what HuMo-nano was trained to do, so the result is recognisable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.clips import write_wav  # noqa: E402
from training.synth import FPS, Identity, Scene, caption_for, render_reference, synth_speech  # noqa: E402

PERSON = Identity("example", face_shape="round", skin="light", hair_colour="black", hair_style="short",
                  accessory="none", shirt="red", pitch_hz=150.0)  # fmt: skip
REFERENCE_SCENE = Scene(background="teal", lighting="dim", objects=("window",), framing="close-up")
SCENE = Scene(background="yellow", lighting="bright", objects=("plant", "lamp"), framing="close-up")


def main() -> None:
    examples = ROOT / "assets" / "examples"
    rng = np.random.default_rng(7)
    image = render_reference(PERSON, REFERENCE_SCENE, (64, 64), rng)
    cv2.imwrite(str(examples / "nano_face.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    frames = 49  # 2 s at 25 fps
    write_wav(examples / "nano_speech.wav", synth_speech(frames * 16000 // FPS, rng, pitch_hz=PERSON.pitch_hz))
    cases_path = examples / "cases.json"
    cases = json.loads(cases_path.read_text())
    nano_case = {
        "img_paths": ["assets/examples/nano_face.png"],
        "audio_path": "assets/examples/nano_speech.wav",
        "prompt": caption_for(PERSON, SCENE),
    }
    cases = {"nano": nano_case, **{k: v for k, v in cases.items() if k != "nano"}}
    cases_path.write_text(json.dumps(cases, indent=2) + "\n")
    print(f"wrote {examples / 'nano_face.png'}, {examples / 'nano_speech.wav'}; prompt: {nano_case['prompt']}")


if __name__ == "__main__":
    main()
