"""Identities nobody can borrow and addresses nobody can forge (issue 27, items 3 and 4), through the raw HTTP API.

- under `--auth` every route but the login needs a login (`/gradio_api/cancel`, `/heartbeat`, `/reset`, the queue);
- a public studio accepts only visitor ids it issued: a chosen id, one signed with a published key, and another
  visitor's session hash get nothing (their Stop stops nothing, their stream and cancel are refused elsewhere);
- a forged X-Forwarded-For does not change the per-address count, from 127.0.0.1 or from 127.0.0.2, unless the
  connection comes from a proxy named in HUMO_TRUSTED_PROXIES.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from studio.owners import BROWSER_STORAGE_SECRET, issue_visitor
from studio.tab_generate import API_INPUTS
from tests.robustness.helpers import all_rows
from tests.robustness.rawapi import RawClient
from tests.studio_server import running_studio


def job_values(client: RawClient, media, steps: int = 2) -> list:
    image, audio = client.upload(media["image"]), client.upload(media["audio"])
    return ["a visitor talks", image, audio, "", "tiny", "custom", 32, 32, 0, steps, 3, "official", None, None, None,
            None, None, False, True]  # fmt: skip


def join(http: httpx.Client, url: str, fn_index: int, session: str, data: list) -> httpx.Response:
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    return http.post(
        url + "gradio_api/queue/join", content=json.dumps(body), headers={"content-type": "application/json"}
    )


@pytest.mark.slow
def test_under_auth_every_route_but_the_login_needs_one(tmp_path):
    with running_studio(tmp_path / "data", auth=[("ada", "pw")]) as (url, ctx), httpx.Client(timeout=30) as http:
        closed = [
            ("POST", "gradio_api/cancel", {"session_hash": "s", "fn_index": 0, "event_id": "e"}),
            ("GET", "gradio_api/heartbeat/s", None),
            ("POST", "gradio_api/reset", {"event_id": "e"}),
            ("POST", "gradio_api/queue/join", {"data": [], "fn_index": 0, "session_hash": "s"}),
            ("GET", "gradio_api/queue/data?session_hash=s", None),
            ("GET", "gradio_api/info", None),
            ("POST", "gradio_api/upload", None),
        ]
        for method, path, body in closed:
            r = http.request(method, url + path, json=body)
            assert r.status_code == 401, (path, r.status_code, r.text[:200])
        assert http.get(url).status_code == 200  # the login page itself
        assert http.post(url + "login", data={"username": "ada", "password": "pw"}).status_code == 200
        assert http.get(url + "gradio_api/info").status_code == 200  # logged in: the routes answer
        r = http.post(url + "gradio_api/cancel", json={"session_hash": "s", "fn_index": 0, "event_id": "e"})
        assert r.status_code == 200


@pytest.mark.slow
def test_only_issued_visitor_ids_own_anything_and_a_session_hash_alone_stops_nothing(tmp_path, good_media):
    with running_studio(tmp_path / "data", public=True) as (url, ctx), RawClient(url) as page:
        n_page = len(API_INPUTS) + 1  # the page's generate event: API inputs, page-only inputs, then the visitor
        config = page.http.get(url + "config").json()
        run = next(
            d for d in config["dependencies"] if len(d["inputs"]) > n_page and d.get("trigger_mode") == "multiple"
        )
        stop = next(d for d in config["dependencies"] if d["inputs"] and len(d["inputs"]) == 1
                    and d["outputs"] and any(c["id"] in d["outputs"] and c.get("props", {}).get("elem_id") == "stop-info"
                                             for c in config["components"]))  # fmt: skip
        load = next(d for d in config["dependencies"] if d.get("targets") and d["targets"][0][1] == "load")
        r = page.http.post(url + "gradio_api/run/predict", json={"fn_index": load["id"], "data": [None],
                                                                  "session_hash": page.session_hash})  # fmt: skip
        token = r.json()["data"][0]
        assert token.startswith("v1.")  # issued by the studio
        values = job_values(page, good_media)
        pad = [None] * (len(run["inputs"]) - len(values) - 1)
        for forged in ["a" * 32, "session-" + page.session_hash, issue_visitor(BROWSER_STORAGE_SECRET.encode())]:
            answer = join(page.http, url, run["id"], "x" + page.session_hash[1:], [*values, *pad, forged])
            assert answer.status_code == 422 and "no valid visitor id" in answer.text, answer.text[:300]
        # the real visitor's job, and a stranger who knows the page's session hash presses its Stop
        values = job_values(page, good_media, steps=30)
        assert join(page.http, url, run["id"], page.session_hash, [*values, *pad, token]).status_code == 200
        stream = page.http.stream("GET", url + "gradio_api/queue/data", params={"session_hash": page.session_hash})
        with stream as s:
            deadline = time.monotonic() + 120
            while not any(r.status == "running" for r in all_rows(ctx.store)) and time.monotonic() < deadline:
                time.sleep(0.05)
            with httpx.Client(timeout=30) as stranger:
                for visitor in (None, "a" * 32):
                    body = {"fn_index": stop["id"], "data": [visitor], "session_hash": page.session_hash}
                    said = stranger.post(url + "gradio_api/run/predict", json=body).json()["data"][0]
                    assert "Nothing is running" in said or "no valid visitor id" in said, said
            for _ in s.iter_text():
                if all(r.status in ("done", "failed", "stopped") for r in all_rows(ctx.store)):
                    break
        (row,) = all_rows(ctx.store)
        assert row.status == "done" and row.owner == f"anon:{token.split('.')[1]}", (row.status, row.owner)


def test_another_address_cannot_read_or_cancel_a_page_session(tmp_path, good_media):
    with running_studio(tmp_path / "data", public=True) as (url, ctx), RawClient(url) as page:
        values = job_values(page, good_media)
        joined = join(page.http, url, page.fn_index, page.session_hash, values)
        assert joined.status_code == 200
        elsewhere = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30)
        with elsewhere:
            r = elsewhere.get(url + "gradio_api/queue/data", params={"session_hash": page.session_hash})
            assert r.status_code == 403, r.text[:200]
            body = {"session_hash": page.session_hash, "fn_index": page.fn_index, "event_id": "e"}
            assert elsewhere.post(url + "gradio_api/cancel", json=body).status_code == 403
            assert elsewhere.get(url + f"gradio_api/heartbeat/{page.session_hash}").status_code == 403
        answer = page._read(joined.json()["event_id"], time.perf_counter(), 120)  # the page's own stream works
        assert answer.kind == "output" and "done" in answer.status, answer


@pytest.mark.slow
@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.2"])
def test_a_forged_forwarded_for_does_not_change_the_per_address_count(tmp_path, good_media, source):
    with running_studio(tmp_path / "data", public=True) as (url, ctx):
        statuses = []
        with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30) as http:
            client = RawClient(url, http=http)
            values = job_values(client, good_media, steps=30)
            for i in range(3):
                body = {"data": values, "fn_index": client.fn_index, "session_hash": f"forged-{i}-{source}",
                        "event_data": None, "trigger_id": None}  # fmt: skip
                r = http.post(url + "gradio_api/queue/join", json=body, headers={"X-Forwarded-For": f"10.9.9.{i}"})
                statuses.append((r.status_code, r.text[:200]))
        assert [s for s, _ in statuses[:2]] == [200, 200], statuses
        assert statuses[2][0] == 422 and "Your network already has jobs" in statuses[2][1], statuses


@pytest.mark.slow
def test_a_trusted_proxy_named_in_humo_trusted_proxies_is_believed(tmp_path, good_media):
    with running_studio(tmp_path / "data", public=True, proxy_addresses="127.0.0.2") as (url, ctx):
        for source, admitted in (("127.0.0.2", 3), ("127.0.0.1", 2)):
            statuses = []
            with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30) as http:
                client = RawClient(url, http=http)
                values = job_values(client, good_media, steps=30)
                for i in range(3):
                    body = {"data": values, "fn_index": client.fn_index, "session_hash": f"p-{i}-{source}",
                            "event_data": None, "trigger_id": None}  # fmt: skip
                    forwarded = f"10.8.{source[-1]}.{i}"
                    r = http.post(url + "gradio_api/queue/join", json=body, headers={"X-Forwarded-For": forwarded})
                    statuses.append(r.status_code)
            assert statuses.count(200) == admitted, (source, statuses)
