"""The studio's `generate` API through gradio_client against a real server."""

from __future__ import annotations

from gradio_client import Client, handle_file

from engine import media
from tests.studio_server import running_studio
from tests.test_pipeline import write_image, write_wav


def test_generate_api_returns_video_and_gallery_id(tmp_path):
    image = write_image(tmp_path / "face.png")
    audio = write_wav(tmp_path / "voice.wav", 0.5)
    with running_studio(tmp_path / "data") as (url, ctx):
        client = Client(url, verbose=False)
        # (prompt, image, audio, then optional settings in the Generate tab's order)
        result = client.predict(
            "a woman speaks",
            handle_file(image),
            handle_file(audio),
            "",
            "tiny",
            "custom",
            32,
            48,
            0,
            2,
            42,
            "official",
            5.0,
            4.0,
            5.5,
            980,
            api_name="/generate",
        )
        video, gallery_id, status = result[0], result[1], result[2]
        assert "done" in status and gallery_id >= 1
        info = media.probe(video["video"] if isinstance(video, dict) else video)
        assert info["video"]["width"] == 48 and info["video"]["height"] == 32
        assert info["video"]["frames"] == 9  # 0.5 s -> 12 frames -> snapped to 9
        assert info["audio"] is not None
        row = ctx.store.get(int(gallery_id))
        assert row.status == "done" and row.seed == 42 and row.prompt == "a woman speaks"

        # the settings are optional: (prompt, image, audio) alone uses the model's defaults
        video, gallery_id, status = client.predict(
            "a man sings", handle_file(image), handle_file(audio), api_name="/generate"
        )[:3]
        assert "done" in status
        info = media.probe(video["video"] if isinstance(video, dict) else video)
        assert (info["video"]["width"], info["video"]["height"]) == (64, 64)  # the tiny model's default size
        assert ctx.store.get(int(gallery_id)).settings["num_inference_steps"] == 8
