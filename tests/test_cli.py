"""`python -m engine` end to end on the tiny model: mp4 with audio + embedded settings, --cases, errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine import media
from engine.cli import clean_case_prompt, main

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "assets/examples/face.png"
SPEECH = ROOT / "assets/examples/speech.wav"


def test_generate_writes_mp4_with_audio_and_settings(tmp_path, capsys):
    out = tmp_path / "x.mp4"
    code = main(
        ["generate", "--model", "tiny", "--image", str(FACE), "--audio", str(SPEECH), "--prompt", "a man talks",
         "--height", "32", "--width", "48", "--frames", "17", "--steps", "2", "--seed", "5", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    info = media.probe(out)
    assert info["video"]["width"] == 48 and info["video"]["height"] == 32
    assert info["video"]["frames"] == 17
    assert info["audio"] is not None
    # audio is trimmed to the video: 17 frames at 25 fps = 0.68 s (AAC frames add at most ~0.05 s)
    assert abs(info["audio"]["duration"] - 17 / 25) < 0.07
    settings = media.read_settings(out)
    assert settings["seed"] == 5 and settings["prompt"] == "a man talks"
    assert settings["mode"] == "TIA" and settings["num_inference_steps"] == 2
    assert settings["model_id"] == "tiny" and settings["untrained_demo_model"] is True
    assert "guidance" in settings and settings["versions"]["torch"]
    assert settings["input_hashes"]["audio"] and settings["input_hashes"]["image0"]
    assert "advanced" not in settings  # default speed options: nothing to keep
    assert "untrained demo model" in capsys.readouterr().out


def test_generate_keeps_its_speed_options_in_the_mp4_for_the_studio(tmp_path):
    """--step-cache and --memory-mode go into the settings, so the studio's "load settings" fills them in."""
    from studio.context import StudioContext, StudioOptions
    from studio.tab_generate import settings_from_video

    out = tmp_path / "fast.mp4"
    code = main(["generate", "--model", "tiny", "--image", str(FACE), "--prompt", "a man talks", "--height", "32",
                 "--width", "32", "--frames", "9", "--steps", "2", "--step-cache", "0.05", "--memory-mode", "cpu",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    assert media.read_settings(out)["advanced"] == {"loras": [], "step_cache": 0.05, "compile": False,
                                                    "attention_backend": "native", "memory_mode": "cpu"}  # fmt: skip
    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="tiny"))
    try:
        values, _ = settings_from_video(ctx, str(out))
    finally:
        ctx.store.close()
    assert (values["step_cache"], values["memory_mode"], values["steps"]) == (0.05, "cpu", 2)


def test_cases_file_writes_one_file_per_case_with_real_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cases = json.loads((ROOT / "assets/examples/cases.json").read_text())
    out_dir = tmp_path / "out"
    code = main(["generate", "--model", "tiny", "--cases", "assets/examples/cases.json", "--out-dir", str(out_dir),
                 "--height", "32", "--width", "32", "--frames", "9", "--steps", "1"])  # fmt: skip
    assert code == 0
    files = sorted(out_dir.glob("*.mp4"))
    assert len(files) == len(cases)
    for path in files:
        match = re.fullmatch(r"(.+)_seed(\d+)\.mp4", path.name)
        assert match and match.group(1) in cases
        assert media.read_settings(path)["seed"] == int(match.group(2))
    voice_only = next(p for p in files if p.name.startswith("voice_only"))
    assert media.read_settings(voice_only)["mode"] == "TA"
    assert media.read_settings(voice_only)["prompt"] == "A woman presenter speaks in a newsroom."


def test_case_prompt_cleanup():
    assert clean_case_prompt('  "a_man_sings"  ') == "a man sings"


def test_bad_input_exits_2_with_message(tmp_path, capsys):
    code = main(["generate", "--model", "tiny", "--prompt", "x", "--height", "30", "--steps", "1", "--frames", "5",
                 "--out", str(tmp_path / "y.mp4")])  # fmt: skip
    assert code == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert not (tmp_path / "y.mp4").exists()


def test_missing_weights_offline_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HUMO_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code = main(["generate", "--model", "humo-1.7b", "--prompt", "x", "--out", str(tmp_path / "z.mp4")])
    assert code == 2
    err = capsys.readouterr().err
    assert "python -m engine download humo-1.7b" in err


@pytest.mark.slow
def test_module_entry_point_runs(tmp_path):
    out = tmp_path / "cli.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "generate", "--model", "tiny", "--image", str(FACE), "--audio", str(SPEECH),
         "--prompt", "hello", "--height", "32", "--width", "32", "--steps", "1", "--frames", "9", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and media.probe(out)["video"]["frames"] == 9
