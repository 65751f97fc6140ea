"""engine/preview.py: the latent -> RGB least-squares fit, its disk cache, and preview images."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.configuration_utils import FrozenDict
from PIL import Image

from engine import preview

MEAN = [0.1 * i for i in range(16)]
STD = [1.0 + 0.05 * i for i in range(16)]


class LinearVAE(torch.nn.Module):
    """A stand-in VAE whose latent is an affine function of the 8x8-averaged RGB (plus a little nonlinearity), with
    Wan's normalisation constants in its config: a correct fit must invert it almost exactly."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.mix = torch.nn.Parameter(torch.randn(16, 3, generator=gen))
        self.shift = torch.nn.Parameter(torch.randn(16, generator=gen))
        self.config = FrozenDict(
            latents_mean=MEAN, latents_std=STD, temperal_downsample=[False, True, True], kind="linear"
        )
        self.calls = 0

    def encode(self, video):  # [B, 3, 1, H, W]
        self.calls += 1
        pooled = F.avg_pool2d(video[:, :, 0], 8)  # [B, 3, h, w]
        z = torch.einsum("bchw,zc->bzhw", pooled, self.mix) + self.shift.view(1, -1, 1, 1)
        z = z + 0.01 * torch.tanh(z)
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: z[:, :, None]))

    def decode(self, z):  # [B, 16, 1, h, w] -> [B, 3, 1, 8h, 8w]: the least-squares inverse of encode
        rgb = torch.einsum("bzhw,zc->bchw", z[:, :, 0] - self.shift.view(1, -1, 1, 1), torch.linalg.pinv(self.mix).T)
        return SimpleNamespace(sample=F.interpolate(rgb, scale_factor=8, mode="nearest")[:, :, None])


def flat(colour, size=64) -> torch.Tensor:
    return (torch.tensor(colour, dtype=torch.float32) * 2 - 1).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


def test_fit_inverts_a_linear_encoder(tmp_path):
    vae = LinearVAE()
    projection = preview.fit_latent_rgb_projection(vae, cache_dir_path=tmp_path)
    weight, bias = projection
    assert weight.shape == (16, 3) and bias.shape == (3,)
    for colour in [(0.8, 0.2, 0.5), (0.1, 0.9, 0.3), (0.95, 0.95, 0.1)]:  # not among the fitted images
        z = preview._encode(vae, flat(colour))[0]  # normalised latents, as the pipeline holds them
        rgb = preview.project_latents(z, projection).mean(dim=(1, 2))
        target = torch.tensor(colour) * 2 - 1
        assert (rgb - target).abs().max() < 0.02  # a zero projection (mid-grey) would be off by up to 0.9
        assert (rgb - target).norm() < 0.05 * target.norm()


def test_fit_is_cached_on_disk(tmp_path, monkeypatch):
    vae = LinearVAE()
    first = preview.fit_latent_rgb_projection(vae, cache_dir_path=tmp_path)
    calls = vae.calls
    files = list(tmp_path.glob("latent_rgb_*.json"))
    assert len(files) == 1
    second = preview.fit_latent_rgb_projection(vae, cache_dir_path=tmp_path)
    assert vae.calls == calls  # loaded, not fitted again
    torch.testing.assert_close(first[0], second[0])
    torch.testing.assert_close(first[1], second[1])
    # the environment variable selects the folder when no argument is given
    monkeypatch.setenv("HUMO_CACHE_DIR", str(tmp_path / "env"))
    preview.fit_latent_rgb_projection(vae)
    assert len(list((tmp_path / "env").glob("latent_rgb_*.json"))) == 1
    # other weights with the same config get their own entry
    other = LinearVAE()
    with torch.no_grad():
        other.mix.add_(1.0)
    preview.fit_latent_rgb_projection(other, cache_dir_path=tmp_path)
    assert len(list(tmp_path.glob("latent_rgb_*.json"))) == 2


def test_preview_image_from_latents():
    vae = LinearVAE()
    projection = preview.fit_latent_rgb_projection(vae, use_cache=False)
    # latents [1, 16, F, h, w]: frame 1 red, others blue
    red = preview._encode(vae, flat((1.0, 0.0, 0.0), size=32))
    blue = preview._encode(vae, flat((0.0, 0.0, 1.0), size=32))
    latents = torch.stack([blue[0], red[0], blue[0]], dim=1)[None]  # [1, 16, 3, 4, 4]
    image = preview.latents_to_preview(latents, projection, frame=1)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
    r, g, b = image.getpixel((16, 16))
    assert r > 240 and g < 15 and b < 15
    r, g, b = preview.latents_to_preview(latents[0], projection, scale=1).getpixel((2, 2))  # the first frame
    assert b > 240 and r < 15
    with pytest.raises(ValueError):
        preview.latents_to_preview(torch.zeros(16, 4, 4), projection)


def test_synthetic_images_are_deterministic_and_varied():
    a, b = preview.synthetic_images(8, 32), preview.synthetic_images(8, 32)
    torch.testing.assert_close(a, b)
    assert a.shape == (8, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert a.std(dim=(2, 3)).sum() > 0  # not all flat
    assert a.mean(dim=(2, 3)).std(dim=0).min() > 0.1  # colours differ between images


def test_real_tiny_wan_vae(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1).eval()
    weight, bias = preview.fit_latent_rgb_projection(vae, num_samples=12, image_size=32, cache_dir_path=tmp_path)
    assert weight.shape == (16, 3) and torch.isfinite(weight).all() and torch.isfinite(bias).all()
    # in-sample, the least-squares fit beats the best constant prediction (the mean colour)
    images = preview.synthetic_images(12, 32)
    z = preview._encode(vae, images)
    # what the VAE itself draws for these latents (an untrained VAE does not give the images back)
    target = F.adaptive_avg_pool2d(preview._decode(vae, preview._encode_raw(vae, images)), z.shape[-2:])
    fitted = torch.stack([preview.project_latents(zi, (weight, bias)) for zi in z])
    constant = target.mean(dim=(0, 2, 3), keepdim=True)
    assert (fitted - target).pow(2).mean() < (constant - target).pow(2).mean()
    image = preview.latents_to_preview(torch.randn(1, 16, 3, 4, 6), (weight, bias))
    assert image.size == (48, 32)
    assert len(list(tmp_path.glob("latent_rgb_*.json"))) == 1


def test_humo_nano_preview_has_the_videos_colours(tmp_path):
    """The bundled HuMo-nano VAE: the preview of a clip's latents shows the colour its decode shows (a red scene
    previewed green before the preview read the first latent frame, the one the projection is fitted on)."""
    from engine import nano

    if not nano.is_present():
        pytest.skip("assets/humo-nano missing")
    vae = AutoencoderKLWan.from_pretrained(nano.nano_dir() / "vae").eval()
    projection = preview.fit_latent_rgb_projection(vae, cache_dir_path=tmp_path)
    clip = torch.empty(1, 3, 9, 64, 64)
    clip[:, 0], clip[:, 1], clip[:, 2] = 0.7, -0.6, -0.5  # a red scene, in [-1, 1]
    clip[:, :, :, 20:44, 24:40] = torch.tensor([0.2, 0.0, -0.1]).view(1, 3, 1, 1, 1)  # a face-coloured patch
    with torch.no_grad():
        latents = preview._normalise(vae, vae.encode(clip).latent_dist.mode())
        decoded = vae.decode(vae.encode(clip).latent_dist.mode()).sample[0, :, 0].clamp(-1, 1)  # [3, H, W]
    shown = torch.from_numpy(np.asarray(preview.latents_to_preview(latents, projection, scale=1))).float()
    shown = shown.permute(2, 0, 1) / 127.5 - 1  # [3, h, w] in [-1, 1]
    expected = F.adaptive_avg_pool2d(decoded[None], shown.shape[-2:])[0]
    assert shown.mean((1, 2)).argmax() == expected.mean((1, 2)).argmax() == 0  # red, as the video
    assert (shown - expected).abs().mean() < 0.25


# ---------------------------------------------------------------- predicted clean video previews (issue 29)
def test_predicted_clean_is_the_flow_matching_x0_after_an_euler_step():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    scheduler.set_timesteps(8)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 4, 3, 4, 4, generator=gen), torch.randn(1, 4, 3, 4, 4, generator=gen)
    sigma = float(scheduler.sigmas[2])
    latents = (1 - sigma) * x0 + sigma * noise
    velocity = noise - x0  # the velocity a perfect model predicts
    scheduler._step_index = 2
    after = scheduler.step(velocity, scheduler.timesteps[2], latents, return_dict=False)[0]
    predicted = preview.predicted_clean(after, velocity, preview.step_sigma(scheduler, 2))
    assert torch.allclose(predicted, x0, atol=1e-5)
    assert not torch.allclose(after, x0, atol=0.1)  # the latents themselves are still noisy
    assert preview.step_sigma(scheduler, 7) == 0.0  # after the last step the latents are the clean video


def test_preview_budget_keeps_previews_within_their_share():
    budget = preview.PreviewBudget(total_steps=40, share=0.10)
    made = []
    for step in range(40):
        if budget.step_done(1.0):
            budget.record(0.5)  # a preview costs half a step
            made.append(step + 1)
        assert budget.spent_s <= 0.10 * budget.steps_s + 1e-9 or budget.made == 1 and budget.spent_s == 0.5
    assert made[0] == 1  # the first one measures the cost
    # then the total stays within 10 %: once the steps have paid for it, one every 0.5 / (0.1 × 1.0) = 5 steps
    assert made[1:4] == [10, 15, 20] and budget.every_steps() == 5
    assert 40 not in made  # never after the last step: the finished video comes then
    assert "every 5 step(s)" in budget.note() and "50% of a 1.00 s step" in budget.note()
    # one preview costing more than 10 % of the whole job: off, and the note says why
    slow = preview.PreviewBudget(total_steps=10, share=0.10, known_cost_s=2.0)
    assert [slow.step_done(1.0) for _ in range(10)] == [False] * 10
    assert slow.off and slow.note().startswith("previews off: one costs 2.00 s")


@pytest.fixture(scope="module")
def nano_pipe():
    from engine import nano

    if not nano.is_present():
        pytest.skip("assets/humo-nano missing")
    return nano.load_nano_pipeline()


def test_studio_previews_show_the_predicted_clip_before_the_job_ends(nano_pipe, tmp_path, monkeypatch):
    """HuMo-nano through the studio's progress callback: small mp4 clips of the predicted clean video arrive while
    the loop runs, at the budget's intervals, without a second loop, and a late one looks like the finished video."""
    import json
    import threading

    from engine import media
    from studio.progress import ClipPreviews

    root = Path(__file__).resolve().parents[1]
    case = json.loads((root / "assets/examples/cases.json").read_text())["nano"]
    example = {
        "prompt": case["prompt"],
        "image": str(root / case["img_paths"][0]),
        "audio": str(root / case["audio_path"]),
    }
    events = []

    def on_progress(event):
        if event.preview_video:  # copy: the job keeps only its newest two preview files
            copy = tmp_path / f"p{event.step}.mp4"
            copy.write_bytes(Path(event.preview_video).read_bytes())
            events.append((event.step, copy, event.preview_note))

    from studio import jobs

    store = SimpleNamespace(update_progress=lambda *a: None)
    callback = jobs._progress_callback(SimpleNamespace(store=store), 1, threading.Event(), on_progress)
    monkeypatch.setattr(preview, "PREVIEW_SHARE", 0.5)  # several previews in a short job (the default is 10 %)
    monkeypatch.setattr(ClipPreviews, "DECODERS", ("projection",))
    calls = []

    def counting(pipe, step, t, kwargs):
        calls.append(step)
        return callback(pipe, step, t, kwargs)

    out = nano_pipe(**example, num_inference_steps=8, num_frames=17, seed=3, output_type="np", callback_on_step_end=counting,
                    callback_on_step_end_tensor_inputs=callback.tensor_inputs)  # fmt: skip
    assert calls == list(range(8))  # one loop, one callback per step
    assert events and len(events) >= 2 and all(step < 8 for step, _, _ in events)
    step, path, note = events[-1]
    frames = media.read_video_frames(path)
    video = out.frames[0]  # [F, H, W, 3] float in [0, 1]
    assert frames.shape[0] == (video.shape[0] - 1) // 4 + 1  # one picture per latent frame, no reference slot
    assert f"predicted clean video after step {step}/8 (projection decoder)" in note and "s step)" in note
    # a late prediction looks like the finished video: its mean colour is close (a latent or noise is not)
    late = frames.astype(np.float32).mean(axis=(0, 1, 2)) / 255
    final = np.asarray(video, dtype=np.float32).mean(axis=(0, 1, 2))
    assert np.abs(late - final).max() < 0.12, (late, final)


def test_a_decoder_that_costs_too_much_gives_way_then_previews_turn_off(nano_pipe, monkeypatch):
    from studio.progress import ClipPreviews

    monkeypatch.setattr(ClipPreviews, "DECODERS", ("vae", "projection"))  # the VAE first, as on a GPU

    latents = torch.randn(1, 16, 3, 8, 8)
    kwargs = {"latents": latents, "noise_pred": torch.randn_like(latents)}
    nano_pipe.scheduler.set_timesteps(10)
    nano_pipe._video_latent_frames = 2
    nano_pipe.preview_costs = {}
    clips = ClipPreviews(nano_pipe, 5, total_steps=10, share=1e-6)  # a step of 1 ms: any preview costs too much
    path, note = clips.step_done(0, 0.001, kwargs)
    assert path is not None and clips.decoder == "projection"  # the VAE's one preview measured, then it gave way
    assert ("vae", tuple(latents.shape)) in nano_pipe.preview_costs and "through the projection decoder" in note
    path, note = clips.step_done(1, 0.001, kwargs)
    assert path is None  # what the VAE preview cost is spent: no more previews in this job
    # the next job knows the VAE is too costly: it measures the projection once, which turns previews off
    second = ClipPreviews(nano_pipe, 6, total_steps=10, share=1e-6)
    path, note = second.step_done(0, 0.001, kwargs)
    assert path is not None and second.decoder is None and "(projection decoder)" in note
    # a third knows both: no preview at all, and the note says why
    third = ClipPreviews(nano_pipe, 7, total_steps=10, share=1e-6)
    assert third.step_done(0, 0.001, kwargs)[0] is None and third.decoder is None
    assert third.note.startswith("previews off: one costs")


def test_page_update_of_a_progress_event():
    """The page's preview video: a clip preview with its note as the label; a latent thumbnail (Ray workers send
    those) as a one-frame clip; nothing new: no change."""
    from engine import media
    from studio.progress import JobProgress, preview_update

    thumb = JobProgress(3, 1, 4, preview=Image.new("RGB", (64, 48), (200, 30, 30)))
    update = preview_update(thumb)
    frames = media.read_video_frames(update["value"])
    assert frames.shape == (1, 48, 64, 3) and frames[0, 24, 32, 0] > 150 > frames[0, 24, 32, 1]
    # the page has its copy: the preview file made for it is gone (none outlives its job)
    from studio.progress import PREVIEW_DIR

    assert not list(PREVIEW_DIR.glob(f"3-{os.getpid()}-*"))
    # a clip already replaced by a newer one before the page got to it: the page keeps playing the last one
    gone = preview_update(JobProgress(3, 2, 4, preview_video=str(PREVIEW_DIR / "missing.mp4"), preview_note="x"))
    assert "value" not in gone and gone["label"] == "Denoising preview · x"
    assert preview_update(JobProgress(3, 2, 4)) == {"__type__": "update"}
    noted = preview_update(JobProgress(3, 2, 4, preview_note="previews off: one costs 2.00 s"))
    assert noted["label"] == "Denoising preview · previews off: one costs 2.00 s" and "value" not in noted
