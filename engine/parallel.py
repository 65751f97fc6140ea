"""Context (sequence) parallelism helpers around diffusers' `enable_parallelism`.

Under `torchrun`, `init_distributed()` starts the process group (NCCL on CUDA, gloo on CPU) and
`enable_context_parallel(model, ulysses_degree=N)` applies the model's `_cp_plan` (video tokens split
contiguously across ranks, Ulysses all-to-all inside self-attention, output gathered after `proj_out`).

CPU note: diffusers resolves the rank's device as `rank % torch.accelerator.device_count()`, which divides by
zero on a machine without an accelerator. `cpu_device_count_patch()` makes `torch.accelerator.device_count()`
report 1 (only when it reports 0, and only inside the `with` block, restoring it afterwards). Nothing in
diffusers' files is changed; this is how the gloo tests run the same code path as a GPU run.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from diffusers.models._modeling_parallel import ContextParallelConfig, ParallelConfig

__all__ = [
    "cpu_device_count_patch",
    "enable_context_parallel",
    "init_distributed",
    "is_main_process",
    "world_size",
]


def init_distributed(backend: str | None = None, timeout_s: float = 600.0) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment; returns (rank, world_size).

    The backend defaults to NCCL when CUDA is available, else gloo. Without torchrun variables (a single
    plain process) nothing is initialised and (0, 1) is returned. Calling it twice is harmless.
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """True on rank 0, or when not running distributed."""
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


@contextlib.contextmanager
def cpu_device_count_patch() -> Iterator[None]:
    """Inside the block, `torch.accelerator.device_count()` reports at least 1 (see the module docstring)."""
    original = torch.accelerator.device_count
    if original() > 0:
        yield
        return
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def enable_context_parallel(
    model: torch.nn.Module,
    ulysses_degree: int | None = None,
    ring_degree: int | None = None,
    ulysses_anything: bool = False,
) -> ParallelConfig:
    """Apply diffusers context parallelism to `model` over all ranks (default: Ulysses over the world size).

    Ulysses needs the head count divisible by `ulysses_degree`; ring attention needs an attention backend that
    returns the log-sum-exp (flash / cuDNN on GPU), the native CPU backend refuses it. `ulysses_anything` lets
    diffusers split token counts that the degree does not divide (uneven shards; needs NCCL: gloo's all_gather
    refuses unequal sizes). Returns the resolved config.
    """
    if not dist.is_initialized():
        raise RuntimeError("call engine.parallel.init_distributed() under torchrun before enable_context_parallel")
    if ulysses_degree is None and ring_degree is None:
        ulysses_degree = dist.get_world_size()
    heads = getattr(model.config, "num_attention_heads", None)
    if ulysses_degree and heads and heads % ulysses_degree:
        raise ValueError(f"ulysses_degree {ulysses_degree} must divide the number of attention heads ({heads})")
    with cpu_device_count_patch():
        config = ContextParallelConfig(
            ulysses_degree=ulysses_degree, ring_degree=ring_degree, ulysses_anything=ulysses_anything
        )
        model.enable_parallelism(config=config)
    return model._parallel_config
