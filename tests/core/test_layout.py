"""filter_layout / FilterLayout: which profile entries belong to which layer."""

import numpy as np
import pytest
import torchvision
from torch import nn

from parasal.core.layout import FilterLayout, LayerSpan, filter_layout


class _Mixed(nn.Module):
    """Convs of every flavour, a linear layer in between, and a nested block."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 12, 3, groups=4), nn.ReLU(), nn.Conv2d(12, 12, 3, groups=12))
        self.proj = nn.Linear(12, 5)
        self.head = nn.Conv2d(12, 6, 1, stride=2, bias=False)
        self.fc = nn.Linear(6, 3)


def test_offsets_follow_registration_order_and_counts():
    layout = filter_layout(_Mixed())
    assert [(s.name, s.kind, s.filters, s.offset) for s in layout] == [
        ("stem", "conv2d", 8, 0),
        ("block.0", "conv2d", 12, 8),
        ("block.2", "conv2d", 12, 20),
        ("head", "conv2d", 6, 32),
    ]
    assert layout.num_filters == 38 and len(layout) == 4
    assert [s.stop for s in layout] == [8, 20, 32, 38]


def test_grouped_and_depthwise_convs_count_output_channels():
    layout = filter_layout(_Mixed())
    # groups=4 and depthwise (groups=12) convs: one filter per output channel, whatever the grouping
    assert layout.layer("block.0").filters == 12
    assert layout.layer("block.2").filters == 12
    mobilenet = torchvision.models.mobilenet_v3_small(num_classes=10)
    convs = [m for m in mobilenet.modules() if isinstance(m, nn.Conv2d)]
    assert any(c.groups == c.in_channels > 1 for c in convs)  # really has depthwise convs
    assert filter_layout(mobilenet).num_filters == sum(c.out_channels for c in convs) == 8944


def test_include_linear_interleaves_linear_layers_in_module_order():
    layout = filter_layout(_Mixed(), include_linear=True)
    assert [(s.name, s.kind, s.filters) for s in layout] == [
        ("stem", "conv2d", 8),
        ("block.0", "conv2d", 12),
        ("block.2", "conv2d", 12),
        ("proj", "linear", 5),
        ("head", "conv2d", 6),
        ("fc", "linear", 3),
    ]
    assert layout.layer("head").offset == 37 and layout.num_filters == 46
    resnet = torchvision.models.resnet18(num_classes=10)
    assert (len(filter_layout(resnet)), filter_layout(resnet).num_filters) == (20, 4800)
    with_fc = filter_layout(resnet, include_linear=True)
    assert with_fc.layers[-1] == LayerSpan("fc", "linear", 10, 4800)


def test_locate_and_indices():
    layout = filter_layout(_Mixed())
    assert layout.locate(0) == (layout.layer("stem"), 0)
    assert layout.locate(7) == (layout.layer("stem"), 7)
    assert layout.locate(8) == (layout.layer("block.0"), 0)
    assert layout.locate(37) == (layout.layer("head"), 5)
    for i in range(layout.num_filters):  # locate inverts offset + filter
        span, k = layout.locate(i)
        assert span.offset + k == i and 0 <= k < span.filters
    assert layout.indices(["head", "stem"]) == list(range(0, 8)) + list(range(32, 38))  # layout order
    assert layout.indices([]) == []
    with pytest.raises(IndexError):
        layout.locate(38)
    with pytest.raises(IndexError):
        layout.locate(-1)
    with pytest.raises(KeyError):
        layout.indices(["stem", "nope"])
    with pytest.raises(KeyError):
        layout.layer("nope")


def test_dict_round_trip():
    layout = filter_layout(_Mixed(), include_linear=True)
    rows = layout.to_dict()
    assert rows[3] == {"name": "proj", "kind": "linear", "filters": 5, "offset": 32}
    assert FilterLayout.from_dict(rows) == layout


def test_model_without_convs_is_an_error():
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        filter_layout(mlp)
    layout = filter_layout(mlp, include_linear=True)
    assert [s.filters for s in layout] == [8, 2]


def test_empty_layout_has_no_filters():
    assert FilterLayout(()).num_filters == 0 and len(FilterLayout(())) == 0


def test_locate_matches_a_scan_and_locate_many_matches_locate():
    layout = filter_layout(torchvision.models.resnet18(num_classes=10))

    def scan(index):  # the old linear search
        for span in layout.layers:
            if index < span.stop:
                return span, index - span.offset

    for i in range(layout.num_filters):
        assert layout.locate(i) == scan(i)

    picks = np.array([0, 4799, 63, 64, 1000, 64])
    names, within = layout.locate_many(picks)
    assert within.dtype == np.int64 and names == [layout.locate(int(i))[0].name for i in picks]
    assert within.tolist() == [layout.locate(int(i))[1] for i in picks]
    assert layout.locate(np.int64(64)) == layout.locate(64)
    names, within = layout.locate_many([])
    assert names == [] and within.shape == (0,)
    with pytest.raises(IndexError, match="outside"):
        layout.locate_many([0, 4800])
    with pytest.raises(IndexError, match="outside"):
        layout.locate_many([-1])


def test_lookup_tables_do_not_change_equality_or_the_dict_form():
    a, b = filter_layout(_Mixed()), filter_layout(_Mixed())
    a.locate(3), a.layer("head")  # builds a's tables only
    assert a == b and hash(a) == hash(b)
    assert a.to_dict() == b.to_dict() and FilterLayout.from_dict(a.to_dict()) == a
