"""Worker for tests/test_context_parallel.py; run as `torchrun --nproc_per_node=2 tests/dist_cp_worker.py OUT.json`.

Every rank computes the single-process output first (same seed, so identical on all ranks), then enables
Ulysses context parallelism and runs the same inputs again. Latent grids are chosen so the contiguous token
split falls inside a latent frame. Rank 0 writes the max abs differences to OUT.json.
"""

import json
import os
import sys

import torch

from engine.models import PRESETS, HuMoTransformer3DModel, transformer_humo
from engine.parallel import enable_context_parallel, init_distributed

# (preset, F_total, H, W): post-patch grids 3x2x3 (18 tokens, 6 per frame: rank 1 starts at token 9, mid
# frame 1) and 5x2x2 (20 tokens, 4 per frame: rank 1 starts at token 10, mid frame 2).
CASES = [("tiny", 3, 4, 6), ("tiny-17b", 5, 4, 4)]


def run_case(preset: str, frames: int, height: int, width: int, ignore_offset: bool = False) -> dict:
    """`ignore_offset` is the control: audio attention that assumes every shard starts at token 0 must differ."""
    torch.manual_seed(0)
    model = HuMoTransformer3DModel(**PRESETS[preset]).eval()
    cfg = model.config
    hidden_states = torch.randn(2, cfg.in_channels, frames, height, width)
    timestep = torch.tensor([999, 431])
    text = torch.randn(2, 512, cfg.text_dim)
    audio = torch.randn(2, frames, cfg.audio_window, cfg.audio_bands, cfg.audio_dim)
    local_tokens = []
    model.blocks[0].audio_attn.register_forward_pre_hook(lambda m, args: local_tokens.append(args[0].shape[1]))
    original_offset = transformer_humo._context_parallel_offset
    with torch.no_grad():
        reference = model(hidden_states, timestep, text, audio).sample
        enable_context_parallel(model, ulysses_degree=2)
        if ignore_offset:
            transformer_humo._context_parallel_offset = lambda *args: 0
        try:
            parallel = model(hidden_states, timestep, text, audio).sample
        finally:
            transformer_humo._context_parallel_offset = original_offset
    tokens = frames * (height // 2) * (width // 2)
    return {
        "preset": preset,
        "tokens": tokens,
        "tokens_per_frame": (height // 2) * (width // 2),
        "split_mid_frame": (tokens // 2) % ((height // 2) * (width // 2)) != 0,
        "max_abs_diff": (reference - parallel).abs().max().item(),
        "reference_abs_mean": reference.abs().mean().item(),
        "shape": list(parallel.shape),
        "local_tokens": local_tokens,  # [single process, under CP]
        "ignore_offset": ignore_offset,
    }


def main() -> None:
    rank, world = init_distributed(backend="gloo")
    results = [run_case(*case) for case in CASES] + [run_case(*CASES[0], ignore_offset=True)]
    if rank == 0:
        for r in results:
            print(
                f"{r['preset']}{' (control: offset ignored)' if r['ignore_offset'] else ''}: tokens={r['tokens']} "
                f"local={r['local_tokens']} mid-frame split={r['split_mid_frame']} max_abs_diff={r['max_abs_diff']:.3e}"
            )
        with open(sys.argv[1], "w") as f:
            json.dump({"world_size": world, "results": results}, f)
    torch.distributed.barrier()
    # torch 2.13 + gloo sometimes aborts in C++ teardown at interpreter exit ("terminate called without an
    # active exception") after all work is done; leave without running those destructors.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
