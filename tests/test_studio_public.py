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


def test_space_mode_builds_with_only_the_generation_and_dub_endpoints(public_ctx):
    spaces = importlib.import_module("spaces")  # the real package: off ZeroGPU it leaves the call unchanged
    assert spaces.GPU(duration=60)(len) is len
    demo = build_app(public_ctx)
    public = sorted(name for name, vis in _api_names(demo).items() if vis != "private")
    # generate_live: the same job, admission and caps as generate, made chunk by chunk; no download, training,
    # gallery, delete or settings endpoint
    assert public == ["dub", "generate", "generate_live"]
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


def test_custom_phases_are_held_to_the_official_passes_per_step(public_ctx, tmp_path):
    """Typed phases may mix all 8 branches; a public job runs at most 4 a step (the caps are sized for that)."""
    from studio.jobs import validate_request
    from studio.tab_generate import make_request

    eight = {"phases": [{"weights": {"T·I·A": 4.0, "T·I·0": -0.5, "T·∅·A": -0.5, "T·∅·0": -0.5, "N·I·A": -0.5,
                                     "N·I·0": -0.5, "N·∅·A": -0.5, "N·∅·0": 0.0}}]}  # fmt: skip
    values = _job(tmp_path, 1.0, height=64, width=64)
    request, names = make_request(public_ctx, **values, phases=json.dumps(eight))
    with pytest.raises(InputError, match="runs 7 transformer passes a step; this public studio runs at most 4") as err:
        validate_request(public_ctx, request, names)
    assert err.value.field == "guidance"
    official, names = make_request(public_ctx, **values)
    assert validate_request(public_ctx, official, names) > 0  # the official 4 passes are within it


def test_hugging_face_login_on_a_space_with_oauth(public_ctx, monkeypatch):
    assert "Sign in with Hugging Face" not in json.dumps(build_app(public_ctx).get_config_file(), default=str)
    import gradio.oauth

    monkeypatch.setenv("SYSTEM", "spaces")  # what a Space with `hf_oauth: true` sets (gradio reads it at import)
    monkeypatch.setenv("OAUTH_CLIENT_ID", "client-id")
    for name, value in (("OAUTH_CLIENT_ID", "client-id"), ("OAUTH_CLIENT_SECRET", "s"), ("OAUTH_SCOPES", "openid"),
                        ("OPENID_PROVIDER_URL", "http://127.0.0.1:9")):  # fmt: skip
        monkeypatch.setattr(gradio.oauth, name, value)
    assert "Sign in with Hugging Face" in json.dumps(build_app(public_ctx).get_config_file(), default=str)


def test_the_address_cap_believes_only_the_trusted_proxys_hop():
    from types import SimpleNamespace

    from studio.admission import client_address

    def request(forwarded=None):
        headers = {"x-forwarded-for": forwarded} if forwarded else {}
        return SimpleNamespace(headers=headers, client=SimpleNamespace(host="10.9.9.9"))

    # no proxy in front: a typed header is ignored, the socket's peer counts
    assert client_address(request("1.2.3.4")) == "10.9.9.9"
    # one proxy (a Space): the hop it appended counts, whatever the client put before it
    assert client_address(request("6.6.6.6, 203.0.113.5"), trusted_proxies=1) == "203.0.113.5"
    assert client_address(request("203.0.113.5"), trusted_proxies=1) == "203.0.113.5"
    # two proxies: the hop the outer one appended
    assert client_address(request("6.6.6.6, 203.0.113.5, 10.0.0.2"), trusted_proxies=2) == "203.0.113.5"
    assert client_address(request(), trusted_proxies=1) == "10.9.9.9"


def test_cache_sweep_ages_files_out_while_uploads_keep_arriving(tmp_path, monkeypatch):
    """Gradio's own sweep iterates the live set and dies on the first concurrent upload; this one must not."""
    import threading
    import time
    from types import SimpleNamespace

    from studio import serving

    monkeypatch.setattr(serving, "cache_folder", lambda: tmp_path)
    files: set[str] = set()
    for i in range(200):
        folder = tmp_path / f"{i:064x}"
        folder.mkdir()
        path = folder / "old.png"
        path.write_bytes(b"x")
        files.add(str(path))
    time.sleep(1.5)  # st_ctime cannot be set: the old files are made to be 1.5 s older than the young one
    young = tmp_path / "young" / "new.png"
    young.parent.mkdir()
    young.write_bytes(b"y")
    files.add(str(young))
    blocks = SimpleNamespace(blocks={}, temp_file_sets=[files])
    stop = threading.Event()

    def keep_adding():
        n = 0
        while not stop.is_set():
            files.add(str(tmp_path / f"arriving-{n}"))
            n += 1

    adder = threading.Thread(target=keep_adding)
    adder.start()
    try:
        removed = serving.sweep_cache(blocks, age_s=1.0)
    finally:
        stop.set()
        adder.join()
    assert removed == 200
    assert young.exists() and str(young) in files
    assert not any((tmp_path / f"{i:064x}").exists() for i in range(200))  # the emptied hash folders went too


def test_a_start_ages_out_old_uploads_but_not_this_apps_example_files(tmp_path, monkeypatch):
    """`sweep_stale` at start removes what an earlier run left, but not the files this app's blocks already hold:
    gr.Examples' cached inputs are copies that keep their bundled source's old mtime (they went at once, and the
    bundled example's voice "did not arrive")."""
    import os
    import time
    from types import SimpleNamespace

    from studio import serving

    monkeypatch.setattr(serving, "cache_folder", lambda: tmp_path)
    old = time.time() - 2 * 3600
    left, example = tmp_path / "a" / "left.wav", tmp_path / "b" / "nano_speech.wav"
    for path in (left, example):
        path.parent.mkdir()
        path.write_bytes(b"x")
        os.utime(path, (old, old))
    blocks = SimpleNamespace(blocks={1: SimpleNamespace(keep_in_cache={str(example)})}, temp_file_sets=[])
    assert serving.sweep_stale(3600, blocks) == 1
    assert example.exists() and not left.exists() and not left.parent.exists()
