"""The studio: a gr.Blocks app with Generate, Gallery, Models (and Train) tabs over one StudioContext."""

from __future__ import annotations

import gradio as gr

from studio.context import StudioContext, StudioOptions
from studio.tab_gallery import build_gallery_tab
from studio.tab_generate import build_generate_tab
from studio.tab_models import build_models_tab

DEMO_BANNER = (
    "⚠️ **Running the embedded `tiny` demo model: it is untrained and its videos are noise.** "
    "Get the real models with `python -m engine download humo-1.7b` (7 GB + 26 GB of shared encoders) "
    "or `humo-17b`, then restart the studio; it picks the largest model present."
)
NANO_BANNER = (
    "ℹ️ **Running HuMo-nano**, the bundled CPU-sized model trained on a synthetic cartoon world (64×64, 2-second "
    "clips). It is small and lightly trained: backgrounds follow the prompt, skin/shirt colours loosely follow the "
    "reference and the mouth opens and closes with the voice, but faces are smeared and the sync is loose. "
    "For real people get `python -m engine download humo-1.7b` (or `humo-17b`) and restart the studio."
)


def model_choices(ctx: StudioContext) -> list[str]:
    from engine.registry import list_models

    choices = [m["id"] for m in list_models() if m["present"]]
    try:  # finished fine-tuning checkpoints, when the training tab is installed
        from studio.tab_train import list_checkpoints

        choices += [f"checkpoint:{path}" for _, path in list_checkpoints(ctx.store.data_dir)]
    except ImportError:
        pass
    if ctx.default_model not in choices:
        choices.insert(0, ctx.default_model)
    return choices


def build_app(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks(title="HuMo Studio") as demo:
        gr.Markdown("# 🎬 HuMo Studio\nA face, a voice and a prompt → a lip-synced video.")
        if ctx.is_demo_model:
            gr.Markdown(DEMO_BANNER, elem_id="demo-banner")
        elif ctx.is_nano_model:
            gr.Markdown(NANO_BANNER, elem_id="nano-banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate") as generate_tab:
                generate = build_generate_tab(ctx, model_choices(ctx))
            with gr.Tab("Gallery", id="gallery"):
                gallery = build_gallery_tab(ctx, generate, tabs, generate_tab)
            with gr.Tab("Models", id="models"):
                build_models_tab(ctx)
            if not ctx.options.public:
                try:
                    from studio.tab_train import build_train_tab
                except ImportError:
                    build_train_tab = None
                if build_train_tab is not None:
                    with gr.Tab("Train", id="train"):
                        build_train_tab(ctx)
        load_fn, load_inputs, load_outputs = gallery["_load"]
        demo.load(load_fn, load_inputs, load_outputs, queue=False)
        restore_fn, _, restore_outputs = generate["_restore"]
        demo.load(restore_fn, None, restore_outputs, queue=False)
        panel_inputs, panel_outputs = generate["_panel"]
        from studio.tab_generate import guidance_panel

        demo.load(lambda *a: guidance_panel(ctx, *a), panel_inputs, panel_outputs, queue=False)
    demo.queue(default_concurrency_limit=1)
    return demo


def create_app(options: StudioOptions) -> tuple[gr.Blocks, StudioContext]:
    ctx = StudioContext.create(options)
    return build_app(ctx), ctx
