"""Gallery tab: every generation, newest first, paged, searchable; detail view, delete, download, re-use settings."""

from __future__ import annotations

import json

import gradio as gr

from studio.context import StudioContext

PAGE_SIZE = 12
STATUS_ICONS = {"done": "✅", "failed": "❌", "stopped": "⏹️", "running": "⏳", "queued": "🕒"}


def gallery_page(ctx: StudioContext, page: int = 1, query: str | None = None) -> tuple[list, list[int], str, int]:
    """(gallery items [(thumbnail path or None, caption)], row ids, page label, page count) of one page."""
    rows, total = ctx.store.list_generations(page=max(1, int(page)), page_size=PAGE_SIZE, query=query or None)
    pages = max(1, -(-total // PAGE_SIZE))
    items, ids = [], []
    for row in rows:
        thumb = str(ctx.store.abs_path(row.thumbnail_path)) if row.thumbnail_path else None
        caption = f"#{row.id} {STATUS_ICONS.get(row.status, '')} {row.prompt[:60]}"
        if thumb is None:  # failed/stopped rows have no picture; Gradio needs one, so show a placeholder
            thumb = _placeholder(ctx)
        items.append((thumb, caption))
        ids.append(row.id)
    return items, ids, f"Page {min(page, pages)} of {pages} · {total} generations", pages


def _placeholder(ctx: StudioContext) -> str:
    from PIL import Image

    path = ctx.store.paths.thumbs / "_placeholder.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (128, 128), (60, 60, 70)).save(path)
    return str(path)


def detail(ctx: StudioContext, generation_id: int | None) -> tuple[str | None, str, str]:
    """(video path, settings JSON, summary markdown) of one generation."""
    if generation_id is None:
        return None, "", "Select a generation."
    row = ctx.store.get(int(generation_id))
    video = str(ctx.store.abs_path(row.video_path)) if row.video_path else None
    data = row.to_dict()
    summary = f"**#{row.id}** · {row.status} · {row.mode} · {row.model_id} · seed {row.seed}\n\n{row.prompt}"
    if row.error:
        summary += f"\n\n**Error:** {row.error.splitlines()[0]}"
    return video, json.dumps(data, indent=2, default=str, ensure_ascii=False), summary


def delete_generation(ctx: StudioContext, generation_id: int | None) -> str:
    if generation_id is None:
        return "Select a generation first."
    try:
        ctx.store.delete(int(generation_id))
    except ValueError as exc:
        return f"⚠️ {exc}"
    return f"Deleted #{generation_id}."


def settings_for_reuse(ctx: StudioContext, generation_id: int | None) -> dict:
    """Generate-tab values of a stored generation: the settings plus the copied inputs' absolute paths."""
    row = ctx.store.get(int(generation_id))
    settings = dict(row.settings or {})
    paths = [str(ctx.store.abs_path(p)) for p in (row.input_paths or [])]
    audio_ext = (".wav", ".mp3", ".m4a", ".flac", ".ogg", ".mp4", ".aac", ".webm")
    images = [p for p in paths if not p.lower().endswith(audio_ext)]
    audio = next((p for p in paths if p.lower().endswith(audio_ext)), None)
    guidance = settings.get("guidance") or {}
    scales = guidance.get("scales", {}) if isinstance(guidance, dict) else {}
    return {
        "prompt": row.prompt,
        "negative_prompt": row.negative_prompt or "",
        "image": images[0] if images else None,
        "extra_images": images[1:] or None,
        "audio": audio,
        "height": settings.get("height"),
        "width": settings.get("width"),
        "frames": settings.get("num_frames") or 0,
        "steps": settings.get("num_inference_steps"),
        "seed": row.seed,
        "model": row.model_id,
        "preset": (guidance.get("preset") if isinstance(guidance, dict) else None) or "official",
        "scale_t": scales.get("scale_t"),
        "scale_i": scales.get("scale_i"),
        "scale_a": scales.get("scale_a"),
        "switch": guidance.get("switch_timestep") if isinstance(guidance, dict) else None,
    }


def build_gallery_tab(ctx: StudioContext, generate: dict, tabs: gr.Tabs, generate_tab: gr.Tab) -> dict:
    c: dict = {}
    with gr.Row():
        c["query"] = gr.Textbox(label="Search prompts", scale=4, elem_id="gallery-search")
        c["refresh"] = gr.Button("Refresh", scale=1, elem_id="gallery-refresh")
    with gr.Row():
        c["prev"] = gr.Button("◀ Newer", scale=1)
        c["page_label"] = gr.Markdown()
        c["next"] = gr.Button("Older ▶", scale=1)
    c["page"] = gr.State(1)
    c["ids"] = gr.State([])
    c["selected"] = gr.State(None)
    c["grid"] = gr.Gallery(label="Generations", columns=6, height=360, allow_preview=False, elem_id="gallery-grid")
    with gr.Row():
        with gr.Column(scale=3):
            c["video"] = gr.Video(label="Video", interactive=False, elem_id="gallery-video")
            c["summary"] = gr.Markdown(elem_id="gallery-summary")
        with gr.Column(scale=2):
            c["settings"] = gr.Code(label="Every setting", language="json")
            with gr.Row():
                c["reuse"] = gr.Button("Use these settings", elem_id="gallery-reuse")
                c["delete"] = gr.Button("Delete", variant="stop", elem_id="gallery-delete")
            c["download"] = gr.File(label="Download", interactive=False)

    def load(page, query):
        items, ids, label, pages = gallery_page(ctx, page, query)
        return items, ids, label, min(max(1, page), pages)

    listing = [c["grid"], c["ids"], c["page_label"], c["page"]]
    c["refresh"].click(load, [c["page"], c["query"]], listing, queue=False)
    c["query"].submit(lambda q: load(1, q), [c["query"]], listing, queue=False)
    c["prev"].click(lambda p, q: load(max(1, p - 1), q), [c["page"], c["query"]], listing, queue=False)
    c["next"].click(lambda p, q: load(p + 1, q), [c["page"], c["query"]], listing, queue=False)

    def select(ids, evt: gr.SelectData):
        gid = ids[evt.index] if evt.index is not None and evt.index < len(ids) else None
        video, settings, summary = detail(ctx, gid)
        return gid, video, settings, summary, video

    c["grid"].select(
        select, [c["ids"]], [c["selected"], c["video"], c["settings"], c["summary"], c["download"]], queue=False
    )

    def on_delete(gid, page, query):
        message = delete_generation(ctx, gid)
        items, ids, label, _ = gallery_page(ctx, page, query)
        return message, items, ids, label, None, None, ""

    c["delete"].click(
        on_delete,
        [c["selected"], c["page"], c["query"]],
        [c["summary"], c["grid"], c["ids"], c["page_label"], c["selected"], c["video"], c["settings"]],
        queue=False,
    )

    fields = [
        "prompt",
        "negative_prompt",
        "image",
        "extra_images",
        "audio",
        "height",
        "width",
        "frames",
        "steps",
        "seed",
        "model",
        "preset",
        "scale_t",
        "scale_i",
        "scale_a",
        "switch",
    ]

    def reuse(gid):
        if gid is None:
            return [gr.update() for _ in fields] + [gr.update(), gr.Tabs()]
        values = settings_for_reuse(ctx, gid)
        updates = [gr.update(value=values[f]) if values.get(f) is not None else gr.update() for f in fields]
        return updates + [gr.update(value="custom"), gr.Tabs(selected="generate")]

    c["reuse"].click(
        reuse, [c["selected"]], [generate[f] for f in fields] + [generate["resolution"], tabs], queue=False
    )
    c["_load"] = (load, [c["page"], c["query"]], listing)
    return c
