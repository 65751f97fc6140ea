"""File values sent to the API are the studio's to refuse, in its own words, before Gradio reads them.

Gradio checks the file slots of an event while it prepares the inputs, before any validator or callback runs,
even with `preprocess=False`: a number or text where an image goes gets pydantic's report, and a FileData value
naming a server file gets "Cannot move <absolute path> to the gradio cache dir because it is located in one of
the blocked_paths (<the data folder>)" — an opaque answer that also tells a stranger where the data lives. This
ASGI middleware reads the body of the routes that start an event (`/queue/join`, `/call/<api>`,
`/call/v2/<api>`), checks each file slot's value with the studio's own rule (`studio.inputs.upload`: empty, or
a file dict inside Gradio's upload folder) and answers a refusal in the validator's 422 format, which the page
paints on the input and API clients read as the message. Everything else passes through untouched.
"""

from __future__ import annotations

import json
import re
from typing import Any

import gradio as gr

from engine.errors import InputError
from studio import inputs
from studio.guards import read_body  # MAX_BODY there: an event body holds values and file references, never files

# The routes whose JSON body carries an event's input values (under Gradio's /gradio_api prefix).
EVENT_ROUTE = re.compile(r"/(?:queue/join|call/v2/(?P<v2>[^/]+)|call/(?P<api>[^/]+))/?$")
FILE_SLOTS = {gr.Image: "image", gr.Audio: "audio", gr.Video: "video", gr.File: "file"}


def slot_field(block: Any) -> str | None:
    """The field name of a file input component ("image", "audio", ...), None for other inputs."""
    return next((name for kind, name in FILE_SLOTS.items() if isinstance(block, kind)), None)


def check_file_value(value: Any, field: str, multiple: bool) -> None:
    """Raise InputError unless `value` is empty or (a list of) file dicts uploaded to this studio."""
    if value is None or value == "" or (multiple and value == []):
        return
    items = value if multiple and isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise InputError(
                f"The {field} must be a file uploaded to this studio: upload it first (POST /gradio_api/upload, or "
                "gradio_client's handle_file(path)) and send the file value that comes back.",
                field=field,
            )
        inputs.upload(item, field)  # inside the upload folder, and still there


def event_values(blocks: gr.Blocks, path: str, body: dict) -> tuple[Any, list] | None:
    """(the event's BlockFunction, its input values in `fn.inputs` order) for an event-starting body."""
    match = EVENT_ROUTE.search(path)
    if match is None:
        return None
    fns = blocks.fns
    if match["v2"] or match["api"]:
        api = match["v2"] or match["api"]
        fn = next((f for f in fns.values() if f.api_name == api), None)
    else:
        fn = fns.get(body.get("fn_index")) if isinstance(body.get("fn_index"), int) else None
    if fn is None:
        return None
    if match["v2"]:  # keyword form: values by parameter name
        names = list(fn.input_parameter_names or [])
        return fn, [body.get(name) if name else None for name in names]
    data = body.get("data")
    if not isinstance(data, list):
        return None
    if len(data) != len(fn.inputs):  # the short form of /call/<api>: API-visible inputs only
        api_inputs = [b for b in fn.inputs if not b.skip_api]
        if len(data) == len(api_inputs):
            values = iter(data)
            data = [None if b.skip_api else next(values) for b in fn.inputs]
    return fn, data


def refusal(blocks: gr.Blocks, path: str, raw: bytes) -> list[dict] | None:
    """The validator-format refusal for a body whose file values the studio would refuse, else None."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None  # not JSON: Gradio answers it (and no file path is in it to leak)
    found = event_values(blocks, path, body) if isinstance(body, dict) else None
    if found is None:
        return None
    fn, values = found
    answer = [{"is_valid": True, "message": "", "__type__": "validate"} for _ in fn.inputs]
    for i, (block, value) in enumerate(zip(fn.inputs, values, strict=False)):
        field = slot_field(block)
        if field is None:
            continue
        try:
            check_file_value(value, field, getattr(block, "file_count", "single") != "single")
        except InputError as exc:
            names = list(fn.input_parameter_names or [])
            answer[i] = {"is_valid": False, "message": str(exc), "__type__": "validate",
                         "parameter_name": (names[i] if i < len(names) else None) or field}  # fmt: skip
            return answer
    return None


class FileValueGuard:
    """ASGI middleware: refuse bad file values of event bodies with the studio's message (see the module)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not EVENT_ROUTE.search(scope["path"]):
            return await self.app(scope, receive, send)
        raw, messages, too_large = await read_body(receive)
        if too_large:
            return await _answer(send, 413, {"detail": "The request body is too large for an event."})
        answer = refusal(scope["app"].get_blocks(), scope["path"], raw)
        if answer is not None:
            return await _answer(send, 422, {"detail": answer})

        async def replay():  # Gradio reads the body we already took
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


async def _answer(send, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
