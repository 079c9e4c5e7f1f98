"""The dashboard's web app against a fake SDK (FastAPI's TestClient): what each page shows,
which SDK calls it makes with which arguments, and the error pages."""

from __future__ import annotations

import re

import grpc
import numpy as np
import pytest
from dashboard_fakes import CLASS_NAMES, FakeClient, png

from parasal.client import errors

# Starlette's TestClient says it prefers another HTTP client package; httpx is what is installed.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx`")


def _links(html: str, prefix: str) -> list[str]:
    return re.findall(rf'href="({re.escape(prefix)}[^"]*)"', html)


# ---------------------------------------------------------------------------------------
# Overview


def test_overview_shows_the_bundle_confusion_matrix_and_failure_modes(app_client, fake):
    r = app_client.get("/")
    assert r.status_code == 200
    html = r.text
    assert "demo-fashion" in html and "fashion-mnist:test" in html
    cm = fake.confusion_matrix()
    # every cell links to exactly its (true, predicted) samples and shows its count
    cells = re.findall(r'<a href="/samples\?true_labels=(\d+)&amp;predicted_labels=(\d+)"[^>]*>(\d+)</a>', html)
    assert len(cells) == 9
    for t, p, n in cells:
        assert int(n) == cm.counts[int(t), int(p)]
    assert f"{100 * cm.accuracy:.2f} %" in html
    # the failure modes: sizes, pairs by class name, medoids as links
    assert 'id="modes"' in html and "T-shirt/top → Trouser" in html
    for mode in fake.failure_modes().modes:
        for medoid in mode.medoid_ids:
            assert f'href="/samples/{medoid}"' in html
    assert f'href="/samples?failure_mode={mode.id}"' in html
    # the map: one clickable point per misclassified sample, coloured by mode
    points = re.findall(r'<a href="/samples/(\d+)"><circle[^>]*data-mode="(-?\d+)"', html)
    expected = {(p.id, p.failure_mode) for p in fake.failure_modes(include_map=True).map}
    assert {(int(i), int(m)) for i, m in points} == expected
    assert fake.called("failure_modes")[0]["include_map"] is True


class _OldClient(FakeClient):
    """An SDK without the browse methods (confusion_matrix, failure_modes, samples)."""

    confusion_matrix = None
    failure_modes = None
    samples = None


def test_overview_without_browse_calls_shows_notes_not_an_error():
    from fastapi.testclient import TestClient

    from parasal.client.dashboard import create_app

    with TestClient(create_app(_OldClient())) as tc:
        r = tc.get("/")
        assert r.status_code == 200
        assert "confusion matrix: not available" in r.text
        assert "failure modes: not available" in r.text
        # the accuracy still comes from BundleInfo
        assert "75.00 %" in r.text
        r = tc.get("/samples")
        assert r.status_code == 200 and "listing samples: not available" in r.text


def test_overview_on_a_server_without_browse_service_shows_notes(app_client, fake, monkeypatch):
    def unimplemented(**kwargs):
        raise errors.Unimplemented("Method not found!")

    monkeypatch.setattr(fake, "confusion_matrix", unimplemented)
    monkeypatch.setattr(fake, "failure_modes", unimplemented)
    r = app_client.get("/")
    assert r.status_code == 200
    assert "confusion matrix: Method not found!" in r.text and "failure modes: Method not found!" in r.text


# ---------------------------------------------------------------------------------------
# Samples list


def test_samples_page_passes_filters_in_the_proto_vocabulary(app_client, fake):
    r = app_client.get(
        "/samples?true_labels=0&predicted_labels=1&correctness=misclassified&order_by=loss&descending=1&failure_mode=0"
    )
    assert r.status_code == 200
    call = fake.called("samples")[-1]
    assert call["true_labels"] == [0] and call["predicted_labels"] == [1]
    assert call["correct"] is False and call["failure_mode"] == 0
    assert call["order_by"] == "loss" and call["descending"] is True
    shown = [int(i) for i in re.findall(r'class="tile[^"]*" href="/samples/(\d+)"', r.text)]
    oracle = sorted(
        (i for i in range(fake.num_samples) if i % 3 == 0 and i % 4 == 0 and i % 8 == 0),
        key=lambda i: -(0.1 + i / 100),
    )
    assert shown == oracle


def test_samples_page_any_means_no_filter_and_pages_follow(app_client, fake):
    r = app_client.get("/samples?true_labels=&predicted_labels=&correctness=")
    assert r.status_code == 200
    call = fake.called("samples")[-1]
    assert call["true_labels"] is None and call["predicted_labels"] is None and call["correct"] is None
    assert "40 samples match" in r.text
    first = [int(i) for i in re.findall(r'class="tile[^"]*" href="/samples/(\d+)"', r.text)]
    assert first == list(range(40))  # one page of 48 holds them all
    assert not _links(r.text, "/samples?page=")

    fake.num_samples = 100
    r = app_client.get("/samples?order_by=id")
    page1 = [int(i) for i in re.findall(r'class="tile[^"]*" href="/samples/(\d+)"', r.text)]
    assert page1 == list(range(48))
    (next_link,) = re.findall(r'href="(/samples\?[^"]*)" rel="next"', r.text)
    r = app_client.get(next_link.replace("&amp;", "&"))
    page2 = [int(i) for i in re.findall(r'class="tile[^"]*" href="/samples/(\d+)"', r.text)]
    assert page2 == list(range(48, 96))
    assert re.findall(r'rel="prev"', r.text)


@pytest.mark.parametrize(
    "query, message",
    [
        ("order_by=colour", "order_by: choose one of"),
        ("correctness=maybe", "correctness: choose correct or misclassified"),
        ("true_labels=shirt", "true_labels: expected comma-separated whole numbers"),
        ("page=0", "page"),
    ],
)
def test_samples_page_bad_query_is_a_400_page(app_client, query, message):
    r = app_client.get(f"/samples?{query}")
    assert r.status_code == 400
    assert message in r.text and "error-page" in r.text


# ---------------------------------------------------------------------------------------
# One sample


def test_sample_page_shows_labels_profile_filters_and_nearest_failures(app_client, fake):
    r = app_client.get("/samples/4")
    assert r.status_code == 200
    html = r.text
    assert "true <b>Trouser</b> (20.0 %)" in html and "predicted <b>Pullover</b> (70.0 %)" in html
    assert "misclassified" in html
    assert 'src="/img/samples/4.png"' in html and 'src="/img/samples/4/overlay.png"' in html
    # the profile plot names its layers and marks the top filters
    assert "<svg" in html and ">conv1<" in html and ">conv2<" in html
    assert "conv2 filter 15 (profile index 23)" in html
    # the nearest failures are the SDK's neighbours, in its order, as links
    neighbours = fake.find_similar_failures(sample_id=4, k=12, only_misclassified=True)
    grid = html[html.index('id="neighbours"') :]
    assert [int(i) for i in re.findall(r'href="/samples/(\d+)" data-id', grid)] == list(neighbours.ids)
    assert fake.called("profile")[0] == {
        "sample_id": 4,
        "image": None,
        "label": None,
        "full": True,
        "top_k": 10,
        "bundle": "",
    }
    assert fake.called("find_similar_failures")[0]["only_misclassified"] is True
    assert 'href="/evaluations?sample_id=4"' in html


def test_sample_images_come_from_the_sdk(app_client):
    r = app_client.get("/img/samples/3.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == png(3)
    r = app_client.get("/img/samples/3.png?scale=2")
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(r.content)).size == (56, 56)
    r = app_client.get("/img/samples/3/overlay.png")
    assert r.status_code == 200 and r.content == png(99)
    r = app_client.get("/img/samples/999.png")
    assert r.status_code == 404 and r.content == b""  # an <img>: no page in its place


def test_unknown_sample_is_a_friendly_404(app_client):
    r = app_client.get("/samples/999")
    assert r.status_code == 404
    assert "Not found" in r.text and "sample 999 is not in bundle" in r.text and "NOT_FOUND" in r.text


def test_surprise_fragment_with_reference_data(app_client, fake):
    r = app_client.get("/samples/4/surprise")
    assert r.status_code == 200
    assert "conv2:7" in r.text and "β = 0.12." in r.text
    assert r.text.count("data:image/png;base64,") == 2  # the region and one exemplar
    call = fake.called("surprise")[0]
    assert call["sample_id"] == 4 and call["include_exemplar_images"] is True


def test_surprise_fragment_without_reference_data_makes_no_call():
    from fastapi.testclient import TestClient

    from parasal.client.dashboard import create_app

    fake = FakeClient(reference=False)
    with TestClient(create_app(fake)) as tc:
        r = tc.get("/samples/4/surprise")
    assert r.status_code == 200 and "without reference data" in r.text
    assert not fake.called("surprise")


# ---------------------------------------------------------------------------------------
# Upload


def test_upload_shows_the_same_view_for_the_image_and_label(app_client, fake):
    image = png(7)
    r = app_client.post("/upload", files={"image": ("shirt.png", image, "image/png")}, data={"label": "2"})
    assert r.status_code == 200  # after the 303 redirect
    assert "Uploaded image shirt.png" in r.text and f"true <b>{CLASS_NAMES[2]}</b>" in r.text
    profile = fake.called("profile")[-1]
    assert profile["image"] == image and profile["label"] == 2 and profile["sample_id"] is None
    token = re.search(r'src="/img/uploads/([^"./]+)\.png"', r.text).group(1)
    assert app_client.get(f"/img/uploads/{token}.png").content == image
    assert app_client.get(f"/img/uploads/{token}/overlay.png").content == png(99)
    assert fake.called("explain_input")[-1]["image"] == image
    surprise = app_client.get(f"/uploads/{token}/surprise")
    assert surprise.status_code == 200 and fake.called("surprise")[-1]["label"] == 2
    # a reload reuses the answers: no second saliency pass
    before = len(fake.called("profile"))
    assert app_client.get(f"/uploads/{token}").status_code == 200
    assert len(fake.called("profile")) == before


def test_upload_of_other_formats_is_sent_as_png(app_client, fake):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(buf, format="BMP")
    r = app_client.post("/upload", files={"image": ("x.bmp", buf.getvalue(), "image/bmp")}, data={"label": "0"})
    assert r.status_code == 200
    assert fake.called("profile")[-1]["image"].startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "files, data, status, message",
    [
        ({"image": ("x.png", b"not an image at all", "image/png")}, {"label": "0"}, 400, "cannot read"),
        ({"image": ("x.png", b"", "image/png")}, {"label": "0"}, 400, "choose or drop an image"),
        ({"image": ("x.png", png(1), "image/png")}, {"label": "7"}, 400, "label: choose one of the 3 classes"),
        ({"image": ("x.png", png(1), "image/png")}, {}, 400, "label"),
    ],
)
def test_bad_uploads_are_400_pages(app_client, files, data, status, message):
    r = app_client.post("/upload", files=files, data=data)
    assert r.status_code == status
    assert message in r.text


def test_a_forgotten_upload_is_a_404_page(app_client):
    r = app_client.get("/uploads/nope")
    assert r.status_code == 404 and "upload the image again" in r.text


# ---------------------------------------------------------------------------------------
# Errors from the server


@pytest.mark.parametrize(
    "error, status, words",
    [
        (errors.Unavailable("failed to connect to all addresses"), 503, ["cannot be reached", "parasal serve"]),
        (errors.Unauthenticated("missing bearer token"), 502, ["refused the dashboard", "--token-file"]),
        (errors.DeadlineExceeded("deadline"), 504, ["took too long"]),
        (errors.Internal("boom"), 500, ["reported an error", "boom"]),
    ],
)
def test_server_errors_are_friendly_pages_with_the_status(app_client, fake, error, status, words):
    fake.fail_with = error
    for path in ("/", "/samples/4", "/evaluations"):
        r = app_client.get(path)
        assert r.status_code == status, path
        assert f"<code>{error.code.name}</code>" in r.text
        for word in words:
            assert word in r.text
    assert app_client.get("/img/samples/1.png").status_code == status
    assert app_client.get("/healthz").status_code == 200  # the dashboard itself is fine


def test_real_sdk_against_no_server_gives_the_unavailable_page():
    import socket

    from fastapi.testclient import TestClient

    from parasal.client import Client
    from parasal.client.dashboard import create_app

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"127.0.0.1:{port}", timeout=5) as client, TestClient(create_app(client)) as tc:
        r = tc.get("/")
    assert r.status_code == 503
    assert f"No answer from 127.0.0.1:{port}" in r.text and grpc.StatusCode.UNAVAILABLE.name in r.text


# ---------------------------------------------------------------------------------------
# Evaluations


def test_starting_a_pruning_evaluation_sends_the_form_values(app_client, fake):
    r = app_client.post(
        "/evaluations/pruning",
        data={"sample_id": "4", "counts": "1, 5", "selections": ["most", "random"], "num_neighbors": "3", "seed": "7"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/operations/op-1"
    assert fake.called("start_pruning_evaluation")[0] == {
        "counts": [1, 5],
        "selections": ["most", "random"],
        "num_neighbors": 3,
        "seed": 7,
        "sample_id": 4,
        "bundle": "",
    }


def test_finetune_defaults_and_failure_mode_target(app_client, fake):
    app_client.post("/evaluations/finetune", data={"sample_id": "4", "counts": "", "seed": ""})
    call = fake.called("start_finetune_evaluation")[0]
    assert call["counts"] is None and call["selections"] is None and call["step_size"] is None
    assert call["num_neighbors"] is None and call["seed"] == 0  # None: the server's defaults
    app_client.post("/evaluations/finetune", data={"failure_mode": "1", "step_size": "0.01"})
    call = fake.called("start_finetune_evaluation")[1]
    assert call["failure_mode"] == 1 and "sample_id" not in call and call["step_size"] == 0.01


def test_starting_an_experiment(app_client, fake):
    r = app_client.post(
        "/evaluations/experiment", data={"name": "pruning", "references": "5", "seed": "3", "options": "a=1, b=x"}
    )
    assert r.status_code == 200
    args = [a for n, a, _ in fake.calls if n == "start_experiment"][0]
    assert args == ("pruning",)
    assert fake.called("start_experiment")[0] == {
        "references": 5,
        "seed": 3,
        "options": {"a": "1", "b": "x"},
        "bundle": "",
    }


@pytest.mark.parametrize(
    "kind, data, message",
    [
        ("pruning", {"sample_id": "4", "counts": "1,x"}, "counts: expected comma-separated whole numbers"),
        ("pruning", {"counts": "1"}, "sample_id: give the sample"),
        ("pruning", {"failure_mode": "1"}, "only fine-tuning evaluations can target a failure mode"),
        ("pruning", {"sample_id": "4", "selections": ["best"]}, "selections: unknown best"),
        ("finetune", {"sample_id": "4", "step_size": "nan"}, "step_size: expected a finite number"),
        ("experiment", {"name": "everything"}, "name: choose one of"),
        ("experiment", {"name": "pruning", "options": "novalue"}, "options: expected key=value"),
        ("surgery", {}, "unknown evaluation"),
    ],
)
def test_bad_evaluation_forms_are_400_pages_and_start_nothing(app_client, fake, kind, data, message):
    r = app_client.post(f"/evaluations/{kind}", data=data)
    assert r.status_code == 400
    assert message in r.text
    assert not [n for n, _, _ in fake.calls if n.startswith("start_")]


def test_server_refusing_an_evaluation_shows_its_message(app_client, fake, monkeypatch):
    def refuse(**kwargs):
        raise errors.InvalidArgument("counts: at most 64 entries")

    monkeypatch.setattr(fake, "start_pruning_evaluation", refuse)
    r = app_client.post("/evaluations/pruning", data={"sample_id": "4"})
    assert r.status_code == 400 and "counts: at most 64 entries" in r.text and "INVALID_ARGUMENT" in r.text


def test_operation_page_shows_result_table_and_plots(app_client, fake):
    app_client.post("/evaluations/pruning", data={"sample_id": "4"})
    r = app_client.get("/operations/op-1")
    assert r.status_code == 200
    html = r.text
    assert "succeeded" in html and 'data-done="true"' in html
    # one table row per result row, columns in the proto's vocabulary
    table = html[html.index('<table class="result">') :]
    assert "neighbors_corrected_fraction" in table and "incorrect_confidence_delta" in table
    assert table.count("<tr><td>") == len(fake.operation("op-1").result.rows)
    assert html.count('<svg class="plot lines"') == 2
    assert "reference.true_confidence" in html  # the nested reference state, flattened
    listing = app_client.get("/evaluations").text
    assert 'href="/operations/op-1"' in listing


def test_operation_events_stream_progress_then_done(app_client, fake):
    app_client.post("/evaluations/pruning", data={"sample_id": "4"})
    r = app_client.get("/operations/op-1/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [block for block in r.text.split("\n\n") if block.startswith("event:")]
    assert [e.split("\n")[0] for e in events] == ["event: progress", "event: done"]
    assert '"state": "succeeded"' in events[-1]
    assert app_client.get("/operations/op-404/events").status_code == 404


def test_operation_events_report_a_watch_failure(app_client, fake, monkeypatch):
    from types import SimpleNamespace

    app_client.post("/evaluations/pruning", data={"sample_id": "4"})

    def broken_watch(timeout=None):
        raise errors.Unavailable("server went away")
        yield  # pragma: no cover

    monkeypatch.setattr(fake, "operation_handle", lambda op_id: SimpleNamespace(id=op_id, watch=broken_watch))
    r = app_client.get("/operations/op-1/events")
    assert "event: failure" in r.text and "UNAVAILABLE" in r.text


def test_cancel_redirects_to_the_operation(app_client, fake):
    app_client.post("/evaluations/pruning", data={"sample_id": "4"})
    r = app_client.post("/operations/op-1/cancel", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/operations/op-1"
    assert fake.called("cancel")


def test_static_assets_ship_in_the_package(app_client):
    for path in ("/static/dashboard.css", "/static/dashboard.js"):
        r = app_client.get(path)
        assert r.status_code == 200 and len(r.content) > 1000
    # no page refers to anything off this dashboard (no CDN)
    html = app_client.get("/").text + app_client.get("/samples/4").text
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html)


def test_newer_evaluation_options_are_sent_only_when_given_and_supported():
    from fastapi.testclient import TestClient

    from parasal.client.dashboard import create_app

    class OlderSdk(FakeClient):
        def start_pruning_evaluation(
            self, sample_id=None, counts=None, selections=None, num_neighbors=None, seed=0, *, bundle=""
        ):
            return super().start_pruning_evaluation(sample_id=sample_id, counts=counts, seed=seed, bundle=bundle)

        def start_finetune_evaluation(
            self, sample_id=None, counts=None, selections=None, step_size=None, num_neighbors=None, seed=0, *, bundle=""
        ):  # no failure_mode
            return super().start_finetune_evaluation(sample_id=sample_id, bundle=bundle)

    fake = OlderSdk()
    with TestClient(create_app(fake)) as tc:
        assert tc.post("/evaluations/pruning", data={"sample_id": "4"}).status_code == 200
        r = tc.post("/evaluations/pruning", data={"sample_id": "4", "random_draws": "3"})
        assert r.status_code == 400 and "random_draws: not available with this version" in r.text
        r = tc.post("/evaluations/finetune", data={"failure_mode": "0"})
        assert r.status_code == 400 and "failure_mode: not available with this version" in r.text
    assert len(fake.called("start_pruning_evaluation")) == 1


def test_newer_evaluation_options_reach_a_newer_sdk(app_client, fake):
    app_client.post("/evaluations/pruning", data={"sample_id": "4", "random_draws": "3", "num_collateral": "100"})
    call = fake.called("start_pruning_evaluation")[0]
    assert call["random_draws"] == 3 and call["num_collateral"] == 100
    assert "failure_mode" not in call


def test_experiment_operation_shows_points_and_its_plot(app_client, fake):
    from dataclasses import dataclass

    from parasal.client.types import Operation

    @dataclass(frozen=True)
    class Point:  # the contract's ExperimentPoint
        selection: str
        count: int
        metric: str
        mean: float | None
        ci_low: float | None
        ci_high: float | None
        n: int

    @dataclass(frozen=True)
    class Result:  # the contract's ExperimentResult
        name: str
        references: int
        seed: int
        points: list
        json: str = "{}"
        plot_png: bytes = b""
        seconds: float = 0.0

    points = [Point("most", 5, "corrected", 0.4, 0.3, 0.5, 20), Point("random", 5, "corrected", None, None, None, 0)]
    result = Result("pruning", 20, 0, points, plot_png=png(42), seconds=3.5)
    fake.operations_by_id["exp-1"] = Operation(
        "exp-1", "experiment", "succeeded", 1.0, "", "fashion", None, None, result
    )
    html = app_client.get("/operations/exp-1").text
    assert "Points (mean with its 95% bootstrap interval)" in html
    table = html[html.index("Points (") :]
    assert table.count("<tr><td>") == 2 and "<td>–</td>" in table  # None: not measured
    assert 'src="/img/operations/exp-1/plot.png"' in html and '{"' not in html  # the JSON is not dumped
    assert app_client.get("/img/operations/exp-1/plot.png").content == png(42)
    assert app_client.get("/img/operations/op-404/plot.png").status_code == 404


def test_loss_and_reference_filters_and_mode_zero_survive_paging(app_client, fake):
    fake.num_samples = 200
    r = app_client.get("/samples?min_loss=0.2&max_loss=1.5&only_with_surprise=1&failure_mode=0")
    call = fake.called("samples")[-1]
    assert call["min_loss"] == 0.2 and call["max_loss"] == 1.5 and call["only_with_surprise"] is True
    assert call["failure_mode"] == 0 and "only_with_expectation" not in call
    assert 'name="only_with_surprise" value="1" checked' in r.text  # the bundle has reference data
    fake.num_samples = 2000
    r = app_client.get("/samples?min_loss=0&failure_mode=0")
    (next_link,) = re.findall(r'href="(/samples\?[^"]*)" rel="next"', r.text)
    assert "failure_mode=0" in next_link and "min_loss=0.0" in next_link  # 0 is a value, not "unset"
    r = app_client.get("/samples?min_loss=low")
    assert r.status_code == 400 and "min_loss: expected a number" in r.text


def test_reference_filters_are_hidden_without_reference_data():
    from fastapi.testclient import TestClient

    from parasal.client.dashboard import create_app

    with TestClient(create_app(FakeClient(reference=False))) as tc:
        r = tc.get("/samples")
    assert r.status_code == 200 and "only_with_surprise" not in r.text


def test_many_classes_list_the_largest_confusions_instead_of_a_matrix(fake, monkeypatch):
    from types import SimpleNamespace

    from parasal.client.dashboard._views import TOP_CONFUSIONS, confusion_view

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, size=(100, 100))
    names = [f"class{i}" for i in range(100)]
    view = confusion_view(SimpleNamespace(counts=counts, class_names=names, accuracy=0.5), names)
    assert view["rows"] == [] and len(view["top"]) == TOP_CONFUSIONS
    # oracle: every off-diagonal cell, sorted by count (desc), then by cell order
    cells = sorted((-counts[t, p], t, p) for t in range(100) for p in range(100) if t != p)[:TOP_CONFUSIONS]
    assert [(c["true"], c["predicted"], c["count"]) for c in view["top"]] == [
        (names[t], names[p], -n) for n, t, p in cells
    ]


def test_the_map_is_thinned_on_huge_bundles(app_client, fake, monkeypatch):
    from types import SimpleNamespace

    from parasal.client.dashboard import _views

    monkeypatch.setattr(_views, "MAX_MAP_POINTS", 7)
    original = fake.failure_modes

    def many(**kwargs):
        fm = original(**kwargs)
        pts = [SimpleNamespace(id=i, x=float(i), y=0.0, label=0, predicted=1, failure_mode=0) for i in range(100)]
        return SimpleNamespace(**{**vars(fm), "map": pts})

    monkeypatch.setattr(fake, "failure_modes", many)
    html = app_client.get("/").text
    ids = [int(i) for i in re.findall(r'<a href="/samples/(\d+)"><circle', html)]
    gaps = np.diff(ids)
    assert len(ids) == 7 and ids[0] == 0 and ids[-1] == 99  # both ends, evenly in between
    assert gaps.min() >= 16 and gaps.max() <= 17
    assert "Showing 7 of 100 points" in html


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://testserver:9999"])
def test_posts_from_another_site_are_refused(app_client, fake, origin):
    r = app_client.post("/evaluations/pruning", data={"sample_id": "4"}, headers={"Origin": origin})
    assert r.status_code == 403 and "another site" in r.text
    r = app_client.post(
        "/upload", files={"image": ("x.png", png(1), "image/png")}, data={"label": "0"}, headers={"Origin": origin}
    )
    assert r.status_code == 403
    assert not [n for n, _, _ in fake.calls if n.startswith("start_") or n == "profile"]


def test_posts_from_the_dashboard_itself_are_accepted(app_client, fake):
    r = app_client.post("/evaluations/pruning", data={"sample_id": "4"}, headers={"Origin": "http://testserver"})
    assert r.status_code == 200 and fake.called("start_pruning_evaluation")


def test_an_uploaded_image_can_be_evaluated(app_client, fake):
    image = png(11)
    r = app_client.post("/upload", files={"image": ("bag.png", image, "image/png")}, data={"label": "1"})
    token = re.search(r'href="/evaluations\?upload=([^"]+)"', r.text).group(1)
    form = app_client.get(f"/evaluations?upload={token}").text
    assert f'name="upload" value="{token}"' in form and "bag.png" in form
    r = app_client.post("/evaluations/pruning", data={"upload": token, "counts": "1"})
    assert r.status_code == 200
    call = fake.called("start_pruning_evaluation")[0]
    assert call["image"] == image and call["label"] == 1 and "sample_id" not in call
    r = app_client.post("/evaluations/pruning", data={"upload": token, "sample_id": "4"})
    assert r.status_code == 400 and "give one of sample_id, an uploaded image or failure_mode" in r.text
    assert app_client.post("/evaluations/finetune", data={"upload": "gone"}).status_code == 404
    assert app_client.get("/evaluations?upload=gone").status_code == 404


def test_sample_page_links_its_confusion_pair(app_client):
    html = app_client.get("/samples/4").text
    assert '<a href="/samples?true_labels=1&amp;predicted_labels=2" id="same-pair">' in html


def test_failed_operation_shows_its_error(app_client, fake):
    import grpc

    from parasal.client.types import Operation, OperationErrorInfo

    error = OperationErrorInfo(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory on the device")
    fake.operations_by_id["bad"] = Operation(
        "bad", "pruning", "failed", 0.4, "failed", "fashion", None, None, None, error
    )
    html = app_client.get("/operations/bad").text
    assert "RESOURCE_EXHAUSTED: out of memory on the device" in html and 'data-done="true"' in html
    assert 'id="result"' not in html and "/cancel" not in html  # finished: nothing to cancel
    listing = app_client.get("/evaluations").text
    assert 'class="state-failed"' in listing
