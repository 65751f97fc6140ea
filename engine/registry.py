"""Model ids -> weight sources, local presence, downloads, and the one loading entry point `load_pipeline`.

Weights resolve, in order, from a local models folder (`HUMO_MODELS_DIR`, default `./models`, official folder
names) and from the Hugging Face cache (`HF_HOME`; `HF_HUB_OFFLINE=1` never touches the network). A missing piece
raises one `MissingWeightsError` naming it, its size and the command that downloads it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

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
    id: str
    variant: str  # "17b" | "1.7b"
    transformer: Component | None
    default_size: tuple[int, int]  # (height, width)
    components: tuple[Component, ...] = field(default=SHARED)
    description: str = ""
    flow_shift: float = DEFAULT_SHIFT  # the sampling grid's shift (Wan's 5 for 480p; HuMo-nano's 64x64 uses 2)

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
    ),
    "tiny": ModelSpec("tiny", "1.7b", None, (64, 64), components=(), description="untrained test model, built in code"),
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
    if model_id not in MODELS:
        raise InputError(f"Unknown model {model_id!r}: use one of {', '.join(MODELS)}.", field="model")
    return MODELS[model_id]


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
    spec = get_spec(model_id)
    if model_id in PRESENCE:
        return PRESENCE[model_id]()
    return all(component_root(c) is not None for c in spec.all_components)


def list_models() -> list[dict]:
    """Every known model: id, variant, present, size (GB, expected or on disk), location, description."""
    rows = []
    for model_id, spec in MODELS.items():
        present = is_present(model_id)
        location, size = None, 0
        if spec.transformer is not None and present:
            location = str(component_root(spec.transformer) / spec.transformer.marker)
        elif model_id == "humo-nano":
            from engine import nano

            location = str(nano.nano_dir()) if present else None
            size = _disk_size(nano.nano_dir()) if present else 0
        elif spec.transformer is None:
            location = "built in code" if model_id == "tiny" else None
        rows.append(
            {
                "id": model_id,
                "variant": spec.variant,
                "present": present,
                "size_gb": (size if model_id == "humo-nano" else spec.size_bytes) / 1e9,
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


def load_pipeline(
    model_id: str = "tiny",
    device: str | torch.device | None = None,
    torch_dtype: torch.dtype | None = None,
    scheduler: str = "unipc",
    memory_mode: str | None = "auto",
):
    """A ready HuMoPipeline for a model id ("humo-17b", "humo-1.7b", "tiny", or one registered later).

    Real models: transformer from the official files (strict, streamed) in `torch_dtype` (default bf16 on CUDA,
    fp32 on CPU), VAE and Whisper in fp32 (as the official code), umT5 in bf16.
    `memory_mode`: "auto" picks one from the free VRAM on CUDA (engine/memory.py); None just moves to `device`.
    """
    from engine.pipeline import HuMoPipeline
    from engine.schedulers import make_scheduler

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if model_id == "tiny":
        from engine.components import build_tiny_components

        pipe = HuMoPipeline(**build_tiny_components(scheduler=scheduler))
        pipe.model_hashes = {}
    elif model_id in LOADERS:
        pipe = LOADERS[model_id](device=device, torch_dtype=torch_dtype, scheduler=scheduler)
    else:
        pipe = _load_official(resolve(model_id), device, torch_dtype, make_scheduler(scheduler))
    pipe.model_id = model_id
    # a loader may know its model's size better than the registry (HuMo-nano reads it from nano.json)
    pipe.default_size = getattr(pipe, "default_size", None) or (
        MODELS[model_id].default_size if model_id in MODELS else (64, 64)
    )
    if memory_mode == "auto":
        from engine.memory import choose_memory_mode
        from engine.system import free_ram_bytes

        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
        memory_mode = choose_memory_mode(model_id, free, free_ram_bytes(), *pipe.default_size)
    if memory_mode in (None, "gpu", "cpu"):
        pipe.memory_mode = memory_mode or device.type
        return pipe.to(device)
    from engine.memory import apply_memory_mode

    return apply_memory_mode(pipe, memory_mode, device)


def _load_nano(device, torch_dtype, scheduler):
    from engine import nano

    return nano.load_nano_pipeline(torch_dtype=torch_dtype, scheduler=scheduler)


def _nano_present() -> bool:
    from engine import nano

    return nano.is_present()


# Models whose files are not Hub components: id -> fn(device=, torch_dtype=, scheduler=) and id -> presence check.
LOADERS: dict[str, Callable] = {"humo-nano": _load_nano}
PRESENCE: dict[str, Callable[[], bool]] = {"humo-nano": _nano_present}


def _load_official(resolved: ResolvedModel, device, torch_dtype, scheduler):
    from diffusers import AutoencoderKLWan
    from transformers import AutoTokenizer, UMT5EncoderModel

    from engine.components import feature_extractor_or_default, load_whisper_encoder
    from engine.models import HuMoTransformer3DModel
    from engine.pipeline import HuMoPipeline

    spec = resolved.spec
    dtype = torch_dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    wan_root = resolved.roots["vae"]
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
    marker = resolved.path(spec.transformer)
    files = [marker] if marker.suffix == ".pth" else sorted(marker.parent.glob("*.safetensors"))
    pipe.model_hashes = {f.name: file_fingerprint(f) for f in files}
    return pipe
