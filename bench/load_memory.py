"""Load time and peak host RAM: streaming `from_official` vs a naive full-dict load.

Writes a full-size HuMo checkpoint with random weights under the official key names, as a `.pth` state dict
and as a sharded safetensors folder (`humo.safetensors.index.json` + shards), then loads each in a fresh
subprocess and records the wall time and the child's peak RSS (`ru_maxrss`):

- `from_official`: `HuMoTransformer3DModel.from_official(path, torch_dtype=bf16)` (meta model, tensor by tensor);
- `naive`: read the whole state dict (`torch.load` / `safetensors.torch.load_file` of every shard, as the
  official loader does), build the model in fp32, rename keys, `load_state_dict`, then cast to bf16.

Needs about 7 GB of disk per format for HuMo-1.7B (fp32), in `--dir` (default /tmp); deleted afterwards
unless `--keep`. Prints a table and writes JSON to bench/out/. Files are read right after being written,
so both methods read from a warm page cache; the comparison is about RAM, not disk speed.

    .venv/bin/python bench/load_memory.py [--preset humo-1.7b] [--dir /tmp] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import torch
from engine.models import PRESETS, HuMoTransformer3DModel
from engine.models.official import official_to_diffusers
def hwm_kib():
    # this process's own high-water RSS (VmHWM); a fresh address space at exec, so nothing inherited
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base_hwm = hwm_kib()
method, layout, path, preset = {method!r}, {layout!r}, {path!r}, {preset!r}
t0 = time.perf_counter()
if method == "from_official":
    model = HuMoTransformer3DModel.from_official(path, torch_dtype=torch.bfloat16)
else:
    if layout == "pth":
        sd = torch.load(path, map_location="cpu", weights_only=True)
    else:
        from pathlib import Path
        from safetensors.torch import load_file
        index = json.loads((Path(path) / "humo.safetensors.index.json").read_text())
        sd = {{}}
        for shard in dict.fromkeys(index["weight_map"].values()):
            sd.update(load_file(Path(path) / shard))
    model = HuMoTransformer3DModel(**PRESETS[preset])
    model.load_state_dict(official_to_diffusers(sd), strict=True)
    del sd
    model.to(torch.bfloat16)
seconds = time.perf_counter() - t0
params = sum(p.numel() for p in model.parameters())
nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "peak_rss_kib": peak, "base_rss_kib": base, "params": params,
                  "model_bytes": nbytes, "vm_hwm_kib": hwm_kib(), "base_vm_hwm_kib": base_hwm}}))
"""


def write_checkpoints(preset: str, folder: Path, shard_bytes: int) -> tuple[Path, Path, int]:
    """Random fp32 weights under official names -> (ema.pth, sharded folder, total bytes)."""
    import torch
    from safetensors.torch import save_file

    from engine.models import PRESETS, HuMoTransformer3DModel
    from engine.models.official import diffusers_to_official_key

    with torch.device("meta"):
        meta = HuMoTransformer3DModel(**PRESETS[preset])
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, param in meta.named_parameters():
        state[diffusers_to_official_key(name)] = torch.randn(param.shape, generator=generator).mul_(0.02)
    total = sum(t.numel() * t.element_size() for t in state.values())

    pth = folder / "ema.pth"
    torch.save(state, pth)

    sharded = folder / "HuMo"
    sharded.mkdir()
    groups, current, size = [], [], 0
    for key, tensor in state.items():
        if current and size + tensor.nbytes > shard_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(key)
        size += tensor.nbytes
    groups.append(current)
    weight_map = {}
    for i, keys in enumerate(groups, start=1):
        name = f"humo-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file({k: state[k] for k in keys}, sharded / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (sharded / "humo.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return pth, sharded, total


def write_in_subprocess(preset: str, folder: Path, shard_bytes: int) -> tuple[Path, Path, int]:
    """Write the checkpoints from a child, so this process stays small: a child's ru_maxrss starts from its
    parent's RSS at fork, and the measured loaders are children of this process."""
    cmd = [
        sys.executable,
        __file__,
        "--_write",
        str(folder),
        "--preset",
        preset,
        "--shard-gb",
        str(shard_bytes / 2**30),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"writing checkpoints failed:\n{proc.stderr[-3000:]}")
    total = json.loads(proc.stdout.strip().splitlines()[-1])["total"]
    return folder / "ema.pth", folder / "HuMo", total


def measure(method: str, layout: str, path: Path, preset: str) -> dict:
    code = CHILD.format(root=str(ROOT), method=method, layout=layout, path=str(path), preset=preset)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{method}/{layout} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"method": method, "layout": layout, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="humo-1.7b")
    parser.add_argument("--dir", default="/tmp", help="where the temporary checkpoints go (~7 GB per format)")
    parser.add_argument("--shard-gb", type=float, default=2.0, help="max shard size of the safetensors folder")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoints")
    parser.add_argument("--_write", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._write:  # child mode: write the checkpoints into an existing folder
        _, _, total = write_checkpoints(args.preset, Path(args._write), int(args.shard_gb * 2**30))
        print(json.dumps({"total": total}))
        return

    folder = Path(tempfile.mkdtemp(prefix="humo-load-bench-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        pth, sharded, total = write_in_subprocess(args.preset, folder, int(args.shard_gb * 2**30))
        print(f"wrote {total / 2**30:.2f} GiB fp32 per format in {time.perf_counter() - t0:.0f} s under {folder}")
        rows = []
        for layout, path in (("pth", pth), ("sharded", sharded)):
            for method in ("from_official", "naive"):
                rows.append(measure(method, layout, path, args.preset))
                r = rows[-1]
                print(f"  {method:>13} {layout:>8}: {r['seconds']:.1f} s, peak {r['peak_rss_kib'] / 2**20:.2f} GiB")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    model_gib = rows[0]["model_bytes"] / 2**30
    print(f"\n{args.preset}: {rows[0]['params']:,} params; bf16 model (fp32 islands kept) = {model_gib:.2f} GiB")
    header = f"{'layout':<8} {'method':<14} {'time s':>7} {'peak RSS GiB':>13} {'peak-base GiB':>14} {'x model':>8} {'VmHWM GiB':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        peak, base = r["peak_rss_kib"] / 2**20, r["base_rss_kib"] / 2**20
        print(
            f"{r['layout']:<8} {r['method']:<14} {r['seconds']:>7.1f} {peak:>13.2f} {peak - base:>14.2f} "
            f"{(peak - base) / model_gib:>8.2f} {r['vm_hwm_kib'] / 2**20:>9.2f}"
        )
    ratios = {}
    for layout in ("pth", "sharded"):
        ours = next(r for r in rows if r["layout"] == layout and r["method"] == "from_official")
        naive = next(r for r in rows if r["layout"] == layout and r["method"] == "naive")
        ratios[layout] = {
            "peak_rss_naive_over_ours": naive["peak_rss_kib"] / ours["peak_rss_kib"],
            "time_naive_over_ours": naive["seconds"] / ours["seconds"],
        }
        print(
            f"{layout}: naive/from_official peak RSS x{ratios[layout]['peak_rss_naive_over_ours']:.2f}, "
            f"time x{ratios[layout]['time_naive_over_ours']:.2f}"
        )

    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"load_memory-{args.preset}.json"
    tmp = target.with_suffix(".json.tmp")
    payload = {
        "preset": args.preset,
        "checkpoint_bytes_fp32": total,
        "model_bytes_bf16": rows[0]["model_bytes"],
        "rows": rows,
        "ratios": ratios,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
