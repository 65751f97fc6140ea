"""HuMo-nano: the whole method at CPU size, trained on the synthetic world (issue #7).

    python -m training nano                 # world -> VAE -> base -> stage 1 -> stage 2 -> assets/humo-nano
    python -m training ablations            # the paper's Table 3 in miniature (README "HuMo-nano")

HuMo fine-tunes a pretrained Wan2.1 text-to-video model. There is no Wan at this size, so the recipe adds one step
in front of the paper's two stages, with the same trainer (training/trainer.py):

  0. world      `WorldExample`s rendered in memory by training/synth.py (identity, scene, speech, face boxes).
  1. VAE        a small `AutoencoderKLWan` (the real 4x/8x compression, 16 latent channels) trained to reconstruct
                the world in phases of longer and longer windows (5, 9, 25 frames; see `train_vae`), faces weighted,
                then its decoder alone on whole clips.
  2. encoders   umT5 and Whisper encoders of the pipeline's interface, small real modules: umT5 fixed random, the
                Whisper encoder pre-trained to hear loudness (see `train_audio_encoder`); the transformer learns to
                read both, as HuMo learns to read the frozen umT5/Whisper.
  3. base       stage 0 of the trainer: the DiT pretrained as text-to-video, all parameters, no reference (Wan),
                in legs (each from the previous leg's weights with a fresh optimiser).
  4. stage 1    subject preservation: text + reference, self-attention only (minimal-invasive).
  5. stage 2    + audio: self-attention + audio modules + focus-by-predicting head, task mix 0.2 -> 0.5.

Everything is seeded; `NanoBudget` fixes the sizes and step counts (the README states the ones used).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.components import (
    build_feature_extractor,
    build_tiny_audio_encoder,
    build_tiny_text_encoder,
    load_tiny_tokenizer,
    load_whisper_encoder,
)
from engine.nano import NANO_SHIFT
from training import synth
from training.analysis import locate_faces, score_video
from training.cache import frames_to_tensor as video_tensor

NANO_VAE = {
    "base_dim": 16,
    "z_dim": 16,
    "dim_mult": [1, 2, 2, 2],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}


@dataclass
class NanoBudget:
    """Sizes, step counts and seeds of one HuMo-nano build. `quick()` is the seconds-long version for tests."""

    height: int = 64
    width: int = 64
    frames: int = 49  # 2 s at 25 fps (4n+1)
    clips: int = 240
    identities: int = 120
    heldout: int = 8
    # VAE phases: (steps, frames per window, batch, learning rate[, "decoder"]); see `train_vae`
    vae_phases: tuple = ((2400, 5, 4, 1e-3), (600, 9, 4, 5e-4), (300, 25, 2, 2.5e-4), (400, 49, 1, 2e-4, "decoder"))
    audio_steps: int = 600  # the small Whisper encoder's pre-training (see `train_audio_encoder`)
    base_steps: tuple = (1000, 2000, 3000)  # legs, each from the previous leg's weights with a fresh optimiser
    stage1_steps: int = 1500
    stage2_steps: int = 5000
    batch_size: int = 6
    base_lr: float = 5e-4
    stage_lr: float = 2e-4
    # weights averaged over the last ~1/(1 - decay) steps: with a constant learning rate the raw weights of a small
    # batch are noisy, and diffusion samples show it (legs trained before this was set had none)
    ema_decay: float = 0.998
    sample_steps: int = 30
    seed: int = 0

    @classmethod
    def quick(cls) -> NanoBudget:
        return cls(
            height=32, width=32, frames=9, clips=4, identities=2, heldout=2,
            vae_phases=((2, 5, 2, 1e-3), (1, 9, 1, 5e-4), (1, 9, 1, 2e-4, "decoder")),
            audio_steps=2, base_steps=(2,), stage1_steps=2, stage2_steps=2, batch_size=2, sample_steps=2,
        )  # fmt: skip

    def scaled(self, factor: float) -> NanoBudget:
        """The same build with the DiT training steps multiplied by `factor` (the ablations' fixed budget)."""
        s = lambda n: max(1, int(round(n * factor)))  # noqa: E731
        # no EMA: over runs of a few hundred steps it would still be mostly the starting weights
        return replace(self, stage1_steps=s(self.stage1_steps), stage2_steps=s(self.stage2_steps), ema_decay=0.0)


# ---------------------------------------------------------------------------------------------- the world
@dataclass
class WorldExample:
    """One clip of the world with everything the scores need: RGB uint8 video [T, H, W, 3], 16 kHz waveform,
    ground-truth face boxes [T, 4] and a reference image of the same person elsewhere."""

    name: str
    identity: synth.Identity
    scene: synth.Scene
    caption: str
    video: np.ndarray
    waveform: np.ndarray
    boxes: np.ndarray
    reference: np.ndarray
    reference_scene: synth.Scene = field(default_factory=synth.Scene)


def sample_world(
    count: int, *, frames: int, size: tuple[int, int], seed: int, identities: int | None = None, prefix: str = "w"
) -> list[WorldExample]:
    """`count` clips of `identities` people (each person in several scenes). Distinct seeds give disjoint draws."""
    rng = np.random.default_rng([seed, 11])
    people = [synth.sample_identity(rng, f"{prefix}{i:03d}") for i in range(identities or count)]
    out = []
    for i in range(count):
        person = people[i % len(people)]
        scene, ref_scene = synth.sample_scene(rng), synth.sample_scene(rng)
        video, wav, boxes = synth.render_clip(
            person, scene, frames=frames, size=size, seed=int(rng.integers(1 << 31)), audio="speech"
        )
        reference = synth.render_reference(person, ref_scene, size, rng)
        caption = synth.caption_for(person, scene)
        out.append(WorldExample(f"{prefix}{i:04d}", person, scene, caption, video, wav, boxes, reference, ref_scene))
    return out


def face_pixel_mask(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Filled face ellipses of the boxes: float32 [T, H, W] in {0, 1}."""
    masks = np.zeros((len(boxes), *size), np.float32)
    for t, box in enumerate(boxes):
        if np.isfinite(box).all():
            x0, y0, x1, y1 = box
            centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
            axes = (max(1, int(round((x1 - x0) / 2))), max(1, int(round((y1 - y0) / 2))))
            cv2.ellipse(masks[t], centre, axes, 0, 0, 360, 1.0, -1)
    return masks


def latent_face_mask(boxes: np.ndarray, size: tuple[int, int], scale: int = 8) -> torch.Tensor:
    """[F_lat, h, w]: the face-covered fraction of each latent cell, on the frame each latent frame starts at."""
    pixels = face_pixel_mask(boxes, size)
    picks = [0] + list(range(4, len(boxes), 4))  # latent 0 <- frame 0, latent j <- frames 4j-3..4j (use 4j)
    h, w = size[0] // scale, size[1] // scale
    cells = [cv2.resize(pixels[i], (w, h), interpolation=cv2.INTER_AREA) for i in picks]
    return torch.from_numpy(np.stack(cells)).float()


# ---------------------------------------------------------------------------------------------- components
def build_components(seed: int = 0, audio_encoder=None) -> dict:
    """The small encoders and the tokenizer shipped in assets/tokenizer: a fixed random umT5 (a caption's words
    are distinct tokens, which is all the DiT needs to read) and the given Whisper encoder (random when None)."""
    tokenizer = load_tiny_tokenizer()
    return {
        "tokenizer": tokenizer,
        "text_encoder": build_tiny_text_encoder(len(tokenizer), seed),
        "audio_encoder": audio_encoder if audio_encoder is not None else build_tiny_audio_encoder(seed),
        "feature_extractor": build_feature_extractor(),
    }


def train_audio_encoder(examples: list[WorldExample], budget: NanoBudget, log=print, batch: int = 8):
    """The small Whisper encoder, pre-trained to hear the voice. Returns (encoder, R^2 on new voices).

    A randomly initialised Whisper of this size is all but deaf: its convolutions start at std 0.02, so the mel
    content is ~1% of each hidden state next to the positional embeddings (two clips' windowed features differ by
    0.005 at std 0.7; a ridge read-out still finds the loudness, R^2 0.85, but a DiT fine-tuned for 5000 steps on
    such features made byte-identical videos for swapped voices). Real Whisper's features carry speech because ASR
    training put it there; here every hidden state the pipeline reads (all five bands) is trained so that a linear
    read-out gives the loudness of each 20 ms step (the clips' features then differ by 0.29). The read-outs are
    thrown away; the encoder never sees video or mouths.
    """
    encoder = build_tiny_audio_encoder(budget.seed)
    extractor = build_feature_extractor()
    positions = len(examples[0].waveform) * 50 // extractor.sampling_rate  # Whisper steps are 20 ms

    def features_and_targets(waveforms):
        mels = extractor(list(waveforms), sampling_rate=extractor.sampling_rate, return_tensors="pt").input_features
        loud = np.stack([synth.loudness_per_frame(w, positions, fps=50) for w in waveforms])
        return mels, torch.from_numpy(loud)

    mels, targets = features_and_targets([ex.waveform for ex in examples])
    rng = np.random.default_rng([budget.seed, 23])  # new voices: pitches and rhythms the world never drew
    val_mels, val_targets = features_and_targets(
        [synth.synth_speech(len(examples[0].waveform), rng, pitch_hz=float(rng.uniform(100, 220))) for _ in range(16)]
    )
    heads = torch.nn.ModuleList(
        torch.nn.Linear(encoder.config.d_model, 1) for _ in range(encoder.config.encoder_layers + 1)
    )

    def predictions(mel):
        states = encoder(mel, output_hidden_states=True).hidden_states
        return [head(h[:, :positions]).squeeze(-1) for head, h in zip(heads, states)]

    optimizer = torch.optim.AdamW([*encoder.parameters(), *heads.parameters()], lr=1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(budget.seed)
    encoder.train()
    for step in range(budget.audio_steps):
        idx = torch.randint(len(examples), (min(batch, len(examples)),), generator=gen)
        loss = sum(torch.nn.functional.mse_loss(p, targets[idx]) for p in predictions(mels[idx]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0:
            log(f"audio encoder step {step + 1}/{budget.audio_steps} loss {loss.item():.4f}")
    encoder.eval()
    with torch.no_grad():
        worst = min(_r2(p, val_targets) for p in predictions(val_mels))
    log(f"audio encoder: loudness R^2 {worst:.3f} on new voices (worst hidden state)")
    return encoder, worst


def _r2(prediction: torch.Tensor, target: torch.Tensor) -> float:
    return float(1 - (prediction - target).pow(2).mean() / target.var(unbiased=False).clamp_min(1e-12))


def save_audio_encoder(audio_encoder, folder: Path) -> None:
    """A Whisper checkpoint folder (`encoder.`-prefixed keys) that engine.components.load_whisper_encoder reads."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    audio_encoder.config.save_pretrained(folder)
    state = {f"encoder.{k}": v.contiguous() for k, v in audio_encoder.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))


def audio_fingerprint(audio_encoder) -> str:
    """A short hash of the encoder's weights: the cache and stage-2 runs built on other audio features are stale."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(audio_encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().numpy().tobytes())
    return digest.hexdigest()[:10]


def new_transformer(seed: int = 0):
    from engine.models import PRESETS, HuMoTransformer3DModel

    torch.manual_seed(seed)
    return HuMoTransformer3DModel(**PRESETS["humo-nano"]).eval()


def make_pipeline(vae, transformer, encoders: dict):
    from engine.pipeline import HuMoPipeline
    from engine.schedulers import make_scheduler

    pipe = HuMoPipeline(
        vae=vae, transformer=transformer, scheduler=make_scheduler("unipc", shift=NANO_SHIFT), **encoders
    )
    pipe.model_id = "humo-nano"
    return pipe


# ---------------------------------------------------------------------------------------------- VAE
def _vae_windows(
    examples: list[WorldExample], batch: int, rng: np.random.Generator, window: int, reference_share: float = 0.25
):
    """A batch of random `window`-frame clips [B, 3, T, H, W] in [-1, 1] and their face weights [B, 1, T, H, W]."""
    videos, weights = [], []
    for _ in range(batch):
        ex = examples[int(rng.integers(len(examples)))]
        start = int(rng.integers(0, max(1, len(ex.video) - window + 1)))
        clip = ex.video[start : start + window]
        if rng.random() < reference_share:  # references are encoded as 1-frame clips: train that path on them too
            clip = np.repeat(ex.reference[None], len(clip), axis=0)
            weight = np.ones((len(clip), *ex.reference.shape[:2]), np.float32)
        else:
            weight = 1.0 + 3.0 * face_pixel_mask(ex.boxes[start : start + window], ex.video.shape[1:3])
        videos.append(video_tensor(clip)[0])
        weights.append(torch.from_numpy(weight)[None])
    return torch.stack(videos), torch.stack(weights)


def train_vae(examples: list[WorldExample], budget: NanoBudget, log=print, vae=None, phase: int = 1):
    """One phase of VAE training (`budget.vae_phases[phase - 1]`): face-weighted L1 + L2 reconstruction, with the
    phase's own seed and optimiser, so a build resumed between phases gives the same weights.

    Phase 1 (5-frame windows: the causal first frame + one 4-frame chunk) learns the frame codec. The later phases
    train longer windows: from the second chunk on, every causal convolution reads a cache of the previous chunk's
    features, a recurrence phase 1 never runs and whose error grows chunk by chunk (measured after phase 1: 23 dB
    on frames 1-4, 8 dB by frame 12; after 9-frame windows the drop starts at frame 9 instead).

    A phase marked "decoder" trains the decoder alone on whole clips (the encoder, and so the latents, the
    statistics and any cache encoded with them, stay as they are): after the 25-frame phase the decoder still drifted
    in colour past frame 25 (identity and mouth motion of round-tripped clips scored below chance).
    """
    from diffusers import AutoencoderKLWan

    steps, window, batch, lr, *part = budget.vae_phases[phase - 1]
    decoder_only = part == ["decoder"]
    torch.manual_seed(budget.seed + phase - 1)
    vae = vae if vae is not None else AutoencoderKLWan(**NANO_VAE)
    trained = [
        p for n, p in vae.named_parameters() if not decoder_only or n.startswith(("decoder.", "post_quant_conv."))
    ]
    optimizer = torch.optim.AdamW(trained, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    rng = np.random.default_rng([budget.seed, 2 + phase])
    started = time.perf_counter()
    vae.train()
    for step in range(1, steps + 1):
        # the pipeline never decodes a reference (its latent frame is dropped first): the decoder phase skips them
        video, weight = _vae_windows(examples, batch, rng, window, reference_share=0.0 if decoder_only else 0.25)
        # The posterior mean plus a little noise, not a full posterior sample: the Wan VAE starts with logvar ~ 0
        # (std 1), and at this budget the decoder then never gets past predicting the mean image. The noise keeps
        # the decoder tolerant of the small latent errors a diffusion model makes.
        with torch.set_grad_enabled(not decoder_only):
            z = vae.encode(video).latent_dist.mode()
        recon = vae.decode(z + 0.05 * z.detach().std() * torch.randn_like(z)).sample
        error = (recon - video) * weight
        rec_loss = error.abs().mean()
        loss = rec_loss + error.pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps:
            log(
                f"vae phase {phase} step {step}/{steps} l1 {rec_loss.item():.4f} ({time.perf_counter() - started:.0f} s)"
            )
    return vae.eval()


@torch.no_grad()
def set_latent_statistics(vae, examples: list[WorldExample]) -> None:
    """Per-channel mean/std of the posterior means, stored as `latents_mean/std` (the pipeline normalises with
    them, so the diffusion model sees unit-variance latents as with the real Wan VAE)."""
    z = torch.cat([vae.encode(video_tensor(ex.video)).latent_dist.mode() for ex in examples], dim=2)
    mean = z.mean(dim=(0, 2, 3, 4))
    std = z.std(dim=(0, 2, 3, 4)).clamp_min(1e-3)
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())


@torch.no_grad()
def vae_psnr(vae, examples: list[WorldExample]) -> float:
    """Mean reconstruction PSNR (dB) of whole clips: how much of the world the VAE can show at all."""
    values = []
    for ex in examples:
        video = video_tensor(ex.video)
        recon = vae.decode(vae.encode(video).latent_dist.mode()).sample.clamp(-1, 1)
        mse = ((recon - video) / 2).pow(2).mean().item()
        values.append(10 * np.log10(1.0 / max(mse, 1e-10)))
    return float(np.mean(values))


# ---------------------------------------------------------------------------------------------- cache + stages
def encode_world(pipe, examples: list[WorldExample], cache_dir: Path, log=print, audio_tag: str = "") -> Path:
    """The trainer's cache (training/cache.py format) from in-memory examples, with the pipeline's encoders;
    index.json records `audio_tag` (the audio encoder's fingerprint) so a cache of other features is not reused."""
    from training.cache import _atomic_save, encode_example

    cache_dir.mkdir(parents=True, exist_ok=True)
    _, negative = pipe.encode_prompt("", None)
    _atomic_save({"negative_prompt_embeds": negative[0].float()}, cache_dir / "negative.safetensors")
    size = examples[0].video.shape[1:3]
    for index, ex in enumerate(examples):
        out = cache_dir / f"{ex.name}.safetensors"
        if not out.exists():
            tensors = encode_example(
                pipe, video_tensor(ex.video), ex.reference, ex.caption, ex.waveform,
                face_mask=latent_face_mask(ex.boxes, size),
            )  # fmt: skip
            _atomic_save(tensors, out)
        if (index + 1) % 50 == 0:
            log(f"encoded {index + 1}/{len(examples)} clips")
    index = {
        "clips": [ex.name for ex in examples], "failed": {}, "model_id": "humo-nano", "source": str(cache_dir),
        "audio_encoder": audio_tag,
    }  # fmt: skip
    (cache_dir / "index.json").write_text(json.dumps(index, indent=1))
    return cache_dir


def run_stage(name: str, work: Path, base: Path, budget: NanoBudget, steps: int, **config) -> Path:
    """One trainer run from the `base` transformer folder; returns its final folder (reused when it exists: the
    folder name carries the step count, so another budget trains anew)."""
    from training.trainer import TrainConfig, fit

    run_dir = work / "runs" / f"{name}-{steps}"
    final = run_dir / "final"
    if (final / "config.json").exists():
        return final
    shutil.rmtree(run_dir, ignore_errors=True)
    train_config = TrainConfig(
        cache_dir=str(work / "cache"),
        run_dir=str(run_dir),
        base_model=str(base),
        steps=steps,
        **{
            "batch_size": budget.batch_size,
            "learning_rate": budget.stage_lr,
            "seed": budget.seed,
            "ema_decay": budget.ema_decay,
            **config,
        },
        timestep_shift=NANO_SHIFT,
        checkpoint_every=0,
        log_every=10,
    )
    summary = fit(train_config)
    return Path(summary["final"])


# ---------------------------------------------------------------------------------------------- scoring
def generate(pipe, example: WorldExample, *, steps: int, guidance=None, seed: int = 0) -> np.ndarray:
    """The pipeline's video (RGB uint8 [T, H, W, 3]) for a held-out example's reference, caption and audio."""
    h, w = example.video.shape[1:3]
    out = pipe(
        prompt=example.caption,
        image=example.reference,
        audio=example.waveform,
        height=h,
        width=w,
        num_frames=len(example.video),
        num_inference_steps=steps,
        guidance=guidance,
        seed=seed,
        output_type="np",
    )
    frames = out.frames[0] if hasattr(out, "frames") else out[0]
    return (np.clip(np.asarray(frames), 0, 1) * 255).round().astype(np.uint8)


def evaluate(pipe, examples: list[WorldExample], *, steps: int, guidance=None, seed: int = 0) -> dict:
    """Mean scores over held-out examples (training.analysis): identity, text, sync (corr), |lag|, stability."""
    rows = []
    for ex in examples:
        video = generate(pipe, ex, steps=steps, guidance=guidance, seed=seed)
        boxes = locate_faces(video)
        rows.append(score_video(video, ex.reference, ex.caption, ex.waveform, boxes))
    keys = ("identity", "text", "sync", "stability")
    result = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    result["abs_lag"] = float(np.mean([abs(r["sync_lag"]) for r in rows]))
    return result


def heldout_world(budget: NanoBudget) -> list[WorldExample]:
    """New people, scenes and voices (a seed the training world never uses)."""
    return sample_world(
        budget.heldout, frames=budget.frames, size=(budget.height, budget.width), seed=budget.seed + 1000, prefix="h"
    )


# ---------------------------------------------------------------------------------------------- export
def save_nano(out_dir: Path, vae, transformer_dir: Path, encoders: dict, info: dict) -> Path:
    """assets/humo-nano: vae/, transformer/ (fp16), text_encoder/, audio_encoder/ (diffusers/transformers folders) and
    nano.json. The tokenizer is the shared assets/tokenizer. Written to a temporary folder, then swapped in."""
    from engine.models import HuMoTransformer3DModel

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    vae.save_pretrained(tmp / "vae")
    # fp16 on disk (run in fp32): keeps every file under the 10 MB a Hugging Face Space takes without Git LFS
    transformer = HuMoTransformer3DModel.from_pretrained(transformer_dir)
    transformer.to(torch.float16).save_pretrained(tmp / "transformer")
    encoders["text_encoder"].save_pretrained(tmp / "text_encoder")
    save_audio_encoder(encoders["audio_encoder"], tmp / "audio_encoder")
    (tmp / "nano.json").write_text(json.dumps(info, indent=1))
    return swap_in(tmp, out_dir)


MODEL_CARD = "README.md"  # the model card beside the weights: written by hand, kept across rebuilds


def swap_in(tmp: Path, out_dir: Path) -> Path:
    """Replace `out_dir` by the finished folder `tmp` in one rename, keeping the old folder's model card (a rebuild
    changes the weights; the card's figures are updated by whoever re-measures them)."""
    card = out_dir / MODEL_CARD
    if card.is_file() and not (tmp / MODEL_CARD).exists():
        shutil.copy2(card, tmp / MODEL_CARD)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------------- the build
@dataclass
class NanoBuild:
    """What `build_base` made (reused by `build_nano` and the ablations)."""

    work: Path
    budget: NanoBudget
    vae: object
    encoders: dict
    base: Path
    vae_psnr: float
    timings: dict
    audio_tag: str = ""  # `audio_fingerprint` of the encoder: names the runs that read audio features


def build_base(work: str | Path, budget: NanoBudget, log=print) -> NanoBuild:
    """World, VAE, encoders, cache and the stage-0 base model; each step reuses its output in `work` if present."""
    from diffusers import AutoencoderKLWan

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "budget.json").write_text(json.dumps(asdict(budget), indent=1))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    size = (budget.height, budget.width)
    examples = sample_world(
        budget.clips, frames=budget.frames, size=size, seed=budget.seed, identities=budget.identities
    )
    timings["world_s"] = time.perf_counter() - t0
    log(f"world: {len(examples)} clips of {budget.frames} frames at {size[1]}x{size[0]}")

    t0 = time.perf_counter()
    if (work / "vae" / "config.json").exists():
        vae = AutoencoderKLWan.from_pretrained(work / "vae").eval()
    else:
        vae = None
        for phase in range(1, len(budget.vae_phases) + 1):
            saved = work / f"vae-phase{phase}"
            if (saved / "config.json").exists():
                vae = AutoencoderKLWan.from_pretrained(saved)
                continue
            vae = train_vae(examples, budget, log, vae=vae, phase=phase)
            vae.save_pretrained(saved)
        set_latent_statistics(vae, examples[: min(len(examples), 32)])
        vae.save_pretrained(work / "vae")
    timings["vae_s"] = time.perf_counter() - t0
    psnr = vae_psnr(vae, examples[:8])
    log(f"vae: PSNR {psnr:.1f} dB on training clips")

    t0 = time.perf_counter()
    if (work / "audio_encoder" / "config.json").exists():
        audio_encoder = load_whisper_encoder(work / "audio_encoder")
    else:
        audio_encoder, _ = train_audio_encoder(examples, budget, log)
        save_audio_encoder(audio_encoder, work / "audio_encoder")
    timings["audio_s"] = time.perf_counter() - t0
    encoders = build_components(budget.seed, audio_encoder)
    audio_tag = audio_fingerprint(audio_encoder)

    t0 = time.perf_counter()
    index = work / "cache" / "index.json"
    if not index.exists() or json.loads(index.read_text()).get("audio_encoder") != audio_tag:
        shutil.rmtree(work / "cache", ignore_errors=True)  # a cache of other audio features (or none) is stale
        pipe = make_pipeline(vae, new_transformer(budget.seed), encoders)
        encode_world(pipe, examples, work / "cache", log, audio_tag=audio_tag)
    timings["encode_s"] = time.perf_counter() - t0

    init = work / "init"
    if not (init / "config.json").exists():
        new_transformer(budget.seed).save_pretrained(init)
    t0 = time.perf_counter()
    base = init
    for leg, steps in enumerate(budget.base_steps):
        base = run_stage(f"base{leg}", work, base, budget, steps, stage=0, learning_rate=budget.base_lr)
    timings["base_s"] = time.perf_counter() - t0
    return NanoBuild(work, budget, vae, encoders, base, psnr, timings, audio_tag)


def train_variant(build: NanoBuild, name: str, budget: NanoBudget, **changes) -> Path:
    """Stage 1 then stage 2 from the base (or, with `joint=True`, one stage-2 run with both tasks from the start).

    `changes`: trainer overrides for both stages (e.g. train_all=True) and `focus_by_predicting`.
    """
    joint = changes.pop("joint", False)
    heard = f"-a{build.audio_tag}" if build.audio_tag else ""  # runs that read audio features name their encoder
    if joint:
        steps = budget.stage1_steps + budget.stage2_steps
        name = f"{name}-joint{heard}"
        return run_stage(name, build.work, build.base, budget, steps, stage=2, task_start=0.5, **changes)
    stage1 = run_stage(f"{name}-s1", build.work, build.base, budget, budget.stage1_steps, stage=1, **changes)
    return run_stage(f"{name}-s2{heard}", build.work, stage1, budget, budget.stage2_steps, stage=2, **changes)


def build_nano(
    out_dir: str | Path = "assets/humo-nano",
    work: str | Path = "data/nano",
    budget: NanoBudget | None = None,
    log=print,
) -> dict:
    """The whole recipe; writes `out_dir` and returns nano.json's content (budget, timings, held-out scores)."""
    from engine.models import HuMoTransformer3DModel

    budget = budget or NanoBudget()
    started = time.perf_counter()
    build = build_base(work, budget, log)
    t0 = time.perf_counter()
    final = train_variant(build, "nano", budget)
    build.timings["stages_s"] = time.perf_counter() - t0
    pipe = make_pipeline(build.vae, HuMoTransformer3DModel.from_pretrained(final).eval(), build.encoders)
    scores = evaluate(pipe, heldout_world(budget), steps=budget.sample_steps, seed=budget.seed)
    info = {
        "model": "humo-nano",
        "size": [budget.height, budget.width],
        "frames": budget.frames,
        "sample_steps": budget.sample_steps,
        "budget": asdict(budget),
        "vae_psnr_db": round(build.vae_psnr, 2),
        "timings_s": {k: round(v, 1) for k, v in build.timings.items()},
        "total_s": round(time.perf_counter() - started, 1),
        "heldout_scores": {k: round(v, 4) for k, v in scores.items()},
    }
    save_nano(Path(out_dir), build.vae, final, build.encoders, info)
    log(f"HuMo-nano -> {out_dir}: {json.dumps(info['heldout_scores'])}")
    return info


# ---------------------------------------------------------------------------------------------- ablations
# The paper's Table 3 rows, at the miniature: name -> trainer changes for `train_variant`.
ABLATIONS = {
    "HuMo-nano (full)": {},
    "w/o progressive (joint)": {"joint": True},
    "w/o focus-by-predicting": {"focus_by_predicting": False},
    "full fine-tune (not minimal-invasive)": {"train_all": True},
}


def guidance_variants(switch_timestep: int = 900) -> dict:
    """Sampling ablation on the full model: HuMo's time-adaptive CFG (text-dominant while t > switch, then text and
    image jointly; the 17B schedule of reference/humo-official.md §4.8, applied to the nano) vs the same weights
    held static over all steps (its main phase only)."""
    from engine import guidance as g

    adaptive = g.humo_17b_tia(scale_a=7.5, scale_t=7.0, switch_timestep=switch_timestep)
    static = g.GuidanceSchedule([adaptive.phases[-1]], dict(adaptive.scales), "1.7b", "TIA", "custom")
    adaptive.variant = "1.7b"
    return {"time-adaptive CFG": adaptive, "static CFG": static}


def run_ablations(
    work: str | Path = "data/nano",
    budget: NanoBudget | None = None,
    factor: float = 0.1,
    heldout_clips: int = 4,
    log=print,
) -> list[dict]:
    """Train every ABLATIONS variant from the shared base with the same budget and seeds, score each on the held-out
    world, and add the untrained model and the guidance rows. Returns table rows (also written to work/)."""
    from engine.models import HuMoTransformer3DModel

    budget = budget or NanoBudget()
    build = build_base(work, budget, log)
    scaled = budget.scaled(factor)
    heldout = heldout_world(budget)[:heldout_clips]
    rows = []

    def score(name: str, transformer, guidance=None, note: str = "") -> None:
        pipe = make_pipeline(build.vae, transformer.eval(), build.encoders)
        started = time.perf_counter()
        result = evaluate(pipe, heldout, steps=budget.sample_steps, guidance=guidance, seed=budget.seed)
        rows.append({"variant": name, **result, "note": note, "eval_s": time.perf_counter() - started})
        log(f"{name}: {json.dumps({k: round(v, 3) for k, v in result.items()})}")

    score("untrained (random DiT)", new_transformer(budget.seed))
    score("base only (stage 0, T2V)", HuMoTransformer3DModel.from_pretrained(build.base))
    full = None
    for name, changes in ABLATIONS.items():
        tag = "abl" + "".join(ch for ch in name.lower() if ch.isalnum())[:16]
        final = train_variant(build, tag, scaled, **dict(changes))
        transformer = HuMoTransformer3DModel.from_pretrained(final)
        full = full or final
        score(name, transformer)
    for name, schedule in guidance_variants().items():
        score(f"HuMo-nano (full), {name}", HuMoTransformer3DModel.from_pretrained(full), guidance=schedule)
    write_table(Path(work) / "ablations.md", rows, budget, factor, len(heldout))
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown, Table-3 style: identity, text, sync (corr) up; |lag| and stability (frame change) down."""
    lines = [
        "| variant | identity ↑ | text ↑ | sync ↑ | \\|lag\\| (frames) ↓ | frame change ↓ |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['identity']:.3f} | {r['text']:.3f} | {r['sync']:.3f} | "
            f"{r['abs_lag']:.2f} | {r['stability']:.2f} |"
        )
    return "\n".join(lines)


def write_table(path: Path, rows: list[dict], budget: NanoBudget, factor: float, heldout: int) -> None:
    header = (
        f"Budget: stage 1 {budget.scaled(factor).stage1_steps} + stage 2 {budget.scaled(factor).stage2_steps} "
        f"steps (batch {budget.batch_size}) per variant from the shared base; {heldout} held-out clips, "
        f"{budget.sample_steps} sampling steps, seed {budget.seed}.\n\n"
    )
    path.write_text(header + format_table(rows) + "\n")
    (path.with_suffix(".json")).write_text(json.dumps(rows, indent=1))
