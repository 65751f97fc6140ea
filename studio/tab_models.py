"""Models tab: what is present, where, how big; downloads with progress; free memory and the memory mode."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from engine.system import free_ram_bytes, gpu_memory
from studio.context import StudioContext


def models_table() -> pd.DataFrame:
    from engine.registry import list_models

    rows = [
        {
            "model": m["id"],
            "present": "yes" if m["present"] else "no",
            "size (GB)": round(m["size_gb"], 2),
            "location": m["location"] or "",
            "what": m["description"],
        }
        for m in list_models()
    ]
    return pd.DataFrame(rows)


def memory_mode(model_id: str, gpus: list[dict] | None = None) -> str:
    """The memory mode a generation will use (the rule lives in engine.memory when available)."""
    try:
        from engine.memory import choose_memory_mode
    except ImportError:
        choose_memory_mode = None
    gpus = gpu_memory() if gpus is None else gpus
    if choose_memory_mode is not None:
        return str(choose_memory_mode(model_id, gpus[0]["free"] if gpus else 0, free_ram_bytes()))
    if not gpus:
        return "cpu"
    need = {"humo-17b": 40e9, "humo-1.7b": 8e9}.get(model_id, 1e9)
    return "gpu" if gpus[0]["free"] > need else "model_offload"


def memory_text(ctx: StudioContext) -> str:
    gpus = gpu_memory()
    lines = [f"**RAM available:** {free_ram_bytes() / 2**30:.1f} GB"]
    if not gpus:
        lines.append(
            "**GPU:** none — generation runs on the CPU (fine for HuMo-nano and the tiny test model, far too slow for HuMo-1.7B/17B)"
        )
    for gpu in gpus:
        lines.append(
            f"**GPU {gpu['index']}:** {gpu['name']}, {gpu['free'] / 2**30:.1f} / {gpu['total'] / 2**30:.1f} GB free"
        )
    lines.append(f"**Memory mode for {ctx.default_model}:** {memory_mode(ctx.default_model, gpus)}")
    if ctx.options.gpus > 1:
        lines.append(f"**Jobs run on {ctx.options.gpus} GPUs** (a torchrun worker group; rank 0 reports progress)")
    return "\n\n".join(lines)


ROOT = Path(__file__).resolve().parents[1]
# What huggingface_hub / requests say when the Hub cannot be reached; the user gets one sentence instead.
OFFLINE_PATTERNS = re.compile(
    r"OfflineModeIsEnabled|LocalEntryNotFoundError|ConnectionError|ConnectTimeout|Max retries exceeded|"
    r"Name or service not known|Temporary failure in name resolution|Network is unreachable|getaddrinfo failed"
)


def hub_cache_dir() -> Path:
    """Where downloads go: huggingface_hub's own cache folder (HF_HUB_CACHE / HF_HOME)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the disk that holds `path` (its nearest existing parent: the cache may not exist yet)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def download_question(model_id: str) -> tuple[str, bool]:
    """(what a download of `model_id` would fetch, its size and the free disk space; whether to offer it)."""
    from engine.registry import component_root, get_spec

    missing = [c for c in get_spec(model_id).all_components if component_root(c) is None]
    if not missing:
        return f"✔ {model_id} is already here: nothing to download.", False
    need, free = sum(c.size_bytes for c in missing), free_disk_bytes(hub_cache_dir())
    parts = ", ".join(f"{c.name} {c.size_bytes / 1e9:.1f} GB" for c in missing)
    text = (f"**Download {need / 1e9:.1f} GB for {model_id}?** ({parts}) into `{hub_cache_dir()}`, which has "
            f"{free / 1e9:.0f} GB free. A stopped download resumes where it stopped.")  # fmt: skip
    if need > free:
        return text + f"\n\n⚠ Not enough disk space: free {(need - free) / 1e9:.1f} GB more, or set HF_HOME.", False
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return text + "\n\n⚠ This studio runs offline (HF_HUB_OFFLINE=1): " + OFFLINE_ADVICE.format(
            model=model_id
        ), False
    return text, True


OFFLINE_ADVICE = (
    "huggingface.co cannot be reached from here. Run `python -m engine download {model}` on a machine that is "
    "online and copy its Hugging Face cache (~/.cache/huggingface/hub) here, or put the files under "
    "HUMO_MODELS_DIR; then press Refresh."
)


def download_failure(model_id: str, output: str) -> str:
    """One readable sentence for a failed download: offline said plainly, otherwise the last line of the error."""
    if OFFLINE_PATTERNS.search(output):
        return "⚠ Download failed: " + OFFLINE_ADVICE.format(model=model_id)
    last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "no output")
    return f"⚠ Download of {model_id} failed: {last[-300:]}"


def download_model(model_id: str):
    """Download in a child process (`python -m engine download`), yielding its progress; Cancel (a Gradio cancel of
    this event) ends the child, and the files fetched so far stay in the cache for the next try."""
    command = [sys.executable, "-m", "engine", "download", model_id]
    log = []
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)  # fmt: skip
    started = time.monotonic()
    try:
        yield f"◔ Downloading {model_id}… (Cancel stops it; it resumes next time)"
        for line in process.stdout:
            log = (log + [line])[-40:]
            progress = line.strip().rsplit("\r", 1)[-1][:160]
            if progress:
                yield f"◔ Downloading {model_id} ({time.monotonic() - started:.0f} s): `{progress}`"
        if process.wait() != 0:
            yield download_failure(model_id, "".join(log))
            return
        yield f"✔ {model_id} is ready: press Refresh, then pick it in the Generate tab."
    finally:
        if process.poll() is None:  # cancelled (or the page went away): end the download, keep what it fetched
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def build_models_tab(ctx: StudioContext) -> dict:
    c: dict = {}
    c["table"] = gr.Dataframe(models_table(), label="Models", interactive=False, elem_id="models-table")
    c["memory"] = gr.Markdown(memory_text(ctx))
    private = {"api_visibility": "private"}
    if ctx.options.public:  # no download endpoint at all here: absent from the API, not only hidden
        c["status"] = gr.Markdown("Models are installed by the studio's owner; this public studio cannot download.")
        c["refresh"] = gr.Button("Refresh")
    else:
        with gr.Row():
            c["choice"] = gr.Dropdown(["humo-1.7b", "humo-17b"], value="humo-1.7b", label="Download")
            c["download"] = gr.Button("Download weights…", elem_id="models-download")
            c["refresh"] = gr.Button("Refresh")
        c["status"] = gr.Markdown(
            "Downloads resume where they stopped; files go to the Hugging Face cache (HF_HOME).",
            elem_id="models-status",
        )
        with gr.Row():  # the size is confirmed first; a running download can be cancelled
            c["confirm"] = gr.Button("Download", variant="primary", visible=False, elem_id="models-download-confirm")
            c["cancel"] = gr.Button("Cancel", visible=False, elem_id="models-download-cancel")

        def ask(model_id):
            text, offer = download_question(model_id)
            return text, gr.Button(visible=offer), gr.Button(visible=offer)

        c["download"].click(ask, c["choice"], [c["status"], c["confirm"], c["cancel"]], queue=False, **private)
        running = c["confirm"].click(lambda: gr.Button(visible=False), None, c["confirm"], queue=False, **private)
        running = running.then(
            download_model, [c["choice"]], [c["status"]], concurrency_id="download", concurrency_limit=1, **private
        )
        running.then(lambda: gr.Button(visible=False), None, c["cancel"], queue=False, **private)
        c["cancel"].click(
            lambda: ("Download cancelled; what was fetched stays in the cache and the next download resumes.",
                     gr.Button(visible=False), gr.Button(visible=False)),
            None, [c["status"], c["confirm"], c["cancel"]], cancels=[running], queue=False, **private,
        )  # fmt: skip
    c["refresh"].click(
        lambda: (models_table(), memory_text(ctx)), None, [c["table"], c["memory"]], queue=False, **private
    )
    if ctx.pool is not None:  # issue 31: the Ray workers jobs render on (read-only)
        c["pool"] = gr.Dataframe(pool_table(ctx), label="Ray workers", interactive=False, elem_id="pool-table")
        c["refresh"].click(lambda: pool_table(ctx), None, c["pool"], queue=False, **private)
    return c


def pool_table(ctx: StudioContext) -> pd.DataFrame:
    """One row per Ray worker: node, ranks, the model it holds, busy / idle / starting, jobs done."""
    from studio.pool import POOL_HEADERS

    return pd.DataFrame(ctx.pool.rows(), columns=POOL_HEADERS)
