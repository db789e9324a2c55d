"""The web console: a search page served by ``braid serve`` at ``/`` on the HTTP port, on the same API any client uses.

Everything it needs ships in the package (``service/console/``: one HTML page, one script, one stylesheet, no
CDN, no build step), so it works offline. The page calls ``/v1/pipelines``, ``/v1/search`` (with ``explain``) and
``/v1/documents/get`` like any client; an evaluation result (``braid eval``'s JSON under ``results/``) is opened
from the user's disk in the browser, so the server exposes no files. ``braid serve --no-console`` leaves it out.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

#: The console's files and their content types: nothing else under the console's path is served.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


def asset(name: str) -> bytes:
    return (resources.files("braid.service") / "console" / name).read_bytes()


def add_console(app: FastAPI) -> None:
    """Serve the console at ``/`` and its files at ``/console/<name>`` (outside the OpenAPI document)."""

    def answer(name: str) -> Response:
        # no-cache: a console opened after an upgrade must not run the previous version's script.
        return Response(asset(name), media_type=ASSETS[name], headers={"cache-control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return answer("index.html")

    @app.get("/console/console.js", include_in_schema=False)
    async def script() -> Response:
        return answer("console.js")

    @app.get("/console/console.css", include_in_schema=False)
    async def style() -> Response:
        return answer("console.css")
