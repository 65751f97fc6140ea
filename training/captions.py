"""Dense captions for clips that have none, from a vision-language model loaded through transformers.

Default model: Qwen2.5-VL-3B-Instruct (HuMo's captions come from Qwen2.5-VL). A few frames sampled evenly over the
clip are given as images in one chat turn. The tokenizer and the image processor are used directly (not the
multimodal `AutoProcessor`), because the processor also builds a video processor that needs torchvision, which
this project does not install; the prompt is the Qwen chat format with the image placeholders expanded exactly as
the processor would. A ready `processor` (e.g. `AutoProcessor.from_pretrained(...)` where torchvision exists)
can be injected instead.
"""

from __future__ import annotations

import numpy as np

from engine.errors import InputError, MissingWeightsError

DEFAULT_MODEL_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
DEFAULT_PROMPT = (
    "Describe this video for a text-to-video model in one detailed paragraph: the person's appearance (face, hair, "
    "skin, clothing, accessories), what they do and their expression, the background and objects, the lighting "
    "and the camera framing. Do not mention that these are frames."
)
SYSTEM_PROMPT = "You are a helpful assistant."


class Captioner:
    """`Captioner()(frames) -> str`: caption RGB frames [T, H, W, 3] with a Qwen2.5-VL-style model.

    Pass `model` + `tokenizer` + `image_processor` (or `model` + `processor`) to use objects already in memory
    (tests use a tiny random model); otherwise they are loaded from `model_id` on first use.
    """

    def __init__(
        self,
        model_id: str = DEFAULT_MODEL_ID,
        *,
        model=None,
        tokenizer=None,
        image_processor=None,
        processor=None,
        num_frames: int = 4,
        max_new_tokens: int = 160,
        prompt: str = DEFAULT_PROMPT,
        max_pixels: int = 448 * 448,
        device: str | None = None,
        dtype=None,
        local_files_only: bool = False,
    ):
        if num_frames < 1:
            raise InputError("num_frames must be at least 1", field="num_frames")
        self.model_id = model_id
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        self.image_processor = (
            image_processor if image_processor is not None else getattr(processor, "image_processor", None)
        )
        self.processor = processor
        self.num_frames = num_frames
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt
        self.max_pixels = max_pixels
        self.device = device
        self.dtype = dtype
        self.local_files_only = local_files_only

    def load(self) -> Captioner:
        """Load whatever was not injected from `model_id` (Hugging Face cache or a local folder)."""
        if self.model is not None and self.tokenizer is not None and self.image_processor is not None:
            return self
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        try:
            if self.model is None:
                dtype = self.dtype or (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
                self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                    self.model_id, dtype=dtype, local_files_only=self.local_files_only
                )
                self.model.to(self.device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
            if self.tokenizer is None:
                self.tokenizer = AutoTokenizer.from_pretrained(self.model_id, local_files_only=self.local_files_only)
            if self.image_processor is None:
                self.image_processor = AutoImageProcessor.from_pretrained(
                    self.model_id, local_files_only=self.local_files_only
                )
        except OSError as err:
            raise MissingWeightsError(
                f"captioning model {self.model_id!r} is not available locally ({err}). Download it with "
                f"`huggingface-cli download {self.model_id}`, pass a local folder as the captioner id, or give every "
                "clip a caption (sidecar .txt / manifest 'caption') and run without a captioner."
            ) from err
        return self

    def sample_frames(self, frames: np.ndarray) -> list[np.ndarray]:
        """`num_frames` frames evenly spread over the clip, resized to at most `max_pixels` (multiples of 28)."""
        import cv2

        idx = np.linspace(0, len(frames) - 1, min(self.num_frames, len(frames))).round().astype(int)
        out = []
        for frame in frames[idx]:
            h, w = frame.shape[:2]
            scale = min(1.0, (self.max_pixels / (h * w)) ** 0.5)
            nh, nw = max(28, int(h * scale) // 28 * 28), max(28, int(w * scale) // 28 * 28)
            out.append(cv2.resize(np.ascontiguousarray(frame), (nw, nh), interpolation=cv2.INTER_AREA))
        return out

    def _chat_text(self, image_tokens: list[str]) -> str:
        vision = "".join(f"<|vision_start|>{tokens}<|vision_end|>" for tokens in image_tokens)
        return (
            f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
            f"<|im_start|>user\n{vision}{self.prompt}<|im_end|>\n<|im_start|>assistant\n"
        )

    def encode(self, images: list[np.ndarray]) -> dict:
        """Model inputs (input_ids, attention_mask, pixel_values, image_grid_thw) for one chat turn."""
        from PIL import Image

        pil = [Image.fromarray(img) for img in images]
        if self.processor is not None:
            return dict(
                self.processor(text=[self._chat_text(["<|image_pad|>"] * len(pil))], images=pil, return_tensors="pt")
            )
        vision = self.image_processor(images=pil, return_tensors="pt")
        merge = int(getattr(self.image_processor, "merge_size", 2)) ** 2
        counts = (vision["image_grid_thw"].prod(-1) // merge).tolist()
        text = self._chat_text(["<|image_pad|>" * int(n) for n in counts])
        tokens = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        return {**dict(tokens), "pixel_values": vision["pixel_values"], "image_grid_thw": vision["image_grid_thw"]}

    def __call__(self, frames: np.ndarray) -> str:
        import torch

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise InputError(f"frames must be RGB [T, H, W, 3], got shape {frames.shape}", field="frames")
        self.load()
        inputs = self.encode(self.sample_frames(frames))
        param = next(self.model.parameters())
        inputs = {k: v.to(param.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(param.dtype)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = out[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
