"""`parasal dashboard` on the command line, the package's import boundary, the launcher
`python -m parasal.client.dashboard`, and the plots' arithmetic against slow oracles."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
from dashboard_fakes import FakeClient

from parasal.client.cli import build_parser

BLOCK_DASHBOARD = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"fastapi", "starlette", "uvicorn", "jinja2"}:
                raise ImportError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    """
)


def _run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_the_client_and_its_cli_never_import_the_web_stack():
    done = _run(
        "import sys, parasal.client, parasal.client.cli as cli\n"
        "cli.build_parser().parse_args(['dashboard', '--server', 'h:1'])\n"
        "web = sorted(m for m in sys.modules if m.split('.')[0] in {'fastapi', 'starlette', 'uvicorn', 'jinja2'})\n"
        "assert not web, web\n"
        "print('ok')"
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr


def test_without_the_extra_the_command_says_what_to_install():
    done = _run(BLOCK_DASHBOARD + "import parasal.client.cli as cli\nraise SystemExit(cli.main(['dashboard']))")
    assert done.returncode == 1
    assert (
        done.stderr.strip() == "error: `parasal dashboard` needs the dashboard extra: pip install 'parasal[dashboard]'"
    )
    done = _run(
        BLOCK_DASHBOARD + "import parasal.client.cli as cli\nraise SystemExit(cli.main(['dashboard', '--json']))"
    )
    assert done.returncode == 1 and done.stdout == ""
    error = json.loads(done.stderr)["error"]
    assert error["code"] == "FAILED_PRECONDITION" and "pip install 'parasal[dashboard]'" in error["message"]


def test_dashboard_options():
    args = build_parser().parse_args(["dashboard", "--server", "10.0.0.1:7000", "--port", "9000", "--bundle", "b"])
    assert (args.target, args.port, args.host, args.bundle) == ("10.0.0.1:7000", 9000, "127.0.0.1", "b")
    # --server is --target: without it, the common option (or its default) stands
    args = build_parser().parse_args(["--target", "h:2", "dashboard"])
    assert args.target == "h:2" and args.port == 8080
    assert build_parser().parse_args(["dashboard"]).target == "127.0.0.1:50051"


def test_cmd_dashboard_serves_with_the_cli_connection(monkeypatch, tmp_path):
    import parasal.client.dashboard as dashboard
    from parasal.client._cli_dashboard import cmd_dashboard

    token = tmp_path / "token"
    token.write_text("sesame\n")
    token.chmod(0o600)
    seen = {}

    def fake_serve(client, **kwargs):
        seen.update(kwargs, client=client, metadata=client._metadata)

    monkeypatch.setattr(dashboard, "serve", fake_serve)
    args = build_parser().parse_args(["dashboard", "--server", "127.0.0.1:1", "--token-file", str(token)])
    assert cmd_dashboard(args) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8080 and seen["target"] == "127.0.0.1:1"
    assert seen["metadata"] == (("authorization", "Bearer sesame"),)


def test_a_taken_port_is_one_line(monkeypatch, capsys):
    import parasal.client.dashboard as dashboard
    from parasal.client._cli_dashboard import cmd_dashboard

    def taken(client, **kwargs):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(dashboard, "serve", taken)
    assert cmd_dashboard(build_parser().parse_args(["dashboard", "--port", "8080"])) == 1
    assert (
        capsys.readouterr().err.strip() == "error: cannot serve the dashboard on 127.0.0.1:8080: Address already in use"
    )


def test_dashboard_server_runs_on_a_free_port_and_serves_pages():
    from parasal.client.dashboard import DashboardServer

    with DashboardServer(FakeClient(), target="fake:1") as dash:
        assert dash.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(dash.url + "/healthz", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(dash.url + "/samples/4", timeout=10) as r:
            assert b"Sample 4" in r.read()


def test_warm_asks_for_the_overview_once_and_stops_at_an_error():
    from parasal.client import errors
    from parasal.client.dashboard._serve import warm

    fake = FakeClient()
    warm(fake)
    assert [n for n, _, _ in fake.calls] == ["index_info", "confusion_matrix", "failure_modes"]
    fake = FakeClient()
    fake.fail_with = errors.Unavailable("down")
    warm(fake)  # no exception: the pages report it
    assert [n for n, _, _ in fake.calls] == ["index_info"]


def test_launcher_without_a_bundle_says_how_to_build_one(tmp_path, capsys):
    from parasal.client.dashboard.__main__ import main

    assert main(["--bundle", str(tmp_path / "missing")]) == 2
    assert "make demo" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Plots


def _peaks_oracle(values: np.ndarray, buckets: int) -> np.ndarray:
    """One element per bucket, the largest |value| of its run (first on ties), plainly."""
    n = len(values)
    edges = [int(x) for x in np.linspace(0, n, buckets + 1)]
    chosen = []
    for b in range(buckets):
        run = list(range(edges[b], max(edges[b + 1], edges[b] + 1)))
        best = run[0]
        for i in run:
            if abs(values[i]) > abs(values[best]):
                best = i
        chosen.append(best)
    return np.array(chosen)


@pytest.mark.parametrize("n, buckets", [(26_560, 2000), (2001, 2000), (672, 2000), (10, 3)])
def test_profile_reduction_keeps_every_peak(n, buckets):
    from parasal.client.dashboard._svg import reduce_peaks

    rng = np.random.default_rng(n)
    values = rng.standard_normal(n)
    values[n // 3] = 40.0  # one salient filter must survive any reduction
    positions, reduced = reduce_peaks(values, buckets)
    expected = np.arange(n) if n <= buckets else _peaks_oracle(values, buckets)
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_array_equal(reduced, values[expected])
    assert n // 3 in positions


def test_profile_svg_escapes_names_and_marks_top_filters():
    from parasal.client.dashboard._svg import profile_svg

    layers = [SimpleNamespace(name="conv<1>", kind="conv2d", filters=50, offset=0)]
    top = [SimpleNamespace(index=7, layer="conv<1>", filter=7, z=3.0)]
    svg = str(profile_svg(np.arange(50, dtype=np.float32), layers, top))
    assert "conv&lt;1&gt;" in svg and "<1>" not in svg
    assert svg.count('class="mark"') == 1 and "profile index 7" in svg
    assert "NaN" not in str(profile_svg(np.array([np.nan, 1.0, 2.0]), layers[:0]))


def test_failure_map_scales_points_into_the_plot():
    from parasal.client.dashboard._svg import failure_map_svg

    points = [
        SimpleNamespace(id=i, x=float(i), y=-float(i), label=0, predicted=1, failure_mode=i % 2) for i in range(5)
    ]
    svg = str(failure_map_svg(points, ["a", "b"], width=100, height=80))
    import re

    xs = [float(x) for x in re.findall(r'cx="([\d.]+)"', svg)]
    ys = [float(y) for y in re.findall(r'cy="([\d.]+)"', svg)]
    assert min(xs) == 12 and max(xs) == 88 and min(ys) == 12 and max(ys) == 68
    assert ys == sorted(ys)  # y grows downwards on screen: larger y values are higher up
    assert svg.count('href="/samples/') == 5 and "a → b" in svg


def test_lines_svg_uses_a_log_axis_for_filter_counts():
    from parasal.client.dashboard._svg import lines_svg

    svg = str(lines_svg({"most": [(1, 0.1), (5, 0.2), (75, 0.9)], "random": [(1, float("nan"))]}, "filters", "share"))
    assert "(log scale)" in svg and "most" in svg
    assert "nan" not in svg.lower()
    assert "Nothing measured" in str(lines_svg({"random": [(1, float("nan"))]}, "x", "y"))


def test_lines_svg_draws_the_whole_network_baseline():
    import re

    from parasal.client.dashboard._svg import lines_svg

    svg = str(
        lines_svg({"most": [(1, 0.0), (5, 0.5)]}, "filters", "share", height=240, baselines={"whole network": 1.0})
    )
    (y,) = set(re.findall(r'<line x1="52" x2="\d+" y1="([\d.]+)" y2="\1" class="baseline"', svg))
    assert float(y) == 12.0  # the top of the plot: 1.0 is the largest value shown
    assert "whole network" in svg
