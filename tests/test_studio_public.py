"""The studio in public (Space) mode: which endpoints exist, what is served, what a job may cost."""

from __future__ import annotations

import importlib
import json

import pytest

from engine.errors import InputError
from studio.app import build_app, launch_options
from studio.context import StudioContext, StudioOptions
from tests.test_pipeline import write_image, write_wav


@pytest.fixture()
def public_ctx(tmp_path, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/humo-studio")  # as on a Space
    context = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="tiny", public=True))
    yield context
    context.store.close()


def _api_names(demo) -> dict[str, str]:
    config = demo.get_config_file()
    return {d.get("api_name"): d.get("api_visibility", "public") for d in config["dependencies"] if d.get("api_name")}


def test_space_mode_builds_with_only_the_generate_endpoint(public_ctx):
    spaces = importlib.import_module("spaces")  # the real package: off ZeroGPU it leaves the call unchanged
    assert spaces.GPU(duration=60)(len) is len
    demo = build_app(public_ctx)
    public = sorted(name for name, vis in _api_names(demo).items() if vis != "private")
    assert public == ["generate"]  # no download, training, gallery, delete or settings endpoint
    texts = json.dumps(demo.get_config_file()["components"], default=str)
    assert "Download weights" not in texts and "Launch" not in texts
    assert "I have the right to use this face and this voice" in texts


def test_local_mode_keeps_downloads_and_training(tmp_path):
    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="tiny"))
    texts = json.dumps(build_app(ctx).get_config_file()["components"], default=str)
    ctx.store.close()
    assert "Download weights" in texts and "train-launch" in texts


def test_launch_serves_nothing_of_the_data_folder(public_ctx):
    options = launch_options(public_ctx)
    assert options["allowed_paths"] == []
    assert str(public_ctx.store.data_dir) in options["blocked_paths"]
    assert options["max_file_size"] == public_ctx.options.max_upload_public


def _job(tmp_path, audio_seconds: float, **overrides) -> dict:
    values = dict(
        prompt="a person talks",
        image=write_image(tmp_path / "face.png"),
        audio=write_wav(tmp_path / f"voice{audio_seconds}.wav", audio_seconds),
        negative_prompt="",
        model="tiny",
        resolution="custom",
        height=480,
        width=832,
        frames=0,
        steps=8,
        seed=1,
        preset="official",
        consent=True,
    )
    values.update(overrides)
    return values


def test_gpu_slot_follows_the_jobs_real_cost(public_ctx, tmp_path):
    from studio.spaces import MAX_GPU_SECONDS, MIN_GPU_SECONDS
    from studio.tab_generate import job_gpu_seconds

    short = job_gpu_seconds(public_ctx, None, **_job(tmp_path, 1.0))
    full = job_gpu_seconds(public_ctx, None, **_job(tmp_path, 3.8))  # the voice sets 97 frames (frames 0)
    assert MIN_GPU_SECONDS <= short < full <= MAX_GPU_SECONDS
    more_steps = job_gpu_seconds(public_ctx, None, **_job(tmp_path, 1.0, steps=12))
    assert more_steps > short
    with pytest.raises(InputError) as err:  # 30 steps at 480p x 97 frames do not fit one slot
        job_gpu_seconds(public_ctx, None, **_job(tmp_path, 3.8, steps=30))
    assert err.value.field in ("steps", "num_frames") and "Lower" in str(err.value)
    with pytest.raises(InputError) as err:
        job_gpu_seconds(public_ctx, None, **_job(tmp_path, 3.8, consent=False))
    assert err.value.field == "consent"


def test_hugging_face_login_on_a_space_with_oauth(public_ctx, monkeypatch):
    assert "Sign in with Hugging Face" not in json.dumps(build_app(public_ctx).get_config_file(), default=str)
    import gradio.oauth

    monkeypatch.setenv("SYSTEM", "spaces")  # what a Space with `hf_oauth: true` sets (gradio reads it at import)
    monkeypatch.setenv("OAUTH_CLIENT_ID", "client-id")
    for name, value in (("OAUTH_CLIENT_ID", "client-id"), ("OAUTH_CLIENT_SECRET", "s"), ("OAUTH_SCOPES", "openid"),
                        ("OPENID_PROVIDER_URL", "http://127.0.0.1:9")):  # fmt: skip
        monkeypatch.setattr(gradio.oauth, name, value)
    assert "Sign in with Hugging Face" in json.dumps(build_app(public_ctx).get_config_file(), default=str)
