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


class _FakeMesh:
    def __init__(self, size):
        self._size = size

    def size(self):
        return self._size

    def get_group(self):
        return None


@pytest.mark.parametrize("world, frames, per_frame", [(2, 3, 6), (3, 4, 5), (4, 3, 7), (3, 5, 2)])
def test_audio_attention_shards_reassemble_to_full_output(monkeypatch, world, frames, per_frame):
    """Every contiguous shard (even or uneven, split inside frames) computes its part of the full output."""
    import types

    import torch

    from engine.models import PRESETS, HuMoTransformer3DModel, transformer_humo

    torch.manual_seed(0)
    attn = HuMoTransformer3DModel(**PRESETS["tiny"]).blocks[0].audio_attn.eval()
    x = torch.randn(2, frames * per_frame, 32)
    audio = torch.randn(2, frames * 4, 24)
    with torch.no_grad():
        full = attn(x, audio, frames, per_frame)
        cp = types.SimpleNamespace(_flattened_mesh=_FakeMesh(world))
        attn.processor._parallel_config = types.SimpleNamespace(context_parallel_config=cp)
        parts = []
        for rank, shard in enumerate(x.tensor_split(world, dim=1)):  # diffusers' "anything" split
            monkeypatch.setattr(transformer_humo.dist, "get_rank", lambda group=None, r=rank: r)
            parts.append(attn(shard, audio, frames, per_frame))
        attn.processor._parallel_config = None
    assert (torch.cat(parts, dim=1) - full).abs().max() < 1e-6
