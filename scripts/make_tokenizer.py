"""Make the small umT5-style tokenizer in assets/tokenizer (used by the tiny and nano models and by tests).

Reproduce with: .venv/bin/python scripts/make_tokenizer.py
A SentencePiece-style Unigram model (Metaspace pre-tokenizer, T5 special tokens <pad>=0, </s>=1, <unk>=2, EOS
appended) trained on a small built-in corpus of studio prompts plus the characters of the Wan negative prompt.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUBJECTS = [
    "a man",
    "a woman",
    "a young man",
    "an old woman",
    "a girl",
    "a boy",
    "a singer",
    "a presenter",
    "a teacher",
    "a chef",
    "a doctor",
    "a reporter",
    "a person",
    "the speaker",
    "a child",
    "a musician",
]
LOOKS = [
    "with short brown hair",
    "with long black hair",
    "with curly red hair",
    "with blond hair",
    "wearing glasses",
    "wearing a hat",
    "in a red shirt",
    "in a blue jacket",
    "in a white dress",
    "with a beard",
    "with earrings",
    "in a green sweater",
    "with grey hair",
    "in a black suit",
    "wearing a scarf",
    "with freckles",
]
ACTIONS = [
    "talks to the camera",
    "sings a song",
    "speaks calmly",
    "laughs and talks",
    "explains an idea",
    "reads the news",
    "whispers a secret",
    "shouts with joy",
    "gives a speech",
    "tells a story",
    "smiles and nods",
    "looks at the camera and speaks",
    "sings on a stage",
    "answers a question",
]
PLACES = [
    "in a bright studio",
    "in a dark room",
    "on a city street",
    "in a forest",
    "at the beach",
    "in a kitchen",
    "in an office",
    "in a classroom",
    "on a stage with spotlights",
    "in a park at sunset",
    "in a newsroom",
    "in front of a brick wall",
    "in a living room",
    "under soft warm light",
    "in the rain at night",
]
CAMERA = [
    "close-up shot",
    "medium shot",
    "wide shot",
    "the camera slowly zooms in",
    "static camera",
    "handheld camera",
    "cinematic lighting",
    "soft lighting",
    "high contrast",
    "shallow depth of field",
]
EXTRA = [
    "background",
    "foreground",
    "lighting",
    "colour",
    "color",
    "blue",
    "red",
    "green",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
    "grey",
    "pink",
    "brown",
    "sky",
    "wall",
    "window",
    "lamp",
    "plant",
    "table",
    "chair",
    "face",
    "mouth",
    "eyes",
    "lips",
    "voice",
    "audio",
    "video",
    "frame",
    "smile",
    "hair",
    "skin",
    "glasses",
    "natural",
    "realistic",
    "high quality",
    "detailed",
    "blurry",
    "static",
    "moving",
    "left",
    "right",
    "centre",
]


def corpus() -> list[str]:
    from engine.pipeline import WAN_NEGATIVE_PROMPT

    lines = [
        f"{s} {lk} {a} {p}, {c}."
        for s, lk, a, p, c in itertools.islice(
            zip(itertools.cycle(SUBJECTS), itertools.cycle(LOOKS), itertools.cycle(ACTIONS), itertools.cycle(PLACES),
                itertools.cycle(CAMERA)), 600)
    ]  # fmt: skip
    lines += [" ".join(EXTRA)] * 3
    lines += [WAN_NEGATIVE_PROMPT] * 5 + list(WAN_NEGATIVE_PROMPT)
    return [line[0].upper() + line[1:] for line in lines if line]


def build(out_dir: Path, vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("\u3000", " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", max_piece_length=12
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])  # fmt: skip
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


if __name__ == "__main__":
    tok = build(ROOT / "assets" / "tokenizer")
    print("vocab", tok.vocab_size, tok("A man talks in a bright studio.").input_ids)
