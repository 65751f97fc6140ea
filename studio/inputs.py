"""The studio's own reading of raw form and API values, with messages that say what to change.

The generate (and dub) events run with `preprocess=False`: Gradio hands over the raw JSON values, so a NaN in
a number box, text in a seed field or a corrupt image reaches these functions instead of failing inside
Gradio's preprocess with its opaque "Could not preprocess input component". Files arrive as Gradio's file
dicts (already checked to be in Gradio's upload folder); only their path and the user's file name are read
here: images and audio are checked from their headers by the engine, before any decode.
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path
from typing import Any

from engine.errors import InputError

MAX_PROMPT_CHARS = 10_000  # umT5 reads 512 tokens (~2,000 characters); far longer is a paste accident
MAX_SEED = 2**63 - 1


def upload(value: Any, field: str) -> tuple[str, str] | None:
    """(path, the user's file name) of an uploaded file value, or None when empty."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, dict):  # from the page or the API: it must be a file uploaded to Gradio's folder
        path = value.get("path")
        name = value.get("orig_name") or (Path(path).name if isinstance(path, str) else None)
        if not isinstance(path, str) or not _uploaded(path):
            raise InputError(f"The {field} must be a file you upload (got {str(name)[:80]!r}).", field=field)
    elif isinstance(value, str | Path):  # direct Python calls and tests
        path, name = str(value), Path(value).name
    else:
        path, name = getattr(value, "path", None) or getattr(value, "name", None), None
        name = name or (Path(path).name if isinstance(path, str) else None)
    if not isinstance(path, str) or not path or not Path(path).is_file():
        raise InputError(f"The {field} upload did not arrive: choose the file again.", field=field)
    return path, str(name or Path(path).name)


def _uploaded(path: str) -> bool:
    """Whether `path` (symlinks resolved) lies in Gradio's upload folder. Gradio checks this only for values that
    carry its FileData marker; a bare {"path": ...} from an API client must never make the studio open a server file
    (its own database, say)."""
    from gradio import utils

    folder = Path(utils.get_upload_folder()).resolve()
    try:
        return Path(path).resolve().is_relative_to(folder)
    except (OSError, RuntimeError, ValueError):
        return False


def uploads(value: Any, field: str) -> list[tuple[str, str]]:
    """Every (path, name) of a multi-file value (None, one file, or a list)."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [f for f in (upload(v, field) for v in items) if f is not None]


def number(value: Any, field: str, label: str, *, minimum: float, maximum: float, integer: bool = False,
           default: float | None = None) -> float | int | None:  # fmt: skip
    """A finite number within [minimum, maximum] from a form or API value (numbers, or text of a number)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is None:
            raise InputError(f"{label}: enter a number from {_fmt(minimum)} to {_fmt(maximum)}.", field=field)
        return default
    if isinstance(value, bool):
        raise InputError(f"{label} must be a number, not {value}.", field=field)
    try:
        x = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        shown = repr(value)[:40]
        raise InputError(f"{label} must be a number (got {shown}).", field=field) from None
    if not math.isfinite(x):
        raise InputError(f"{label} must be a finite number (got {value}).", field=field)
    if integer and x != int(x):
        raise InputError(f"{label} must be a whole number (got {x:g}).", field=field)
    if not minimum <= x <= maximum:
        raise InputError(f"{label} must be from {_fmt(minimum)} to {_fmt(maximum)} (got {x:g}).", field=field)
    return int(x) if integer else x


def _fmt(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def text(value: Any, field: str, label: str, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """A prompt-like text: valid Unicode (no lone surrogates), no control characters but newlines and tabs, and
    at most `max_chars` characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"The {label} must be text.", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"The {label} contains an invalid character at position {exc.start} (a broken emoji or a lone "
            "surrogate): retype or delete it.",
            field=field,
        ) from None
    bad = next((i for i, ch in enumerate(value) if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t"), None)
    if bad is not None:
        raise InputError(f"The {label} contains a control character at position {bad}: delete it.", field=field)
    if len(value) > max_chars:
        raise InputError(
            f"The {label} is {len(value):,} characters long; keep it under {max_chars:,} (the text encoder reads "
            "about 2,000).",
            field=field,
        )
    return value.strip()


def choice(value: Any, options: list[str] | tuple[str, ...], field: str, label: str, default: str) -> str:
    """One of `options` (None/empty: the default)."""
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value not in options:
        shown = repr(value)[:60]
        raise InputError(f"{label}: {shown} is not one of {', '.join(options)}.", field=field)
    return value


def flag(value: Any) -> bool:
    """A checkbox value (API callers may send 0/1 or "true")."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
