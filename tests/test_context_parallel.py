"""Ulysses context parallelism over gloo on CPU gives the single-process output, also for mid-frame splits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.dist
def test_context_parallel_matches_single_process(tmp_path):
    out = tmp_path / "cp.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(ROOT / "tests" / "dist_cp_worker.py"),
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print("\n".join(line for line in proc.stdout.splitlines() if "max_abs_diff" in line))
    data = json.loads(out.read_text())
    assert data["world_size"] == 2
    real = [r for r in data["results"] if not r["ignore_offset"]]
    control = [r for r in data["results"] if r["ignore_offset"]]
    assert {r["preset"] for r in real} == {"tiny", "tiny-17b"}
    for r in data["results"]:
        assert r["split_mid_frame"]
        # the blocks really ran on half the tokens under CP
        assert r["local_tokens"] == [r["tokens"], r["tokens"] // 2]
    for r in real:
        assert r["max_abs_diff"] <= 1e-5, r
        assert r["reference_abs_mean"] > 1e-2
    # Control: per-frame audio attention that ignores where the shard starts gives a different output.
    assert control and all(r["max_abs_diff"] > 1e-3 for r in control)
