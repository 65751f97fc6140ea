"""Who owns a request: the local user, a logged-in user, or an anonymous visitor of a public studio.

- local mode without login: everything belongs to `LOCAL_OWNER` (one user, as before owners existed);
- `--auth user:password` / `HUMO_AUTH`, or a Hugging Face login on a Space: `user:<name>`;
- public mode without login: `anon:<visitor id>`, an id the studio issues and signs (HMAC with a key that never
  leaves the server, kept in the data folder, so a restart keeps every visitor's gallery) with an expiry, kept in
  the visitor's browser (`gr.BrowserState`) and renewed on each visit. Only ids the studio issued are accepted: a
  chosen, forged or expired value is not an owner. API clients have no browser: each client session
  (`session_hash`) gets an id issued from it (`anon:api-<HMAC of the session>`), which no browser value can name.

The store filters every query by the owner, so these rules hold for the API exactly as for the page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from engine.errors import InputError
from studio.store import LOCAL_OWNER

__all__ = ["LOCAL_OWNER", "issue_visitor", "parse_auth", "renew_visitor", "request_owner", "visitor_key"]

_USER = re.compile(r"^[^\s:,]{1,100}$")
VISITOR_TTL_S = 180 * 24 * 3600  # an id unused this long is gone; each visit renews it once half of it has passed
KEY_FILE = "visitor-signing.key"
# BrowserState encrypts its value with a secret Gradio sends to every page in /config: it hides nothing, so it is a
# fixed name here; what makes an id the studio's is its signature.
BROWSER_STORAGE_SECRET = "humo-visitor (not a secret: the id inside is signed by the studio)"


def visitor_key(data_dir: Path) -> bytes:
    """The studio's signing key for visitor ids (32 random bytes in the data folder, never served), created once and
    atomically: several front-ends starting at once on one data folder all end up with the same key."""
    path = Path(data_dir) / KEY_FILE
    if not path.is_file():
        temp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(temp, path)  # fails if another process made it first: theirs wins
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    return bytes.fromhex(path.read_text().strip())


def _sign(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()[:24]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue_visitor(key: bytes, visitor_id: str | None = None, now: float | None = None) -> str:
    """A signed visitor token `v1.<id>.<expiry>.<signature>` for a fresh id (192 random bits) or `visitor_id`."""
    visitor_id = visitor_id or secrets.token_urlsafe(24)
    expiry = int((time.time() if now is None else now) + VISITOR_TTL_S)
    body = f"v1.{visitor_id}.{expiry}"
    return f"{body}.{_sign(key, body)}"


def verify_visitor(key: bytes, token: Any, now: float | None = None) -> tuple[str, int] | None:
    """(id, expiry) of a token this studio issued and that has not expired, else None."""
    if not isinstance(token, str) or len(token) > 200 or token.count(".") != 3:
        return None
    version, visitor_id, expiry, signature = token.split(".")
    if version != "v1" or not re.fullmatch(r"[A-Za-z0-9_-]{32}", visitor_id) or not expiry.isdigit():
        return None
    if not hmac.compare_digest(signature, _sign(key, f"v1.{visitor_id}.{expiry}")):
        return None
    if int(expiry) <= (time.time() if now is None else now):
        return None
    return visitor_id, int(expiry)


def renew_visitor(key: bytes, token: Any, now: float | None = None) -> str:
    """On page load: the visitor's token if valid and fresh, renewed (same id) past half its life, else a new one."""
    found = verify_visitor(key, token, now)
    if found is None:
        return issue_visitor(key, now=now)
    visitor_id, expiry = found
    left = expiry - (time.time() if now is None else now)
    return token if left > VISITOR_TTL_S / 2 else issue_visitor(key, visitor_id, now)


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


def request_owner(public: bool, request: Any, visitor: Any = None, key: bytes = b"") -> str:
    """The owner of everything this request may see or make (see the module docstring). `key`: the studio's
    visitor signing key (`StudioContext.visitor_key`)."""
    name = _username(request)
    if name:
        return f"user:{name}"[:200]
    if not public:
        return LOCAL_OWNER
    if not key:  # a caller that forgot the key must not make ids anyone could sign
        raise ValueError("request_owner in public mode needs the studio's visitor signing key")
    found = verify_visitor(key, visitor)
    if found is not None:
        return f"anon:{found[0]}"
    if visitor is None:  # an API client: the id issued from its session
        session = getattr(request, "session_hash", None)
        if isinstance(session, str) and session:
            return f"anon:api-{_sign(key, 'api.' + session[:100])}"
    raise InputError("This page has no valid visitor id (it may have expired): reload it and try again.",
                     field="prompt")  # fmt: skip
