"""A model's sampling defaults: what `pipe(prompt=, image=, audio=)` uses for everything the caller leaves out.

They belong to the loaded pipeline (`HuMoPipeline.sampling_defaults`, kept in its config and so in the
`model_index.json` that `save_pretrained` writes), set by the loader from the model's registry entry
(`engine.registry.ModelSpec.sampling_defaults`). The CLI, the studio and the Python API all read them from there, so a
distilled student renders with its 4 steps and single-pass guidance through every door.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from engine.schedulers import DEFAULT_SHIFT


@dataclass(frozen=True)
class SamplingDefaults:
    """Steps, guidance preset, size and sampler a model was made to be sampled with."""

    num_inference_steps: int = 50
    guidance_preset: str = "official"  # an engine.guidance preset name; distilled students: "single pass"
    height: int = 480
    width: int = 832
    scheduler: str = "unipc"  # the sampler its loader builds (HuMo-nano-4step learnt Euler segments)
    flow_shift: float = DEFAULT_SHIFT  # the timestep grid's shift (Wan's 5 at 480p; HuMo-nano's 64x64 uses 2)

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def guidance(self, variant: str, mode: str, **scales):
        """This model's guidance schedule for a mode; scales given (not None) override the preset's."""
        from engine.guidance import preset_schedule

        return preset_schedule(self.guidance_preset, variant, mode, **scales)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SamplingDefaults:
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def with_size(self, height: int, width: int) -> SamplingDefaults:
        return replace(self, height=int(height), width=int(width))
