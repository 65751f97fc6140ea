"""Who owns a request: the local user, a logged-in user, or an anonymous visitor of a public studio.

- local mode without login: everything belongs to `LOCAL_OWNER` (one user, as before owners existed);
- `--auth user:password` / `HUMO_AUTH`, or a Hugging Face login on a Space: `user:<name>`;
- public mode without login: `anon:<visitor id>`, a random id kept in the visitor's browser (`gr.BrowserState`,
  encrypted with the studio's own secret so it survives restarts). API clients have no browser: each client
  session (`session_hash`) is its own visitor and sees only what it made.

The store filters every query by the owner, so these rules hold for the API exactly as for the page.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from engine.errors import InputError
from studio.store import LOCAL_OWNER

__all__ = ["LOCAL_OWNER", "new_visitor_id", "parse_auth", "request_owner", "studio_secret"]

_VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
_USER = re.compile(r"^[^\s:,]{1,100}$")


def new_visitor_id() -> str:
    """A fresh anonymous visitor id (192 random bits): unguessable, so holding it is being that visitor."""
    return secrets.token_urlsafe(24)


def studio_secret(data_dir: Path) -> str:
    """The studio's own secret (created once in the data folder, never served): it encrypts the visitor id in
    the browser, so a restart keeps every visitor's gallery."""
    path = Path(data_dir) / "secret.key"
    if not path.is_file():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def parse_auth(text: str | None) -> list[tuple[str, str]] | None:
    """`user:password[,user2:password2]` (the `--auth` flag / `HUMO_AUTH`) as Gradio's auth list; None if empty."""
    if not text or not text.strip():
        return None
    pairs = []
    for item in text.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not _USER.match(user) or not password:
            raise InputError(f"--auth: {item.strip()!r} is not user:password (no spaces, commas or colons in names)")
        pairs.append((user, password))
    return pairs


def _username(request: Any) -> str | None:
    """The logged-in user: Gradio's own auth, else a Hugging Face OAuth session (Spaces' `hf_oauth`)."""
    name = getattr(request, "username", None)
    if name:
        return str(name)
    try:
        info = request.session.get("oauth_info") or {}
    except Exception:  # no session middleware: OAuth is off
        return None
    name = (info.get("userinfo") or {}).get("preferred_username")
    return str(name) if name else None


def request_owner(public: bool, request: Any, visitor: Any = None) -> str:
    """The owner of everything this request may see or make (see the module docstring)."""
    name = _username(request)
    if name:
        return f"user:{name}"[:200]
    if not public:
        return LOCAL_OWNER
    if isinstance(visitor, str) and _VISITOR_ID.match(visitor):
        return f"anon:{visitor}"
    session = getattr(request, "session_hash", None)
    if isinstance(session, str) and session:
        return f"anon:session-{session[:100]}"
    raise InputError("This page has no visitor id yet: reload it and try again.", field="prompt")
