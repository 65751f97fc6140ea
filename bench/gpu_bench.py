"""Full-size HuMo transformer speed and memory with random weights (issue #6 item 5b).

    python bench/gpu_bench.py                       # HuMo-1.7B and HuMo-17B at 480x832x97 and 720x1280x97
    python bench/gpu_bench.py --tiny                # the same code path on CPU with the tiny preset

Per (model, size): seconds per transformer forward (bf16, the attention backend in use), seconds per denoising
step for the official guidance (17B: 3 passes, 1.7B TIA: 4 passes, sequential as the official code), peak VRAM,
and model FLOPs utilisation against a bf16 matmul rate measured in the same run. Weights are random: only speed and
memory mean anything here. Prints a table and writes JSON to bench/out/.

Teacher vs distilled student (issue #16): a `distill` student has the teacher's architecture, so one of its passes
costs one forward measured here; the table adds the denoising time of a whole video for the teacher (`--teacher-steps`
× its passes) and for a student (`--student-steps` × 1 pass, the `single pass` preset).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.models import PRESETS, HuMoTransformer3DModel  # noqa: E402

PASSES = {"humo-1.7b": 4, "humo-17b": 3, "tiny": 4, "tiny-17b": 3}


def matmul_tflops(device, dtype, n: int = 8192, repeat: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    sync(device)
    return 2 * n**3 * repeat / (time.perf_counter() - start) / 1e12


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(preset: str, device, dtype, memory_mode: str = "gpu") -> HuMoTransformer3DModel:
    """Random weights in the compute dtype, placed for a memory mode of the transformer:
    "gpu" (made directly on the device), "fp8" (fp8 storage, compute in `dtype`), "group_offload" (weights in
    host RAM, blocks streamed to the GPU one at a time with CUDA streams)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    home = device if memory_mode != "group_offload" else torch.device("cpu")
    try:
        with torch.device("meta"):
            model = HuMoTransformer3DModel(**PRESETS[preset])
        model = model.to_empty(device=home)
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0.0, 0.02)
            # the RoPE tables are computed buffers that to_empty left uninitialised: rebuild them
            model.rope.__init__(model.config.attention_head_dim, model.config.patch_size, model.config.rope_max_seq_len)
            model.rope.to(home)
    finally:
        torch.set_default_dtype(previous)
    if memory_mode == "fp8":
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    elif memory_mode == "group_offload":
        model.enable_group_offload(
            onload_device=device, offload_type="block_level", num_blocks_per_group=1, use_stream=device.type == "cuda"
        )
    return model.eval()


def forward_flops(model: HuMoTransformer3DModel, tokens: int, audio_tokens: int) -> float:
    """Matmul FLOPs of one forward: 2·params·(tokens they act on) for the block Linears + the attention products.

    Text k/v act on the 512 text tokens and audio k/v on the audio tokens, every other block Linear on the video
    tokens; embeddings, audio_proj and the head are negligible at these sizes."""
    cfg = model.config
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    text_kv = sum(p.numel() for n, p in model.blocks.named_parameters() if ".attn2.to_k" in n or ".attn2.to_v" in n)
    audio_kv = sum(
        p.numel() for n, p in model.blocks.named_parameters() if ".audio_attn.to_k" in n or ".audio_attn.to_v" in n
    )
    video = sum(p.numel() for p in model.blocks.parameters()) - text_kv - audio_kv
    linear = 2 * (video * tokens + text_kv * 512 + audio_kv * audio_tokens)
    attention = 4 * tokens * dim * cfg.num_layers * (tokens + 512 + cfg.audio_tokens)
    return float(linear + attention)


def bench_one(
    preset: str,
    height: int,
    width: int,
    frames: int,
    device,
    dtype,
    repeat: int,
    memory_mode: str = "gpu",
    steps: tuple[int, int] = (50, 4),
) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build(preset, device, dtype, memory_mode)
    if device.type == "cuda":  # measure the generation, not the bf16 build that fp8 storage replaces
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = model.config
    f_total = (frames - 1) // 4 + 2  # video latent frames + one reference slot
    h, w = height // 8, width // 8
    hidden = torch.randn(1, cfg.in_channels, f_total, h, w, device=device, dtype=dtype)
    text = torch.randn(1, 512, cfg.text_dim, device=device, dtype=dtype)
    audio = torch.randn(1, f_total, cfg.audio_window, cfg.audio_bands, cfg.audio_dim, device=device, dtype=dtype)
    timestep = torch.tensor([999], device=device)
    with torch.no_grad():
        model(hidden, timestep, text, audio)  # warm-up
        sync(device)
        start = time.perf_counter()
        for _ in range(repeat):
            model(hidden, timestep, text, audio)
        sync(device)
    seconds = (time.perf_counter() - start) / repeat
    tokens = f_total * (h // 2) * (w // 2)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    result = {
        "model": preset,
        "mode": memory_mode,
        "size": f"{height}x{width}x{frames}",
        "tokens": tokens,
        "s_per_forward": seconds,
        "passes_per_step": PASSES[preset],
        "s_per_step": seconds * PASSES[preset],
        "teacher_denoise_s": seconds * PASSES[preset] * steps[0],  # teacher: its steps x its passes
        "student_denoise_s": seconds * steps[1],  # distilled student: its steps x one pass
        "peak_gb": peak,
        "tflop_per_forward": forward_flops(model, tokens, f_total * cfg.audio_tokens) / 1e12,
    }
    del model, hidden, text, audio
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with the tiny presets")
    parser.add_argument("--models", default="humo-1.7b,humo-17b")
    parser.add_argument("--sizes", default="480x832x97,720x1280x97")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--modes", default="gpu", help="comma list of transformer memory modes: gpu, fp8, group_offload"
    )
    parser.add_argument("--teacher-steps", type=int, default=50, help="the teacher's steps (official: 50)")
    parser.add_argument("--student-steps", type=int, default=4, help="a distilled student's steps, one pass each")
    parser.add_argument("--out", default="bench/out/gpu_bench.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = ["tiny", "tiny-17b"] if args.tiny else args.models.split(",")
    sizes = ["64x64x17"] if args.tiny else args.sizes.split(",")
    peak = matmul_tflops(
        device, dtype, n=8192 if device.type == "cuda" else 512, repeat=10 if device.type == "cuda" else 3
    )
    rows = []
    for preset in models:
        for size in sizes:
            for mode in args.modes.split(","):
                height, width, frames = (int(v) for v in size.split("x"))
                try:
                    row = bench_one(preset, height, width, frames, device, dtype, args.repeat, mode,
                                    (args.teacher_steps, args.student_steps))  # fmt: skip
                    row["mfu"] = row["tflop_per_forward"] / row["s_per_forward"] / peak
                except torch.OutOfMemoryError as exc:
                    row = {"model": preset, "mode": mode, "size": size, "error": f"OOM: {str(exc)[:80]}"}
                rows.append(row)
                print(json.dumps(row), flush=True)
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"\ndevice: {device_name}, torch {torch.__version__}, {dtype}, measured matmul peak {peak:.0f} TFLOP/s\n")
    print(
        f"{'model':<10} {'mode':<14} {'size':<14} {'tokens':>7} {'s/forward':>10} {'passes':>6} {'s/step':>8} {'peak GB':>8} {'MFU':>6}"
        f" {'teacher ' + str(args.teacher_steps) + ' steps s':>18} {'student ' + str(args.student_steps) + 'x1 s':>15}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<10} {r['mode']:<14} {r['size']:<14} {r['error']}")
            continue
        print(
            f"{r['model']:<10} {r['mode']:<14} {r['size']:<14} {r['tokens']:>7} {r['s_per_forward']:>10.3f} {r['passes_per_step']:>6} "
            f"{r['s_per_step']:>8.2f} {r['peak_gb']:>8.1f} {r['mfu']:>6.1%}"
            f" {r['teacher_denoise_s']:>18.1f} {r['student_denoise_s']:>15.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"device": device_name, "torch": torch.__version__, "matmul_tflops": peak, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
