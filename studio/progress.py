"""What a job reports while it runs (JobProgress) and how it ends (JobResult): the words the in-process job runner
(studio/jobs.py), the Ray pool (studio/pool.py) and the pages share, kept apart so none imports another for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class JobProgress:
    generation_id: int | None
    step: int = 0
    total: int = 0
    elapsed_s: float = 0.0
    remaining_s: float | None = None
    preview: object | None = None  # PIL image
    message: str = ""


@dataclass
class JobResult:
    generation_id: int
    status: str  # done | failed | stopped
    video_path: Path | None = None
    settings: dict = field(default_factory=dict)
    error: str | None = None
    field: str | None = None
