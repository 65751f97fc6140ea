"""Where the studio listens: HUMO_HOST / HUMO_PORT reach `python app.py` and `make run` (issue 14)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import app

ROOT = Path(__file__).resolve().parents[1]


def test_app_reads_humo_host_and_port(monkeypatch):
    monkeypatch.setenv("HUMO_HOST", "0.0.0.0")
    monkeypatch.setenv("HUMO_PORT", "7999")
    args = app.parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 7999)
    assert app.parse_args(["--port", "8080"]).port == 8080  # the command line wins
    monkeypatch.setenv("HUMO_PORT", "")
    assert app.parse_args([]).port == 7860


@pytest.mark.skipif(shutil.which("make") is None, reason="make missing")
def test_make_run_uses_humo_port_over_a_stray_port_variable():
    def command(env: dict, *extra: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "HUMO_HOST", "HUMO_PORT")} | env
        out = subprocess.run(["make", "-n", "-s", "run", *extra], cwd=ROOT, env=env, capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]

    # containers and shells often export PORT / HOST: they must not win over HUMO_PORT / HUMO_HOST
    assert command({"PORT": "7860", "HOST": "box", "HUMO_PORT": "7999", "HUMO_HOST": "0.0.0.0"}).endswith(
        "app.py --host 0.0.0.0 --port 7999"
    )
    assert command({}).endswith("--host 127.0.0.1 --port 7860")
    assert command({"HUMO_PORT": "7999"}, "PORT=8080").endswith("--port 8080")


def test_humo_trusted_proxies_is_a_hop_count_or_the_proxies_addresses():
    """A count believes that many X-Forwarded-For hops (a Space: 1); addresses become the server's own
    forwarded_allow_ips; unset trusts no proxy (uvicorn's default would trust loopback)."""
    from studio.app import launch_options
    from studio.context import StudioContext, StudioOptions

    assert app.trusted_proxies("") == {"trusted_proxies": 0}
    assert app.trusted_proxies("1") == {"trusted_proxies": 1}
    assert app.trusted_proxies("10.0.0.5, 10.1.0.0/16") == {"proxy_addresses": "10.0.0.5, 10.1.0.0/16"}
    options = StudioOptions(data_dir=None, model="tiny", public=True, proxy_addresses="10.0.0.5")
    ctx = StudioContext(options, store=type("S", (), {"data_dir": Path("/nonexistent")})(), default_model="tiny")
    launch_options(ctx)
    assert os.environ.pop("FORWARDED_ALLOW_IPS") == "10.0.0.5"


def test_max_video_pixels_from_the_flag_or_humo_max_video_pixels(monkeypatch, tmp_path, capsys):
    """The local dub source cap (issue 27 item 4): default full HD, HUMO_MAX_VIDEO_PIXELS or --max-video-pixels as
    WxH or a pixel count, refused when not a size; the cap and its message follow it."""
    from engine.errors import InputError
    from studio.context import StudioOptions
    from studio.jobs import check_dub_video
    from tests.robustness.test_costs_first import colour_mp4

    monkeypatch.delenv("HUMO_MAX_VIDEO_PIXELS", raising=False)
    assert app.parse_args([]).max_video_pixels is None  # StudioOptions' default: 1920×1080
    monkeypatch.setenv("HUMO_MAX_VIDEO_PIXELS", "1280x720")
    assert app.parse_args([]).max_video_pixels == 1280 * 720
    assert app.parse_args(["--max-video-pixels", "640×480"]).max_video_pixels == 640 * 480  # the command line wins
    assert app.parse_args(["--max-video-pixels", "100000"]).max_video_pixels == 100_000
    for bad in ("big", "10x10", "1280x"):
        with pytest.raises(SystemExit):
            app.parse_args(["--max-video-pixels", bad])
        assert "--max-video-pixels" in capsys.readouterr().err

    video = colour_mp4(tmp_path / "hd.mp4", 1280, 720, 0.2)
    assert check_dub_video(StudioOptions(), str(video))["video"]["width"] == 1280  # within full HD
    with pytest.raises(InputError, match="hd.mp4 is 1280×720; the studio takes videos up to 640×480 pixels per frame"):
        check_dub_video(StudioOptions(max_video_pixels=app.video_pixels("640x480")), str(video))
    with pytest.raises(InputError, match="up to 100,000 pixels per frame"):
        check_dub_video(StudioOptions(max_video_pixels=100_000), str(video))
