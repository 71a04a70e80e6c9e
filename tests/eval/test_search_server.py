"""zir serve: the page, its JSON answers, 4xx with a message on bad input, and (where Chromium and Playwright are
installed) a real headless browser typing a query, seeing thumbnails and clicking one."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from zir.config import load_config
from zir.data import ShapesSource
from zir.search.embed import embed_source
from zir.search.server import make_server
from zir.train import train


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The URL of a page over 30 shapes embedded by a 2-step CLIP run."""
    tmp = tmp_path_factory.mktemp("serve")
    train(load_config("clip", ["train.steps=2", "train.ckpt_every=2", "train.threads=1", "train.precision=fp32",
                               "data.batch_size=32", "data.options.n=64"]), tmp / "run", progress=False)
    source = ShapesSource("test", n=30, size=16, objects=(1, 1), object_scale=2.5)
    embed_source(tmp / "run", source, tmp / "idx", progress=False)
    server = make_server(tmp / "idx", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


def get(url: str, data: bytes | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as answer:
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def test_the_page_has_a_search_box_and_binds_to_this_machine_only(served):
    assert served.startswith("http://127.0.0.1:")
    status, body = get(served + "/")
    assert status == 200 and "name=q" in body and "type=file" in body and "30 items, exact index" in body


def test_text_and_item_queries_answer_best_first_with_thumbnails(served):
    status, body = get(served + "/api/search?q=a+red+circle&k=5")
    results = json.loads(body)["results"]
    assert status == 200 and len(results) == 5
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    status, body = get(served + "/api/search?id=12&k=3")
    assert json.loads(body)["results"][0]["id"] == 12
    status, body = get(served + "/?q=a+circle&k=4")
    assert status == 200 and body.count("<img src='/thumb/") == 4 and "href='/?id=" in body
    with urllib.request.urlopen(served + "/thumb/0", timeout=30) as answer:
        assert answer.headers["Content-Type"] == "image/jpeg" and answer.read()[:2] == b"\xff\xd8"


def test_an_uploaded_image_finds_its_own_item_first(served):
    import io

    from PIL import Image

    image = ShapesSource("test", n=30, size=16, objects=(1, 1), object_scale=2.5).get(7).image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    status, body = get(served + "/upload", data=buf.getvalue())
    assert status == 200 and body.index("href='/?id=7'") < body.index("href='/?id=", body.index("href='/?id=7'") + 1)


@pytest.mark.parametrize("path, data, status, message", [
    ("/?q=", None, 400, "the text query is empty"),
    ("/api/search?q=%20%20", None, 400, "the text query is empty"),
    ("/api/search?id=999", None, 400, "has no item 999"),
    ("/api/search?id=x", None, 400, "id='x': expected a whole number"),
    ("/api/search?q=circle&k=0", None, 400, "k=0: expected at least 1"),
    ("/upload", b"this is not a picture", 400, "not a usable image"),
    ("/thumb/999", None, 404, "no item 999"),
    ("/elsewhere", None, 404, "no page /elsewhere"),
])
def test_bad_requests_are_4xx_with_a_message(served, path, data, status, message):
    got, body = get(served + path, data)
    assert got == status and message in body and "Traceback" not in body


def _browser():
    """(playwright's sync_playwright, Chromium's path), or a skip naming what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; see docs/search.md)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; its browser download is not needed)")
    return sync_playwright, chromium


def test_a_headless_browser_types_a_query_sees_thumbnails_and_clicks_one(served, tmp_path):
    sync_playwright, chromium = _browser()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(served + "/")
            page.fill("#q", "a red circle")
            page.press("#q", "Enter")
            page.wait_for_selector("#results img")
            thumbs = page.locator("#results img")
            assert thumbs.count() == 24  # the page asks for 24 of the 30
            assert all(page.evaluate("(i) => document.querySelectorAll('#results img')[i].naturalWidth", i) > 0
                       for i in range(3))  # the thumbnails loaded
            first_key = thumbs.nth(2).get_attribute("alt")
            thumbs.nth(2).click()
            page.wait_for_url("**/?id=*")
            assert page.locator("#results img").first.get_attribute("alt") == first_key  # itself first
            page.goto(served + "/?q=")
            assert "the text query is empty" in page.locator("#error").inner_text()
        finally:
            browser.close()
