"""Who may use a route and a page session (issue 27, item 3): ASGI middleware in front of Gradio's own routes.

- `LoginRequired` (`--auth`): every route but the login page and its static files needs a login. Gradio checks the
  login only on some of its routes; `/gradio_api/cancel`, `/heartbeat/<session>` and `/reset` answer without one.
- `SessionGuard`: a page session (Gradio's `session_hash`, chosen by the client) belongs to whoever used it first:
  the logged-in user, else the client's address (`studio.admission.client_address`: the trusted proxy's hop, never a
  forged header). Its event stream (`/queue/data`), its heartbeat, its cancels and further events from anyone else
  are refused, so knowing another visitor's session hash reads nothing of theirs and cancels nothing.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict

from starlette.requests import Request

from studio.admission import client_address

# Reachable without a login: the login form and what draws it (Gradio's /config answers 401 itself there).
OPEN_PATHS = {"/", "/login", "/login/", "/logout", "/favicon.ico", "/theme.css", "/robots.txt", "/manifest.json",
              "/config", "/config/", "/gradio_api/login_check", "/gradio_api/theme.css", "/gradio_api/app_id",
              "/gradio_api/startup-events"}  # fmt: skip
OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
# Routes naming a page session: in the query (?session_hash=), in the path, or in a JSON body.
QUERY_SESSION = re.compile(r"^/gradio_api/(?:queue/data|queue/status)/?$")
PATH_SESSION = re.compile(r"^/gradio_api/(?:heartbeat|stream)/(?P<session>[^/]+)")
BODY_SESSION = re.compile(r"^/gradio_api/(?:queue/join|cancel|run/[^/]+|api/[^/]+|component_server|reset)/?$")
MAX_BODY = 16 * 2**20
MAX_SESSIONS = 100_000  # remembered bindings (oldest forgotten first)
SESSION_TTL_S = 24 * 3600


def logged_in_user(scope) -> str | None:
    """The user of Gradio's own login cookie (its `get_current_user`), or None."""
    app = scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if not tokens or cookie_id is None:
        return None
    cookies = Request(scope).cookies
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return tokens.get(token) if token else None


async def _json_response(send, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive) -> tuple[bytes, list, bool]:
    """The request body (up to MAX_BODY), the messages taken (to replay to the app) and whether it was too large."""
    raw, messages = b"", []
    while True:
        message = await receive()
        messages.append(message)
        raw += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body") or len(raw) > MAX_BODY:
            return raw, messages, len(raw) > MAX_BODY


def _replay(messages: list, receive):
    async def replay():
        return messages.pop(0) if messages else await receive()

    return replay


class LoginRequired:
    """ASGI middleware: without a login only the login page answers (`--auth`)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or logged_in_user(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        return await _json_response(send, 401, {"detail": "Not authenticated: log in first."})


class SessionGuard:
    """ASGI middleware: a page session is used only by whoever used it first (see the module docstring)."""

    def __init__(self, app, trusted_proxies: int = 0):
        self.app, self.trusted_proxies = app, trusted_proxies
        self.owners: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.lock = threading.Lock()

    def identity(self, scope) -> str:
        user = logged_in_user(scope)
        return f"user:{user}" if user else f"address:{client_address(Request(scope), self.trusted_proxies)}"

    def claim(self, session: str, who: str) -> bool:
        """Bind `session` to `who` if new (or expired); whether `who` may use it."""
        now = time.monotonic()
        with self.lock:
            bound = self.owners.get(session)
            if bound is not None and bound[0] != who and now - bound[1] < SESSION_TTL_S:
                return False
            self.owners[session] = (who, now)
            self.owners.move_to_end(session)
            while len(self.owners) > MAX_SESSIONS:
                self.owners.popitem(last=False)
            return True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, session = scope["path"], None
        if QUERY_SESSION.match(path):
            session = Request(scope).query_params.get("session_hash")
        elif match := PATH_SESSION.match(path):
            session = match["session"]
        elif scope["method"] == "POST" and BODY_SESSION.match(path):
            raw, messages, too_large = await read_body(receive)
            if too_large:
                return await _json_response(send, 413, {"detail": "The request body is too large."})
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            session = body.get("session_hash") if isinstance(body, dict) else None
            receive = _replay(messages, receive)
        if isinstance(session, str) and session and not self.claim(session, self.identity(scope)):
            return await _json_response(send, 403, {"detail": "This page session belongs to another visitor."})
        return await self.app(scope, receive, send)
