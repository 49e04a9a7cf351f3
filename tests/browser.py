"""A real browser for the inspector's tests: Playwright for Python driving the system's Chromium
(Debian's `chromium` package; Playwright's own browser downloads are not reachable here), and
`adcast serve` started as an operator starts it.

Without Chromium or Playwright the browser tests are skipped with one reason that says how to get
them: `.ci/run` installs Chromium, `make venvs` installs Playwright (the `ui-test` extra)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adcast.config import Settings, override, to_env
from adcast.local.services import free_port
from adcast.local.workers import WorkerProcess, start_worker

CHROMIUM = os.environ.get("ADCAST_CHROMIUM", "/usr/bin/chromium")
MISSING = [
    what
    for what, there in [
        (f"Chromium at {CHROMIUM} (apt-get install chromium)", Path(CHROMIUM).exists()),
        (
            "Playwright for Python (pip install -e '.[ui-test]'; make venvs puts it in .venv-infer)",
            importlib.util.find_spec("playwright") is not None,
        ),
    ]
    if not there
]
needs_browser = pytest.mark.skipif(bool(MISSING), reason="the inspector's browser tests need " + " and ".join(MISSING))


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def save_screenshot(page: Any, folder: Path, name: str) -> Path:
    """A full-page screenshot in `folder`, and in $ADCAST_SCREENSHOT_DIR when that is set (docs/img)."""
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    if target := os.environ.get("ADCAST_SCREENSHOT_DIR"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / name)
    return path


@contextlib.contextmanager
def serving(settings: Settings, log: Path) -> Iterator[tuple[str, WorkerProcess]]:
    """`adcast serve` on a free loopback port, as a subprocess; yields its base URL."""
    settings = override(settings, serve={"host": "127.0.0.1", "port": free_port()})
    serve = start_worker("serve", to_env(settings), log)
    try:
        serve.wait_ready(60)
        base = f"http://127.0.0.1:{settings.serve.port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"{base}/openapi.json", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, serve.tail()
                time.sleep(0.1)
        yield base, serve
    finally:
        assert serve.stop() in (0, -15), serve.tail()
