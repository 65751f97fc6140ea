"""The queue list is the gallery's (issue 29): waiting jobs have their gallery row and number, wait in the studio's
turn line in the order shown, and their owner cancels, stops or reorders them by that number (tiny model, real
SQLite, real threads)."""

from __future__ import annotations

import threading

from studio import queue_view
from studio.jobs import run_job
from studio.queue_view import JobTurn, Waiter
from tests.test_studio_callbacks import request


def _wait_for(check, timeout_s: float = 60.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        threading.Event().wait(0.05)
    raise AssertionError("timed out")


def test_the_turn_goes_in_line_order_and_a_move_changes_which_job_runs_next():
    line, order = JobTurn(), []
    line.acquire(Waiter(None, None, threading.Event()))  # someone holds the turn
    waiters = {n: Waiter(n, "alice" if n != 3 else "bob", threading.Event()) for n in (1, 2, 3, 4)}

    def job(n):
        if line.acquire(waiters[n]):  # False: cancelled while it waited (it left the line)
            order.append(n)
            line.release()

    threads = []
    for n in (1, 2, 3, 4):
        threads.append(threading.Thread(target=job, args=(n,)))
        threads[-1].start()
        _wait_for(lambda n=n: len(line.snapshot()[1]) == n)
    assert [w.gid for w in line.snapshot()[1]] == [1, 2, 3, 4]
    assert "moved up" in line.move("alice", "#4", -1)  # swaps with alice's nearest waiting job, over bob's
    assert [w.gid for w in line.snapshot()[1]] == [1, 4, 3, 2]
    assert "No job #3 of yours" in line.move("alice", 3, -1)  # bob's job is not alice's to move
    assert "already first" in line.move("alice", "#1", -1)
    assert "No job #3 of yours" in line.cancel("alice", "#3")
    assert "will not run" in line.cancel("alice", "#2")
    line.release()
    for thread in threads:
        thread.join(10)
    assert order == [1, 4, 3]  # #2 was cancelled; #4 ran before bob's #3 and before where it had been


def test_queue_rows_are_gallery_rows_and_only_the_owners(ctx, tmp_path):
    """Three jobs wait behind a held turn: the list names them by their gallery numbers with seed and settings;
    moving the last one up makes it run first; a cancelled one ends 'stopped' with its number."""
    results: dict[int, object] = {}
    stops = {}
    with ctx.turn():  # another job holds the pipelines
        threads = []
        for seed in (21, 22, 23):
            stops[seed] = threading.Event()
            job = request(tmp_path, seed=seed, prompt=f"clip {seed}", num_inference_steps=1)
            threads.append(threading.Thread(target=lambda j=job, s=seed: results.__setitem__(
                s, run_job(ctx, j, "tiny", stops[s]))))  # fmt: skip
            threads[-1].start()
            _wait_for(lambda n=len(threads): len(ctx.line.snapshot()[1]) == n)
        rows = queue_view.queue_rows(ctx.line, ctx.board, ctx.store, "local")
        gallery, _ = ctx.store.list_generations()
        ids = sorted(r.id for r in gallery)
        assert [r[0] for r in rows] == [f"#{i}" for i in ids]  # the gallery's numbers, in turn order
        assert [r[3] for r in rows] == [21, 22, 23] and [r[4] for r in rows] == ["waiting"] * 3
        assert rows[0][2].startswith("tiny · 1 steps · 32×32") and [r[5] for r in rows] == ["1 ahead", "2 ahead",
                                                                                              "3 ahead"]  # fmt: skip
        assert queue_view.queue_rows(ctx.line, ctx.board, ctx.store, "anon:someone") == []  # nobody else's
        assert "moved up" in ctx.line.move("local", f"#{ids[2]}", -1)
        assert "moved up" in ctx.line.move("local", f"#{ids[2]}", -1)
        assert [r[0] for r in queue_view.queue_rows(ctx.line, ctx.board, ctx.store, "local")] == [
            f"#{ids[2]}", f"#{ids[0]}", f"#{ids[1]}"]  # fmt: skip
        assert "will not run" in ctx.line.cancel("local", f"#{ids[1]}")
    for thread in threads:
        thread.join(120)
    assert results[22].status == "stopped" and "cancelled before it started" in results[22].error
    assert results[22].generation_id == ids[1]  # the number it was listed and cancelled by
    started = {s: ctx.store.get(results[s].generation_id).started_at for s in (21, 23)}
    assert started[23] < started[21]  # the job moved to the front ran first
    assert ctx.store.get(ids[1]).started_at is None


def test_stop_from_the_list_ends_only_the_owners_running_job():
    line = JobTurn()
    stop = threading.Event()
    running = Waiter(5, "alice", stop)
    line.acquire(running)
    assert "Cancel ends a waiting one" in line.stop("bob", "#5") and not stop.is_set()
    assert "use Stop" in line.cancel("alice", "#5")
    assert "Stopping job #5" in line.stop("alice", "#5") and stop.is_set()
    line.release()


def test_the_pages_stop_button_stops_its_running_job_not_its_waiting_one(ctx):
    import gradio as gr

    from studio import tab_generate

    runner = tab_generate.JobRunner(ctx, None)
    running, waiting = threading.Event(), threading.Event()
    runner.stop_events["page-1"] = [("local", running), ("local", waiting)]  # two jobs of one page
    request = gr.Request(username=None, session_hash="page-1")
    assert "Nothing is running" in runner.on_stop(request)  # neither holds the turn yet
    ctx.line.acquire(Waiter(4, "local", running))
    try:
        assert "Stopping" in runner.on_stop(request)
        assert running.is_set() and not waiting.is_set()
    finally:
        ctx.line.release()


def test_variations_not_started_yet_are_listed_and_cancelled_as_one(ctx):
    """A click of 3 variations whose first runs: the two to come have no gallery number yet, so the list shows them
    as one row of the click ("new N"), and cancelling it stops them from starting (the running one goes on)."""
    click = ctx.board.arrive("local", "page-1", "a person talks", count=3)
    assert ctx.board.start("local", "page-1") is click  # the first variation runs
    rows = queue_view.queue_rows(ctx.line, ctx.board, ctx.store, "local")
    assert [r[0] for r in rows] == [f"new {click.id}"] and "2 more variations" in rows[0][2]
    assert queue_view.queue_rows(ctx.line, ctx.board, ctx.store, "anon:someone") == []  # nobody else's
    click.done = 2  # the last variation runs: nothing left to list
    assert queue_view.queue_rows(ctx.line, ctx.board, ctx.store, "local") == []
    click.done = 0
    assert "not yet started are cancelled" in ctx.board.cancel("local", click.id)
    assert ctx.board.cancelled(click)  # on_generate starts no further variation
    assert "No job" in ctx.board.cancel("anon:someone", click.id)
