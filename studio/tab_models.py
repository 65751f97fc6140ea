"""Models tab: what is present, where, how big; downloads with progress; free memory and the memory mode."""

from __future__ import annotations

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


def download_model(model_id: str, progress=gr.Progress()) -> str:
    from engine.registry import download

    def report(name, done, total):
        progress(done / max(1, total), desc=f"downloading {name}")

    download(model_id, progress_callback=report)
    return f"✅ {model_id} is ready."


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
            c["download"] = gr.Button("Download weights")
            c["refresh"] = gr.Button("Refresh")
        c["status"] = gr.Markdown("Downloads resume where they stopped; files go to the Hugging Face cache (HF_HOME).")
        c["download"].click(
            download_model, [c["choice"]], [c["status"]], concurrency_id="download", concurrency_limit=1, **private
        )
    c["refresh"].click(
        lambda: (models_table(), memory_text(ctx)), None, [c["table"], c["memory"]], queue=False, **private
    )
    return c
