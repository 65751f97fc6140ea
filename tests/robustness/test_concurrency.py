"""Many visitors at once against a public studio: nothing lost or duplicated, one job per visitor, a bounded queue.

API clients are visitors (each gradio_client session is its own owner). The studio also caps jobs per client
address (2); these studios run as behind one trusted proxy (a Space), which believes the X-Forwarded-For hop the
proxy appends (here: the last one), so distinct visitors each send their own X-Forwarded-For address.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import ValidationError

from studio import admission
from tests.robustness.helpers import all_rows, assert_clean, audit
from tests.robustness.rawapi import RawClient
from tests.studio_server import running_studio


def job_args(media, steps: int = 1, size: int = 32, audio: str = "audio") -> tuple:
    return ("a visitor talks", handle_file(str(media["image"])), handle_file(str(media[audio])), "", "tiny",
            "custom", size, size, 0, steps, 3, "official", None, None, None, None, None, False, True)  # fmt: skip


def submit_all(clients: list[Client], args: tuple) -> list:
    """Submit from every client at the same moment; returns each one's outcome (result tuple or exception)."""
    barrier = threading.Barrier(len(clients))

    def one(client):
        barrier.wait()
        try:
            return client.predict(*args, api_name="/generate")
        except Exception as exc:  # ValidationError (refused at arrival) is an expected outcome here
            return exc

    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(one, clients))


def make_clients(url: str, n: int, address=lambda i: f"10.0.{i // 250}.{i % 250 + 1}") -> list[Client]:
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda i: Client(url, verbose=False, headers={"X-Forwarded-For": address(i)}), range(n)))


@pytest.mark.slow
def test_twenty_visitors_at_once_each_get_exactly_their_own_row(tmp_path, good_media, db_url):
    """On SQLite and on a PostgreSQL server (`db_url`, tests/conftest.py)."""
    studio = running_studio(tmp_path / "data", public=True, max_queue_public=20, trusted_proxies=1, db_url=db_url)
    with studio as (url, ctx):
        clients = make_clients(url, 20)
        started = time.perf_counter()
        outcomes = submit_all(clients, job_args(good_media))
        seconds = time.perf_counter() - started
        errors = [repr(o) for o in outcomes if isinstance(o, Exception)]
        assert errors == [], errors
        statuses = [o[2] for o in outcomes]
        assert all("done" in s for s in statuses), statuses
        ids = [int(o[1]) for o in outcomes]
        assert len(set(ids)) == 20, f"gallery ids not unique: {sorted(ids)}"
        rows = all_rows(ctx.store)
        assert sorted(r.id for r in rows) == sorted(ids), "rows lost or duplicated"
        owners = [r.owner for r in rows]
        assert len(set(owners)) == 20 and all(o.startswith("anon:") for o in owners), owners
        for row in rows:  # each visitor's owner has exactly its one row
            mine, total = ctx.store.list_generations(owner=row.owner)
            assert total == 1 and mine[0].id == row.id and mine[0].status == "done"
        assert admission.tickets(ctx) == {}
        assert_clean(audit(ctx.store))
        print(f"\n20 visitors at once ({ctx.store.engine.dialect.name}): 20 rows, 20 owners, {seconds:.1f} s in all")


def test_one_visitor_ten_parallel_submissions_one_admitted(tmp_path, good_media):
    with running_studio(tmp_path / "data", public=True, trusted_proxies=1) as (url, ctx):
        client = Client(url, verbose=False)
        args = job_args(good_media, steps=20, size=64, audio="audio05")  # long enough for all ten to arrive
        barrier = threading.Barrier(10)

        def one(_):
            barrier.wait()
            try:
                return client.predict(*args, api_name="/generate")
            except Exception as exc:
                return exc

        with ThreadPoolExecutor(10) as pool:
            outcomes = list(pool.map(one, range(10)))
        done = [o for o in outcomes if not isinstance(o, Exception)]
        refused = [o for o in outcomes if isinstance(o, ValidationError)]
        others = [repr(o) for o in outcomes if isinstance(o, Exception) and not isinstance(o, ValidationError)]
        assert others == [], others
        assert len(done) == 1 and "done" in done[0][2], [o[2] for o in done]
        assert len(refused) == 9
        assert all("You already have a job queued or running" in str(e) for e in refused), [str(e) for e in refused]
        rows = all_rows(ctx.store)
        assert len(rows) == 1 and rows[0].status == "done"
        assert admission.tickets(ctx) == {}
        # and once it has finished, the same visitor may queue the next one
        again = client.predict(*job_args(good_media), api_name="/generate")
        assert "done" in again[2]


def test_bounded_queue_refuses_extra_visitors_with_the_busy_message(tmp_path, good_media):
    with running_studio(tmp_path / "data", public=True, max_queue_public=3, trusted_proxies=1) as (url, ctx):
        clients = make_clients(url, 8)
        outcomes = submit_all(clients, job_args(good_media, steps=20, size=64, audio="audio05"))
        done = [o for o in outcomes if not isinstance(o, Exception)]
        refused = [str(o) for o in outcomes if isinstance(o, ValidationError)]
        others = [repr(o) for o in outcomes if isinstance(o, Exception) and not isinstance(o, ValidationError)]
        assert others == [], others
        assert all("done" in o[2] for o in done), [o[2] for o in done]
        assert len(done) == 3 and len(refused) == 5, (len(done), refused)
        # gradio_client words it "1 parameter(s) failed validation: - prompt: <the studio's message>"
        assert all("The studio is busy (3 jobs waiting or running)" in r for r in refused), refused
        assert len(all_rows(ctx.store)) == 3 and admission.tickets(ctx) == {}

        # visitors behind one address: two may queue, the third hears about its network
        shared = make_clients(url, 3, address=lambda i: "192.0.2.7")
        outcomes = submit_all(shared, job_args(good_media, steps=10, size=64, audio="audio05"))
        refused = [str(o) for o in outcomes if isinstance(o, ValidationError)]
        assert sum(1 for o in outcomes if not isinstance(o, Exception)) == 2, outcomes
        assert len(refused) == 1 and "Your network already has jobs queued or running here" in refused[0], refused
        assert_clean(audit(ctx.store))


def test_a_page_that_goes_away_while_its_job_waits_frees_its_visitor(tmp_path, good_media):
    """A queued job whose page closes is dropped by Gradio before the job function runs; its admission ticket must
    not keep the visitor (and a queue slot) locked out until `admission_ttl_s` (15 minutes)."""
    with running_studio(tmp_path / "data", public=True, trusted_proxies=1) as (url, ctx):

        def values(client, steps):
            return ["a man talks", client.upload(good_media["image"]), client.upload(good_media["audio05"]), "",
                    "tiny", "custom", 64, 64, 0, steps, 1, "official", None, None, None, None, None, False, True]  # fmt: skip

        first, leaving = RawClient(url), RawClient(url, headers={"X-Forwarded-For": "198.51.100.9"})
        running = ThreadPoolExecutor(1).submit(lambda: first.generate(values(first, 15)))
        deadline = time.monotonic() + 60
        while not any(r.status == "running" for r in all_rows(ctx.store)):
            assert time.monotonic() < deadline and not running.done()
            time.sleep(0.05)
        leaving.join_and_leave(values(leaving, 1))  # queued behind the running job; the tab closes
        assert "done" in running.result().status
        deadline = time.monotonic() + 10
        while admission.tickets(ctx) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = admission.tickets(ctx)
        again = leaving.generate(values(leaving, 1))
        assert again.kind == "output" and "done" in again.status, (again.kind, again.message, left)
        assert admission.tickets(ctx) == {}
        first.close()
        leaving.close()
