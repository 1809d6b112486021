"""The replay server serves fixtures in the real API's shape, and the controls tests rely on."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from aggregator.devtools.replay import Reply

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_listing_query_maps_to_fixture_and_base_is_substituted(replay):
    status, body, headers = get(f"{replay.base_url}/content/outList?cid=1&tn=1&page=1&limit=10")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    entry = json.loads(body)["data"]["data"][0]
    assert entry["detail_url"] == f"{replay.base_url}/detail_json/58837411.json"


def test_unknown_listing_page_is_an_empty_page(replay):
    status, body, _ = get(f"{replay.base_url}/content/outList?cid=1&tn=1&page=9&limit=10")
    assert status == 200
    assert json.loads(body)["data"] == {"data": [], "has_more": False}


@pytest.mark.parametrize("path", ["/nope.json", "/../../../etc/passwd", "/%2e%2e/conftest.py"])
def test_missing_and_escaping_paths_are_404(replay, path):
    assert get(f"{replay.base_url}{path}")[0] == 404


def test_fail_for_a_number_of_hits_then_recover(replay):
    url = f"{replay.base_url}/detail_json/1502.json"
    replay.fail("/detail_json/1502.json", status=503, times=2)
    assert [get(url)[0] for _ in range(3)] == [503, 503, 200]
    assert replay.hits("/detail_json/1502.json") == 3


def test_reply_override_by_full_target(replay):
    target = "/content/outList?cid=1&tn=1&page=1&limit=10"
    replay.set_reply(target, Reply(body=b"oops", content_type="text/html"))
    assert get(f"{replay.base_url}{target}")[1] == b"oops"
    assert get(f"{replay.base_url}/content/outList?cid=1&tn=1&page=1&limit=5")[1] != b"oops"


def test_conditional_get_answers_304(replay):
    url = f"{replay.base_url}/detail_json/1502.json"
    status, _, headers = get(url)
    assert status == 200 and headers["ETag"]
    assert get(url, {"If-None-Match": headers["ETag"]})[0] == 304
    assert get(url, {"If-Modified-Since": headers["Last-Modified"]})[0] == 304
    assert get(url, {"If-None-Match": '"other"'})[0] == 200


def test_latency_delays_every_answer(replay):
    url = f"{replay.base_url}/detail_json/1502.json"
    replay.latency = 0.3
    try:
        started = time.monotonic()
        status, _, _ = get(url)
        waited = time.monotonic() - started
    finally:
        replay.latency = 0.0
    assert status == 200
    assert waited >= 0.3


def test_images_are_served_byte_for_byte_with_their_type(replay):
    status, body, headers = get(f"{replay.base_url}/img/anim.gif")
    assert status == 200 and headers["Content-Type"] == "image/gif"
    assert body == (FIXTURES / "images" / "img" / "anim.gif").read_bytes()


def test_a_reply_can_refuse_requests_without_the_expected_referer(replay):
    page = f"{replay.base_url}/detail/1.html"
    replay.set_reply("/img/x.jpg", Reply(body=b"\xff\xd8\xff", referer_prefix=page))
    assert get(f"{replay.base_url}/img/x.jpg")[0] == 403
    assert get(f"{replay.base_url}/img/x.jpg", {"Referer": "http://elsewhere/"})[0] == 403
    assert get(f"{replay.base_url}/img/x.jpg", {"Referer": page + "?a=1"})[:2] == (
        200,
        b"\xff\xd8\xff",
    )
    assert [referer for _, referer in replay.referers] == [None, "http://elsewhere/", page + "?a=1"]
