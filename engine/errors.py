"""Typed errors. Every message says what was wrong and what to change."""


class HuMoError(Exception):
    """Base class for errors a user can act on."""


class InputError(HuMoError, ValueError):
    """Bad user input (file, number, size). `field` names the input that caused it, for the UI."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class CheckpointError(HuMoError):
    """A checkpoint does not match the model (missing/unexpected keys, wrong shapes, unknown layout)."""


class WorkerError(HuMoError):
    """The pool could not render a job: its worker died (twice) or no node offers a worker (engine/workers.py). The
    message is a sentence for the user (no paths, no internals)."""


class MissingWeightsError(HuMoError, FileNotFoundError):
    """Weights are not present locally (and cannot be downloaded, e.g. offline)."""
