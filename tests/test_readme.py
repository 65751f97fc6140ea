"""Every command in the README runs as written.

Each `python -m engine` / `python -m training` line of the README's shell blocks is parsed by the real command's
own argument parser (a flag renamed in the code fails here), and the commands that need no download, the CPU
try-out of the fine-tune from synthetic clips to a rendered video, run for real in a fresh folder.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ENGINE_OR_TRAINING = re.compile(r"(?:^|\s)(?:\S*python3?|accelerate launch.*?)\s+-m\s+(engine|training)\s+(.*)$")


def shell_commands(text: str) -> list[str]:
    """The README's ```bash blocks, one command per entry: continuations joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(
                    re.sub(r"\s+#.*$", "", line)
                )  # a trailing comment (never inside these commands' quotes)
    return commands


def cli_invocations(text: str) -> list[tuple[str, list[str]]]:
    """(package, argv) of each `-m engine|training` command; `...` (the README's "and the rest") and optional
    `[...]` groups (alternatives written for the reader) are dropped before parsing."""
    found = []
    for command in shell_commands(text):
        match = ENGINE_OR_TRAINING.search(command)
        if not match:
            continue
        rest = re.sub(r"\[[^\]]*\]", " ", match.group(2))
        words = shlex.split(rest)
        # `--prompt ...`: a value left to the reader gets a stand-in; a lone `...` ("and the rest") is dropped
        argv = ["x" if w == "..." and i and words[i - 1].startswith("--") else w for i, w in enumerate(words)]
        found.append((match.group(1), [w for w in argv if w != "..."]))
    return found


def _parser(package: str):
    if package == "engine":
        from engine.cli import build_parser
    else:
        from training.__main__ import build_parser
    return build_parser()


def test_the_readme_names_engine_and_training_commands():
    invocations = cli_invocations(README.read_text())
    verbs = {(package, argv[0]) for package, argv in invocations}
    # the guide's main doors: if the parsing above lost them, this test would check nothing
    assert {("engine", "generate"), ("engine", "dub"), ("training", "fit"), ("training", "prepare")} <= verbs


@pytest.mark.parametrize("package,argv", cli_invocations(README.read_text()), ids=lambda v: " ".join(v)[:60])
def test_every_readme_command_parses(package, argv):
    try:
        _parser(package).parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`python -m {package} {' '.join(argv)}` from the README does not parse (exit {exc.code})")


def test_readme_placeholder_handling_catches_a_renamed_flag():
    """The checker itself: a value left to the reader parses, a flag the parser does not know does not."""
    text = '```bash\npython -m engine generate --prompt "..." --stream --out x.mp4 ...\n```\n'
    [(package, argv)] = cli_invocations(text)
    assert argv == ["generate", "--prompt", "x", "--stream", "--out", "x.mp4"]
    _parser(package).parse_args(argv)
    with pytest.raises(SystemExit):
        _parser("engine").parse_args(["generate", "--no-such-flag"])


def _tryout_commands() -> list[str]:
    """The README's CPU try-out of the fine-tune, as written (synth -> prepare -> cache -> stage 1 -> stage 2)."""
    commands = [c for c in shell_commands(README.read_text()) if "data/train/tiny" in c or "tiny_stage" in c]
    assert [c.split()[2:4] for c in commands] == [["training", "synth"], ["training", "prepare"],
                                                  ["training", "cache"], ["training", "fit"], ["training", "fit"]]  # fmt: skip
    return commands


def test_readme_cpu_fine_tune_renders_from_the_cli_and_python(tmp_path):
    """The README's CPU training commands, run as written in a fresh folder, make a fine-tune that renders from the
    CLI (`--model data/runs/tiny-stage2/final`, the README's step 4) and from Python with the same frames."""
    for name in ("engine", "training", "studio", "assets"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(tmp_path),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}  # fmt: skip
    for command in _tryout_commands():
        argv = shlex.split(command.replace(".venv/bin/python", sys.executable, 1))
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    final = tmp_path / "data" / "runs" / "tiny-stage2" / "final"
    assert (final / "config.json").exists()

    out = tmp_path / "x.mp4"
    argv = [sys.executable, "-m", "engine", "generate", "--model", "data/runs/tiny-stage2/final", "--prompt",
            "a person talks", "--image", "assets/examples/nano_face.png", "--audio", "assets/examples/nano_speech.wav",
            "--frames", "9", "--seed", "3", "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    from engine import media
    from engine.registry import load_pipeline

    settings = media.read_settings(out)
    assert settings["model_id"] == "tiny-stage2/final"  # the run's name, never the server path
    pipe = load_pipeline(str(final))
    video = pipe(prompt="a person talks", image=str(ROOT / "assets/examples/nano_face.png"),
                 audio=str(ROOT / "assets/examples/nano_speech.wav"), num_frames=9, seed=3).frames[0]  # fmt: skip
    written = media.read_video_frames(out)
    assert written.shape[0] == video.shape[0] == settings["num_frames"]
    # the file is H.264: compare with the codec's error, not bit for bit
    assert np.abs(written.astype(np.float32) / 255 - video).mean() < 0.03
