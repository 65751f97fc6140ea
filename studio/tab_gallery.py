"""Gallery tab: every generation, newest first, paged, searchable; detail view, delete, download, re-use settings."""

from __future__ import annotations

import json

import gradio as gr

from engine.errors import InputError
from studio import inputs, sweeps
from studio.context import StudioContext
from studio.owners import request_owner
from studio.serving import evict, served_copy
from studio.store import LOCAL_OWNER, PLACEHOLDER_NAME, NotFoundError

PAGE_SIZE = 12
SETTINGS_LINES = 18  # the settings box scrolls past this many lines
# A phone (420 px) kept the grid's 6 columns of at least 100 px and cut three off: as many columns as fit.
GALLERY_CSS = (
    "#gallery-grid .grid-container { grid-template-columns: repeat(auto-fill, minmax(96px, 1fr)) !important; }"
)
STATUS_ICONS = {"done": "✔", "failed": "✖", "stopped": "■", "running": "◔", "queued": "◷"}


def gallery_page(
    ctx: StudioContext, page: int = 1, query: str | None = None, owner: str = LOCAL_OWNER
) -> tuple[list, list[int], str, int]:
    """(gallery items [(served thumbnail, caption)], row ids, page label, page count) of one page of `owner`'s."""
    page = page if isinstance(page, int) and not isinstance(page, bool) and 1 <= page <= 10**6 else 1
    query = inputs.text(query, "query", "search", max_chars=500) if isinstance(query, str) else None
    rows, total = ctx.store.list_generations(page=page, page_size=PAGE_SIZE, query=query or None, owner=owner)
    pages = max(1, -(-total // PAGE_SIZE))
    items, ids = [], []
    for row in rows:
        thumb = ctx.store.abs_path(row.thumbnail_path) if row.thumbnail_path else None
        caption = f"#{row.id} {STATUS_ICONS.get(row.status, '')} {row.prompt[:60]}"
        if thumb is None:  # failed/stopped rows have no picture; Gradio needs one, so show a placeholder
            thumb = _placeholder(ctx)
        items.append((served_copy(thumb), caption))
        ids.append(row.id)
    return items, ids, f"Page {min(page, pages)} of {pages} · {total} generations", pages


def _placeholder(ctx: StudioContext) -> str:
    from PIL import Image

    path = ctx.store.paths.thumbs / PLACEHOLDER_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (128, 128), (60, 60, 70)).save(path)
    return str(path)


def detail(ctx: StudioContext, generation_id: int | None, owner: str = LOCAL_OWNER) -> tuple[str | None, str, str]:
    """(served video, settings JSON, summary markdown) of one of `owner`'s generations."""
    if generation_id is None:
        return None, "", "Select a generation."
    try:
        row = ctx.store.get(int(generation_id), owner=owner)
    except (NotFoundError, InputError, TypeError, ValueError):
        return None, "", f"No generation #{generation_id} in your gallery."
    video = served_copy(ctx.store.abs_path(row.video_path)) if row.video_path else None
    data = row.to_dict()
    summary = f"**#{row.id}** · {row.status} · {row.mode} · {row.model_id} · seed {row.seed}\n\n{row.prompt}"
    if row.error:  # a stop is the user's choice, not an error
        label = "Stopped" if row.status == "stopped" else "Error"
        summary += f"\n\n**{label}:** {row.error.splitlines()[0]}"
    if cells := sweeps.grid_cells(row.settings):  # a sweep's grid: its cells are gallery rows of their own
        captions = [sweeps.cell_caption(c) + ("" if _present(ctx, c["id"], owner) else " (deleted)") for c in cells]
        summary += "\n\n**Cells** (pick one to reuse its settings): " + ", ".join(captions)
    return video, json.dumps(data, indent=2, default=str, ensure_ascii=False), summary


def cell_choices(ctx: StudioContext, generation_id: int | None, owner: str = LOCAL_OWNER) -> list[tuple[str, int]]:
    """(caption, gallery id) of the cells of one of `owner`'s sweep grids; [] for any other entry."""
    if generation_id is None:
        return []
    try:
        row = ctx.store.get(int(generation_id), owner=owner)
    except (NotFoundError, InputError, TypeError, ValueError):
        return []
    cells = sweeps.grid_cells(row.settings)
    return [(sweeps.cell_caption(cell), cell["id"]) for cell in cells if _present(ctx, cell["id"], owner)]


def _is_grid(ctx: StudioContext, generation_id: int, owner: str) -> bool:
    try:
        return bool(sweeps.grid_cells(ctx.store.get(int(generation_id), owner=owner).settings))
    except (NotFoundError, InputError, TypeError, ValueError):
        return False


def _present(ctx: StudioContext, generation_id: int, owner: str) -> bool:
    """Whether one of `owner`'s rows still exists (a grid's cell may have been deleted on its own)."""
    try:
        ctx.store.get(generation_id, owner=owner)
    except NotFoundError:
        return False
    return True


def delete_question(ctx: StudioContext, generation_id: int | None, owner: str = LOCAL_OWNER) -> str | None:
    """What Delete asks before anything is removed ("Delete #7 …?"), or None when nothing of `owner`'s is selected."""
    if generation_id is None:
        return None
    try:
        row = ctx.store.get(int(generation_id), owner=owner)
    except (NotFoundError, InputError, TypeError, ValueError):
        return None
    return (
        f"**Delete #{row.id}** ({row.prompt[:60]!r}) with its video and the inputs no other entry uses? "
        "This cannot be undone."
    )


def delete_generation(ctx: StudioContext, generation_id: int | None, owner: str = LOCAL_OWNER) -> str:
    """Delete one of `owner`'s entries, its files and the copies served to the page (its old URL stops working)."""
    if generation_id is None:
        return "Select a generation first."
    try:
        row = ctx.store.get(int(generation_id), owner=owner)
        for rel in (row.video_path, row.thumbnail_path):
            evict(ctx.store.abs_path(rel) if rel else None)
        ctx.store.delete(row.id, owner=owner)
    except NotFoundError:
        return f"No generation #{generation_id} in your gallery."
    except ValueError as exc:
        return f"⚠ {exc}"
    return f"Deleted #{generation_id}."


def videos_zip(ctx: StudioContext, owner: str = LOCAL_OWNER) -> str | None:
    """A zip of `owner`'s finished videos (the mp4s, named by gallery number), served to the page; None when there
    are none. mp4 is compressed already: the zip stores the files as they are."""
    import tempfile
    import zipfile
    from pathlib import Path

    videos, page = [], 1
    while True:
        rows, total = ctx.store.list_generations(page=page, page_size=100, owner=owner)
        videos += [
            (row.id, ctx.store.abs_path(row.video_path)) for row in rows if row.status == "done" and row.video_path
        ]
        if page * 100 >= total or not rows:
            break
        page += 1
    videos = [(gid, path) for gid, path in videos if path.is_file()]
    if not videos:
        return None
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "humo-videos.zip"
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
            for gid, path in sorted(videos):
                archive.write(path, f"humo-{gid:06d}.mp4")
        return served_copy(out)


def settings_for_reuse(ctx: StudioContext, generation_id: int | None, owner: str = LOCAL_OWNER) -> dict:
    """Generate-tab values (`tab_generate.SETTINGS_FIELDS` and its media) that reproduce one of `owner`'s
    generations exactly: the stored request (schedule and its editor values, scales, long video, size, frames,
    steps, seed, model, negative prompt) read as the form would, plus served copies of its inputs."""
    from studio.tab_generate import _served_inputs, form_values

    row = ctx.store.get(int(generation_id), owner=owner)
    values, _ = form_values(ctx, dict(row.settings or {}), prompt=row.prompt,
                            negative_prompt=row.negative_prompt or "", model=row.model_id, seed=row.seed,
                            owner=owner)  # fmt: skip
    return {**values, **_served_inputs(ctx, row)}


def gallery_layout() -> dict:
    """The tab's components (search, pages, grid, the selected entry with its settings and buttons), no callbacks."""
    c: dict = {}
    with gr.Row():
        c["query"] = gr.Textbox(label="Search prompts", scale=4, elem_id="gallery-search")
        c["refresh"] = gr.Button("Refresh", scale=1, elem_id="gallery-refresh")
    with gr.Row(equal_height=True):
        # A button's default min_width is 160 px: at 420 px two of them left the label a few pixels, one letter a line.
        # The label's own min_width makes the row wrap it onto a line of its own on a narrow screen.
        c["prev"] = gr.Button("◀ Newer", scale=1, min_width=80)
        with gr.Column(scale=3, min_width=240):
            c["page_label"] = gr.Markdown(elem_id="gallery-page-label")
        c["next"] = gr.Button("Older ▶", scale=1, min_width=80)
    c["page"] = gr.State(1)
    c["ids"] = gr.State([])
    c["selected"] = gr.State(None)
    # No download buttons on the grid: its "download all" gave the thumbnails (Download all videos gives the mp4s)
    c["grid"] = gr.Gallery(label="Generations", columns=6, height=360, allow_preview=False, buttons=[],
                           elem_id="gallery-grid")  # fmt: skip
    with gr.Row():
        with gr.Column(scale=3):
            c["video"] = gr.Video(label="Video", interactive=False, height=360, elem_id="gallery-video")
            c["summary"] = gr.Markdown(elem_id="gallery-summary")
            # A sweep's grid: which of its cells "Use these settings" fills the form with
            c["cell"] = gr.Dropdown([], label="Cell to reuse", visible=False, elem_id="gallery-cell")
            # The buttons sit right under the entry, above its settings: a schedule with keyframes made the settings
            # block ~2,300 px tall and pushed them off the screen.
            with gr.Row():
                c["reuse"] = gr.Button("Use these settings", elem_id="gallery-reuse")
                c["delete"] = gr.Button("Delete", variant="stop", elem_id="gallery-delete")
            with gr.Row(visible=False) as c["confirm_row"]:  # Delete asks first
                c["confirm_text"] = gr.Markdown(elem_id="gallery-delete-question")
                c["confirm"] = gr.Button("Delete for good", variant="stop", size="sm", elem_id="gallery-delete-confirm")
                c["cancel"] = gr.Button("Keep it", size="sm", elem_id="gallery-delete-cancel")
        with gr.Column(scale=2):
            c["download"] = gr.File(label="Download", interactive=False, elem_id="gallery-download")
            with gr.Accordion("Every setting", open=False, elem_id="gallery-settings-box"):
                c["settings"] = gr.Code(label="Settings (JSON)", language="json", max_lines=SETTINGS_LINES,
                                        elem_id="gallery-settings")  # fmt: skip
    with gr.Row():
        c["download_all"] = gr.Button("Download all my videos (zip)", elem_id="gallery-download-all", scale=1)
        c["download_all_file"] = gr.File(label="Your videos", interactive=False, elem_id="gallery-download-all-file",
                                         scale=2)  # fmt: skip

    return c


def build_gallery_tab(
    ctx: StudioContext, generate, tabs: gr.Tabs, generate_tab: gr.Tab, visitor: gr.BrowserState
) -> dict:
    """The gallery of the page's owner (the visitor id, or the login): every callback asks the store for that
    owner's rows only, so nothing of another visitor's reaches the page or the API."""
    c = gallery_layout()

    def owner_of(request, visitor) -> str:
        return request_owner(ctx.options.public, request, visitor, ctx.visitor_key)

    c["_load"] = _wire_listing(ctx, c, owner_of, visitor)
    _wire_delete(ctx, c, owner_of, visitor)
    _wire_reuse(ctx, c, owner_of, visitor, generate, tabs)
    return c


PRIVATE = {"queue": False, "api_visibility": "private"}  # the gallery's callbacks are the page's, not the API's


def _wire_listing(ctx: StudioContext, c: dict, owner_of, visitor):
    """Search, refresh and paging of the grid, and the selected entry's detail. Returns the page's load call."""

    def load(request: gr.Request, page, query, visitor=None):
        items, ids, label, pages = gallery_page(ctx, page, query, owner_of(request, visitor))
        return items, ids, label, min(max(1, page), pages)

    listing = [c["grid"], c["ids"], c["page_label"], c["page"]]

    def first(request: gr.Request, query, visitor=None):
        return load(request, 1, query, visitor)

    def newer(request: gr.Request, page, query, visitor=None):
        return load(request, max(1, page - 1), query, visitor)

    def older(request: gr.Request, page, query, visitor=None):
        return load(request, page + 1, query, visitor)

    paged = [c["page"], c["query"], visitor]
    c["refresh"].click(load, paged, listing, **PRIVATE)
    c["query"].submit(first, [c["query"], visitor], listing, **PRIVATE)
    c["prev"].click(newer, paged, listing, **PRIVATE)
    c["next"].click(older, paged, listing, **PRIVATE)

    def select(request: gr.Request, ids, visitor, evt: gr.SelectData):
        gid = ids[evt.index] if evt.index is not None and evt.index < len(ids) else None
        owner = owner_of(request, visitor)
        video, settings, summary = detail(ctx, gid, owner)
        cells = cell_choices(ctx, gid, owner)
        cell = gr.Dropdown(choices=cells, value=cells[0][1] if cells else None, visible=bool(cells))
        return gid, video, settings, summary, video, cell

    c["grid"].select(
        select, [c["ids"], visitor],
        [c["selected"], c["video"], c["settings"], c["summary"], c["download"], c["cell"]], **PRIVATE,
    )  # fmt: skip

    def download_all(request: gr.Request, visitor):
        return videos_zip(ctx, owner_of(request, visitor))

    c["download_all"].click(download_all, [visitor], c["download_all_file"], **PRIVATE)
    return (load, [c["page"], c["query"], visitor], listing)


def _wire_delete(ctx: StudioContext, c: dict, owner_of, visitor) -> None:
    """Delete asks first, then removes the owner's row and files and redraws the page."""
    listing = [c["grid"], c["ids"], c["page_label"]]

    def on_delete(request: gr.Request, gid, page, query, visitor):
        owner = owner_of(request, visitor)
        message = delete_generation(ctx, gid, owner)
        items, ids, label, _ = gallery_page(ctx, page, query, owner)
        return message, items, ids, label, None, None, ""

    def ask(request: gr.Request, gid, visitor):
        question = delete_question(ctx, gid, owner_of(request, visitor))
        if question is None:
            return gr.Row(visible=False), "", "Select a generation first."
        return gr.Row(visible=True), question, gr.update()

    c["delete"].click(
        ask, [c["selected"], visitor], [c["confirm_row"], c["confirm_text"], c["summary"]], **PRIVATE
    )  # fmt: skip
    c["confirm"].click(
        on_delete,
        [c["selected"], c["page"], c["query"], visitor],
        [c["summary"], *listing, c["selected"], c["video"], c["settings"]],
        **PRIVATE,
    ).then(lambda: gr.Row(visible=False), None, c["confirm_row"], **PRIVATE)
    c["cancel"].click(lambda: gr.Row(visible=False), None, c["confirm_row"], **PRIVATE)
    c["grid"].select(lambda: gr.Row(visible=False), None, c["confirm_row"], **PRIVATE)  # a new selection: ask again


def _wire_reuse(ctx: StudioContext, c: dict, owner_of, visitor, generate, tabs) -> None:
    """The "Use these settings" button: the Generate tab's form filled from the entry, and that tab shown."""
    targets = generate.settings_outputs()  # SETTINGS_FIELDS then the media, in that order

    def reuse(request: gr.Request, gid, cell, visitor):
        from studio.tab_generate import MEDIA_FIELDS, SETTINGS_FIELDS, form_updates

        names = SETTINGS_FIELDS + MEDIA_FIELDS
        if gid is None:
            return [gr.update() for _ in names] + [gr.Tabs()]
        owner = owner_of(request, visitor)
        cells = [cell_id for _, cell_id in cell_choices(ctx, gid, owner)]
        if cells:  # a sweep's grid: the picked cell's settings (a grid has none of its own)
            gid = cell if cell in cells else cells[0]
        elif _is_grid(ctx, gid, owner):  # every cell deleted: nothing to reuse
            return [gr.update() for _ in names] + [gr.Tabs()]
        try:
            values = settings_for_reuse(ctx, gid, owner)
        except NotFoundError:
            return [gr.update() for _ in names] + [gr.Tabs()]
        # media are set even when empty: a TA run's reuse must not keep the image of the run before
        media = [gr.update(value=values.get(name)) for name in MEDIA_FIELDS]
        return form_updates(values, SETTINGS_FIELDS) + media + [gr.Tabs(selected="generate")]

    c["reuse"].click(reuse, [c["selected"], c["cell"], visitor], [*targets, tabs], **PRIVATE)
