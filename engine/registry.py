"""Model ids -> weight sources, local presence, downloads, and the one loading entry point `load_pipeline`.

Weights resolve, in order, from a local models folder (`HUMO_MODELS_DIR`, default `./models`, official folder
names) and from the Hugging Face cache (`HF_HOME`; `HF_HUB_OFFLINE=1` never touches the network). A missing piece
raises one `MissingWeightsError` naming it, its size and the command that downloads it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine import nano
from engine.defaults import SamplingDefaults
from engine.errors import InputError, MissingWeightsError
from engine.nano import NANO_SHIFT
from engine.schedulers import DEFAULT_SHIFT

HUMO_REPO = "bytedance-research/HuMo"
WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
WHISPER_REPO = "openai/whisper-large-v3"


@dataclass(frozen=True)
class Component:
    """One downloadable piece: where it lives on the Hub, its local folder name, and the file that proves it."""

    name: str
    repo: str
    allow_patterns: tuple[str, ...]
    marker: str  # path inside the snapshot that must exist
    size_bytes: int
    local_dir: str  # folder name under HUMO_MODELS_DIR


VAE = Component("vae", WAN_REPO, ("vae/*",), "vae/config.json", 508_000_000, "Wan2.1-T2V-1.3B-Diffusers")
TEXT_ENCODER = Component(
    "text_encoder",
    WAN_REPO,
    ("text_encoder/*",),
    "text_encoder/config.json",
    22_730_000_000,
    "Wan2.1-T2V-1.3B-Diffusers",
)
TOKENIZER = Component(
    "tokenizer", WAN_REPO, ("tokenizer/*",), "tokenizer/tokenizer_config.json", 21_500_000, "Wan2.1-T2V-1.3B-Diffusers"
)
WHISPER = Component(
    "audio_encoder",
    WHISPER_REPO,
    ("config.json", "preprocessor_config.json", "model.safetensors"),
    "model.safetensors",
    3_090_000_000,
    "whisper-large-v3",
)
SHARED = (VAE, TEXT_ENCODER, TOKENIZER, WHISPER)


@dataclass(frozen=True)
class ModelSpec:
    """Everything the engine and the front ends know about one model id; nothing else special-cases an id.

    Hub models are `transformer` + `components` (found locally or in the HF cache, loaded by `_load_official`);
    a model with files of its own (HuMo-nano) or none (the untrained `tiny`) has a `loader`, and a `folder`
    where its files live (for presence and size) when it has any.
    """

    id: str
    variant: str  # "17b" | "1.7b"
    transformer: Component | None
    default_size: tuple[int, int]  # (height, width); a `folder` model's loader reads its own
    components: tuple[Component, ...] = field(default=SHARED)
    description: str = ""
    flow_shift: float = DEFAULT_SHIFT  # the sampling grid's shift (Wan's 5 for 480p; HuMo-nano's 64x64 uses 2)
    default_steps: int | Callable[[], int] = 50  # a callable reads it from the model's files (HuMo-nano)
    guidance_preset: str = "official"  # distilled students: "single pass" (engine.guidance), one pass per step
    loader: Callable | None = None  # fn(device=, torch_dtype=, scheduler=) -> HuMoPipeline; None: official files
    folder: Callable[[], Path] | None = None  # where a loader model's files live
    present: Callable[[], bool] | None = None  # None: every component is found
    untrained: bool = False  # random weights built in code: its videos are noise (the studio says so)
    base: str | None = None  # a single-file model: the registered model whose VAE, encoders and defaults it uses
    scheduler: str | None = None  # the sampler it must use (a student learnt Euler segments); None: the one asked for

    def steps(self) -> int:
        return int(self.default_steps() if callable(self.default_steps) else self.default_steps)

    def sampling_defaults(self, size: tuple[int, int] | None = None, scheduler: str = "unipc") -> SamplingDefaults:
        """What its loaded pipeline samples with when a call leaves it out (`HuMoPipeline.sampling_defaults`);
        `size`: the one its files say (HuMo-nano's nano.json), else `default_size`."""
        height, width = size or self.default_size
        return SamplingDefaults(self.steps(), self.guidance_preset, int(height), int(width),
                                self.scheduler or scheduler, float(self.flow_shift))  # fmt: skip

    def is_present(self) -> bool:
        if self.present is not None:
            return self.present()
        return all(component_root(c) is not None for c in self.all_components)

    @property
    def size_bytes(self) -> int:
        return sum(c.size_bytes for c in self.all_components)

    @property
    def all_components(self) -> tuple[Component, ...]:
        return ((self.transformer,) if self.transformer else ()) + self.components


MODELS: dict[str, ModelSpec] = {
    "humo-17b": ModelSpec(
        "humo-17b",
        "17b",
        Component(
            "transformer", HUMO_REPO, ("HuMo-17B/*",), "HuMo-17B/humo.safetensors.index.json", 68_223_701_248, "HuMo"
        ),
        (720, 1280),
        description="HuMo-17B (Wan2.1-14B + audio), fp32 shards",
    ),
    "humo-1.7b": ModelSpec(
        "humo-1.7b",
        "1.7b",
        Component("transformer", HUMO_REPO, ("HuMo-1.7B/ema.pth",), "HuMo-1.7B/ema.pth", 7_037_053_233, "HuMo"),
        (480, 832),
        description="HuMo-1.7B (Wan2.1-1.3B + audio), fp32 ema.pth",
    ),
    "humo-nano": ModelSpec(
        "humo-nano",
        "1.7b",
        None,
        (64, 64),
        components=(),
        description="CPU-sized HuMo trained on the synthetic world (assets/humo-nano, `python -m training nano`)",
        flow_shift=NANO_SHIFT,
        default_steps=lambda: nano.info().get("sample_steps", 30),
        loader=lambda **kw: nano.load_nano_pipeline(torch_dtype=kw["torch_dtype"], scheduler=kw["scheduler"]),
        folder=lambda: nano.nano_dir(),
        present=lambda: nano.is_present(),
    ),
    "humo-nano-4step": ModelSpec(
        "humo-nano-4step",
        "1.7b",
        None,
        (64, 64),
        components=(),
        description="HuMo-nano distilled to 4 steps x 1 pass (assets/humo-nano-4step, `python -m training distill-nano`)",
        flow_shift=NANO_SHIFT,
        default_steps=4,
        guidance_preset="single pass",
        scheduler="euler",
        loader=lambda **kw: nano.load_nano_student_pipeline(torch_dtype=kw["torch_dtype"], scheduler=kw["scheduler"]),
        folder=lambda: nano.student_dir(),
        present=lambda: nano.is_student_present(),
    ),
    "tiny": ModelSpec(
        "tiny",
        "1.7b",
        None,
        (64, 64),
        components=(),
        description="untrained test model, built in code",
        default_steps=8,
        loader=lambda **kw: _load_tiny(kw["scheduler"]),
        present=lambda: True,
        untrained=True,
    ),
}
# Preference order when nothing is asked for: the largest model present first; HuMo-nano (bundled) before the
# untrained "tiny", which only remains the default where assets/humo-nano is missing.
PREFERENCE = ["humo-17b", "humo-1.7b", "humo-nano", "tiny"]


def models_dir() -> Path:
    return Path(os.environ.get("HUMO_MODELS_DIR", "models"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _local_root(component: Component) -> Path | None:
    root = models_dir() / component.local_dir
    return root if (root / component.marker).exists() else None


def _cache_root(component: Component) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        path = Path(
            snapshot_download(component.repo, allow_patterns=list(component.allow_patterns), local_files_only=True)
        )
    except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
        return None
    return path if (path / component.marker).exists() else None


def component_root(component: Component) -> Path | None:
    """The folder holding this component (local models dir first, then the HF cache), or None."""
    return _local_root(component) or _cache_root(component)


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"


@dataclass
class ResolvedModel:
    spec: ModelSpec
    roots: dict[str, Path]

    def path(self, component: Component) -> Path:
        return self.roots[component.name] / component.marker


def resolve(model_id: str) -> ResolvedModel:
    """Find every component of a model locally; raise one clear MissingWeightsError listing what is missing."""
    spec = get_spec(model_id)
    roots, missing = {}, []
    for component in spec.all_components:
        root = component_root(component)
        if root is None:
            missing.append(component)
        else:
            roots[component.name] = root
    if missing:
        listing = ", ".join(f"{c.name} ({c.repo}, {_gb(c.size_bytes)})" for c in missing)
        total = _gb(sum(c.size_bytes for c in missing))
        hint = " You are offline (HF_HUB_OFFLINE=1): run the download on a connected machine." if _offline() else ""
        raise MissingWeightsError(
            f"{model_id} is missing {listing}: {total} in all. Download it with "
            f"`python -m engine download {model_id}`, or put the official files under {models_dir()}/.{hint}"
        )
    return ResolvedModel(spec, roots)


def get_spec(model_id: str) -> ModelSpec:
    """The spec of a registered id, a model folder (`folder_spec`) or one transformer file (`file_spec`)."""
    if model_id in MODELS or model_id in NAMED:
        return MODELS.get(model_id) or NAMED[model_id]
    path = Path(str(model_id))
    if path.is_dir():
        return folder_spec(str(path.resolve()), _mtime(path))
    if path.is_file():
        from engine.models.single_file import is_weights_file

        if not is_weights_file(str(path)):
            raise InputError(f"{model_id} is not a model: {NOT_A_MODEL}", field="model")
        stat = path.stat()
        return file_spec(model_id, stat.st_mtime_ns, stat.st_size)
    raise InputError(
        f"Unknown model {model_id!r}: use one of {', '.join(MODELS)}, or the path of a model folder or file.",
        field="model",
    )


# Model folders registered under a name by a front end (the studio's fine-tunes: "run:<name>"); not in MODELS, so
# `list_models` and the default-model choice stay the registered ones; the studio says whose each one is.
NAMED: dict[str, ModelSpec] = {}


def register_folder(model_id: str, path: str | Path) -> ModelSpec:
    """Name a model folder (`folder_spec`): every door that takes an id takes the name, and what it records is the
    name, not the server path. Returns its spec; a folder that is not a model raises the usual InputError."""
    import dataclasses

    NAMED[model_id] = dataclasses.replace(get_spec(str(path)), id=model_id)
    return NAMED[model_id]


def model_source(model_id: str) -> str:
    """What another process loads for an id: a named folder's path (it has no registration), else the id."""
    spec = NAMED.get(model_id)
    return str(spec.folder()) if spec is not None else model_id


def find_spec(model_id: str | None) -> ModelSpec | None:
    """The spec of an id (registered, named, a model folder or file), or None where it names no model."""
    try:
        return get_spec(model_id) if model_id else None
    except InputError:
        return None


def display_id(model_id: str) -> str:
    """The id an mp4, a gallery row or a label records: a registered or named id as is, a folder or file by its name
    (a trainer's `final/` with its run's: `run/final`), never a server path."""
    if model_id in MODELS or model_id in NAMED or not Path(str(model_id)).exists():
        return model_id
    path = Path(str(model_id)).resolve()
    return f"{path.parent.name}/{path.name}" if path.name == "final" else path.name


# -- model folders: a fine-tune (the trainer's final/), a distilled student, a diffusers-format transformer -----------
NOT_A_MODEL = (
    "expected a fine-tune folder (the trainer's final/: config.json, weights and humo_base.json), a distilled "
    "student folder (student.json and transformer/), a diffusers-format HuMo transformer folder (config.json and "
    "*.safetensors, e.g. from `python -m engine convert`), or one checkpoint file (.pth, .safetensors, .gguf)."
)
STUDENT_FILE = "student.json"


def _mtime(path: Path) -> int:
    """A folder's identity for the spec cache: the newest mtime of it and its files (a re-saved fine-tune is new)."""
    return max([path.stat().st_mtime_ns] + [p.stat().st_mtime_ns for p in path.iterdir()])


def _transformer_folder(path: Path) -> Path | None:
    """The diffusers HuMo transformer folder in `path` (itself, or its transformer/), or None."""
    for folder in (path, path / "transformer"):
        config = folder / "config.json"
        if config.is_file() and json.loads(config.read_text()).get("_class_name") == "HuMoTransformer3DModel":
            return folder
    return None


@functools.lru_cache(maxsize=32)
def folder_spec(path: str, mtime_ns: int = 0) -> ModelSpec:
    """A model folder as a model id, on the VAE, encoders and sampling defaults of the registered model it belongs to:
    a fine-tune's recorded base (`BASE_FILE`), a student's teacher (with the student's own steps, sampler and
    guidance from student.json), else the model whose transformer config it matches (`base_for_config`)."""
    import dataclasses

    root = Path(path)
    transformer = _transformer_folder(root)
    if transformer is None:
        raise InputError(f"{path} is not a model: {NOT_A_MODEL}", field="model")
    if (root / STUDENT_FILE).exists():
        info = json.loads((root / STUDENT_FILE).read_text())
        base = get_spec(info.get("teacher", "humo-nano"))
        overrides = {"default_steps": int(info.get("sample_steps", 4)), "scheduler": info.get("scheduler", "euler"),
                     "guidance_preset": info.get("guidance_preset", "single pass"),
                     "description": f"distilled student of {base.id} ({root.name})"}  # fmt: skip
    elif (root / BASE_FILE).exists():
        base = get_spec(read_base(root)["base_model"])
        overrides = {"description": f"fine-tune of {base.id} ({display_id(path)})"}
    else:
        config = json.loads((transformer / "config.json").read_text())
        base = MODELS[base_for_config({k: v for k, v in config.items() if not k.startswith("_")})]
        overrides = {"description": f"HuMo transformer on {base.id}'s VAE and encoders ({root.name})"}
    return dataclasses.replace(
        base, id=path, transformer=None, base=base.id, folder=lambda: root, untrained=False,
        loader=lambda **kw: _load_folder_model(root, transformer, base.id, **kw),
        present=lambda: _transformer_folder(root) is not None and base.is_present(), **overrides,
    )  # fmt: skip


def _load_folder_model(root: Path, transformer_dir: Path, base_id: str, device, torch_dtype, scheduler):
    """The base model's pipeline with this folder's transformer; a fine-tune whose training cache was encoded with
    other encoder weights than the base has now is refused by name (`BASE_FILE`'s fingerprints)."""
    from engine.models import HuMoTransformer3DModel

    base = get_spec(base_id)
    # the dtypes load_pipeline(base) would give on the device (the fingerprints include them): official files at the
    # device's default, a model with its own loader at the loader's
    official = base.loader is None
    dtype = torch_dtype or ((torch.bfloat16 if device.type == "cuda" else torch.float32) if official else None)
    pipe = load_pipeline(base_id, device="cpu", torch_dtype=dtype, scheduler=scheduler, memory_mode=None)
    recorded = read_base(root).get("encoders") or {} if (root / BASE_FILE).exists() else {}
    current = encoder_fingerprints(pipe) if recorded else {}
    changed = [name for name, value in recorded.items() if current.get(name) != value]
    if changed:
        raise InputError(
            f"{root} was trained on a cache encoded with other {', '.join(changed)} weights than "
            f"{base_id} has now ({', '.join(f'{n} {recorded[n]} vs {current.get(n)}' for n in changed)}): "
            "render it with the base it was trained with, or fine-tune again.",
            field="model",
        )
    transformer = HuMoTransformer3DModel.from_pretrained(transformer_dir, torch_dtype=pipe.transformer.dtype)
    pipe.register_modules(transformer=transformer.eval())
    pipe.model_hashes = {
        display_id(str(root)): hashlib.sha256(b"".join(
            file_fingerprint(f).encode() for f in sorted(transformer_dir.glob("*.safetensors")))).hexdigest()[:16]
    }  # fmt: skip
    return pipe


# -- single-file transformers (GGUF, safetensors / .pth repacks) ---------------------------------------------------
_INTERFACE = ("in_channels", "out_channels", "text_dim", "audio_dim", "audio_window", "audio_bands", "patch_size")


def _transformer_config(model_id: str) -> dict | None:
    """The transformer config a registered model runs (its VAE and encoders fix the `_INTERFACE` part)."""
    import inspect

    from engine.models import PRESETS, HuMoTransformer3DModel

    spec = MODELS[model_id]
    if spec.untrained:
        from engine.components import build_tiny_components

        config = dict(build_tiny_components(variant=spec.variant)["transformer"].config)
    elif spec.folder is not None:
        path = spec.folder() / "transformer" / "config.json"
        config = json.loads(path.read_text()) if path.exists() else None
    else:
        defaults = inspect.signature(HuMoTransformer3DModel.__init__).parameters
        config = {k: p.default for k, p in defaults.items() if p.default is not inspect.Parameter.empty}
        config.update(PRESETS[model_id])
    if config is not None and "patch_size" in config:
        config["patch_size"] = tuple(config["patch_size"])
    return config


def base_for_config(config: dict) -> str:
    """The registered model whose VAE and encoders a transformer of this config runs on: one with the same config
    if there is one, else the first (in preference order) with the same interface (latent, text and audio widths)."""
    config = {**config, "patch_size": tuple(config["patch_size"])}
    order = PREFERENCE + [m for m in MODELS if m not in PREFERENCE]
    configs = {m: c for m in order if (c := _transformer_config(m)) is not None}
    same = [m for m, c in configs.items() if all(c.get(k) == v for k, v in config.items())]
    compatible = [m for m, c in configs.items() if all(c.get(k) == config[k] for k in _INTERFACE)]
    if same or compatible:
        return (same or compatible)[0]
    wants = ", ".join(f"{k}={config[k]}" for k in _INTERFACE)
    raise InputError(f"No registered model has the VAE and encoders this transformer needs ({wants}).", field="model")


@functools.lru_cache(maxsize=16)
def file_spec(path: str | os.PathLike, mtime_ns: int = 0, size: int = 0) -> ModelSpec:
    """A single HuMo transformer file (GGUF, or a safetensors / .pth repack) as a model: the transformer from the file,
    the VAE, encoders and sampling defaults of `base_for_config` (downloaded as usual). Another architecture is
    refused by name (engine.models.single_file). Cached per (path, mtime, size): its header is read once."""
    import dataclasses

    from engine.models.single_file import inspect_file, require_humo

    path = Path(path)
    report = require_humo(inspect_file(path))
    base = MODELS[base_for_config(report.config)]
    return dataclasses.replace(
        base, id=str(path), transformer=None, description=report.summary(), base=base.id, folder=None,
        loader=lambda **kw: _load_file_model(path, base.id, **kw),
        present=(lambda: path.is_file() and base.is_present()) if base.loader is not None else None,
    )  # fmt: skip


def _load_file_model(path: Path, base_id: str, device, torch_dtype, scheduler):
    from engine.models.single_file import load_transformer_file
    from engine.schedulers import make_scheduler

    transformer = load_transformer_file(path, torch_dtype=torch_dtype, device=device)
    base = MODELS[base_id]
    if base.loader is None:
        pipe = _load_official(resolve(str(path)), device, torch_dtype, make_scheduler(scheduler), transformer)
    else:
        pipe = base.loader(device=device, torch_dtype=torch_dtype, scheduler=scheduler)
        pipe.register_modules(transformer=transformer)
    pipe.model_hashes = {path.name: file_fingerprint(path)}
    return pipe


def download(model_id: str, progress_callback: Callable[[str, int, int], None] | None = None) -> ResolvedModel:
    """Download every missing component into the HF cache (resumable). `progress_callback(name, done, total)` is
    called per component, for the studio's progress bar."""
    from huggingface_hub import snapshot_download

    spec = get_spec(model_id)
    components = spec.all_components
    for index, component in enumerate(components):
        if progress_callback:
            progress_callback(component.name, index, len(components))
        if component_root(component) is None:
            snapshot_download(component.repo, allow_patterns=list(component.allow_patterns))
    if progress_callback:
        progress_callback("done", len(components), len(components))
    return resolve(model_id)


def _disk_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def is_present(model_id: str) -> bool:
    return get_spec(model_id).is_present()


def list_models() -> list[dict]:
    """Every known model: id, variant, present, size (GB, expected or on disk), location, description."""
    rows = []
    for model_id, spec in MODELS.items():
        present = is_present(model_id)
        location, size = None, 0
        if spec.transformer is not None and present:
            location = str(component_root(spec.transformer) / spec.transformer.marker)
        elif spec.folder is not None and present:
            location, size = str(spec.folder()), _disk_size(spec.folder())
        elif spec.untrained:
            location = "built in code"
        rows.append(
            {
                "id": model_id,
                "variant": spec.variant,
                "present": present,
                "size_gb": (size if location and spec.transformer is None else spec.size_bytes) / 1e9,
                "location": location,
                "description": spec.description,
                "default_size": spec.default_size,
            }
        )
    return rows


def best_available_model() -> str:
    """The first model of PREFERENCE whose files are all present ("tiny" always is)."""
    for model_id in PREFERENCE:
        if model_id in MODELS and is_present(model_id):
            return model_id
    return "tiny"


def file_fingerprint(path: Path) -> str:
    """A cheap identity of a weights file: sha256 of its size and first/last MiB (full hashes of 68 GB take minutes)."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, path.stat().st_size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


# In a fine-tune's folder (the trainer's final/): the registry model whose VAE and encoders its weights belong to,
# and fingerprints of those encoders as the training cache saw them.
BASE_FILE = "humo_base.json"


def module_fingerprint(module) -> str:
    """A cheap identity of a loaded module's weights: sha256 over every tensor's name, shape, dtype and first 64
    values (the whole of a 22 GB umT5 would take minutes). Two builds of the same architecture differ here."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        if tensor.device.type != "meta" and tensor.numel():
            digest.update(tensor.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def encoder_fingerprints(pipe) -> dict[str, str]:
    """{component: fingerprint} of what a training cache is made with and a fine-tune is rendered with."""
    return {name: module_fingerprint(getattr(pipe, name)) for name in ("vae", "text_encoder", "audio_encoder")}


def read_base(folder: str | Path) -> dict:
    """A fine-tune's base record ({"base_model": id, "encoders": {...}}); a clear error where there is none."""
    record = Path(folder) / BASE_FILE
    if not record.exists():
        raise InputError(
            f"{folder} does not record the model it was trained from (no {BASE_FILE}; checkpoints from before this "
            'record cannot tell). Add one: {"base_model": "humo-nano"} (or tiny, humo-1.7b, humo-17b).',
            field="model",
        )
    base = json.loads(record.read_text())
    get_spec(base.get("base_model", ""))  # an unknown id is refused here, by name
    return base


def load_finetune(folder: str | Path, device=None, memory_mode: str | None = "auto"):
    """A fine-tune folder (the trainer's final/) on its base model's VAE and encoders: `load_pipeline(folder)`."""
    read_base(folder)  # a folder without its base record gets that message, not the generic one
    return load_pipeline(str(folder), device=device, memory_mode=memory_mode)


def load_pipeline(
    model_id: str = "tiny",
    device: str | torch.device | None = None,
    torch_dtype: torch.dtype | None = None,
    scheduler: str = "unipc",
    memory_mode: str | None = "auto",
):
    """A ready HuMoPipeline for a model id ("humo-17b", "humo-1.7b", "tiny", or one registered later), a model folder
    (a fine-tune's final/, a distilled student, a diffusers-format transformer) or one checkpoint file, carrying
    the model's sampling defaults (`pipe.sampling_defaults`: what `pipe(...)` uses for what a call leaves out).

    Real models: transformer from the official files (strict, streamed) in `torch_dtype` (default bf16 on CUDA,
    fp32 on CPU), VAE and Whisper in fp32 (as the official code), umT5 in bf16.
    `memory_mode`: "auto" picks one from the free VRAM on CUDA (engine/memory.py); None just moves to `device`.
    """
    from engine.schedulers import make_scheduler

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    spec = get_spec(model_id)
    scheduler = spec.scheduler or scheduler  # a student samples with the sampler it learnt
    if spec.loader is not None:
        pipe = spec.loader(device=device, torch_dtype=torch_dtype, scheduler=scheduler)
    else:
        pipe = _load_official(resolve(model_id), device, torch_dtype, make_scheduler(scheduler))
    pipe.model_id = model_id
    # a model with its own files read its size from them (HuMo-nano: nano.json); the rest is the registry's
    pipe.sampling_defaults = spec.sampling_defaults(pipe.default_size if spec.folder else None, scheduler)
    return place(pipe, model_id, device, memory_mode)


def _path_model(model_id: str) -> ModelSpec | None:
    """The spec of a folder or file model id, or None for anything else (an id `place` is given need not be
    registered)."""
    named = model_id in NAMED or (model_id not in MODELS and Path(str(model_id)).exists())
    return get_spec(model_id) if named else None


def place(pipe, model_id: str, device: torch.device, memory_mode: str | None = "auto"):
    """Put a loaded pipeline on `device` in a memory mode ("auto": chosen from the free VRAM for this model)."""
    if memory_mode == "auto":
        from engine.memory import GB, choose_memory_mode, is_prequantized, transformer_bytes
        from engine.system import free_ram_bytes

        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
        base = getattr(MODELS.get(model_id) or _path_model(model_id), "base", None)
        weights = transformer_bytes(pipe.transformer) / GB if base else None  # a file: what it takes loaded
        memory_mode = choose_memory_mode(base or model_id, free, free_ram_bytes(), *pipe.default_size,
                                         weights_gb=weights, prequantized=is_prequantized(pipe.transformer))  # fmt: skip
    if memory_mode in (None, "gpu", "cpu"):
        pipe.memory_mode = memory_mode or device.type
        return pipe.to(device)
    from engine.memory import apply_memory_mode

    return apply_memory_mode(pipe, memory_mode, device)


def _load_tiny(scheduler):
    from engine.components import build_tiny_components
    from engine.pipeline import HuMoPipeline

    return HuMoPipeline(**build_tiny_components(scheduler=scheduler))


def _load_official(resolved: ResolvedModel, device, torch_dtype, scheduler, transformer=None):
    from diffusers import AutoencoderKLWan
    from transformers import AutoTokenizer, UMT5EncoderModel

    from engine.components import feature_extractor_or_default, load_whisper_encoder
    from engine.models import HuMoTransformer3DModel
    from engine.pipeline import HuMoPipeline

    spec = resolved.spec
    dtype = torch_dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    wan_root = resolved.roots["vae"]
    if transformer is None:
        transformer_path = resolved.path(spec.transformer)
        if transformer_path.name.endswith(".index.json"):
            transformer_path = transformer_path.parent
        transformer = HuMoTransformer3DModel.from_official(transformer_path, torch_dtype=dtype, device=device)
    whisper_root = resolved.roots["audio_encoder"]
    pipe = HuMoPipeline(
        vae=AutoencoderKLWan.from_pretrained(wan_root, subfolder="vae", torch_dtype=torch.float32),
        text_encoder=UMT5EncoderModel.from_pretrained(
            resolved.roots["text_encoder"], subfolder="text_encoder", torch_dtype=torch.bfloat16
        ),
        tokenizer=AutoTokenizer.from_pretrained(resolved.roots["tokenizer"], subfolder="tokenizer"),
        transformer=transformer,
        scheduler=scheduler,
        audio_encoder=load_whisper_encoder(whisper_root, torch.float32),
        feature_extractor=feature_extractor_or_default(whisper_root),
    )
    if spec.transformer is not None:
        marker = resolved.path(spec.transformer)
        files = [marker] if marker.suffix == ".pth" else sorted(marker.parent.glob("*.safetensors"))
        pipe.model_hashes = {f.name: file_fingerprint(f) for f in files}
    return pipe
