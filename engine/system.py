"""What this machine has: devices and free memory (for `python -m engine info` and the studio's Models tab)."""

from __future__ import annotations

import os

import torch


def free_ram_bytes() -> int:
    """Available host memory (MemAvailable), or 0 when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def gpu_memory() -> list[dict]:
    """Per CUDA device: name, free and total bytes."""
    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            devices.append({"index": index, "name": torch.cuda.get_device_name(index), "free": free, "total": total})
    return devices


def describe_devices() -> str:
    lines = [f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, cores {os.cpu_count()}"]
    lines.append(f"RAM available: {free_ram_bytes() / 2**30:.1f} GB")
    gpus = gpu_memory()
    if not gpus:
        lines.append("GPU: none (CUDA not available): generation runs on the CPU, suited to the tiny/nano models")
    for gpu in gpus:
        lines.append(
            f"GPU {gpu['index']}: {gpu['name']}, {gpu['free'] / 2**30:.1f} / {gpu['total'] / 2**30:.1f} GB free"
        )
    return "\n".join(lines)
