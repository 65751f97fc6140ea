"""HuMoPipeline: text + reference image(s) + audio -> video, with HuMo's multi-branch guidance.

The official sampling (reference/humo-official.md §4) is the default; everything else is opt-in.
`__call__` reads as numbered steps, like diffusers' Wan pipelines:
check inputs -> encode text -> encode references -> encode audio -> prepare latents -> denoise with a
guidance schedule -> decode.

Conditioning per variant (chosen from `transformer.config.in_channels`):
- "17b" (36 input channels): [x ; mask ; cond] on channels. The mask is 1 on the trailing reference slot(s).
  cond is the "zero-VAE" latent of a grey video, with the reference latent(s) in the trailing slot(s) for the
  image-present branch (§2.3). The reference slots of x are free-running noise, discarded at the end.
- "1.7b" (16 input channels): the trailing slot(s) of x are overwritten before every forward with the reference
  latent (image-present branch) or zeros (every other branch) (§2.4).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from engine import audio as audio_lib
from engine import guidance as guidance_lib
from engine import known_latents, media, speed
from engine import schedulers as _schedulers  # noqa: F401  (registers the HuMo schedulers for from_pretrained)
from engine.defaults import SamplingDefaults
from engine.errors import InputError
from engine.guidance import Branch, GuidanceSchedule
from engine.long_video import DEFAULT_WINDOW_OVERLAP, ContextWindows, accumulate_window, match_colors, window_slice
from engine.plan import DEFAULT_FRAMES, batch_pays, check_run_inputs, mode_of, plan_run, run_schedule

# The standard Wan2.1 negative prompt, used verbatim by the official code as "null text" (§4.3).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
TEXT_LEN = 512  # the official text context is zero-padded to 512 tokens with no mask


class GenerationInterrupted(RuntimeError):
    """Raised when a callback asked the pipeline to stop (the studio's Stop button)."""


@dataclass
class _Denoising:
    """What every step of one `__call__` needs: the schedule, the branch conditioning inputs, the windows."""

    schedule: GuidanceSchedule
    branches: set[Branch]
    batched: bool
    windows: ContextWindows
    num_ref: int
    audio_embeds: torch.Tensor  # [1, F_total, 8, 5, C]
    text_and_images: dict[str, Any]  # prompt_embeds, negative_prompt_embeds, ref_latents, zero_latents
    callback: Callable | None
    tensor_inputs: Sequence[str]
    num_steps: int
    # Dubbing (engine/dub.py): (source latents [1, 16, F_vid, h, w], mask [1, 1, F_vid, h, w], noise like the source);
    # after every scheduler step the latents outside the mask are replaced by the source's at the next noise level.
    source: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


@dataclass
class HuMoPipelineOutput(BaseOutput):
    """`frames[0]` is the video: np.ndarray [F, H, W, 3] in [0, 1] ("np"), a list of PIL images ("pil") or the
    latents [1, 16, F_lat, h, w] ("latent"). `seed` is the seed actually used (None when `generator` was given)."""

    frames: Any
    seed: int | None = None
    mode: str = "TIA"
    num_frames: int = 0
    timings: dict = field(default_factory=dict)


class HuMoPipeline(DiffusionPipeline):
    r"""HuMo text+image+audio to video.

    Components: `vae` (AutoencoderKLWan), `text_encoder` (UMT5EncoderModel), `tokenizer`, `transformer`
    (HuMoTransformer3DModel), `scheduler`, `audio_encoder` (Whisper encoder), `feature_extractor`
    (WhisperFeatureExtractor).
    """

    model_cpu_offload_seq = "text_encoder->audio_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents", "noise_pred"]

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        transformer,
        scheduler,
        audio_encoder,
        feature_extractor,
        sampling_defaults: dict | None = None,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
            scheduler=scheduler,
            audio_encoder=audio_encoder,
            feature_extractor=feature_extractor,
        )
        if vae is not None:
            speed.use_cpu_vae_kernels(vae)  # CPU decoding's kernels (engine/speed.py); GPU and training unchanged
        self.vae_scale_factor_temporal = 2 ** sum(vae.config.temperal_downsample) if vae is not None else 4
        self.vae_scale_factor_spatial = 2 ** len(vae.config.temperal_downsample) if vae is not None else 8
        self._zero_latents_cache: dict[tuple, torch.Tensor] = {}
        self._interrupt = False
        self._preview_projection = None
        self._video_latent_frames: int | None = None  # of the running call: previews leave out the reference slots
        self.preview_costs: dict[tuple, float] = {}  # (decoder, latent shape) -> seconds of one preview (studio)
        # What the loader knows and the outputs record; engine.registry.load_pipeline fills them in.
        self.model_id = "custom"
        self.model_hashes: dict[str, str] = {}  # weights file -> fingerprint (engine.registry.file_fingerprint)
        # Steps, guidance preset, size, sampler: in the config, so save_pretrained keeps them (engine/defaults.py)
        self.register_to_config(sampling_defaults=SamplingDefaults.from_dict(sampling_defaults).to_dict())
        self.default_frames = DEFAULT_FRAMES  # the clip length it was trained on (live generation's chunk length)
        # How it runs; set by engine.memory.apply_memory_mode, engine.speed.enable_step_cache/set_attention_backend.
        self.memory_mode: str | None = None
        self.step_cache: str | None = None  # "first_block" | "mag" once enabled
        self.attention_backend = "native"
        # How the guidance branches of one step are evaluated; engine.distributed swaps in a CFG-parallel one.
        self.branch_evaluator = guidance_lib.evaluate_branches
        self._attention_kwargs = None

    # ------------------------------------------------------------------ properties
    @property
    def variant(self) -> str:
        """ "17b" for the 36-channel concat conditioning, "1.7b" for the reference-slot overwrite."""
        return self.transformer.variant

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def sampling_defaults(self) -> SamplingDefaults:
        """What a call leaves out is taken from here: the model's steps, guidance preset and size."""
        return SamplingDefaults.from_dict(self.config.sampling_defaults)

    @sampling_defaults.setter
    def sampling_defaults(self, value: SamplingDefaults) -> None:
        self.register_to_config(sampling_defaults=value.to_dict())

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) the model was trained for."""
        return self.sampling_defaults.size

    @default_size.setter
    def default_size(self, value: tuple[int, int]) -> None:
        self.sampling_defaults = self.sampling_defaults.with_size(*value)

    def default_guidance(self, mode: str, **scales) -> GuidanceSchedule:
        """This model's guidance schedule for a mode: its preset (official §4.8; a distilled student's single pass)."""
        return self.sampling_defaults.guidance(self.variant, mode, **scales)

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """umT5 embeddings [1, 512, text_dim] of the prompt and the negative prompt, trimmed to their token
        length and zero-padded back to 512 (§4.3)."""
        negative_prompt = WAN_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
        embeds = self._t5_embeds([prompt, negative_prompt], device, dtype)
        return embeds[:1], embeds[1:]

    def _t5_embeds(self, prompts: list[str], device, dtype) -> torch.Tensor:
        device = device or self._execution_device
        dtype = dtype or self.transformer.dtype
        prompts = [prompt_clean(p) for p in prompts]
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=TEXT_LEN,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        enc_device = next(self.text_encoder.parameters()).device
        hidden = self.text_encoder(tokens.input_ids.to(enc_device), tokens.attention_mask.to(enc_device))
        hidden = hidden.last_hidden_state.float()
        lengths = tokens.attention_mask.sum(dim=1)
        # Rows past each prompt's length are zeros, not the encoder's padding outputs (official behaviour).
        keep = torch.arange(TEXT_LEN, device=hidden.device)[None, :] < lengths.to(hidden.device)[:, None]
        return (hidden * keep[..., None]).to(device=device, dtype=dtype)

    # ------------------------------------------------------------------ images
    def _vae_normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.vae.config.latents_mean, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
        return (z - mean) / std

    def _vae_denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.vae.config.latents_mean, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
        return z * std + mean

    @torch.no_grad()
    def _vae_encode(self, video: torch.Tensor) -> torch.Tensor:
        """Posterior mean of a [1, 3, F, H, W] video in [-1, 1], normalised with the Wan latent mean/std."""
        vae_device = next(self.vae.parameters()).device
        vae_dtype = self.vae.dtype
        z = self.vae.encode(video.to(vae_device, vae_dtype)).latent_dist.mode()
        return self._vae_normalize(z.float())

    @torch.no_grad()
    def encode_image(
        self, images: Sequence, height: int, width: int, resize_mode: str = "pad", device=None
    ) -> torch.Tensor:
        """Reference latents [1, 16, N_ref, h, w]: each image preprocessed (§4.2) and encoded as a 1-frame clip."""
        device = device or self._execution_device
        slots = []
        for image in images:
            pixels = media.preprocess_reference(media.load_image(image), width, height, mode=resize_mode)
            slots.append(self._vae_encode(pixels[None, :, None]))
        return torch.cat(slots, dim=2).to(device)

    @torch.no_grad()
    def zero_vae_latents(self, num_latent_frames: int, height: int, width: int) -> torch.Tensor:
        """Latents [1, 16, F, h, w] of an all-zero (mid-grey) video of 4(F-1)+1 frames, computed with the VAE and
        cached per size. Replaces the official zero_vae_*.pt files, so any size and length works (§2.3)."""
        key = (num_latent_frames, height, width)
        cached = self._zero_latents_cache.get(key)
        if cached is None:
            # The causal VAE's first F latents depend only on the first 4(F-1)+1 frames, so a longer cached
            # entry can serve a shorter request.
            for (frames, h, w), value in self._zero_latents_cache.items():
                if h == height and w == width and frames >= num_latent_frames:
                    return value[:, :, :num_latent_frames]
            num_frames = self.vae_scale_factor_temporal * (num_latent_frames - 1) + 1
            zeros = torch.zeros(1, 3, num_frames, height, width)
            cached = self._vae_encode(zeros).cpu()
            self._zero_latents_cache[key] = cached
        return cached

    # ------------------------------------------------------------------ audio
    @torch.no_grad()
    def encode_audio(self, audio, num_frames: int | None) -> tuple[torch.Tensor, int]:
        """Windowed Whisper features [F_vid, 8, 5, C] and the frame count (from the audio when None)."""
        return audio_lib.encode_audio(audio, self.audio_encoder, self.feature_extractor, num_frames=num_frames)

    # ------------------------------------------------------------------ checks
    def check_inputs(
        self,
        prompt,
        height,
        width,
        num_frames,
        num_inference_steps,
        images,
        audio,
        prompt_embeds,
        window_frames=None,
        window_overlap=DEFAULT_WINDOW_OVERLAP,
    ):
        """The request's own checks (engine.plan.check_run_inputs: the studio runs the same before a job exists)."""
        check_run_inputs(prompt, height, width, num_frames, num_inference_steps, window_frames, window_overlap,
                         prompt_embeds)  # fmt: skip
        del images, audio

    def _pad_text(self, embeds: torch.Tensor, name: str) -> torch.Tensor:
        """Text embeddings [B, L, D] (or [L, D]) zero-padded to TEXT_LEN rows, as the official DiT pads every context
        (§4.3): `prompt_embeds` trimmed to the real tokens give the result of the untrimmed ones."""
        embeds = embeds[None] if embeds.ndim == 2 else embeds
        text_dim = getattr(self.transformer.config, "text_dim", embeds.shape[-1])
        if embeds.ndim != 3 or embeds.shape[-1] != text_dim:
            raise InputError(
                f"{name} must have shape [batch, tokens, {text_dim}] (got {tuple(embeds.shape)}).", field=name
            )
        length = embeds.shape[1]
        if length > TEXT_LEN:
            raise InputError(
                f"{name} has {length} tokens; HuMo's text context holds at most {TEXT_LEN}: trim it to {TEXT_LEN} "
                "(the pipeline's own encoder truncates prompts there).",
                field=name,
            )
        return F.pad(embeds, (0, 0, 0, TEXT_LEN - length)) if length < TEXT_LEN else embeds

    # ------------------------------------------------------------------ conditioning
    def build_condition(self, latents: torch.Tensor, branch: Branch, **kwargs) -> dict[str, torch.Tensor]:
        """The transformer inputs of one guidance branch (§4.6); see `build_condition`."""
        return build_condition(self.variant, latents, branch, dtype=self.transformer.dtype, **kwargs)

    def prepare_latents(
        self, shape: tuple[int, ...], generator, device, latents: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Float32 standard-normal noise. Drawn on the generator's device (CPU by default) so a seed gives the
        same video on every machine; the official code draws on the GPU, whose stream differs."""
        if latents is not None:
            if tuple(latents.shape) != tuple(shape):
                raise InputError(f"latents must have shape {tuple(shape)}, got {tuple(latents.shape)}.", "latents")
            return latents.to(device=device, dtype=torch.float32)
        return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=torch.float32)

    # ------------------------------------------------------------------ denoising helpers
    def _predict(
        self, schedule: GuidanceSchedule, t: torch.Tensor, conditions: dict, batched: bool, cache_key: str = ""
    ) -> torch.Tensor:
        timestep_value = int(t.item())
        branches = schedule.branches_for(timestep_value)
        inputs = [conditions[b] for b in branches]

        def model_fn(hidden_states, encoder_hidden_states, audio_embeds):
            timestep = torch.full((hidden_states.shape[0],), timestep_value, device=hidden_states.device)
            return self.transformer(
                hidden_states=hidden_states,
                timestep=timestep,
                encoder_hidden_states=encoder_hidden_states,
                audio_embeds=audio_embeds,
                attention_kwargs=self._attention_kwargs,
                return_dict=False,
            )[0]

        if self.step_cache:
            # A step cache reuses a block residual from the previous call; each branch gets its own cache context so
            # a branch only ever reuses its own residual (engine/speed.py enables the cache); in a long video, the
            # residual of its own window (`cache_key`).
            outputs = []
            for branch, branch_inputs in zip(branches, inputs):
                with self.transformer.cache_context(str(branch) + cache_key):
                    outputs.append(model_fn(**branch_inputs))
        else:
            outputs = self.branch_evaluator(model_fn, inputs, batched=batched)
        return schedule.combine(timestep_value, dict(zip(branches, outputs))).float()

    def _auto_batch(self, num_tokens: int, passes: int, device: torch.device) -> bool:
        """Batch the guidance branches into one forward only where it pays.

        On CPU and for small token counts batching amortises per-call overhead. At real sizes a GPU is compute
        bound: measured on an H100, HuMo-1.7B at 480x832x97 took 3.77 s for a batch of 4 branches against
        4 x 0.934 s sequentially, at twice the peak memory (bench/RESULTS.md), so real sizes run sequentially.
        """
        if not batch_pays(device.type, num_tokens, passes) or device.type != "cuda":
            return batch_pays(device.type, num_tokens, passes)
        free, _ = torch.cuda.mem_get_info(device)
        dim = self.transformer.config.num_attention_heads * self.transformer.config.attention_head_dim
        # hidden states, q/k/v/out and the FFN intermediate of one block dominate: ~16 tensors of [L, dim] in bf16
        return passes * num_tokens * dim * 2 * 16 < 0.5 * free

    def latent_preview(self, latents: torch.Tensor) -> PIL.Image.Image:
        """Cheap RGB preview of the current latents (a linear map fitted to this VAE once; engine/preview.py)."""
        from engine import preview

        if self._preview_projection is None:
            self._preview_projection = preview.fit_latent_rgb_projection(self.vae)
        return preview.latents_to_preview(latents, self._preview_projection)

    @torch.no_grad()
    def clean_preview_frames(self, latents: torch.Tensor, noise_pred: torch.Tensor, step: int,
                             decoder: str = "projection") -> np.ndarray:  # fmt: skip
        """uint8 frames [F, H, W, 3] of the model's predicted clean video after `step` (x0 from the step's latents and
        velocity; engine/preview.py), without the reference slots. `decoder`: "projection" (the fitted linear map,
        upsampled) or "vae" (the real VAE on 2x-pooled latents, every 4th frame)."""
        from engine import preview

        x0 = preview.predicted_clean(latents[0], noise_pred[0], preview.step_sigma(self.scheduler, step))
        x0 = x0[:, : self._video_latent_frames or x0.shape[1]]
        if decoder == "vae":
            return preview.vae_frames(self.vae, self._vae_denormalize(x0[None])[0])
        if self._preview_projection is None:
            self._preview_projection = preview.fit_latent_rgb_projection(self.vae)
        return preview.projection_frames(x0, self._preview_projection, self.vae_scale_factor_spatial)

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, tiling: bool = False) -> torch.Tensor:
        """[1, 16, F_vid, h, w] -> video [1, 3, F, H, W] in [-1, 1], decoded in fp32 (§4.9). `tiling` tiles this
        decode only (a memory mode's "vae_tiling" keeps it on for every decode)."""
        switch_on = tiling and not getattr(self.vae, "use_tiling", False)
        if switch_on:
            self.vae.enable_tiling()
        try:
            vae_device = next(self.vae.parameters()).device
            z = self._vae_denormalize(latents.float()).to(vae_device, self.vae.dtype)
            video = self.vae.decode(z, return_dict=False)[0]
        finally:
            if switch_on:  # the next job decodes as it asks, not as this one did
                self.vae.disable_tiling()
        return video.float().clamp(-1, 1)

    # ------------------------------------------------------------------ denoising loop
    def _conditions(
        self, latents: torch.Tensor, run: _Denoising, span: tuple[int, int] | None = None
    ) -> dict[Branch, dict[str, torch.Tensor]]:
        """Transformer inputs of every branch, for the whole clip or for the window `span` of its latent frames."""
        audio_embeds = run.audio_embeds
        if span is not None:
            latents = window_slice(latents, span, run.windows.num_frames, dim=2)
            audio_embeds = window_slice(audio_embeds, span, run.windows.num_frames, dim=1)
        return {
            b: self.build_condition(latents, b, audio_embeds=audio_embeds, num_ref=run.num_ref, **run.text_and_images)
            for b in run.branches
        }

    def _denoise_step(self, step: int, t: torch.Tensor, latents: torch.Tensor, run: _Denoising) -> torch.Tensor:
        """One scheduler step. A clip in one window takes the plain step; a longer one blends its windows'
        velocities (engine/long_video.py) and reports every window to the callback."""
        plan = run.windows.for_step(step)
        if len(plan) == 1:
            noise_pred = self._predict(run.schedule, t, self._conditions(latents, run), run.batched)
            latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
            return self._step_end(run, step, t, self._keep_source(run, step, latents), noise_pred)
        noise_pred = torch.zeros_like(latents)
        for index, (span, weight) in enumerate(plan):
            conditions = self._conditions(latents, run, span)
            velocity = self._predict(run.schedule, t, conditions, run.batched, cache_key=f"@window{index}")
            accumulate_window(noise_pred, velocity, span, weight, len(plan), run.windows.num_frames)
            if index < len(plan) - 1:
                self._step_end(run, step, t, latents, noise_pred, window=(index, len(plan)), span=span)
        latents = self._keep_source(run, step, self.scheduler.step(noise_pred, t, latents, return_dict=False)[0])
        return self._step_end(run, step, t, latents, noise_pred, window=(len(plan) - 1, len(plan)), span=plan[-1][0])

    def _keep_source(self, run: _Denoising, step: int, latents: torch.Tensor) -> torch.Tensor:
        """Dubbing: latents outside the mask become the source latents noised to the level the next step starts from
        (the blending of diffusers' inpainting pipelines and RePaint), so only the masked region is generated. The
        windowed path blends too: its scheduler step is taken on the whole clip, so no per-window slicing is needed.
        After the last step the outside is the source latents themselves."""
        if run.source is None:
            return latents
        source, mask, noise = run.source
        timesteps = self.scheduler.timesteps
        known = source
        if step + 1 < len(timesteps) and noise is not None:  # no noise: held clean (motion_hold="clean")
            t_next = timesteps[step + 1 : step + 2]
            if hasattr(self.scheduler, "scale_noise"):  # flow-matching Euler
                known = self.scheduler.scale_noise(source, t_next, noise)
            else:  # UniPC: add_noise with flow sigmas is the same interpolation (1 - sigma) x0 + sigma noise
                known = self.scheduler.add_noise(source, noise, t_next)
        f_vid = source.shape[2]
        video = mask * latents[:, :, :f_vid] + (1 - mask) * known
        return torch.cat([video, latents[:, :, f_vid:]], dim=2)

    def prepare_source(self, video, mask, num_frames: int, height: int, width: int, noise: torch.Tensor):
        """Dubbing inputs -> `_Denoising.source`: the source frames encoded with the VAE (posterior mean, normalised),
        the mask on the latent grid (engine/dub.py: a pixel mask is reduced there) and the starting noise of the video
        frames, reused at every step like diffusers' inpainting pipelines."""
        pixels = known_latents.video_tensor(video, num_frames, height, width)
        source = self._vae_encode(pixels).to(noise.device)
        keep = known_latents.latent_mask_tensor(mask, source.shape[2:], self.vae_scale_factor_spatial)
        return source, keep.to(noise.device), noise[:, :, : source.shape[2]].clone()

    def prepare_motion(self, motion_frames, height: int, width: int, noise: torch.Tensor, clean: bool = False):
        """Motion frames -> `_Denoising.source`: their latents, a mask that keeps all of them, and the starting noise of
        those latent frames (None with `clean`: held un-noised). `_keep_source` then holds the clip's first latent
        frames to them at every step."""
        pixels = known_latents.video_tensor(motion_frames, len(motion_frames), height, width)
        source = self._vae_encode(pixels).to(noise.device)
        keep = torch.zeros(1, 1, *source.shape[2:], device=noise.device)
        return source, keep, None if clean else noise[:, :, : source.shape[2]].clone()

    def _step_end(self, run: _Denoising, step, t, latents, noise_pred, window=None, span=None) -> torch.Tensor:
        """Call `callback_on_step_end`, then stop if it asked to. Returns the (possibly replaced) latents; the
        callback's latents are used only at a step's end (after the last window)."""
        if run.callback is not None:
            available = {"latents": latents, "noise_pred": noise_pred}
            callback_kwargs = {k: available[k] for k in run.tensor_inputs}
            if window is not None:
                callback_kwargs.update(window=window, window_span=span)
            callback_outputs = run.callback(self, step, t, callback_kwargs) or {}
            latents = callback_outputs.pop("latents", latents)
        if self._interrupt:
            if window is None:
                raise GenerationInterrupted(f"stopped after step {step + 1} of {run.num_steps}")
            raise GenerationInterrupted(
                f"stopped in step {step + 1} of {run.num_steps}, after window {window[0] + 1} of {window[1]}"
            )
        return latents

    # ------------------------------------------------------------------ main
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | None = None,
        image=None,
        audio=None,
        video=None,
        mask=None,
        motion_frames=None,
        motion_hold: str = "noised",
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int | None = None,
        guidance: GuidanceSchedule | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        resize_mode: str = "pad",
        batch_branches: bool | None = None,
        vae_tiling: bool = False,
        window_frames: int | None = None,
        window_overlap: int = DEFAULT_WINDOW_OVERLAP,
        window_shift: bool = True,
        color_match: bool = True,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ):
        r"""Generate a video.

        Long by design: it is the diffusers `__call__` shape (DESIGN.md), one numbered step after another (check
        inputs -> encode text -> encode audio -> references -> latents -> denoising loop -> decode -> output), most of
        its length being this argument list; each step's work lives in its own method.

        Args:
            prompt: scene and action. image: one reference (path, PIL image) or a list of them (one slot each).
            audio: path of any audio/video file, or a float32 16 kHz waveform. None -> no audio (TI / T mode).
            video / mask: dubbing (engine/dub.py). `video` is the source clip (frames [F, H, W, 3] uint8 or in [0, 1],
                F >= num_frames, H, W = height, width); `mask` is 1 where to generate, 0 where to keep the source:
                pixels [F, H, W] or the latent grid [F_lat, H/8, W/8]. Outside the mask the latents are the source's,
                noised to each step's level (RePaint / diffusers inpainting); engine.dub composites the pixels.
            height / width / num_inference_steps: None -> the model's (`sampling_defaults`, set by its loader).
            motion_frames: chunked generation (engine/live.py): the last 4m+1 frames [M, H, W, 3] of the chunk before,
                which begin this clip. Their latents are held as known latents, noised to each step's level (the
                dubbing mechanism above), so the clip continues them; the rest of the clip is generated.
                `motion_hold="clean"` holds them clean at every step instead (InfiniteTalk's conditioning), for a
                model fine-tuned with the continuation objective (training/continuation.py).
            num_frames: None -> from the audio length snapped to 4n+1 (97 without audio); else snapped to 4n+1.
            guidance: a `GuidanceSchedule` (a stored one: `GuidanceSchedule.from_dict`); None -> the model's preset
                for this mode (official, or a distilled student's single pass).
            prompt_embeds / negative_prompt_embeds: [1, L, text_dim], L <= 512; zero-padded to 512 (§4.3).
            audio_embeds: precomputed windows [F_vid, 8, 5, C] (or with the reference windows, [F_total, ...]).
            batch_branches: evaluate the guidance branches in one batched forward (None: when memory allows).
            window_frames: long videos: denoise in temporal windows of this many frames (4n+1; 97 = the trained
                length) blended at every step (engine/long_video.py); `window_overlap` latent frames are shared by
                neighbours, `window_shift` moves the grid every step, `color_match` evens colour across windows.
                A clip that fits in one window gives exactly the plain result.
            callback_on_step_end: `fn(pipe, step, timestep, callback_kwargs) -> dict`, called after every step with
                the requested tensors (`latents`, `noise_pred`; always the whole clip's). In a step with several
                windows it is called after every window, with `callback_kwargs["window"] = (index, count)` and
                `["window_span"] = (start, end)` latent frames; only the last call of a step comes after the
                scheduler step, and only its returned `latents` are used. Set `pipe._interrupt = True` to stop:
                the call then raises `GenerationInterrupted`.

        Long on purpose (diffusers' convention): the numbered steps read top to bottom as the method; each step's
        work is in a helper method.
        """
        started = time.perf_counter()
        self._interrupt = False
        self._attention_kwargs = attention_kwargs
        images = [] if image is None else (list(image) if isinstance(image, (list, tuple)) else [image])
        mode = mode_of(images, audio if audio_embeds is None else audio_embeds)
        defaults = self.sampling_defaults
        height = defaults.height if height is None else height
        width = defaults.width if width is None else width
        num_inference_steps = defaults.num_inference_steps if num_inference_steps is None else num_inference_steps

        # 1. Check inputs
        self.check_inputs(prompt, height, width, num_frames, num_inference_steps, images, audio, prompt_embeds,
                          window_frames, window_overlap)  # fmt: skip
        schedule = self._check_call(output_type, callback_on_step_end_tensor_inputs, guidance, mode)
        device = self._execution_device
        if video is not None or mask is not None:  # cheap shape checks before any encoder runs
            known_latents.check_video_and_mask(video, mask, height, width)
        if motion_frames is not None:
            known_latents.check_motion_frames(motion_frames, video, num_frames, height, width)
        known_latents.check_motion_hold(motion_hold)

        # 2. Encode text (any given embeddings are zero-padded to 512 tokens like the encoder's own)
        prompt_embeds, negative_prompt_embeds = self._text_embeds(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, device
        )
        t_text = time.perf_counter()

        # 3. Encode audio (decides the frame count when none is given) and lay out the windows
        if audio_embeds is None and audio is not None:
            audio_embeds, num_frames = self.encode_audio(audio, num_frames)
        if num_frames is None:
            num_frames = (audio_embeds.shape[0] - 1) * 4 + 1 if audio_embeds is not None else DEFAULT_FRAMES
        num_frames = audio_lib.snap_frames(num_frames)
        f_vid = audio_lib.latent_frame_count(num_frames)
        windows = ContextWindows.single(f_vid)
        self._video_latent_frames = f_vid
        if window_frames is not None:
            window = audio_lib.latent_frame_count(audio_lib.snap_frames(window_frames))
            windows = ContextWindows(f_vid, window, window_overlap, window_shift)
        t_audio = time.perf_counter()

        # 4. Encode reference image(s); one trailing latent slot per image, one zero slot when there is none
        h, w = height // self.vae_scale_factor_spatial, width // self.vae_scale_factor_spatial
        ref_latents = self.encode_image(images, height, width, resize_mode, device) if images else None
        num_ref = ref_latents.shape[2] if ref_latents is not None else 1
        f_total = f_vid + num_ref
        zero_latents = self.zero_vae_latents(windows.length + num_ref, height, width) if self.variant == "17b" else None
        audio_embeds = self._pad_audio(audio_embeds, f_vid, num_ref, device)
        t_image = time.perf_counter()

        # 5. Prepare latents and timesteps
        if generator is None and latents is None:
            seed = random.randint(0, 2**31 - 1) if seed is None else int(seed)
            generator = torch.Generator("cpu").manual_seed(seed)
        shape = (1, self.transformer.config.out_channels, f_total, h, w)
        latents = self.prepare_latents(shape, generator, device, latents)
        source = None if video is None else self.prepare_source(video, mask, num_frames, height, width, latents)
        if motion_frames is not None:
            source = self.prepare_motion(motion_frames, height, width, latents, clean=motion_hold == "clean")
            if motion_hold == "clean":  # the first step already sees them
                latents = torch.cat([source[0].to(latents), latents[:, :, source[0].shape[2] :]], dim=2)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if batch_branches is None:
            num_tokens = (windows.length + num_ref) * (h // 2) * (w // 2)  # tokens of one forward
            batch_branches = self._auto_batch(num_tokens, max(schedule.passes_per_step(timesteps)), device)
        run = _Denoising(
            schedule=schedule,
            branches=set(schedule.all_branches(int(t.item()) for t in timesteps)),
            batched=batch_branches,
            windows=windows,
            num_ref=num_ref,
            audio_embeds=audio_embeds,
            text_and_images={
                "prompt_embeds": prompt_embeds,
                "negative_prompt_embeds": negative_prompt_embeds,
                "ref_latents": ref_latents,
                "zero_latents": zero_latents,
            },
            callback=callback_on_step_end,
            tensor_inputs=callback_on_step_end_tensor_inputs,
            num_steps=len(timesteps),
            source=source,
        )
        plan = plan_run(schedule, timesteps, num_frames, height, width, num_ref, window_frames, window_overlap,
                        window_shift, bool(batch_branches), self.vae_scale_factor_spatial, mode=mode)  # fmt: skip

        # 6. Denoising loop (long videos: every step blends its windows)
        step_times = []
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                step_start = time.perf_counter()
                latents = self._denoise_step(i, t, latents, run)
                step_times.append(time.perf_counter() - step_start)
                progress_bar.update()

        # 7. Drop the reference slots and decode
        t_denoise = time.perf_counter()
        frames = self._output_frames(latents[:, :, :f_vid], output_type, vae_tiling, windows, color_match)
        self.maybe_free_model_hooks()
        timings = {
            "text_s": t_text - started,
            "audio_s": t_audio - t_text,
            "image_s": t_image - t_audio,
            "denoise_s": t_denoise - t_image,
            "decode_s": time.perf_counter() - t_denoise,
            "total_s": time.perf_counter() - started,
            "step_s": step_times,
            "passes_per_step": schedule.passes_per_step(timesteps),
            "batched_branches": bool(batch_branches),
            "plan": plan.to_dict(),  # what was run, as engine.plan plans it before a run (the studio's estimate)
        }
        output = HuMoPipelineOutput(frames=[frames], seed=seed, mode=mode, num_frames=num_frames, timings=timings)
        return output if return_dict else (output.frames,)

    def _check_call(self, output_type, tensor_inputs, guidance, mode: str) -> GuidanceSchedule:
        """The call's own checks; returns the validated schedule (the one given, else the model's for the mode)."""
        if output_type not in ("np", "pil", "latent"):
            raise InputError(f"output_type must be 'np', 'pil' or 'latent' (got {output_type!r}).", "output_type")
        unknown = set(tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise InputError(
                f"callback_on_step_end_tensor_inputs: choose from {self._callback_tensor_inputs} (got {sorted(unknown)}).",
                field="callback_on_step_end_tensor_inputs",
            )
        if guidance is not None and not isinstance(guidance, GuidanceSchedule):
            raise InputError(f"guidance must be a GuidanceSchedule (got {type(guidance).__name__}); read a stored one "
                             "with GuidanceSchedule.from_dict.", field="guidance")  # fmt: skip
        schedule = run_schedule(guidance, self.sampling_defaults, self.variant, mode)
        schedule.validate()
        return schedule

    def _text_embeds(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, device):
        """(prompt, negative) embeddings on `device`, encoded where not given, zero-padded to 512 tokens."""
        if prompt_embeds is None or negative_prompt_embeds is None:
            pos, neg = self.encode_prompt(prompt or "", negative_prompt, device=device)
            prompt_embeds = pos if prompt_embeds is None else prompt_embeds
            negative_prompt_embeds = neg if negative_prompt_embeds is None else negative_prompt_embeds
        return (
            self._pad_text(prompt_embeds.to(device), "prompt_embeds"),
            self._pad_text(negative_prompt_embeds.to(device), "negative_prompt_embeds"),
        )

    def _output_frames(self, video_latents, output_type: str, vae_tiling: bool, windows, color_match: bool):
        """The video's latents as `output_type`: the latents, float frames [F, H, W, 3] in [0, 1], or PIL images
        (a windowed clip's colours evened across windows)."""
        if output_type == "latent":
            return video_latents
        video = self.decode_latents(video_latents, tiling=vae_tiling)[0]  # [3, F, H, W]
        array = ((video.permute(1, 2, 3, 0) + 1) / 2).cpu().numpy().astype(np.float32)
        if windows.windowed and color_match:
            array = match_colors(array, self.vae_scale_factor_temporal * (windows.window - 1) + 1)
        return array if output_type == "np" else [PIL.Image.fromarray(f) for f in media.to_uint8(array)]

    def _pad_audio(self, audio_embeds, f_vid: int, num_ref: int, device) -> torch.Tensor:
        """[F_vid, 8, 5, C] windows -> [1, F_total, 8, 5, C] with zero windows for the reference slots (§4.4).
        No audio -> all zeros (the official null audio, which still runs through audio_proj)."""
        cfg = self.transformer.config
        if audio_embeds is None:
            shape = (f_vid + num_ref, cfg.audio_window, cfg.audio_bands, cfg.audio_dim)
            return torch.zeros(1, *shape, device=device)
        audio_embeds = audio_embeds.to(device, torch.float32)
        if audio_embeds.ndim == 5:
            audio_embeds = audio_embeds[0]
        if audio_embeds.shape[0] == f_vid + num_ref:
            return audio_embeds[None]
        if audio_embeds.shape[0] < f_vid:  # audio shorter than the video: trailing windows are zeros (§4.4)
            pad = audio_embeds.new_zeros(f_vid - audio_embeds.shape[0], *audio_embeds.shape[1:])
            audio_embeds = torch.cat([audio_embeds, pad])
        audio_embeds = audio_embeds[:f_vid]
        ref = audio_embeds.new_zeros(num_ref, *audio_embeds.shape[1:])
        return torch.cat([audio_embeds, ref])[None]


def build_condition(
    variant: str,
    latents: torch.Tensor,
    branch: Branch,
    *,
    prompt_embeds: torch.Tensor,
    negative_prompt_embeds: torch.Tensor,
    ref_latents: torch.Tensor | None,
    zero_latents: torch.Tensor | None,
    audio_embeds: torch.Tensor,
    num_ref: int,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Transformer inputs of one guidance branch for latents [B, 16, F_total, h, w] (§2.3, §2.4, §4.6).

    Shared by the pipeline and the trainer, so training sees exactly the conditioning inference uses.
    17b: [x ; mask (1 on the reference slots) ; zero-VAE latents with the reference latents in the slots when the
    branch has the image]. 1.7b: the reference slots of x overwritten by the reference latents or zeros.
    """
    f_total = latents.shape[2]
    f_vid = f_total - num_ref
    use_ref = branch.image == "ref" and ref_latents is not None
    if variant == "17b":
        mask = torch.zeros_like(latents[:, :4])
        mask[:, :, f_vid:] = 1.0
        zero = zero_latents.to(latents.device, latents.dtype).expand(latents.shape[0], -1, -1, -1, -1)
        if use_ref:
            cond = torch.cat([zero[:, :, :f_vid], ref_latents.to(latents).expand_as(latents[:, :, f_vid:])], dim=2)
        else:
            cond = zero[:, :, :f_total]
        hidden_states = torch.cat([latents, mask, cond], dim=1)
    else:
        slot = (
            ref_latents.to(latents).expand_as(latents[:, :, f_vid:])
            if use_ref
            else torch.zeros_like(latents[:, :, f_vid:])
        )
        hidden_states = torch.cat([latents[:, :, :f_vid], slot], dim=2)
    text = prompt_embeds if branch.text == "pos" else negative_prompt_embeds
    audio = audio_embeds if branch.audio == "on" else torch.zeros_like(audio_embeds)
    return {
        "hidden_states": hidden_states.to(dtype),
        "encoder_hidden_states": text.to(dtype),
        "audio_embeds": audio.to(dtype),
    }


__all__ = [
    "HuMoPipeline",
    "HuMoPipelineOutput",
    "GenerationInterrupted",
    "WAN_NEGATIVE_PROMPT",
    "mode_of",
    "build_condition",
]
