"""Model cards beside the bundled weights (Hugging Face model-card format) and their survival across rebuilds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.nano import MODEL_CARD, swap_in

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("folder", ["assets/humo-nano", "assets/humo-nano-4step"])
def test_bundled_models_carry_a_model_card_with_hub_metadata(folder):
    text = (ROOT / folder / MODEL_CARD).read_text()
    assert text.startswith("---\n"), "the card opens with YAML front matter, as the Hub reads it"
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "diffusers" and "humo" in meta["tags"]
    assert "\n# " in text and "## Evaluation" in text


def test_a_rebuild_swaps_the_weights_in_and_keeps_the_card(tmp_path):
    out, tmp = tmp_path / "model", tmp_path / "model.tmp"
    out.mkdir()
    (out / MODEL_CARD).write_text("the card")
    (out / "old.bin").write_text("old weights")
    tmp.mkdir()
    (tmp / "new.bin").write_text("new weights")
    assert swap_in(tmp, out) == out
    assert sorted(p.name for p in out.iterdir()) == [MODEL_CARD, "new.bin"]
    assert (out / MODEL_CARD).read_text() == "the card" and not tmp.exists()
