"""Models and Gallery tab words (issue 14 item 7): the download's size is confirmed first and an offline machine
gets one clear sentence; Delete asks first; a stop is not an error."""

from __future__ import annotations

from studio import tab_gallery, tab_models
from studio.jobs import run_job
from tests.test_studio_callbacks import request


def test_download_states_its_size_and_the_free_disk_first(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HUMO_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(tab_models, "hub_cache_dir", lambda: tmp_path / "hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from engine.registry import get_spec

    total = sum(c.size_bytes for c in get_spec("humo-1.7b").all_components) / 1e9
    monkeypatch.setattr(tab_models, "free_disk_bytes", lambda path: 10**15)
    text, offer = tab_models.download_question("humo-1.7b")
    assert offer and f"Download {total:.1f} GB for humo-1.7b?" in text and "1000000 GB free" in text
    monkeypatch.setattr(tab_models, "free_disk_bytes", lambda path: 10**9)
    text, offer = tab_models.download_question("humo-1.7b")
    assert not offer and "Not enough disk space" in text
    monkeypatch.setattr(tab_models, "free_disk_bytes", lambda path: 10**15)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text, offer = tab_models.download_question("humo-1.7b")
    assert not offer and "offline" in text and "python -m engine download humo-1.7b" in text


def test_an_offline_download_says_so_in_one_sentence(monkeypatch, tmp_path):
    """The real child process (`python -m engine download`) with the Hub unreachable: no traceback reaches the page."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HUMO_MODELS_DIR", str(tmp_path / "models"))
    messages = list(tab_models.download_model("humo-1.7b"))
    assert messages[0].startswith("◔")
    assert messages[-1].startswith("⚠ Download failed: huggingface.co cannot be reached")
    assert "Traceback" not in messages[-1]
    assert tab_models.download_failure("x", "OSError: disk full\n").endswith("OSError: disk full")


def test_delete_asks_first_and_a_stop_is_not_an_error(ctx, tmp_path):
    done = run_job(ctx, request(tmp_path), "tiny")
    question = tab_gallery.delete_question(ctx, done.generation_id)
    assert f"Delete #{done.generation_id}" in question and "cannot be undone" in question
    assert ctx.store.get(done.generation_id).status == "done"  # asking removed nothing
    assert tab_gallery.delete_question(ctx, None) is None and tab_gallery.delete_question(ctx, 10**6) is None
    assert tab_gallery.delete_question(ctx, done.generation_id, owner="someone-else") is None

    row = ctx.store.create_generation(prompt="p", negative_prompt="", mode="T", model_id="tiny", seed=1, settings={},
                                      input_hashes={}, input_paths=[], total_steps=4)  # fmt: skip
    ctx.store.mark_running(row.id)
    ctx.store.mark_stopped(row.id, "stopped after step 2 of 4")
    summary = tab_gallery.detail(ctx, row.id)[2]
    assert "**Stopped:** stopped after step 2 of 4" in summary and "Error" not in summary
    failed = ctx.store.create_generation(prompt="p", negative_prompt="", mode="T", model_id="tiny", seed=1,
                                         settings={}, input_hashes={}, input_paths=[], total_steps=4)  # fmt: skip
    ctx.store.mark_running(failed.id)
    ctx.store.mark_failed(failed.id, "RuntimeError: boom")
    assert "**Error:** RuntimeError: boom" in tab_gallery.detail(ctx, failed.id)[2]


def test_the_page_uses_no_glyph_a_plain_font_cannot_draw():
    """Emoji (the title's used to be an empty box where no emoji font is installed, as in the README's own
    screenshots) are replaced by symbols DejaVu/Segoe/SF draw in text style: no astral-plane character, no emoji
    presentation selector, none of the Misc-Technical emoji."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    offenders = []
    for path in [*(root / "studio").glob("*.py"), root / "app.py"]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            bad = [c for c in line if ord(c) >= 0x1F000 or c == "\ufe0f" or c in "⏳⏹⌛⏰⏱⏲"]
            if bad:
                offenders.append(f"{path}:{number}: {''.join(bad)}")
    assert not offenders, offenders
