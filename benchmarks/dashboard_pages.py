"""Dashboard page times measured in a real browser (Debian's chromium via Playwright), and
the README's screenshots.

    python benchmarks/dashboard_pages.py --server 127.0.0.1:50051 [--token-file F] \
        [--repeats 5] [--screenshots docs/img]

Starts the dashboard in this process on 127.0.0.1:0 over the SDK, asks the server once for
the overview's answers (failure modes are computed on first request, then cached: the first
visit is reported apart), then loads the overview and the pages of misclassified samples
`--repeats` times each. Two figures per page, both from the browser's own clock:
`load` = navigation start -> load event (HTML, CSS, JS, every image); `ready` = until the
sample page's surprise/expectation section has arrived too (it loads after the page).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

LOAD_JS = "() => { const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime; }"


def _measure(page, url: str, wait_ready: bool) -> tuple[float, float]:
    started = time.perf_counter()
    page.goto(url, wait_until="load")
    load_ms = page.evaluate(LOAD_JS)
    if wait_ready:
        page.wait_for_selector("body[data-ready=true]")
    return load_ms, (time.perf_counter() - started) * 1000


def _summary(name: str, values: list[tuple[float, float]]) -> str:
    loads, readies = [v[0] for v in values], [v[1] for v in values]
    return (
        f"{name:<14} load median {statistics.median(loads):6.0f} ms (max {max(loads):6.0f})   "
        f"ready median {statistics.median(readies):6.0f} ms (max {max(readies):6.0f})   n={len(values)}"
    )


def _shrink(path: Path) -> None:
    """A 256-colour palette PNG: the flat colours of a web page survive, the file is a third."""
    from PIL import Image

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="the parasal server, HOST:PORT")
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--bundle", default="")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=5, help="misclassified samples whose pages are timed")
    parser.add_argument("--screenshots", type=Path, help="write dashboard-overview.png and dashboard-sample.png here")
    parser.add_argument("--chromium", default=os.environ.get("PARASAL_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from parasal.client import Client
    from parasal.client.dashboard import DashboardServer
    from parasal.client.dashboard._serve import warm

    token = args.token_file.read_text().strip() if args.token_file else None
    with Client(args.server, token=token, timeout=120) as client:
        info = client.index_info(bundle=args.bundle)[0]
        started = time.perf_counter()
        warm(client, args.bundle)
        print(f"bundle {info.name}: {info.num_samples} samples, {info.num_misclassified} misclassified")
        print(f"first overview answers from the server (failure modes computed): {time.perf_counter() - started:.1f} s")
        wrong = [s.id for s in client.samples(bundle=args.bundle, correct=False, order_by="loss", limit=args.samples)]
        with DashboardServer(client, bundle=args.bundle, target=args.server) as dash, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(120_000)
            _measure(page, dash.url + "/", False)  # the browser's own first visit (CSS, JS)
            overview = [_measure(page, dash.url + "/", False) for _ in range(args.repeats)]
            samples = [_measure(page, f"{dash.url}/samples/{i}", True) for i in wrong for _ in range(args.repeats)]
            print(_summary("overview", overview))
            print(_summary("sample page", samples))
            if args.screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                page.goto(dash.url + "/", wait_until="networkidle")
                page.screenshot(path=str(args.screenshots / "dashboard-overview.png"), full_page=True)
                page.goto(f"{dash.url}/samples/{wrong[0]}", wait_until="networkidle")
                page.wait_for_selector("body[data-ready=true]")
                page.screenshot(path=str(args.screenshots / "dashboard-sample.png"), full_page=True)
                for name in ("dashboard-overview.png", "dashboard-sample.png"):
                    _shrink(args.screenshots / name)
                print(f"screenshots in {args.screenshots}/")
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
