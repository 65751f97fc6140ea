"""Convert an official HuMo checkpoint to diffusers format (used by the CLI)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from engine.errors import InputError
from engine.models import HuMoTransformer3DModel

__all__ = ["convert_official"]


def convert_official(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    torch_dtype: torch.dtype = torch.bfloat16,
    overwrite: bool = False,
    config: dict[str, Any] | None = None,
) -> Path:
    """Load `path` (official `.pth`, sharded folder or `.safetensors`) strictly and save it with `save_pretrained`.

    The result loads with `HuMoTransformer3DModel.from_pretrained(out_dir, torch_dtype=...)`. Written to a
    temporary folder beside `out_dir` and renamed into place, so `out_dir` is either complete or absent.
    `config` overrides the config inferred from shapes (only needed for non-official sizes). Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(
            f"{out_dir} already exists and is not empty; choose another folder or pass overwrite", "out_dir"
        )
    model = HuMoTransformer3DModel.from_official(path, torch_dtype=torch_dtype, config=config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
