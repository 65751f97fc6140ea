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
