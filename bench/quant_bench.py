"""Memory of HuMo-1.7B and HuMo-17B per file format, and what dequantizing a layer costs on CPU (issue 32).

    python bench/quant_bench.py [--threads 2] [--repeat 3]

For each model (the official shapes, `engine.models.PRESETS`, built on the meta device) and format:

- file size: every tensor at the type the community tools give it (tests/weight_files.py `tensor_type`: 1-D, small
  and `.modulation` tensors F32, embeddings / `patch_embedding` / `head` F16, K-quant rows not a multiple of 256 F16)
  and llama-quantize's mixes (city96's patch: Q4_K_M puts `.v` and `ffn.2` in Q6_K, Q4_K_S the first four `.v` and
  every `ffn.2` in Q5_K, Q3_K_M the first two `.v` in Q5_K and the rest of `.v` and `ffn.2` in Q4_K); fp8 is the
  ComfyUI layout (2-D block weights e4m3, the rest bf16);
- in memory here: GGUF stays quantized (engine/models/single_file.py), an fp8 file is upcast to the compute dtype
  at load (bf16 on a GPU) unless the `fp8` memory mode stores it again in fp8;
- peak of the transformer on a GPU = its weights in memory + the largest layer dequantized for its forward (diffusers
  dequantizes in fp16, then casts to bf16: two copies) + the activations of one 480p x 97-frame forward measured on
  an H100 (bench/RESULTS.md: 1.7 GB for 1.7B, 2.2 GB for 17B);
- CPU dequantize cost: diffusers' `dequantize_gguf_tensor` on one full-size layer of each width (the attention
  projection and the FFN up-projection), median of `--repeat`, then x the linear layers of one forward: the time a
  forward spends dequantizing on this CPU (a GPU dequantizes the same work much faster; not measured, no GPU here).

Prints the table and writes bench/out/quant_bench.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QT = gguf.GGMLQuantizationType
ACTIVATIONS_GB = {"humo-1.7b": 1.7, "humo-17b": 2.2}  # one 480x832x97 forward, H100 (bench/RESULTS.md)
# file type -> (base tensor type, {key fragment: type}) after llama-quantize's image-model rules
GGUF_FORMATS = {
    "F16": (QT.F16, {}),
    "Q8_0": (QT.Q8_0, {}),
    "Q6_K": (QT.Q6_K, {}),
    "Q5_K_M": (QT.Q5_K, {".v.weight": QT.Q6_K, ".ffn.2.weight": QT.Q6_K}),
    "Q4_K_M": (QT.Q4_K, {".v.weight": QT.Q6_K, ".ffn.2.weight": QT.Q6_K}),
    "Q4_K_S": (QT.Q4_K, {".v.weight": "Q5_K first 4", ".ffn.2.weight": QT.Q5_K}),
    "Q3_K_M": (QT.Q3_K, {".v.weight": "Q5_K first 2 else Q4_K", ".ffn.2.weight": QT.Q4_K}),
    "Q3_K_S": (QT.Q3_K, {}),
}


def official_shapes(model_id: str) -> dict[str, tuple[int, ...]]:
    from accelerate import init_empty_weights

    from engine.models import PRESETS, HuMoTransformer3DModel
    from engine.models.official import diffusers_to_official_key

    with init_empty_weights():
        model = HuMoTransformer3DModel(**PRESETS[model_id])
    return {diffusers_to_official_key(n): tuple(p.shape) for n, p in model.named_parameters()}


def _nbytes(shape: tuple[int, ...], kind: QT) -> int:
    block, size = gguf.GGML_QUANT_SIZES[kind]
    return int(np.prod(shape)) // block * size


def gguf_types(shapes: dict[str, tuple[int, ...]], fmt: str) -> dict[str, QT]:
    from tests.weight_files import tensor_type

    base, rules = GGUF_FORMATS[fmt]
    types, v_seen = {}, 0
    for key, shape in shapes.items():
        kind = tensor_type(key, shape, base)
        for fragment, rule in rules.items():
            if kind == base and key.endswith(fragment) and "audio_cross_attn" not in key:
                if isinstance(rule, str):  # "Q5_K first N else T": llama-quantize's per-layer counter
                    first = int(rule.split()[2])
                    rest = QT.Q4_K if "else" in rule else base
                    kind, v_seen = (QT.Q5_K if v_seen < first else rest), v_seen + 1
                else:
                    kind = rule
        if kind not in (QT.F32, QT.F16) and shape[-1] % gguf.GGML_QUANT_SIZES[kind][0]:
            kind = QT.F16
        types[key] = kind
    return types


def size_rows(model_id: str) -> list[dict]:
    shapes = official_shapes(model_id)
    params = sum(int(np.prod(s)) for s in shapes.values())
    linear = [s for k, s in shapes.items() if len(s) == 2 and k.startswith("blocks.")]
    largest = max(int(np.prod(s)) for s in linear)
    temp = largest * (2 + 2) / 1e9  # fp16 dequantized + bf16 cast of the largest layer
    act = ACTIVATIONS_GB[model_id]
    rows = []
    for fmt, dtype_bytes in (("fp32", 4), ("bf16", 2)):
        size = params * dtype_bytes / 1e9
        rows.append({"model": model_id, "format": fmt, "file_gb": size, "memory_gb": params * 2 / 1e9,
                     "peak_gb": params * 2 / 1e9 + act, "note": "loaded in bf16 on a GPU"})  # fmt: skip
    fp8 = sum(int(np.prod(s)) * (1 if len(s) == 2 and k.startswith("blocks.") else 2) for k, s in shapes.items())
    rows.append({"model": model_id, "format": "fp8 e4m3 (ComfyUI)", "file_gb": fp8 / 1e9, "memory_gb": params * 2 / 1e9,
                 "peak_gb": params * 2 / 1e9 + act,
                 "note": f"upcast at load; with --memory-mode fp8: {fp8 / 1e9:.1f} GB, peak {fp8 / 1e9 + act:.1f}"})  # fmt: skip
    for fmt in GGUF_FORMATS:
        types = gguf_types(shapes, fmt)
        size = sum(_nbytes(shapes[k], t) for k, t in types.items()) / 1e9
        counts = {t.name: sum(1 for v in types.values() if v == t) for t in set(types.values())}
        rows.append({"model": model_id, "format": f"GGUF {fmt}", "file_gb": size, "memory_gb": size,
                     "peak_gb": size + (temp if fmt != "F16" else 0) + act, "types": counts,
                     "note": "stays quantized; + one layer dequantized per forward"})  # fmt: skip
    return rows


def random_blocks(shape: tuple[int, int], kind: QT, rng: np.random.Generator) -> torch.Tensor:
    """Valid blocks of a type for timing: real quantization where gguf-py has it, else random bytes with finite fp16
    scale fields (dequantizing costs the same whatever the values)."""
    if kind in (QT.F16, QT.Q8_0):
        return torch.from_numpy(gguf.quants.quantize(rng.standard_normal(shape, dtype=np.float32), kind))
    block, size = gguf.GGML_QUANT_SIZES[kind]
    raw = rng.integers(0, 256, (shape[0], shape[1] // block, size), dtype=np.uint8)
    half = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)
    offsets = {
        QT.Q4_K: (0, 2),
        QT.Q5_K: (0, 2),
        QT.Q6_K: (size - 2,),
        QT.Q3_K: (size - 2,),
        QT.Q2_K: (size - 4, size - 2),
    }
    for offset in offsets[kind]:
        raw[..., offset : offset + 2] = half
    return torch.from_numpy(raw.reshape(shape[0], -1))


def dequant_rows(model_id: str, repeat: int) -> list[dict]:
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    from engine.models import PRESETS

    preset = PRESETS[model_id]
    dim = preset["num_attention_heads"] * preset["attention_head_dim"]
    ffn = preset["ffn_dim"]
    layers = preset["num_layers"]
    rng = np.random.default_rng(0)
    rows = []
    for kind in (QT.F16, QT.Q8_0, QT.Q6_K, QT.Q5_K, QT.Q4_K, QT.Q3_K):
        times = {}
        for name, shape in (("attention", (dim, dim)), ("ffn", (ffn, dim))):
            blocks = random_blocks(shape, kind, rng)
            # F16 is stored as a plain half tensor (no blocks): its "dequantize" is the cast
            param = blocks.view(torch.float16) if kind == QT.F16 else GGUFParameter(blocks, quant_type=kind)
            runs = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                dequantize_gguf_tensor(param).to(torch.bfloat16)
                runs.append(time.perf_counter() - t0)
            times[name] = statistics.median(runs)
        # per block: self q k v o, cross q k v o, audio q o (k/v are 1536-wide: F16/Q-able too, counted as attention)
        per_forward = layers * (12 * times["attention"] + 2 * times["ffn"])
        rows.append({"model": model_id, "type": kind.name, "attention_ms": times["attention"] * 1e3,
                     "ffn_ms": times["ffn"] * 1e3, "per_forward_s": per_forward})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["humo-1.7b", "humo-17b"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [row for m in args.models for row in size_rows(m)]
    print("| model | format | file (GB) | in memory (GB) | transformer peak, 480p (GB) | note |")
    print("|---|---|---|---|---|---|")
    for r in sizes:
        print(f"| {r['model']} | {r['format']} | {r['file_gb']:.2f} | {r['memory_gb']:.2f} | {r['peak_gb']:.1f} | "
              f"{r['note']} |")  # fmt: skip
    costs = [row for m in args.models for row in dequant_rows(m, args.repeat)]
    print(
        f"\n| model | type | attention layer (ms) | FFN layer (ms) | dequantizing per forward (s), {args.threads} threads |"
    )
    print("|---|---|---|---|---|")
    for r in costs:
        print(
            f"| {r['model']} | {r['type']} | {r['attention_ms']:.1f} | {r['ffn_ms']:.1f} | {r['per_forward_s']:.2f} |"
        )
    out = ROOT / "bench" / "out" / "quant_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "sizes": sizes, "dequantize": costs}, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
