"""Who may queue a job now (public mode): one queued or running job per visitor, a few per client address, and
a bounded queue, decided when the request arrives (a Gradio `validator`, before it waits in the queue).

Counting rows is not enough: a job waits in Gradio's queue before its row exists, so forty clicks would all
wait and then run one after another. A ticket is taken at arrival and given back when the job ends; a ticket
whose page went away while queued expires after `admission_ttl_s`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

MAX_JOBS_PER_ADDRESS = 2  # several visitors may share an address (a campus, a proxy); API clients rotate ids
_LOCK = threading.Lock()


def client_address(request: Any) -> str:
    """The client's address: the first X-Forwarded-For hop behind a proxy (a Space), else the socket's peer."""
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get("x-forwarded-for", "") if hasattr(headers, "get") else ""
    first = forwarded.split(",")[0].strip()
    if first:
        return first[:100]
    client = getattr(request, "client", None)
    return str(getattr(client, "host", "") or "unknown")[:100]


def _live(ctx) -> dict:
    """The tickets not yet expired (dropping the rest)."""
    now, ttl = time.monotonic(), ctx.options.admission_ttl_s
    for key in [k for k, (_, t) in ctx.admissions.items() if now - t > ttl]:
        del ctx.admissions[key]
    return ctx.admissions


def admit(ctx, owner: str, address: str) -> str | None:
    """Take a ticket for `owner`; None when admitted, else the message that says why not."""
    opts = ctx.options
    if not opts.public:
        return None
    with _LOCK:
        tickets = _live(ctx)
        if owner in tickets:
            return "You already have a job queued or running: wait for it to finish (or stop it) first."
        if sum(1 for a, _ in tickets.values() if a == address) >= MAX_JOBS_PER_ADDRESS:
            return "Your network already has jobs queued or running here: try again when they finish."
        if len(tickets) >= opts.max_queue_public:
            return f"The studio is busy ({len(tickets)} jobs waiting or running): try again in a few minutes."
        tickets[owner] = (address, time.monotonic())
    return None


def release(ctx, owner: str) -> None:
    """Give the owner's ticket back (the job ended, or was refused)."""
    with _LOCK:
        ctx.admissions.pop(owner, None)
