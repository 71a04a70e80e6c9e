"""`zir serve INDEX --port P`: a local search page over an index (Python's http.server, 127.0.0.1 by default).

Routes (all answers are built here; nothing in the index names code or files to serve):
- `GET /` the page; `GET /?q=words` text search; `GET /?id=N` the items nearest item N (a click on a result);
- `POST /upload` an image's bytes (the page's file field sends them): the items nearest it;
- `GET /thumb/N` item N's thumbnail (JPEG); `GET /api/search?q=words` or `?id=N`: the results as JSON.
Bad input is an HTTP 4xx whose body says what was wrong in one line; no traceback reaches the browser.
"""

from __future__ import annotations

import html
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from zir.errors import ConfigError, ZirError
from zir.search.query import Hit, Searcher

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_K = 24

_STYLE = """body{font-family:sans-serif;margin:1.2em}form{display:inline-block;margin-right:1.5em}
input[type=text]{width:22em;font-size:110%}.grid{display:flex;flex-wrap:wrap;gap:.6em;margin-top:1em}
.hit{width:150px;font-size:75%;text-align:center;word-break:break-all}.hit img{width:128px;height:128px;
object-fit:contain;background:#eee;cursor:pointer;image-rendering:pixelated}.score{font-weight:bold}
.error{color:#b00;font-weight:bold}.note{color:#555;font-size:85%}"""

_UPLOAD_JS = """document.getElementById('upload').addEventListener('change', async (e) => {
  const file = e.target.files[0]; if (!file) return;
  const answer = await fetch('/upload', {method: 'POST', body: file});
  document.open(); document.write(await answer.text()); document.close();
});"""


class Bad(Exception):
    """A request the page answers with `status` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class SearchPage:
    """The page's content for one index: renders results and errors (no HTTP here, so it tests without a socket)."""

    def __init__(self, searcher: Searcher):
        self.searcher = searcher
        self.lock = threading.Lock()  # one query at a time through the model
        self.title = f"zir search: {searcher.folder}"

    def hits(self, params: dict) -> tuple[str, list[Hit]]:
        """(what was asked, hits) for ?q= or ?id=, with k from ?k=; Bad for a wrong request."""
        k = _whole(params.get("k", str(DEFAULT_K)), "k")
        with self.lock:
            try:
                if "id" in params:
                    item = _whole(params["id"], "id")
                    return f"images like item {item}", self.searcher.similar(item, k)
                if "q" in params:
                    return params["q"].strip(), self.searcher.text(params["q"], k)
            except ZirError as err:
                raise Bad(400, str(err)) from None
        raise Bad(400, "ask with ?q=some+words or ?id=N")

    def upload(self, data: bytes, k: int = DEFAULT_K) -> list[Hit]:
        """Hits for an uploaded image; Bad 400 when it is not one."""
        with self.lock:
            try:
                return self.searcher.image_bytes(data, k)
            except ZirError as err:
                raise Bad(400, f"the upload is not a usable image: {err}") from None

    def page(self, asked: str | None = None, hits: list[Hit] | None = None, error: str | None = None,
             query: str = "") -> str:
        """The whole page: the search box, the image upload and the results grid (or an error line)."""
        meta = self.searcher.meta
        text_ok = bool(meta.get("has_text"))
        box = (f"<form action='/' method=get><input type=text name=q id=q autofocus value='{html.escape(query)}' "
               "placeholder='a red circle'> <button type=submit>Search</button></form>") if text_ok else \
            "<p class=note>This index has no text space (its run has no image-text objective): search by image.</p>"
        parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(self.title)}</title>",
                 f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>", box,
                 "<label>or an image: <input type=file id=upload accept='image/*'></label>",
                 f"<p class=note>{self.searcher.store.count()} items, {self.searcher.kind} index, run "
                 f"{html.escape(str(meta.get('run')))} at step {meta.get('step')}; click a result for images like it.</p>"]
        if error:
            parts.append(f"<p class=error id=error>{html.escape(error)}</p>")
        if hits is not None:
            parts.append(f"<h2>{len(hits)} results for {html.escape(asked or '')}</h2><div class=grid id=results>")
            for hit in hits:
                it = hit.item
                parts.append(f"<div class=hit><a href='/?id={it.id}'><img src='/thumb/{it.id}' alt='{html.escape(it.key)}'>"
                             f"</a><br><span class=score>{hit.score:.3f}</span><br>{html.escape(it.shown)}"
                             + (f"<br><i>{html.escape(it.caption)}</i>" if it.caption else "") + "</div>")
            parts.append("</div>")
        parts.append(f"<script>{_UPLOAD_JS}</script></body></html>")
        return "".join(parts)

    def as_json(self, asked: str, hits: list[Hit]) -> str:
        """The results as JSON: the query and, best first, each hit's id, key, path, caption and score."""
        return json.dumps({"query": asked, "results": [
            {"id": h.item.id, "key": h.item.key, "path": h.item.path, "caption": h.item.caption,
             "score": round(h.score, 6)} for h in hits]})


def _whole(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise Bad(400, f"{name}={value!r}: expected a whole number") from None
    if number < (0 if name == "id" else 1):
        raise Bad(400, f"{name}={number}: expected at least {0 if name == 'id' else 1}")
    return number


def _handler(page: SearchPage):
    class Handler(BaseHTTPRequestHandler):
        server_version = "zir-search"

        def log_message(self, *args) -> None:  # quiet: the terminal shows the URL, not every thumbnail
            pass

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, bad: Bad, as_json: bool, query: str = "") -> None:
            if as_json:
                self._send(bad.status, json.dumps({"error": str(bad)}).encode(), "application/json")
            else:
                self._send(bad.status, page.page(error=str(bad), query=query).encode(), "text/html; charset=utf-8")

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            api = url.path == "/api/search"
            try:
                if url.path.startswith("/thumb/"):
                    jpeg = page.searcher.store.thumb(_whole(url.path[len("/thumb/"):], "id"))
                    if jpeg is None:
                        raise Bad(404, f"no item {url.path[len('/thumb/'):]}")
                    return self._send(200, jpeg, "image/jpeg")
                if url.path == "/" and not params:
                    return self._send(200, page.page().encode(), "text/html; charset=utf-8")
                if url.path not in ("/", "/api/search"):
                    raise Bad(404, f"no page {url.path}")
                asked, hits = page.hits(params)
                if api:
                    return self._send(200, page.as_json(asked, hits).encode(), "application/json")
                body = page.page(asked, hits, query=params.get("q", ""))
                self._send(200, body.encode(), "text/html; charset=utf-8")
            except Bad as bad:
                self._error(bad, api, params.get("q", ""))

        def do_POST(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            try:
                if url.path != "/upload":
                    raise Bad(404, f"no page {url.path}")
                length = _whole(self.headers.get("Content-Length", "0") or "0", "Content-Length")
                if length > MAX_UPLOAD_BYTES:
                    raise Bad(413, f"the upload is {length} bytes; at most {MAX_UPLOAD_BYTES} are read")
                hits = page.upload(self.rfile.read(length))
                self._send(200, page.page("the uploaded image", hits).encode(), "text/html; charset=utf-8")
            except Bad as bad:
                self._error(bad, False)

    return Handler


def make_server(index: str | os.PathLike, port: int = 8000, host: str = "127.0.0.1", searcher: Searcher | None = None):
    """An HTTPServer for the index (not yet serving: call serve_forever); port 0 picks a free one."""
    if not 0 <= int(port) <= 65535:
        raise ConfigError(f"--port {port}: expected 0-65535")
    searcher = searcher or Searcher(Path(index))
    page = SearchPage(searcher)
    try:
        return HTTPServer((host, int(port)), _handler(page))
    except OSError as err:
        raise ConfigError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None
