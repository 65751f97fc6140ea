"""The LoRA library (studio/loras.py): added once per owner with its sha256 and match report, picked by name in a
job, recorded by name + sha256 in the row and the mp4, picked again by reuse and from the mp4, refused in public mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import InputError
from engine.media import read_settings
from studio import advanced, loras, tab_generate
from studio.context import StudioContext, StudioOptions
from studio.jobs import run_job
from tests.test_lora import lora_tensors
from tests.test_studio_callbacks import request


def write_lora(ctx, path: Path, scale: float = 0.5) -> Path:
    tensors = lora_tensors(ctx.pipeline(ctx.default_model))
    save_file({f"transformer.{n}.lora_{x}.weight": t * scale for n, (a, b) in tensors.items()
               for x, t in (("A", a), ("B", b))}, str(path))  # fmt: skip
    return path


def test_add_once_with_its_match_report_and_owner(ctx, tmp_path):
    upload = write_lora(ctx, tmp_path / "upload-123.safetensors")
    entry = loras.add_lora(ctx, str(upload), "style", owner="local")
    stored = Path(ctx.store.data_dir) / "loras" / "local" / "style.safetensors"
    assert stored.read_bytes() == upload.read_bytes() and len(entry.sha256) == 64
    assert entry.report["matched"] == 3 and entry.report["total"] == 3 and entry.report["applies"]
    assert "3 of 3 modules apply" in loras.library_table(ctx)
    assert [e.name for e in loras.list_loras(ctx)] == ["style"]
    # the same file again under its name: the same entry; other content under that name: refused
    assert loras.add_lora(ctx, str(upload), "style").sha256 == entry.sha256
    other = write_lora(ctx, tmp_path / "other.safetensors", scale=0.25)
    with pytest.raises(InputError, match="already has a LoRA named 'style'"):
        loras.add_lora(ctx, str(other), "style")
    with pytest.raises(InputError, match="Name the LoRA"):
        loras.add_lora(ctx, str(other), "../escape")
    pickle = tmp_path / "old.pt"
    torch.save({}, pickle)
    with pytest.raises(InputError, match="must be .safetensors"):
        loras.add_lora(ctx, str(pickle), "old")
    # a file named .safetensors that is not one: refused by its name, no server path in the message, nothing kept
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="broken.safetensors cannot be read as a LoRA") as refused:
        loras.add_lora(ctx, str(broken), "broken")
    assert str(tmp_path) not in str(refused.value) and loras.get(ctx, "broken") is None
    # another owner has their own library: they neither see nor can pick this one
    assert loras.list_loras(ctx, owner="alice") == []
    with pytest.raises(InputError, match="not in your LoRA library"):
        loras.picked_files(ctx, ["style"], owner="alice")
    loras.remove_lora(ctx, "style")
    assert loras.list_loras(ctx) == [] and not stored.exists()


def test_public_studio_has_no_library(tmp_path):
    public = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="tiny", public=True))
    try:
        upload = write_lora(public, tmp_path / "x.safetensors")
        with pytest.raises(InputError, match="no LoRA library"):
            loras.add_lora(public, str(upload), "style")
        with pytest.raises(InputError, match="no LoRA library"):
            loras.with_library(public, {"lora_library": ["style"]})
        assert loras.list_loras(public) == []
        from studio.app import build_app

        ids = [c.get("props", {}).get("elem_id") for c in build_app(public).get_config_file()["components"]]
        assert "lora-lib-add" not in ids
    finally:
        public.store.close()


def test_picked_by_name_recorded_and_restored_by_reuse_and_from_the_mp4(ctx, tmp_path):
    entry = loras.add_lora(ctx, str(write_lora(ctx, tmp_path / "s.safetensors")), "style")
    options, names = loras.with_library(ctx, {k: None for k in advanced.FIELDS} | {"lora_library": ["style"],
                                                                                    "lora_scales": "0.7"})  # fmt: skip
    extra, lora_names = advanced.read_options(False, **options)
    lora_names.update(names)
    assert [s for _, s in extra.loras] == [0.7]
    result = run_job(ctx, request(tmp_path), "tiny", names=lora_names, advanced=extra)
    assert result.status == "done", result.error
    recorded = f"library:style@{entry.sha256[:16]}"
    row = ctx.store.get(result.generation_id)
    assert row.settings["advanced"]["loras"] == [{"file": recorded, "scale": 0.7}]
    assert read_settings(result.video_path)["advanced"]["loras"][0]["file"] == recorded  # no server path
    # "Use these settings": the LoRA is picked again with its scale
    values, notes = tab_generate.form_values(ctx, dict(row.settings))
    assert values["lora_library"] == ["style"] and values["lora_scales"] == "0.7" and not notes
    # the mp4 dropped on the Generate tab: the same
    values, text = tab_generate.settings_from_video(ctx, str(result.video_path))
    assert values["lora_library"] == ["style"] and "Not restored" not in text
    # the library's file replaced by other content: not picked, and a note says why
    loras.remove_lora(ctx, "style")
    loras.add_lora(ctx, str(write_lora(ctx, tmp_path / "t.safetensors", scale=0.3)), "style")
    values, notes = tab_generate.form_values(ctx, dict(row.settings))
    assert values["lora_library"] == [] and "other content" in notes[0]
    # gone: a clear note
    loras.remove_lora(ctx, "style")
    values, text = tab_generate.settings_from_video(ctx, str(result.video_path))
    assert values["lora_library"] == [] and "'style' is not in your LoRA library" in text
