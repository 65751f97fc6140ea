"""The studio: a gr.Blocks app with Generate, Gallery, Models (and Train) tabs over one StudioContext."""

from __future__ import annotations

import os

import gradio as gr
from starlette.middleware import Middleware

from studio import admission
from studio.api_values import FileValueGuard
from studio.context import StudioContext, StudioOptions
from studio.guards import LoginRequired, SessionGuard
from studio.models import model_choices, wire_model_refresh
from studio.owners import BROWSER_STORAGE_SECRET, renew_visitor
from studio.serving import SERVED, cache_sweeper
from studio.tab_gallery import GALLERY_CSS, build_gallery_tab
from studio.tab_generate import SHORTCUT_JS, build_generate_tab, wire_page_load
from studio.tab_models import build_models_tab

DEMO_BANNER = (
    "⚠ **Running the embedded `tiny` demo model: it is untrained and its videos are noise.** "
    "Get the real models with `python -m engine download humo-1.7b` (7 GB + 26 GB of shared encoders) "
    "or `humo-17b`, then restart the studio; it picks the largest model present."
)
NANO_BANNER = (
    "ℹ **Running HuMo-nano**, the bundled CPU-sized model trained on a synthetic cartoon world (64×64, 2-second "
    "clips). It is small and lightly trained: backgrounds follow the prompt, skin/shirt colours loosely follow the "
    "reference and the mouth opens and closes with the voice, but faces are smeared and the sync is loose. "
    "For real people get `python -m engine download humo-1.7b` (or `humo-17b`) and restart the studio."
)


def build_app(ctx: StudioContext) -> gr.Blocks:
    opts = ctx.options
    with gr.Blocks(title="HuMo Studio") as demo:  # the cache is aged out by launch_options' cache_sweeper
        # The anonymous visitor's id (public mode): issued and signed by the studio, kept in the browser.
        visitor = gr.BrowserState(None, storage_key="humo-visitor", secret=BROWSER_STORAGE_SECRET)
        gr.Markdown("# HuMo Studio\nA face, a voice and a prompt → a lip-synced video. " + AI_NOTICE)
        if ctx.is_demo_model:
            gr.Markdown(DEMO_BANNER, elem_id="demo-banner")
        elif ctx.is_nano_model:
            gr.Markdown(NANO_BANNER, elem_id="nano-banner")
        if opts.public:
            gr.Markdown(public_notice(opts), elem_id="public-notice")
        if os.environ.get("SYSTEM") == "spaces" and os.environ.get("OAUTH_CLIENT_ID"):  # `hf_oauth: true` on a Space
            gr.LoginButton()
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate") as generate_tab:
                from studio.tab_sweep import wire_sweep  # the Sweep button's page side

                generate = build_generate_tab(ctx, model_choices(ctx), visitor, more_jobs=[wire_sweep])
            with gr.Tab("Dub", id="dub"):
                from studio.tab_dub import build_dub_tab  # re-voice a video (issue #15); also the /dub API

                dubbing = build_dub_tab(ctx, visitor)
            with gr.Tab("Gallery", id="gallery"):
                gallery = build_gallery_tab(ctx, generate, tabs, generate_tab, visitor)
            with gr.Tab("Models", id="models"):
                build_models_tab(ctx)
            if not opts.public:
                try:
                    from studio.tab_train import build_train_tab
                except ImportError:
                    build_train_tab = None
                if build_train_tab is not None:
                    with gr.Tab("Train", id="train"):
                        build_train_tab(ctx)
        wire_model_refresh(ctx, generate.form.model)  # outside the tabs: finished runs join the picker at once
        # First load: give a new visitor an id (renew a valid one, replace anything else); then fill the gallery and the last settings of this owner.
        private = {"queue": False, "api_visibility": "private"}
        load_fn, load_inputs, load_outputs = gallery["_load"]
        opened = demo.load(lambda v: renew_visitor(ctx.visitor_key, v), visitor, visitor, **private)
        opened.then(load_fn, load_inputs, load_outputs, **private)
        wire_page_load(ctx, generate, opened, visitor)
        for job_event in generate.job_events + dubbing.job_events:  # the gallery shows a job's row when it ends
            job_event.then(load_fn, load_inputs, load_outputs, **private)
        demo.temp_file_sets.append(SERVED)  # served media copies age out with Gradio's own files (cache_sweeper)
    demo.queue(default_concurrency_limit=1, max_size=opts.max_queue_public + 4 if opts.public else None)
    admission.watch_queue(ctx, demo)  # tickets (and queue-list entries) of pages whose event the queue dropped
    return demo


AI_NOTICE = "Every video made here is labelled AI-generated in its metadata and carries an invisible watermark."


def public_notice(opts: StudioOptions) -> str:
    return (
        "**Public studio.** You see only your own videos (kept in this browser); one job at a time, at most "
        f"{opts.max_steps_public} steps, {opts.max_frames_public} frames ({opts.max_frames_public / 25:.1f} s), "
        f"480×832, voices up to {admission.public_voice_seconds(opts):.1f} s used whole (a longer one, up to "
        f"{opts.max_audio_seconds_public:.0f} s, with Frames set to {opts.max_frames_public}: its beginning) and "
        f"uploads up to {opts.max_upload_public}. "
        "Use only faces and voices you have the right to use."
    )


def launch_options(ctx: StudioContext) -> dict:
    """`demo.launch` keywords: nothing of the data folder is served (media reach the page as cached copies),
    uploads are capped, file values of API calls are the studio's to refuse, the cache is aged out, and logins
    (`--auth`) are on when given."""
    opts = ctx.options
    data = ctx.store.data_dir
    # Forwarded addresses: uvicorn believes X-Forwarded-For only from HUMO_TRUSTED_PROXIES' addresses (none by
    # default; its own default trusts loopback, so any local client could name itself); it reads this when launch
    # builds its config.
    os.environ["FORWARDED_ALLOW_IPS"] = opts.proxy_addresses
    guards = [Middleware(LoginRequired)] if opts.auth else []  # every route but the login needs one
    guards.append(Middleware(SessionGuard, trusted_proxies=opts.trusted_proxies))
    app_kwargs = {
        "middleware": [*guards, Middleware(FileValueGuard)],
        "lifespan": cache_sweeper(max(1, opts.cache_ttl_s // 4), opts.cache_ttl_s),
    }
    return {
        "js": SHORTCUT_JS,  # Ctrl+Enter generates
        "css": GALLERY_CSS,  # the gallery's grid fits a phone
        "app_kwargs": app_kwargs,
        "allowed_paths": [],
        "blocked_paths": [str(data), str(data.resolve())],
        "max_file_size": opts.max_upload_public if opts.public else opts.max_upload,
        "auth": opts.auth,
        "show_error": True,
    }


def create_app(options: StudioOptions) -> tuple[gr.Blocks, StudioContext]:
    ctx = StudioContext.create(options)
    return build_app(ctx), ctx
