"""The try-it page in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from harness.processes import HttpServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags a sandboxed, offline machine needs: no background connections, no GPU, no sandbox as root.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is missing: `make test` installs it (apt-get install chromium)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian's package, through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def table(page: Any) -> dict[str, int]:
    """The counts table as a dict."""
    rows = page.locator("#counts tbody tr").all()
    return {row.locator("td").nth(0).inner_text(): int(row.locator("td").nth(1).inner_text()) for row in rows}


def test_upload_draws_boxes_and_counts(
    browser: Any, grpc_proxy: HttpServer, photos: dict[str, bytes], output_dir: Path
) -> None:
    """Choosing a photograph shows it with the boxes drawn and the counts the API gives; the slider refilters at
    once, as the API would at that threshold (the cat at the default, the cat and the person at 0.6)."""
    body = photos["both"]
    width, height = Image.open(io.BytesIO(body)).size
    expected = requests.post(f"{grpc_proxy.url}/classify", data=body, timeout=30).json()
    [cat] = requests.post(f"{grpc_proxy.url}/classify?verbose=true", data=body, timeout=30).json()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(grpc_proxy.url + "/")
        page.wait_for_selector("#model-status:has-text('ready')")  # no eval: the page's CSP forbids it
        page.set_input_files("#image-input", files=[{"name": "both.jpg", "mimeType": "image/jpeg", "buffer": body}])
        page.wait_for_selector("#canvas[data-drawn]")
        assert page.locator("#canvas").get_attribute("data-drawn") == "1"
        assert table(page) == expected == {"Cat": 1}

        # The box's left edge is drawn on the canvas in a colour the photograph does not have there.
        x, y = round(cat["x1"] * width), round((cat["y1"] + cat["y2"]) / 2 * height)
        drawn = page.evaluate(
            f"Array.from(document.getElementById('canvas').getContext('2d').getImageData({x}, {y}, 1, 1).data)"
        )
        original = Image.open(io.BytesIO(body)).convert("RGB").getpixel((x, y))
        assert max(abs(a - b) for a, b in zip(drawn[:3], original, strict=True)) > 60

        page.locator("#threshold").fill("0.6")
        at_06 = requests.post(f"{grpc_proxy.url}/classify?threshold=0.6", data=body, timeout=30).json()
        assert table(page) == at_06 == {"Cat": 1, "Person": 1}
        assert page.locator("#canvas").get_attribute("data-drawn") == "2"
        page.screenshot(path=str(output_dir / "page.png"))

        page.locator("#threshold").fill("0.95")
        assert page.locator("#threshold-value").inner_text() == "0.95"
        assert table(page) == {}
        assert page.locator("#canvas").get_attribute("data-drawn") == "0"

        page.locator("#threshold").fill("0.5")
        page.locator("#threshold").focus()
        page.keyboard.press("ArrowLeft")
        assert page.locator("#threshold-value").inner_text() == "0.49"
        at_049 = requests.post(f"{grpc_proxy.url}/classify?threshold=0.49", data=body, timeout=30).json()
        assert table(page) == at_049
    finally:
        page.close()


def test_server_errors_are_shown(browser: Any, grpc_proxy: HttpServer) -> None:
    """A file the server cannot decode shows the API's error message in the page's alert."""
    page = browser.new_page()
    try:
        page.goto(grpc_proxy.url + "/")
        page.set_input_files("#image-input", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}])
        page.wait_for_selector("#error:not([hidden])")
        assert "not an image type" in page.locator("#error").inner_text()
    finally:
        page.close()


def test_controls_are_labelled(browser: Any, grpc_proxy: HttpServer) -> None:
    """Every control has an accessible name, so screen readers and keyboard users can work the page."""
    page = browser.new_page()
    try:
        page.goto(grpc_proxy.url + "/")
        assert page.get_by_label("Choose an image").count() == 1
        assert page.get_by_label("Threshold").count() == 1
        assert page.get_by_label("API key").count() == 1
        assert page.get_by_role("img").count() == 1
    finally:
        page.close()


def test_tiles_and_a_region_from_the_page(browser: Any, grpc_proxy: HttpServer, photos: dict[str, bytes]) -> None:
    """On a 4000x3000 frame with small objects, the tiles switch makes the page find the cat and the person the
    whole frame misses; a region typed in finds the cat alone and is drawn; dragging on the picture sets a region."""
    from harness.frames import small_objects_frame

    body = small_objects_frame(photos["cat"], photos["cameraman"])
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(grpc_proxy.url + "/")
        page.wait_for_selector("#model-status:has-text('ready')")
        page.locator("#threshold").fill("0.5")
        page.set_input_files("#image-input", files=[{"name": "frame.jpg", "mimeType": "image/jpeg", "buffer": body}])
        page.wait_for_selector("#canvas[data-drawn]")
        assert table(page) == {}

        page.locator("#tiles").check()
        page.wait_for_selector("#canvas[data-drawn='2']")
        assert table(page) == {"Cat": 1, "Person": 1}

        page.locator("#region").fill("0.2,0.15,0.4,0.35")
        page.locator("#region").press("Enter")
        page.locator("#region").blur()
        page.wait_for_selector("#canvas[data-drawn='1']")
        assert table(page) == {"Cat": 1}

        page.locator("#clear-region").click()
        page.wait_for_selector("#canvas[data-drawn='2']")
        box = page.locator("#canvas").bounding_box()
        page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.15 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.4 * box["width"], box["y"] + 0.35 * box["height"], steps=5)
        page.mouse.up()
        page.wait_for_selector("#canvas[data-drawn='1']")
        corners = [float(value) for value in page.locator("#region").input_value().split(",")]
        assert corners == pytest.approx([0.2, 0.15, 0.4, 0.35], abs=0.01)
    finally:
        page.close()
