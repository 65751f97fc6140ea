"""Captioner code path with a tiny random Qwen2.5-VL built offline (its caption is garbage, but a string)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.errors import InputError, MissingWeightsError
from training.captions import Captioner

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
WORDS = "a person with short hair talks in front of blue green room the and system user assistant".split()


def tiny_qwen_parts():
    """(model, tokenizer, image_processor): a 2-layer Qwen2.5-VL and a word-level tokenizer, no downloads."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vocab = {t: i for i, t in enumerate([*SPECIAL, "[UNK]", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL,
    )
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            eos_token_id=vocab["<|im_end|>"],
            pad_token_id=vocab["<|endoftext|>"],
            bos_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, fullatt_block_indexes=[0]
        ),
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(0)
    from transformers import GenerationConfig

    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"])
    return model, tokenizer, image_processor


@pytest.fixture(scope="module")
def tiny_captioner():
    model, tokenizer, image_processor = tiny_qwen_parts()
    return Captioner(model=model, tokenizer=tokenizer, image_processor=image_processor, num_frames=3, max_new_tokens=6)


def test_captioner_runs_tiny_qwen25vl(tiny_captioner):
    frames = np.random.default_rng(0).integers(0, 255, (9, 64, 96, 3), dtype=np.uint8)
    images = tiny_captioner.sample_frames(frames)
    assert len(images) == 3 and all(img.shape[0] % 28 == 0 and img.shape[1] % 28 == 0 for img in images)
    inputs = tiny_captioner.encode(images)
    pads = int((inputs["input_ids"] == tiny_captioner.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    merge = tiny_captioner.image_processor.merge_size**2
    assert pads == int(inputs["image_grid_thw"].prod(-1).sum()) // merge  # one placeholder per merged patch
    caption = tiny_captioner(frames)
    assert isinstance(caption, str)
    assert "<|" not in caption  # special tokens stripped
    assert caption == tiny_captioner(frames)  # greedy decoding is deterministic


def test_captioner_rejects_bad_frames_and_reports_missing_weights(tiny_captioner):
    with pytest.raises(InputError):
        tiny_captioner(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(MissingWeightsError, match="not available locally"):
        Captioner("nobody/no-such-captioner", local_files_only=True).load()


def test_build_clips_captions_clips_without_one(tiny_captioner, tmp_path):
    from training.raw import build_clips
    from training.synth import make_synth_dataset

    src = make_synth_dataset(tmp_path / "src", num_clips=2, frames=21, size=(128, 128), seed=5, layout="folder")
    (src / "clip000.txt").unlink()  # clip001 keeps its sidecar caption
    report = build_clips(src, tmp_path / "out", frames=17, size=(128, 128), captioner=tiny_captioner, progress=False)
    assert report.written == 2 and report.captioned == 1
    entries = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [e["caption_source"] for e in entries] == ["captioner", "given"]
    assert isinstance(entries[0]["caption"], str)
    assert entries[1]["caption"] == (src / "clip001.txt").read_text()
