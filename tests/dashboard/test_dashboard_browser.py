"""The dashboard in a real browser: Debian's chromium driven by Playwright, over a real
parasal server (a 300-sample Fashion-MNIST bundle with reference data) on 127.0.0.1 and the
dashboard on 127.0.0.1:0 in this process.

One walk a person would take: the overview, a confusion cell, a sample, a neighbour, the
failure map, an upload, an evaluation watched to its end; plus the error pages for a server
that is down and a wrong token. Screenshots must not be blank. Page timings are printed
(speed figures belong in benchmarks, not in asserts).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = os.environ.get("PARASAL_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-test-token"
pytestmark = [
    pytest.mark.fashion_mnist,
    pytest.mark.slow,  # ~70 s on an idle 2-core machine (bundle + server ~30 s), twice that under load
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)),
        reason=f"chromium not found at {CHROMIUM} (make setup installs it: apt-get install chromium; "
        "or set PARASAL_CHROMIUM)",
    ),
]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(reference_bundle_dir, tmp_path_factory):
    from dashboard_fakes import e2e

    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    proc = e2e.ServerProcess(
        reference_bundle_dir,
        tmp_path_factory.mktemp("state"),
        "--token-file",
        str(token_file),
        log_dir=tmp_path_factory.mktemp("logs"),
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def sdk(server):
    from parasal.client import Client

    with Client(server.address, token=TOKEN, timeout=60) as client:
        yield client


def _dashboard(client, target: str):
    from parasal.client.dashboard import DashboardServer

    return DashboardServer(client, target=target).start()


@pytest.fixture(scope="module")
def dashboard(sdk, server):
    from parasal.client.dashboard._serve import warm

    warm(sdk)  # as `parasal dashboard` does at start: the failure modes are computed once, here
    dash = _dashboard(sdk, server.address)
    yield dash
    dash.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    yield pg
    context.close()


def assert_not_blank(pg, name: str) -> None:
    """A screenshot with real content: many grey levels and a spread of pixel values."""
    from PIL import Image

    shot = Image.open(io.BytesIO(pg.screenshot(full_page=False))).convert("L")
    pixels = np.asarray(shot, dtype=np.float64)
    assert pixels.std() > 20, f"{name}: screenshot looks blank (std {pixels.std():.1f})"
    assert len(np.unique(pixels)) > 32, f"{name}: screenshot has too few grey levels"


def image_loaded(pg, selector: str) -> bool:
    return pg.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")


def load_ms(pg) -> float:
    """Navigation start -> load event of the current page, in the browser's own clock."""
    return pg.evaluate(
        "() => { const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime; }"
    )


def test_overview_confusion_cell_sample_and_neighbour(page, dashboard, sdk):
    page.goto(dashboard.url + "/")
    assert page.locator("#confusion").is_visible()
    overview_ms = load_ms(page)
    assert_not_blank(page, "overview")
    names = sdk.index_info()[0].class_names
    cm = sdk.confusion_matrix()
    # the largest off-diagonal cell: click it, get exactly those samples
    off = cm.counts.copy()
    np.fill_diagonal(off, 0)
    t, p = np.unravel_index(np.argmax(off), off.shape)
    assert off[t, p] > 0
    page.click(f'#confusion a[data-true="{t}"][data-predicted="{p}"]')
    page.wait_for_url(re.compile(rf"/samples\?true_labels={t}&predicted_labels={p}"))
    tiles = page.locator("#samples a.tile")
    assert tiles.count() == min(int(off[t, p]), 48)
    assert f"{names[t]} → {names[p]}" in tiles.first.inner_text()

    # a sample: its labels, both pictures, the profile, the surprise section, neighbours
    first_id = int(tiles.first.get_attribute("data-id"))
    tiles.first.click()
    page.wait_for_url(re.compile(rf"/samples/{first_id}$"))
    page.wait_for_selector("body[data-ready=true]")
    sample_ms = load_ms(page)
    verdict = page.inner_text("#verdict")
    assert names[t] in verdict and names[p] in verdict and "misclassified" in verdict
    page.wait_for_function("() => document.getElementById('overlay').complete")
    assert image_loaded(page, "#sample-image") and image_loaded(page, "#overlay")
    assert page.locator("svg.profile polyline").count() == 1
    assert "Surprise" in page.inner_text("#surprise") and "Loading" not in page.inner_text("#surprise")
    assert_not_blank(page, "sample")

    # follow a neighbour
    neighbour = page.locator("#neighbours a.tile").first
    neighbour_id = int(neighbour.get_attribute("data-id"))
    neighbour.click()
    page.wait_for_url(re.compile(rf"/samples/{neighbour_id}$"))
    assert f"Sample {neighbour_id}" in page.inner_text("h1")
    assert sdk.sample(neighbour_id).predicted_name in page.inner_text("#verdict")
    print(f"\nbrowser load times: overview {overview_ms:.0f} ms, sample page {sample_ms:.0f} ms")


def test_failure_map_point_opens_its_sample(page, dashboard):
    page.goto(dashboard.url + "/")
    point = page.locator("#failure-map a").last  # drawn last: nothing covers it
    href = point.get_attribute("href")
    page.select_option("#map-colour", "pair")  # recolouring keeps the links
    point.locator("circle").click()
    page.wait_for_url(re.compile(re.escape(href) + "$"))
    assert "misclassified" in page.inner_text("#verdict")


def test_drop_an_image_and_pick_its_class_by_name(page, dashboard, sdk):
    sample = sdk.sample(3, include_image=True)
    page.goto(dashboard.url + "/upload")
    # drop the file on the zone, as a person drags it from their desktop
    drop = page.evaluate_handle(
        """bytes => { const dt = new DataTransfer();
             dt.items.add(new File([new Uint8Array(bytes)], "upload.png", {type: "image/png"})); return dt; }""",
        list(sample.image_png),
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": drop})
    page.wait_for_selector("#drop-preview:not([hidden])")
    assert page.inner_text("#drop-text") == "upload.png"
    page.select_option("#upload-label", label=sample.label_name)
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(re.compile(r"/uploads/"))
    page.wait_for_selector("body[data-ready=true]")
    assert "Uploaded image upload.png" in page.inner_text("h1")
    # the upload is the indexed sample's own image: the same prediction
    assert f"true {sample.label_name}" in page.inner_text("#verdict")
    assert f"predicted {sample.predicted_name}" in page.inner_text("#verdict")
    page.wait_for_function("() => document.getElementById('overlay').complete")
    assert image_loaded(page, "#overlay")
    assert page.locator("#neighbours a.tile").count() > 0
    assert_not_blank(page, "upload")


def test_start_an_evaluation_and_watch_it_finish(page, dashboard, sdk):
    wrong = next(iter(sdk.samples(correct=False, limit=1)))
    page.goto(dashboard.url + f"/evaluations?sample_id={wrong.id}")
    form = page.locator("#form-pruning")
    assert form.locator("input[name=sample_id]").input_value() == str(wrong.id)
    form.locator("input[name=counts]").fill("1,5")
    form.locator("input[name=num_neighbors]").fill("2")
    started = time.monotonic()
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/operations/"))
    # first rendered while it runs (it takes seconds), the page follows it over Server-Sent
    # Events (WatchOperation) and reloads itself with the result on the `done` event
    assert page.get_attribute("#operation", "data-done") == "false"
    page.wait_for_selector("#operation[data-done=true]", timeout=120_000)
    assert page.inner_text("#op-state") == "succeeded"
    assert page.locator("table.result tbody tr").count() >= 6  # 2 counts x 3 selections
    assert page.locator("svg.lines").count() >= 1
    assert_not_blank(page, "operation")
    op_id = page.url.rsplit("/", 1)[1]
    assert sdk.operation(op_id).state == "succeeded"
    page.goto(dashboard.url + "/evaluations")
    assert page.locator(f'#operations a[href="/operations/{op_id}"]').count() == 1
    print(f"\nevaluation watched to its end in {time.monotonic() - started:.1f} s")


def test_error_pages_for_a_server_that_is_down_and_a_wrong_token(page, server):
    from parasal.client import Client

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    for target, token, title, code in (
        (dead, None, "cannot be reached", "UNAVAILABLE"),
        (server.address, "not-the-token", "refused the dashboard", "UNAUTHENTICATED"),
    ):
        with Client(target, token=token, timeout=10) as client:
            dash = _dashboard(client, target)
            try:
                response = page.goto(dash.url + "/")
                assert response.status in (502, 503)
                assert title in page.inner_text("h1")
                assert code in page.inner_text(".error-page")
                assert_not_blank(page, f"error {code}")
            finally:
                dash.stop()
