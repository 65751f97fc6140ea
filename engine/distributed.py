"""Multi-process generation under torchrun: sequence parallelism (Ulysses) and CFG-parallel guidance branches.

    python -m engine generate --gpus 2 --parallel ulysses ...   # relaunches itself under torchrun

- "ulysses": every rank runs the whole pipeline; inside the transformer the video tokens are split across ranks
  (diffusers context parallelism with the model's `_cp_plan`), so each rank holds 1/N of the activations. The
  output is gathered, every rank steps the scheduler identically (same seed, same noise).
- "cfg": HuMo runs 3-4 guidance branches per step; branch i is evaluated by rank i mod N and broadcast to the
  others, so N ranks cut the transformer time of a step by up to min(N, passes). Every rank holds the full model.
- "ring" / "unified": ring attention, or diffusers' 2-D Ulysses × ring layout, where the attention backend returns
  the log-sum-exp (flash / cuDNN on GPUs; the native CPU backend refuses it).
- "auto": Ulysses when the head count allows it and the video is long, else CFG-parallel.

Only rank 0 writes files. On CPU the same code runs over gloo (that is how the tests check it).
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist

from engine import guidance as guidance_lib
from engine.errors import InputError
from engine.parallel import enable_context_parallel, init_distributed, is_main_process, world_size

PARALLEL_MODES = ("ulysses", "ring", "unified", "cfg", "auto")


def parallel_degrees(mode: str, world: int, heads: int) -> tuple[int | None, int | None]:
    """(ulysses_degree, ring_degree) of a context-parallel mode. Ring attention needs an attention backend that
    returns the log-sum-exp (flash / cuDNN on GPUs); "unified" is diffusers' 2-D mode: Ulysses inside groups of
    the largest head-count divisor, ring across them."""
    if mode == "ulysses":
        return world, None
    if mode == "ring":
        return None, world
    if mode == "unified":
        ulysses = max(d for d in range(1, world + 1) if world % d == 0 and heads % d == 0 and d < world) or 1
        return ulysses, world // ulysses
    raise ValueError(f"{mode!r} is not a context-parallel mode")


def cfg_parallel_evaluator(out_channels: int):
    """A drop-in for `engine.guidance.evaluate_branches` that spreads the branches over the ranks."""

    def evaluate(model_fn, branches, batched: bool) -> list[torch.Tensor]:
        rank, world = dist.get_rank(), dist.get_world_size()
        mine = [i for i in range(len(branches)) if i % world == rank]
        local = guidance_lib.evaluate_branches(model_fn, [branches[i] for i in mine], batched) if mine else []
        outputs = []
        for index, inputs in enumerate(branches):
            owner = index % world
            hidden = inputs["hidden_states"]
            if owner == rank:
                out = local[mine.index(index)].contiguous()
            else:
                out = hidden.new_empty(hidden.shape[0], out_channels, *hidden.shape[2:])
            dist.broadcast(out, src=owner)
            outputs.append(out)
        return outputs

    return evaluate


def setup_parallel(pipe, mode: str = "auto") -> str:
    """Initialise the process group (if torchrun started us) and make `pipe` parallel. Returns the mode used."""
    if mode not in PARALLEL_MODES:
        raise ValueError(f"parallel mode must be one of {PARALLEL_MODES}, got {mode!r}")
    _, world = init_distributed()
    if world == 1:
        return "none"
    heads = pipe.transformer.config.num_attention_heads
    if mode == "auto":
        mode = "ulysses" if heads % world == 0 else "cfg"
    if mode in ("ring", "unified") and pipe.attention_backend in ("native", None):
        raise InputError(
            f"--parallel {mode} needs an attention backend that returns the log-sum-exp: add --attention-backend "
            "flash (or _flash_3 / cuDNN) on GPUs; the native backend cannot do ring attention.",
            field="parallel",
        )
    if mode in ("ulysses", "ring", "unified"):
        ulysses, ring = parallel_degrees(mode, world, heads)
        try:
            enable_context_parallel(pipe.transformer, ulysses_degree=ulysses, ring_degree=ring)
        except (ValueError, RuntimeError, NotImplementedError) as exc:
            raise InputError(
                f"--parallel {mode} is not possible here ({exc}); use ulysses or cfg.", field="parallel"
            ) from exc
    else:
        pipe.branch_evaluator = cfg_parallel_evaluator(pipe.transformer.config.out_channels)
    pipe.set_progress_bar_config(disable=not is_main_process())
    return mode


def device_for_rank() -> torch.device:
    """cuda:LOCAL_RANK under torchrun on GPUs, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def launch_generate(num_processes: int, argv: list[str]) -> int:
    """Re-run `python -m engine <argv>` under torchrun with N processes (one per GPU); returns its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes}",
               "-m", "engine", *argv]  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HUMO_DISTRIBUTED_CHILD": "1", "PYTHONPATH": path}
    return subprocess.call(command, env=env)


__all__ = [
    "setup_parallel",
    "cfg_parallel_evaluator",
    "launch_generate",
    "device_for_rank",
    "is_main_process",
    "world_size",
]
