"""The generation both the distributed worker and the single-process reference run (one definition)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KWARGS = dict(
    prompt="a person talking",
    image=str(ROOT / "assets/examples/face.png"),
    audio=str(ROOT / "assets/examples/speech.wav"),
    num_frames=17,
    height=32,
    width=48,
    num_inference_steps=3,
    seed=5,
    batch_branches=False,
)
