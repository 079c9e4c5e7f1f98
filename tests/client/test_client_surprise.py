"""`Client.surprise`, `start_suppression`, the beta filters of `find_similar_failures` and the
`parasal surprise` CLI, against a small fake SaliencyService on 127.0.0.1 (what goes on the wire,
what comes back), and the SDK's own argument checks (refused before any call)."""

from __future__ import annotations

import io
import json
import math
from concurrent import futures

import grpc
import numpy as np
import pytest
from client_fakes import png_bytes
from PIL import Image

from parasal.client import Client, FilterDeviation, InvalidArgument, Surprise, cli
from parasal.client._convert_surprise import surprise_from_proto
from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc


def response() -> pb.ExplainSurpriseResponse:
    mask = np.zeros((3, 4), np.uint8)
    mask[1, 1:3] = 1
    exemplar = pb.Exemplar(id=5, uri="fashion-mnist:train#5", label=2, label_name="Pullover", activation=0.5)
    detailed = pb.FilterDeviation(
        layer="layer3",
        filter=17,
        alpha=2.0,
        mean=0.5,
        threshold=1.5,
        deviation=1.5,
        region=pb.Region(png=png_bytes((4, 3)), height=3, width=4, mask=mask.tobytes()),
        exemplars=[exemplar, pb.Exemplar(id=6, label=2, activation=0.25, image_png=png_bytes((4, 3), 200))],
    )
    plain = pb.FilterDeviation(layer="layer3", filter=3, alpha=1.0, mean=0.5, threshold=0.9, deviation=0.5)
    low = pb.FilterDeviation(layer="layer3", filter=40, alpha=0.0, mean=0.75, threshold=0.1, deviation=-0.75)
    return pb.ExplainSurpriseResponse(
        sample_id=7,
        label=2,
        predicted=4,
        true_confidence=0.25,
        predicted_confidence=0.5,
        beta=-0.125,
        layer="layer3",
        method="grad_amap",
        high_percentile=99.9,
        low_percentile=0.1,
        surprise=[detailed, plain],
        expectation=[low],
        alpha=[2.0, float("nan"), 0.0],
        class_mean=[0.5, 0.5, 0.75],
    )


class Fake(pb_grpc.SaliencyServiceServicer):
    def __init__(self):
        self.requests = []

    def ExplainSurprise(self, request, context):
        self.requests.append(request)
        return response()

    def FindSimilarFailures(self, request, context):
        self.requests.append(request)
        return pb.FindSimilarFailuresResponse()

    def ListBundles(self, request, context):
        return pb.ListBundlesResponse(bundles=[pb.BundleInfo(name="demo", class_names=["a", "b", "Pullover"])])


@pytest.fixture
def fake():
    servicer = Fake()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_SaliencyServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.target = f"127.0.0.1:{port}"
    yield servicer
    server.stop(None)


def test_none_sends_the_server_defaults_and_values_go_out_as_given(fake):
    with Client(fake.target, timeout=5) as c:
        got = c.surprise(7)
        c.surprise(
            image=png_bytes(),
            label=2,
            high=99.0,
            low=1.0,
            max_filters=4,
            detailed=2,
            exemplars=3,
            exemplars_any_class=True,
            segments=80,
            include_alpha=False,
            include_exemplar_images=True,
        )
    first, second = fake.requests
    assert first.sample_id == 7 and first.WhichOneof("query") == "sample_id"
    assert (first.high_percentile, first.low_percentile, first.max_filters, first.detailed) == (0, 0, 0, 0)
    assert (first.exemplars, first.segments, first.exemplars_any_class) == (0, 0, False)
    assert first.include_alpha and not first.include_exemplar_images
    assert second.image.label == 2 and second.image.data.startswith(b"\x89PNG")
    assert (second.high_percentile, second.low_percentile) == (pytest.approx(99.0), pytest.approx(1.0))
    assert (second.max_filters, second.detailed, second.exemplars, second.segments) == (4, 2, 3, 80)
    assert second.exemplars_any_class and second.include_exemplar_images and not second.include_alpha
    assert isinstance(got, Surprise) and got.sample_id == 7 and not got.correct


def test_the_answer_as_sdk_values(fake):
    with Client(fake.target, timeout=5) as c:
        got = c.surprise(7)
    assert got.alpha.dtype == np.float32 and got.alpha.shape == (3,) and math.isnan(got.alpha[1])
    first, second = got.surprise
    assert isinstance(first, FilterDeviation) and (first.layer, first.filter, first.deviation) == ("layer3", 17, 1.5)
    assert first.region_mask.dtype == bool and first.region_mask.shape == (3, 4) and first.region_mask.sum() == 2
    assert [e.id for e in first.exemplars] == [5, 6]
    assert first.exemplars[0].image_png is None and first.exemplars[1].image_png.startswith(b"\x89PNG")
    assert second.region_png is None and second.region_mask is None and second.exemplars == []
    assert Image.open(io.BytesIO(first.region(scale=5))).size == (20, 15)
    assert second.region() is None
    assert got.expectation[0].deviation == -0.75


def test_to_dict_is_strict_json_with_regions_as_sizes(fake):
    with Client(fake.target, timeout=5) as c:
        got = c.surprise(7)
    document = got.to_dict()
    text = json.dumps(document, allow_nan=False)  # NaN became null
    assert document["alpha"][1] is None
    first = document["surprise"][0]
    assert first["region_mask"] == {"height": 3, "width": 4, "pixels": 2}
    assert "region_png" not in first and "image_png" not in first["exemplars"][1]
    assert document["surprise"][1]["region_mask"] is None
    assert "PNG" not in text
    with_images = got.to_dict(images=True)
    assert with_images["surprise"][0]["exemplars"][1]["image_png"]  # base64
    json.dumps(with_images, allow_nan=False)


def test_find_similar_sends_the_beta_filters_only_when_given(fake):
    with Client(fake.target, timeout=5) as c:
        c.find_similar_failures(3)
        c.find_similar_failures(3, beta_below=0.5, beta_above=-1, only_with_surprise=True)
    plain, filtered = fake.requests
    assert not plain.HasField("beta_below") and not plain.HasField("beta_above") and not plain.only_with_surprise
    assert filtered.beta_below == 0.5 and filtered.beta_above == -1.0 and filtered.only_with_surprise


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(sample_id=1, high=100), "high"),
        (dict(sample_id=1, high=0), "high"),
        (dict(sample_id=1, low=float("nan")), "low"),
        (dict(sample_id=1, low="1"), "low"),
        (dict(sample_id=1, detailed=0), "detailed"),
        (dict(sample_id=1, segments=-5), "segments"),
        (dict(sample_id=1, exemplars=1.5), "exemplars"),
        (dict(sample_id=1, include_alpha="yes"), "include_alpha"),
        (dict(sample_id=1, image=b"x", label=1), "exactly one"),
        (dict(image=png_bytes()), "label"),
        (dict(), "exactly one"),
    ],
)
def test_surprise_arguments_are_checked_before_any_call(kwargs, words):
    with Client("127.0.0.1:9", timeout=1) as c:  # nothing listens there: a call would be UNAVAILABLE
        with pytest.raises(InvalidArgument, match=words):
            c.surprise(**kwargs)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(sample_id=1, segments=[]), "segments"),
        (dict(sample_id=1, segments=[50, 0]), "segments"),
        (dict(sample_id=1, blank_counts="1,2"), "blank_counts"),
        (dict(sample_id=1, blank_counts=[1.0]), "blank_counts"),
    ],
)
def test_suppression_arguments_are_checked_before_any_call(kwargs, words):
    with Client("127.0.0.1:9", timeout=1) as c:
        with pytest.raises(InvalidArgument, match=words):
            c.start_suppression(**kwargs)


def test_find_similar_beta_arguments_are_checked():
    with Client("127.0.0.1:9", timeout=1) as c:
        with pytest.raises(InvalidArgument, match="beta_below"):
            c.find_similar_failures(1, beta_below=float("inf"))
        with pytest.raises(InvalidArgument, match="only_with_surprise"):
            c.find_similar_failures(1, only_with_surprise=1)


def test_cli_prints_tables_and_writes_regions_and_strips(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    monkeypatch.delenv(cli.TOKEN_FILE_ENV, raising=False)
    out = tmp_path / "s"
    assert cli.main(["--target", fake.target, "surprise", "--sample", "7", "--out", str(out), "--scale", "2"]) == 0
    stdout = capsys.readouterr().out
    assert "sample 7: label 2, predicted 4 (wrong)" in stdout and "beta -0.125" in stdout
    assert "surprise filters (2)" in stdout and "expectation filters (1)" in stdout and "2/12 px" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "surprise-1-f17-exemplars.png",
        "surprise-1-f17-region.png",
        "surprise.json",
    ]
    assert Image.open(out / "surprise-1-f17-region.png").size == (8, 6)
    assert Image.open(out / "surprise-1-f17-exemplars.png").size == (8, 6)  # one image (the other has none)
    assert fake.requests[-1].include_exemplar_images  # --out asks for the images
    document = json.loads((out / "surprise.json").read_text())
    assert document["surprise"]["beta"] == -0.125 and len(document["files"]) == 2
    assert (
        cli.main(
            [
                "--target",
                fake.target,
                "surprise",
                "--image",
                str(out / "surprise-1-f17-region.png"),
                "--label",
                "pullover",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["out"] is None
    assert fake.requests[-1].image.label == 2  # the class name, looked up in the bundle's names


def test_empty_response_reads_as_empty_values():
    got = surprise_from_proto(pb.ExplainSurpriseResponse())
    assert got.sample_id is None and got.alpha is None and got.surprise == [] and got.table() == "(none)"
