"""Advanced options of a job, the ones the CLI has (engine/speed.py, engine/memory.py): LoRA files with scales, a
step cache, torch.compile, the attention backend and the memory mode (automatic by default).

They change the loaded pipeline, which every job of that model shares, so `applied` puts a job's options on for
the job and takes the reversible ones off again (LoRA, step cache, attention backend); compiling and a memory mode
stay (they cost minutes to undo and change no result). LoRA files must be safetensors: a pickle can run code.
A public studio takes none of them (they would change the shared pipeline for every visitor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InputError
from studio import inputs

ATTENTION_BACKENDS = ("native", "flash", "_flash_3", "sage")
# What each attention backend needs besides native SDPA: its package, and a CUDA GPU (issue 29: offered on a CPU,
# they failed only after the job's gallery row existed).
BACKEND_NEEDS = {"flash": ("flash_attn", "flash-attn"), "_flash_3": ("flash_attn_interface", "FlashAttention 3"),
                 "sage": ("sageattention", "sageattention")}  # fmt: skip
MEMORY_MODES = ("auto", "gpu", "cpu", "model_offload", "group_offload", "fp8")
MAX_LORAS = 4
# lora_library: names in the owner's LoRA library (studio/loras.py turns them into files)
FIELDS = ("lora_files", "lora_scales", "step_cache", "compile", "attention_backend", "memory_mode", "lora_partial",
          "lora_library")  # fmt: skip


@dataclass
class AdvancedOptions:
    loras: list[tuple[str, float]] = field(default_factory=list)  # (file path, scale)
    step_cache: float = 0.0  # first-block cache threshold; 0 = off
    compile: bool = False
    attention_backend: str = "native"
    memory_mode: str = "auto"
    lora_partial: bool = False  # load a LoRA whose modules only partly fit the model (engine.speed.load_lora)

    def is_default(self) -> bool:
        return self == AdvancedOptions()

    def record(self, names: dict[str, str] | None = None) -> dict:
        """What the row and the mp4 keep: LoRA file names (never a server path) and scales, and the rest."""
        from engine.speed import options_record

        names = names or {}
        loras = [(names.get(p, Path(p).name), s) for p, s in self.loras]
        return options_record(loras, self.step_cache, self.compile, self.attention_backend, self.memory_mode)


def read_options(public: bool, lora_files=None, lora_scales=None, step_cache=None, compile=None,
                 attention_backend=None, memory_mode=None, lora_partial=None,
                 lora_library=None) -> tuple[AdvancedOptions, dict[str, str]]:  # fmt: skip
    """The options from raw form values (and the LoRA files' user names by path); InputError says what to change.
    Library picks (`lora_library`) must already be files (studio.loras.with_library, which knows the owner)."""
    if lora_library:
        raise InputError("LoRAs picked from a library need the studio's owner: studio.loras.with_library.",
                         field="lora")  # fmt: skip
    files = inputs.uploads(lora_files, "lora")
    if len(files) > MAX_LORAS:
        raise InputError(f"At most {MAX_LORAS} LoRA files.", field="lora")
    for _, name in files:
        if not name.lower().endswith(".safetensors"):
            raise InputError(f"{name}: LoRA files must be .safetensors (a pickle file can run code).", field="lora")
    scales = parse_scales(lora_scales, len(files))
    options = AdvancedOptions(
        loras=[(path, scale) for (path, _), scale in zip(files, scales, strict=True)],
        step_cache=inputs.number(step_cache, "steps", "Step cache threshold", minimum=0, maximum=1, default=0.0),
        compile=inputs.flag(compile),
        attention_backend=inputs.choice(attention_backend, ATTENTION_BACKENDS, "steps", "Attention backend", "native"),
        memory_mode=inputs.choice(memory_mode, MEMORY_MODES, "steps", "Memory mode", "auto"),
        lora_partial=inputs.flag(lora_partial) and bool(files),
    )
    if public and not options.is_default():
        raise InputError("This public studio runs with the default advanced options only.", field="steps")
    return options, dict(files)


def parse_scales(text, count: int) -> list[float]:
    """ "1, 0.5" -> [1.0, 0.5]; blank: 1.0 for each file; one value: for every file."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return [1.0] * count
    parts = [p for p in str(text).replace(";", ",").split(",") if p.strip()]
    values = [inputs.number(p, "lora", "LoRA scale", minimum=-4, maximum=4) for p in parts]
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise InputError(f"{len(values)} LoRA scales for {count} LoRA files: give one per file, or one for all.",
                         field="lora")  # fmt: skip
    return values


def form_values(record: dict | None) -> dict:
    """Form values of a stored record (`AdvancedOptions.record`); none stored: the defaults (a reused plain run
    must not keep the options of the run before). The LoRA files themselves are not kept, only their scales."""
    if not isinstance(record, dict):
        record = AdvancedOptions().record()
    options, _ = read_options(False, None, None, record.get("step_cache"), record.get("compile"),
                              record.get("attention_backend"), record.get("memory_mode"))  # fmt: skip
    values = {"step_cache": options.step_cache, "compile": options.compile,
              "attention_backend": options.attention_backend, "memory_mode": options.memory_mode}  # fmt: skip
    values["lora_scales"] = ""
    loras = record.get("loras") or []
    if isinstance(loras, list) and loras:
        scales = [inputs.number(item.get("scale"), "lora", "LoRA scale", minimum=-4, maximum=4) for item in loras
                  if isinstance(item, dict)]  # fmt: skip
        values["lora_scales"] = ", ".join(f"{s:g}" for s in scales)
    return values


def lora_report_text(pipe, lora_files) -> str:
    """Markdown beside the LoRA files: for each, how many of its modules fit the loaded model, by kind, and which
    do not (engine.speed.lora_report); what loading it will do (refused under the threshold unless 'partly')."""
    from engine import speed

    lines = []
    for path, name in inputs.uploads(lora_files, "lora"):
        try:
            report, _ = speed.lora_report(path, pipe.transformer)
        except Exception as exc:  # an unreadable upload: say so beside it, the job will refuse it
            lines.append(f"- **{name}**: cannot be read ({exc})")
            continue
        report.file = name
        verdict = "applies" if report.applies else ("needs 'load LoRAs that only partly apply'" if report.share
                                                     else "does not fit this model")  # fmt: skip
        lines.append(f"- {verdict}: {report.summary()}")
    return "\n".join(lines)


def applied(pipe, options: AdvancedOptions | None, device=None):
    """The job's options on the shared pipeline for the duration of the job (see the module): a `with` block. The
    engine applies them (engine.speed.job_options), so a resident Ray worker runs a job's options the same way."""
    from dataclasses import asdict

    from engine.speed import job_options

    return job_options(pipe, asdict(options) if options is not None else None, device)


def backend_missing(name: str, device: str | None = None) -> str | None:
    """Why this machine cannot run attention backend `name` (None: it can): its package, or a CUDA GPU, is missing."""
    import importlib.util

    if name not in BACKEND_NEEDS:
        return None
    module, package = BACKEND_NEEDS[name]
    if importlib.util.find_spec(module) is None:
        return f"needs {package}, not installed here"
    import torch

    if not torch.cuda.is_available() or (device is not None and not str(device).startswith("cuda")):
        return "needs a CUDA GPU"
    return None


def backend_choices(device: str | None = None) -> list[tuple[str, str]]:
    """The attention backends as (label, value): those this machine lacks say so in their label."""
    return [(name if not (why := backend_missing(name, device)) else f"{name} (not here: {why})", name)
            for name in ATTENTION_BACKENDS]  # fmt: skip


def check_backend(options: AdvancedOptions, device: str | None = None) -> None:
    """Refuse, before any gallery row exists, an attention backend this machine cannot run."""
    if why := backend_missing(options.attention_backend, device):
        raise InputError(f"Attention backend {options.attention_backend!r} cannot run here ({why}): choose native.",
                         field="steps")  # fmt: skip
