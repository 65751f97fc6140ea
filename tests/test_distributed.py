"""torchrun --nproc_per_node=2 (gloo) generation with the tiny model equals one process: Ulysses and CFG-parallel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.registry import load_pipeline
from tests.dist_settings import KWARGS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return load_pipeline("tiny", device="cpu")(**KWARGS).frames[0]


@pytest.mark.dist
@pytest.mark.parametrize("mode", ["ulysses", "cfg"])
def test_two_processes_equal_one(mode, reference, tmp_path):
    out = tmp_path / f"{mode}.npy"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(ROOT / "tests/dist_generate_worker.py"), mode, str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    video = np.load(out)
    diff = float(np.abs(video - reference).max())
    print(f"{mode}: max abs diff vs one process = {diff:.2e}")
    assert video.shape == reference.shape == (17, 32, 48, 3)
    assert diff <= 1e-5


def test_context_parallel_degrees():
    from engine.distributed import parallel_degrees

    assert parallel_degrees("ulysses", 4, 12) == (4, None)
    assert parallel_degrees("ring", 4, 12) == (None, 4)
    assert parallel_degrees("unified", 8, 12) == (4, 2)  # 8 does not divide 12 heads: Ulysses 4 x ring 2
    assert parallel_degrees("unified", 8, 40) == (4, 2)
    with pytest.raises(ValueError):
        parallel_degrees("cfg", 2, 12)


@pytest.mark.dist
def test_a_worker_group_renders_the_jobs_lora_like_one_process(tmp_path):
    """The studio's `--gpus 2` command (studio.jobs.worker_group_command) carries the whole request with its LoRA and
    speed options to every rank: with a LoRA that changes the video, two gloo processes render what one does."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    from engine import media
    from engine.cli import generate_argv, main
    from engine.generate import GenerationRequest
    from studio.advanced import AdvancedOptions
    from studio.jobs import worker_group_command
    from tests.test_lora import lora_tensors

    pipe = load_pipeline("tiny", device="cpu")
    lora = tmp_path / "style.safetensors"
    save_file({f"transformer.{n}.lora_{x}.weight": t * 4 for n, (a, b) in lora_tensors(pipe).items()
               for x, t in (("A", a), ("B", b))}, str(lora))  # fmt: skip
    request = GenerationRequest(prompt=KWARGS["prompt"], images=[KWARGS["image"]], audio=KWARGS["audio"],
                                height=KWARGS["height"], width=KWARGS["width"], num_frames=KWARGS["num_frames"],
                                num_inference_steps=KWARGS["num_inference_steps"], seed=KWARGS["seed"])  # fmt: skip
    options = AdvancedOptions(loras=[(str(lora), 1.0)], step_cache=0.0, attention_backend="native", memory_mode="cpu")
    command = worker_group_command(request, "tiny", 2, tmp_path / "two.mp4", tmp_path / "g.json", options)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert main(["generate", *generate_argv(request, "tiny", tmp_path / "one.mp4", options=asdict(options))]) == 0
    assert main(["generate", *generate_argv(request, "tiny", tmp_path / "plain.mp4")]) == 0
    two, one, plain = (media.read_video_frames(tmp_path / f"{n}.mp4").astype(float) for n in ("two", "one", "plain"))
    lora_effect, parallel_gap = np.abs(one - plain).mean(), np.abs(two - one).mean()
    print(f"LoRA changes the frames by {lora_effect:.2f}/255 on average; two processes vs one: {parallel_gap:.3f}")
    assert lora_effect > 2.0 and parallel_gap < 0.05 * lora_effect
    assert media.read_settings(tmp_path / "two.mp4")["advanced"]["loras"] == [
        {"file": "style.safetensors", "scale": 1.0}
    ]
