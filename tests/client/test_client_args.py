"""Image arguments, request building and client-side validation (which must fail before any call)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from parasal.client import InvalidArgument
from parasal.client._images import JPEG_MAGIC, PNG_MAGIC, encode_image
from parasal.v1 import saliency_pb2 as pb


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


RGB = (np.arange(5 * 7 * 3).reshape(5, 7, 3) * 3 % 256).astype(np.uint8)
GRAY = RGB[:, :, 0].copy()


def test_bytes_are_sent_unchanged():
    assert encode_image(b"\x89PNG\r\n\x1a\nxyz") == b"\x89PNG\r\n\x1a\nxyz"
    assert encode_image(bytearray(b"\xff\xd8\xff\xe0jpeg")) == b"\xff\xd8\xff\xe0jpeg"
    with pytest.raises(InvalidArgument):
        encode_image(b"")


def test_numpy_arrays_become_lossless_png():
    for array in (GRAY, RGB):
        data = encode_image(array)
        assert data.startswith(PNG_MAGIC)
        np.testing.assert_array_equal(decode(data), array)
    np.testing.assert_array_equal(decode(encode_image(GRAY[:, :, None])), GRAY)
    rgba = np.dstack([RGB, np.full(GRAY.shape, 200, np.uint8)])
    np.testing.assert_array_equal(decode(encode_image(rgba)), rgba)
    np.testing.assert_array_equal(decode(encode_image(RGB[:, ::-1])), RGB[:, ::-1])  # non-contiguous view


def test_bad_arrays_are_invalid_arguments():
    with pytest.raises(InvalidArgument, match="uint8"):
        encode_image(GRAY.astype(np.float32) / 255)
    for shape in [(5,), (5, 7, 2), (2, 5, 7, 3), (0, 7)]:
        with pytest.raises(InvalidArgument):
            encode_image(np.zeros(shape, np.uint8))


def test_pil_images_become_png():
    for img, expected in ((Image.fromarray(RGB), RGB), (Image.fromarray(GRAY), GRAY)):
        data = encode_image(img)
        assert data.startswith(PNG_MAGIC)
        np.testing.assert_array_equal(decode(data), expected)
    cmyk = Image.fromarray(RGB).convert("CMYK")  # PNG cannot hold CMYK: converted to RGB
    assert decode(encode_image(cmyk)).shape == RGB.shape


def test_paths(tmp_path):
    png, jpg, bmp, junk = (tmp_path / n for n in ("a.png", "b.jpg", "c.bmp", "d.png"))
    Image.fromarray(RGB).save(png)
    Image.fromarray(RGB).save(jpg, quality=95)
    Image.fromarray(RGB).save(bmp)
    junk.write_bytes(b"not an image at all")
    assert encode_image(png) == png.read_bytes()  # PNG and JPEG files go as they are
    assert encode_image(str(jpg)) == jpg.read_bytes() and jpg.read_bytes().startswith(JPEG_MAGIC)
    bmp_data = encode_image(bmp)  # other formats are re-encoded as PNG
    assert bmp_data.startswith(PNG_MAGIC)
    np.testing.assert_array_equal(decode(bmp_data), RGB)
    with pytest.raises(InvalidArgument, match="cannot read"):
        encode_image(junk)
    for unreadable in (tmp_path / "missing.png", tmp_path):  # missing, a directory: the caller's argument
        with pytest.raises(InvalidArgument, match="cannot read image file"):
            encode_image(unreadable)


def test_unsupported_types():
    for value in (3, [[1, 2]], None):
        with pytest.raises(InvalidArgument, match="image must be"):
            encode_image(value)


# ---------------------------------------------------------------------------------------
# Requests as the fake server receives them


def test_query_oneof_and_defaults(client, fake):
    client.profile(sample_id=0)  # id 0 is a real sample: the oneof must still be set
    client.profile(image=GRAY, label=np.int64(3), full=True, top_k=5, bundle="demo")
    first, second = fake.state.requests("GetProfile")
    assert first.WhichOneof("query") == "sample_id" and first.sample_id == 0
    assert first.top_k == 0 and not first.include_vector and first.bundle == ""  # 0: the server's default
    assert second.WhichOneof("query") == "image" and second.image.label == 3
    np.testing.assert_array_equal(decode(second.image.data), GRAY)
    assert second.include_vector and second.top_k == 5 and second.bundle == "demo"


def test_similar_request_fields(client, fake):
    client.find_similar_failures(sample_id=7)
    client.find_similar_failures(
        vector=[1, 2, 3.5],
        k=3,
        only_misclassified=True,
        exclude_self=False,
        layers="conv1",
        true_labels=(1, 2),
        predicted_labels=np.array([4]),
    )
    client.find_similar_failures(sample_id=7, layers=["conv1", "conv2"])
    a, b, c = fake.state.requests("FindSimilarFailures")
    assert a.WhichOneof("query") == "sample_id" and a.k == 0 and not a.include_query and not a.only_misclassified
    assert b.WhichOneof("query") == "vector" and list(b.vector.values) == [1.0, 2.0, 3.5]
    assert b.k == 3 and b.include_query and b.only_misclassified
    assert list(b.layers) == ["conv1"] and list(b.true_labels) == [1, 2] and list(b.predicted_labels) == [4]
    assert list(c.layers) == ["conv1", "conv2"]


def test_evaluation_request_fields(client, fake):
    client.start_finetune_evaluation(sample_id=3)
    client.start_finetune_evaluation(
        sample_id=3,
        counts=[2],
        selections=["least", "Most"],
        step_size=0.01,
        num_neighbors=4,
        neighbor_bundle="train",
        seed=9,
    )
    with pytest.raises(InvalidArgument, match="num_neighbors must be >= 1"):  # 0 is the server's default, 10
        client.start_pruning_evaluation(sample_id=3, num_neighbors=0)
    client.start_pruning_evaluation(image=RGB, label=1, selections="random")
    client.start_pruning_evaluation(sample_id=3, counts=(75,), num_neighbors=5)
    client.start_pruning_evaluation(sample_id=3)
    default, custom = fake.state.requests("StartFinetuneEvaluation")
    # Unset arguments go out as the proto's "unset" (empty / 0): the server applies its defaults.
    assert list(default.counts) == [] and list(default.selections) == []
    assert default.step_size == 0.0 and default.num_neighbors == 0 and default.WhichOneof("reference") == "sample_id"
    assert list(custom.counts) == [2] and list(custom.selections) == [
        pb.SELECTION_LEAST_SALIENT,
        pb.SELECTION_MOST_SALIENT,
    ]
    assert custom.step_size == pytest.approx(0.01)
    assert (custom.num_neighbors, custom.neighbor_bundle, custom.seed) == (4, "train", 9)
    image, custom, default = fake.state.requests("StartPruningEvaluation")
    assert image.WhichOneof("reference") == "image" and list(image.selections) == [pb.SELECTION_RANDOM]
    assert list(custom.counts) == [75] and custom.num_neighbors == 5
    assert list(default.counts) == [] and list(default.selections) == [] and default.num_neighbors == 0


def test_explain_request_fields(client, fake):
    client.explain_input(sample_id=1, filters=[3, 40], boost=50)
    client.explain_input(sample_id=1, top_k=4)
    request, default = fake.state.requests("ExplainInput")
    assert list(request.filters) == [3, 40] and request.boost == 50.0 and request.top_k == 0
    assert default.top_k == 4 and default.boost == 0.0 and list(default.filters) == []


def test_operations_page_size(client, fake):
    client.operations()
    client.operations(page_size=7)
    default, custom = fake.state.requests("ListOperations")
    assert default.page_size == 0 and custom.page_size == 7


BAD_CALLS = {
    "no query": lambda c: c.profile(),
    "two queries": lambda c: c.profile(sample_id=1, image=GRAY, label=1),
    "image without label": lambda c: c.profile(image=GRAY),
    "label with sample id": lambda c: c.explain_input(sample_id=1, label=1),
    "float sample id": lambda c: c.sample(1.5),
    "bool sample id": lambda c: c.profile(sample_id=True),
    "top_k 0": lambda c: c.profile(sample_id=1, top_k=0),
    "k 0": lambda c: c.find_similar_failures(sample_id=1, k=0),
    "page_size 0": lambda c: c.operations(page_size=0),
    "vector and sample": lambda c: c.find_similar_failures(sample_id=1, vector=[1.0]),
    "2-D vector": lambda c: c.find_similar_failures(vector=np.ones((2, 2))),
    "NaN vector": lambda c: c.find_similar_failures(vector=[1.0, float("nan")]),
    "empty vector": lambda c: c.find_similar_failures(vector=[]),
    "text vector": lambda c: c.find_similar_failures(vector=["a"]),
    "labels as text": lambda c: c.find_similar_failures(sample_id=1, true_labels="1,2"),
    "unknown selection": lambda c: c.start_finetune_evaluation(sample_id=1, selections=["best"]),
    "whole network requested": lambda c: c.start_pruning_evaluation(sample_id=1, selections=["whole_network"]),
    "no counts": lambda c: c.start_pruning_evaluation(sample_id=1, counts=[]),
    "count 0": lambda c: c.start_pruning_evaluation(sample_id=1, counts=[0, 5]),
    "step size 0": lambda c: c.start_finetune_evaluation(sample_id=1, step_size=0),
    "num_neighbors 0 for fine-tuning": lambda c: c.start_finetune_evaluation(sample_id=1, num_neighbors=0),
    "no selections": lambda c: c.start_finetune_evaluation(sample_id=1, selections=[]),
    "negative num_neighbors": lambda c: c.start_pruning_evaluation(sample_id=1, num_neighbors=-1),
    "boost 0": lambda c: c.explain_input(sample_id=1, boost=0),
    "bad array image": lambda c: c.profile(image=np.zeros((4, 4), np.float64), label=1),
    "unknown state": lambda c: c.operations(state="done"),
    "empty op id": lambda c: c.operation(" "),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_client_side_validation_fails_before_any_call(client, fake, case):
    with pytest.raises(InvalidArgument) as info:
        BAD_CALLS[case](client)
    assert isinstance(info.value, ValueError) and info.value.details
    assert fake.state.calls == []


def test_channel_options_and_retry_policy():
    import json

    from parasal.client import _config

    options = dict(_config.channel_options({"grpc.max_receive_message_length": 1, "grpc.lb_policy_name": "x"}))
    assert options["grpc.max_receive_message_length"] == 1 and options["grpc.lb_policy_name"] == "x"
    defaults = dict(_config.channel_options())
    limits = {defaults["grpc.max_send_message_length"], defaults["grpc.max_receive_message_length"]}
    assert limits == {_config.MAX_MESSAGE_BYTES}
    assert _config.MAX_MESSAGE_BYTES > 4 * 1024 * 1024  # above gRPC's default receive limit
    (method_config,) = json.loads(options["grpc.service_config"])["methodConfig"]
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert all(name["service"] != "parasal.v1.EvaluationService" for name in method_config["name"])
