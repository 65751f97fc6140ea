"""The LoRA library: LoRA files added once to the data folder, picked by name with a scale in the Generate tab.

`<data>/loras/<owner folder>/<name>.safetensors` with `<name>.json` beside it (name, sha256, size, when, and the
match report against the studio's model when it was added: engine.speed.lora_report, how many of its modules fit,
by kind). Each owner has their own folder (studio/owners.py: the local owner, or a logged-in user); a public studio
has no library (its jobs take no LoRA). A job that picks library LoRAs records them as `library:<name>@<sha256
prefix>` (engine.speed.options_record keeps file names, never paths), so "Use these settings" and a dropped mp4 pick
them again when the library holds that name with that content, and say so when it does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gradio as gr

from engine.errors import InputError
from studio.context import StudioContext
from studio.store import LOCAL_OWNER

PREFIX = "library:"  # a recorded LoRA file name that names a library entry: library:<name>@<sha256[:16]>
SHA_CHARS = 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")


@dataclass
class LoraEntry:
    name: str
    sha256: str
    size: int
    added: float
    report: dict = field(default_factory=dict)  # {"model", "summary", "applies", "matched", "total"}

    @property
    def record_name(self) -> str:
        return f"{PREFIX}{self.name}@{self.sha256[:SHA_CHARS]}"


def _refuse_public(ctx: StudioContext) -> None:
    if ctx.options.public:
        raise InputError("This public studio has no LoRA library.", field="lora")


def library_dir(ctx: StudioContext, owner: str = LOCAL_OWNER) -> Path:
    """`owner`'s folder: readable for the local owner, a hash of the id for anyone else (ids may hold any text)."""
    folder = "local" if owner == LOCAL_OWNER else "u-" + hashlib.sha256(owner.encode()).hexdigest()[:24]
    return Path(ctx.store.data_dir) / "loras" / folder


def check_name(name) -> str:
    name = str(name or "").strip()
    if not _NAME.match(name):
        raise InputError(
            "Name the LoRA with letters, digits, spaces, '.', '_' or '-' (up to 64, starting with a letter or digit).",
            field="lora",
        )
    return name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def match_report(ctx: StudioContext, path: Path) -> dict:
    """How much of the LoRA fits the studio's model (engine.speed.lora_report), as kept beside the file."""
    from engine import speed

    pipe = ctx.pipeline(ctx.default_model)
    report, _ = speed.lora_report(path, pipe.transformer)
    return {
        "model": ctx.default_model,
        "summary": report.summary(),
        "applies": bool(report.applies),
        "matched": int(sum(report.matched.values())),
        "total": int(report.total),
    }


def add_lora(ctx: StudioContext, upload, name, owner: str = LOCAL_OWNER) -> LoraEntry:
    """Copy an uploaded .safetensors into `owner`'s library under `name`, with its sha256 and match report. The same
    name again with other content is refused (remove it first); with the same content it is the same entry."""
    from studio import inputs

    _refuse_public(ctx)
    name = check_name(name)
    files = inputs.uploads(upload, "lora")
    if len(files) != 1:
        raise InputError("Choose one .safetensors file to add.", field="lora")
    source, shown = Path(files[0][0]), files[0][1]
    if not shown.lower().endswith(".safetensors"):
        raise InputError(f"{shown}: LoRA files must be .safetensors (a pickle file can run code).", field="lora")
    sha = _sha256(source)
    existing = get(ctx, name, owner)
    if existing is not None:
        if existing.sha256 == sha:
            return existing
        raise InputError(f"Your library already has a LoRA named {name!r} (other content): pick another name.",
                         field="lora")  # fmt: skip
    try:
        report = match_report(ctx, source)
    except InputError:
        raise
    except Exception as exc:  # not a LoRA file safetensors can read: refused before it is kept
        # the reader's own words may name the server's upload path: the page gets the file's name and the kind only
        raise InputError(f"{shown} cannot be read as a LoRA ({type(exc).__name__}): is it a .safetensors LoRA?",
                         field="lora") from exc  # fmt: skip
    if not report["total"]:
        raise InputError(f"{shown} holds no LoRA modules.", field="lora")
    folder = library_dir(ctx, owner)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uuid.uuid4().hex}.tmp"
    shutil.copyfile(source, tmp)
    os.replace(tmp, folder / f"{name}.safetensors")
    entry = LoraEntry(name, sha, (folder / f"{name}.safetensors").stat().st_size, time.time(), report)
    (folder / f"{name}.json").write_text(json.dumps(asdict(entry), indent=1))
    return entry


def get(ctx: StudioContext, name: str, owner: str = LOCAL_OWNER) -> LoraEntry | None:
    folder = library_dir(ctx, owner)
    meta, weights = folder / f"{name}.json", folder / f"{name}.safetensors"
    if not _NAME.match(name or "") or not meta.is_file() or not weights.is_file():
        return None
    try:
        return LoraEntry(**json.loads(meta.read_text()))
    except (ValueError, TypeError):
        return None


def list_loras(ctx: StudioContext, owner: str = LOCAL_OWNER) -> list[LoraEntry]:
    if ctx.options.public:
        return []
    folder = library_dir(ctx, owner)
    found = (get(ctx, p.stem, owner) for p in sorted(folder.glob("*.json"))) if folder.is_dir() else ()
    return [e for e in found if e is not None]


def remove_lora(ctx: StudioContext, name: str, owner: str = LOCAL_OWNER) -> None:
    _refuse_public(ctx)
    if get(ctx, name, owner) is None:
        raise InputError(f"No LoRA named {name!r} in your library.", field="lora")
    folder = library_dir(ctx, owner)
    (folder / f"{name}.safetensors").unlink(missing_ok=True)
    (folder / f"{name}.json").unlink(missing_ok=True)


def picked_files(ctx: StudioContext, names, owner: str = LOCAL_OWNER) -> tuple[list[str], dict[str, str]]:
    """(paths, recorded name by path) of the library LoRAs a job picked by name; a name not in the library says so."""
    names = [names] if isinstance(names, str) else list(names or [])
    if names:
        _refuse_public(ctx)
    paths, recorded = [], {}
    for name in names:
        entry = get(ctx, str(name), owner)
        if entry is None:
            raise InputError(f"{name!r} is not in your LoRA library: add it again, or pick another.", field="lora")
        path = str(library_dir(ctx, owner) / f"{entry.name}.safetensors")
        paths.append(path)
        recorded[path] = entry.record_name
    return paths, recorded


def with_library(ctx: StudioContext, options: dict, owner: str = LOCAL_OWNER) -> tuple[dict, dict[str, str]]:
    """A job's advanced options with its library picks turned into LoRA files after the uploaded ones (the scales
    box lists uploads first, then library LoRAs), and the names the row and the mp4 record for them."""
    options = dict(options or {})
    paths, recorded = picked_files(ctx, options.pop("lora_library", None), owner)
    if paths:
        uploads = options.get("lora_files")
        uploads = [] if uploads in (None, "") else list(uploads) if isinstance(uploads, list | tuple) else [uploads]
        options["lora_files"] = uploads + paths
    return options, recorded


def restore(ctx: StudioContext, settings: dict, owner: str = LOCAL_OWNER) -> tuple[list[str], list[str]]:
    """(library names to pick, notes) for stored settings: each recorded `library:<name>@<sha>` whose name the
    library holds with that content is picked; one missing or changed gets a note saying so."""
    picked, notes = [], []
    loras = ((settings or {}).get("advanced") or {}).get("loras") or []
    for item in loras if isinstance(loras, list) else []:
        recorded = str(item.get("file", "")) if isinstance(item, dict) else ""
        if not recorded.startswith(PREFIX):
            continue
        name, _, sha = recorded[len(PREFIX) :].rpartition("@")
        entry = None if ctx.options.public else get(ctx, name, owner)
        if entry is not None and entry.sha256.startswith(sha) and sha:
            picked.append(entry.name)
        elif entry is not None:
            notes.append(f"LoRA {name!r}: your library's file has other content than the one this video used")
        else:
            notes.append(f"LoRA {name!r} is not in your LoRA library: add it (Generate → LoRA library) to use it")
    return picked, notes


# ---------------------------------------------------------------- UI
def library_table(ctx: StudioContext, owner: str = LOCAL_OWNER) -> str:
    """Markdown: each LoRA with its match report."""
    entries = list_loras(ctx, owner)
    if not entries:
        return "Your LoRA library is empty: add a .safetensors file with a name."
    lines = []
    for e in entries:
        report = e.report or {}
        verdict = "applies" if report.get("applies") else "only partly applies"
        lines.append(f"- **{e.name}** · sha256 {e.sha256[:12]} · {e.size / 1e6:.1f} MB · {verdict} to "
                     f"{report.get('model', '?')}: {report.get('summary', 'no report')}")  # fmt: skip
    return "\n".join(lines)


def library_layout() -> dict:
    """The library's components (an accordion inside the Generate tab's advanced options), no callbacks."""
    c: dict = {}
    with gr.Accordion("LoRA library (add once, pick by name above)", open=False, elem_id="lora-library-box"):
        with gr.Row():
            c["file"] = gr.File(label="LoRA file (.safetensors)", file_types=[".safetensors"], elem_id="lora-lib-file")
            c["name"] = gr.Textbox(label="Name", max_lines=1, elem_id="lora-lib-name")
        with gr.Row():
            c["add"] = gr.Button("Add to library", size="sm", elem_id="lora-lib-add")
            c["remove"] = gr.Button("Remove this name", size="sm", elem_id="lora-lib-remove")
        c["message"] = gr.Markdown(elem_id="lora-lib-message")
        c["table"] = gr.Markdown(elem_id="lora-lib-table")
    return c


def wire_library(ctx: StudioContext, c: dict, picker: gr.Dropdown, page_load=None) -> None:
    """Add and remove as the logged-in owner; the picker's choices follow the library."""
    from studio.owners import request_owner

    private = {"queue": False, "api_visibility": "private"}

    def refreshed(owner: str, message: str):
        names = [e.name for e in list_loras(ctx, owner)]
        return message, library_table(ctx, owner), gr.update(choices=names)

    def add(request: gr.Request, upload, name):
        owner = request_owner(False, request)
        try:
            entry = add_lora(ctx, upload, name, owner)
        except InputError as exc:
            return refreshed(owner, f"⚠ {exc}")
        return refreshed(owner, f"✔ Added **{entry.name}**: {entry.report.get('summary', '')}")

    def remove(request: gr.Request, name):
        owner = request_owner(False, request)
        try:
            remove_lora(ctx, check_name(name), owner)
        except InputError as exc:
            return refreshed(owner, f"⚠ {exc}")
        return refreshed(owner, f"Removed {name}.")

    outputs = [c["message"], c["table"], picker]
    c["add"].click(add, [c["file"], c["name"]], outputs, **private)
    c["remove"].click(remove, [c["name"]], outputs, **private)
    if page_load is not None:

        def on_load(request: gr.Request):
            return refreshed(request_owner(False, request), "")

        page_load.then(on_load, None, outputs, **private)


__all__ = ["LoraEntry", "add_lora", "get", "list_loras", "remove_lora", "picked_files", "with_library", "restore"]
