"""Sweeps (studio/sweeps.py): the axis parser, the grid's cells, the caps before any work, and the labelled grid
video in the gallery (tiny model, real SQLite, real ffmpeg)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import media
from engine.errors import InputError
from studio import sweeps, tab_gallery, tab_sweep
from studio.context import StudioContext, StudioOptions
from studio.jobs import run_job
from tests.test_pipeline import write_image, write_wav


def form(tmp_path, **kw) -> dict:
    """The Generate form's raw values (API_INPUTS names) of a small tiny-model job."""
    values = dict(prompt="a person talks", image=str(write_image(tmp_path / "face.png")),
                  audio=str(write_wav(tmp_path / "voice.wav", 0.4)), model="tiny", resolution="custom", height=32,
                  width=32, frames=0, steps=2, seed=7, preset="official", scale_t=5.0, scale_i=5.0, scale_a=5.5)  # fmt: skip
    values.update(kw)
    return values


@pytest.mark.parametrize(
    ("axis", "text", "needle"),
    [
        ("Audio scale", "3, x, 7.5", "Sweep X axis (Audio scale): 'x' is not a number"),
        ("Audio scale", "3, 20", "Sweep X axis (Audio scale): 20 is out of range; use 0 to 15"),
        ("Steps", "2, 2.5", "Sweep X axis (Steps): 2.5 is not a whole number"),
        ("Seed", " , ", "Sweep X axis (Seed): type values separated by commas"),
        ("Switch timestep", "950, 950", "Sweep X axis (Switch timestep) lists 950 twice"),
        ("Text scale", ",".join(str(i) for i in range(9)), "has 9 values; at most 8"),
        ("Guidance", "1", "Sweep X axis: pick one of"),
        (sweeps.PROMPT_AXIS, "\n \n", "type one prompt per line"),
    ],
)
def test_axis_parser_names_the_axis_of_a_bad_value(axis, text, needle):
    with pytest.raises(InputError) as info:
        sweeps.parse_axis(axis, text)
    assert needle in str(info.value) and info.value.field == "sweep"


def test_axis_parser_values():
    assert sweeps.parse_axis("Audio scale", "3, 5,7.5") == [3.0, 5.0, 7.5]
    assert sweeps.parse_axis("Steps", "2\n4") == [2, 4] and isinstance(sweeps.parse_axis("Seed", "3")[0], int)
    assert sweeps.parse_axis(sweeps.PROMPT_AXIS, "a man, smiling\n\na woman") == ["a man, smiling", "a woman"]
    assert sweeps.label("Audio scale", 7.5) == "Audio scale 7.5" and sweeps.label("Steps", 4) == "Steps 4"


def test_cells_row_major_with_one_shared_seed(ctx, tmp_path):
    values = form(tmp_path, seed=-1)
    sweep = sweeps.plan_sweep(values, None, "Audio scale", "3, 7.5", "Steps", "1, 2, 3")
    assert [(c.values["scale_a"], c.values["steps"]) for c in sweep.cells] == [
        (3.0, 1), (7.5, 1), (3.0, 2), (7.5, 2), (3.0, 3), (7.5, 3)]  # fmt: skip
    assert sweep.x_labels == ["Audio scale 3", "Audio scale 7.5"] and sweep.y_labels == [
        "Steps 1",
        "Steps 2",
        "Steps 3",
    ]
    seeds = {c.values["seed"] for c in sweep.cells}
    assert len(seeds) == 1 and seeds.pop() >= 0  # a random seed is drawn once: cells differ only by the axes
    requests = [tab_sweep.cell_request(ctx, cell)[0] for cell in sweep.cells[:2]]
    assert requests[0].guidance.to_dict() != requests[1].guidance.to_dict()  # the swept scale reaches the schedule
    with pytest.raises(InputError, match="both Steps"):
        sweeps.plan_sweep(values, None, "Steps", "1", "Steps", "2")


def test_a_keyframe_axis_changes_the_first_row(ctx, tmp_path):
    values = form(tmp_path)
    with pytest.raises(InputError, match="type a keyframe there first"):
        sweeps.plan_sweep(values, [["", None, None, None, ""]], "Keyframe 1 audio scale", "4, 9")
    sweep = sweeps.plan_sweep(values, [["1", None, None, 8.0, "hold"]], "Keyframe 1 audio scale", "4, 9")
    assert [c.keyframes[0][3] for c in sweep.cells] == [4.0, 9.0]
    schedules = [tab_sweep.cell_request(ctx, cell)[0].guidance.to_dict()["source"]["keyframes"] for cell in sweep.cells]
    assert [k[0]["scale_a"] for k in schedules] == [4.0, 9.0]


def test_public_caps_refuse_an_oversize_sweep_before_any_work(tmp_path):
    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "d", model="tiny", public=True))
    try:
        values = form(tmp_path, consent=True)
        big = sweeps.plan_sweep(values, None, "Audio scale", "3, 7.5", "Seed", "1, 2, 3")
        with pytest.raises(InputError, match="This sweep makes 6 videos; this public studio runs at most 4"):
            tab_sweep.check_sweep(ctx, big, owner="visitor-a")
        # one cell over a per-job cap refuses the whole grid too, naming the cell
        fits = sweeps.plan_sweep(values, None, "Steps", "2, 40")
        with pytest.raises(InputError, match="Sweep cell Steps 40: .*Steps"):
            tab_sweep.check_sweep(ctx, fits, owner="visitor-a")
        # the studio's queue counts every cell: others' waiting jobs leave no room for four more
        for number in range(ctx.options.max_queue_public - 2):
            ctx.store.take_ticket(f"other-{number}", f"10.0.0.{number}", None, 2, ctx.options.max_queue_public)
        four = sweeps.plan_sweep(values, None, "Seed", "1, 2, 3, 4")
        with pytest.raises(InputError, match="does not fit now"):
            tab_sweep.check_sweep(ctx, four, owner="visitor-a")
        rows, total = ctx.store.list_generations(owner="visitor-a")
        assert total == 0 and not any(ctx.store.paths.inputs.rglob("*"))  # nothing was made or copied
    finally:
        ctx.store.close()


def test_tile_frames_places_cells_and_holds_a_short_one():
    red = np.zeros((5, 16, 24, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((3, 16, 24, 3), np.uint8)
    blue[..., 2] = 255
    grid = media.tile_frames([red, blue], 2, ["a", "b"], [""], min_cell=48)
    assert grid.shape == (5, media.GRID_LABEL_PX + 32, 96, 3)  # 24 px cells scaled to 48 px, one label band
    top = media.GRID_LABEL_PX
    assert (grid[4, top + 16, 24] == [255, 0, 0]).all() and (grid[4, top + 16, 72] == [0, 0, 255]).all()
    with pytest.raises(InputError):
        media.tile_frames([red, blue, red], 2, ["a", "b"], [""])


def test_a_finished_sweep_makes_a_labelled_grid_video_in_the_gallery(ctx, tmp_path):
    sweep = sweeps.plan_sweep(form(tmp_path), None, "Audio scale", "3, 5, 7.5", "Seed", "1, 2")
    tab_sweep.check_sweep(ctx, sweep)
    ids = []
    for cell in sweep.cells:
        request, names = tab_sweep.cell_request(ctx, cell)
        ids.append(run_job(ctx, request, "tiny", names=names).generation_id)
    result = sweeps.make_grid(ctx, sweep, ids)
    assert result.status == "done", result.error
    row = ctx.store.get(result.generation_id)
    assert row.status == "done" and row.thumbnail_path and [c["id"] for c in sweeps.grid_cells(row.settings)] == ids
    path = ctx.store.abs_path(row.video_path)
    info, first = media.probe(path), media.probe(ctx.store.abs_path(ctx.store.get(ids[0]).video_path))
    cell = max(160, 32)  # 32-px cells scaled to the smallest labelled cell
    assert (info["video"]["width"], info["video"]["height"]) == (160 + 3 * cell, media.GRID_LABEL_PX + 2 * cell)
    frames = media.read_video_frames(path)
    assert len(frames) == len(media.read_video_frames(ctx.store.abs_path(ctx.store.get(ids[0]).video_path)))
    assert info["audio"] is not None and first["audio"] is not None  # the first cell's sound
    # labels: text in each column's band and each row's label, on the plain background elsewhere
    band = frames[0, 2 : media.GRID_LABEL_PX - 2].astype(int)
    for column in range(3):
        part = band[:, 160 + column * cell : 160 + (column + 1) * cell]
        assert part.max() > 150, column  # light text on the dark band
    for r in range(2):
        part = frames[
            0, media.GRID_LABEL_PX + r * cell + cell // 2 - 10 : media.GRID_LABEL_PX + r * cell + cell // 2 + 10, :150
        ]
        assert part.astype(int).max() > 150, r
    assert frames[0, 2:18, 2:150].astype(int).max() < 80  # the corner has no label
    tags = media.read_metadata(path)
    assert "AI-generated" in tags.get("description", "")
    assert media.read_settings(path)["provenance"]["ai_generated"] is True
    # the gallery's detail of the grid lists its cells, and each cell's settings can be reused
    _, _, summary = tab_gallery.detail(ctx, row.id)
    assert all(f"#{gid}" in summary for gid in ids) and "Audio scale 7.5 · Seed 2" in summary
    reused = tab_gallery.settings_for_reuse(ctx, ids[-1])
    assert reused["scale_a"] == 7.5 and reused["seed"] == 2
    # a cell deleted on its own: the grid says so and no longer offers it for reuse
    tab_gallery.delete_generation(ctx, ids[0])
    assert [cell_id for _, cell_id in tab_gallery.cell_choices(ctx, row.id)] == ids[1:]
    _, _, summary = tab_gallery.detail(ctx, row.id)
    assert f"#{ids[0]} Audio scale 3 · Seed 1 (deleted)" in summary and f"#{ids[1]} Audio scale 5 · Seed 1," in summary


def test_a_grid_of_unfinished_cells_is_refused(ctx, tmp_path):
    sweep = sweeps.plan_sweep(form(tmp_path), None, "Seed", "1, 2")
    request, names = tab_sweep.cell_request(ctx, sweep.cells[0])
    done = run_job(ctx, request, "tiny", names=names).generation_id
    stopped = ctx.store.create_generation(prompt="x", mode="TIA", model_id="tiny").id
    with pytest.raises(InputError, match=f"#{stopped} did not finish"):
        sweeps.make_grid(ctx, sweep, [done, stopped])


def test_download_all_gives_the_owners_videos(ctx, tmp_path):
    import zipfile

    from tests.test_studio_callbacks import request

    mine = run_job(ctx, request(tmp_path), "tiny", owner="visitor-a")
    run_job(ctx, request(tmp_path, seed=8), "tiny", owner="visitor-b")
    served = tab_gallery.videos_zip(ctx, "visitor-a")
    with zipfile.ZipFile(served) as archive:
        assert archive.namelist() == [f"humo-{mine.generation_id:06d}.mp4"]  # the visitor's own mp4, not a thumbnail
        data = archive.read(archive.namelist()[0])
    assert data == ctx.store.abs_path(ctx.store.get(mine.generation_id, owner="visitor-a").video_path).read_bytes()
    assert tab_gallery.videos_zip(ctx, "nobody") is None


def test_the_sweep_event_refuses_an_oversize_public_grid_before_any_job(tmp_path):
    """The page's Run sweep (studio.tab_sweep.sweep_stream through the Generate tab's runner) in a public studio: a
    2×3 grid is refused whole with its message in the status line, before any row exists."""
    from types import SimpleNamespace

    from studio.store import Generation
    from studio.tab_generate import API_INPUTS, PAGE_INPUTS, JobRunner

    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "d", model="tiny", public=True))
    try:
        values = form(tmp_path, consent=True)
        args = [values.get(name) for name in API_INPUTS] + [None] * (len(PAGE_INPUTS) + 1)
        args += ["Audio scale", "3, 5, 7.5", "Seed", "1, 2"]
        request = SimpleNamespace(session_hash="s1", headers={}, client=None, username=None)
        updates = list(tab_sweep.sweep_stream(JobRunner(ctx, None), request, args))
        assert len(updates) == 1 and "This sweep makes 6 videos" in updates[0][2]
        with ctx.store._read() as session:  # every owner's rows: none was made
            assert session.query(Generation).count() == 0
        assert not any(ctx.store.paths.inputs.rglob("*")) and ctx.store.tickets() == []
    finally:
        ctx.store.close()
