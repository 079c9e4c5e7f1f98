"""Filter importance throughput: filter_importance (grad_amap) against a forward+backward pass of the same batch.

    python benchmarks/importance_throughput.py                 # demo-fashion on Fashion-MNIST, CPU
    python benchmarks/importance_throughput.py --device cuda --batch-size 256 --json

Measured in one process on the same model, batch, device and threads:

1. importance: ``parasal.core.filter_importance(method="grad_amap")`` with the layer named
   (the indexer resolves it once per run); also with ``layer=None`` (one extra one-sample
   probe forward per call to find the last conv), for information;
2. fwd+bwd: a plain forward pass and ``loss.backward()`` of the mean cross-entropy on a
   copy of the model in eval mode (gradients to every weight, as a training step without
   the optimizer).

Each is warmed up, then the methods alternate for ``--repeats`` rounds and the best round
of each counts (other processes may share the CPU). The issue's target: importance ≥ 0.8×
the forward+backward throughput (it needs one backward to the layer only).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch
import torch.nn.functional as F

from parasal.core import filter_importance, last_conv_layer


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, x, y, note = _workload(args.samples)
    model = model.to(device).eval()
    x_chunks, y_chunks = x.to(device).split(args.batch_size), y.to(device).split(args.batch_size)
    x_chunks, y_chunks = x_chunks[: len(x) // args.batch_size], y_chunks[: len(x) // args.batch_size]
    layer = last_conv_layer(model, x_chunks[0][:1])
    plain = copy.deepcopy(model).eval()

    def importance(named=True):
        for xb, yb in zip(x_chunks, y_chunks):
            filter_importance(model, xb, yb, layer=layer if named else None, method="grad_amap")

    def forward_backward():
        for xb, yb in zip(x_chunks, y_chunks):
            plain.zero_grad(set_to_none=True)
            F.cross_entropy(plain(xb), yb).backward()

    runs = {
        "importance": importance,
        "importance_default_layer": lambda: importance(False),
        "fwd_bwd": forward_backward,
    }
    for fn in runs.values():  # warm-up
        fn()
    best = {name: float("inf") for name in runs}
    samples = len(x_chunks) * args.batch_size
    for _ in range(args.repeats):
        for name, fn in runs.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    sps = {name: samples / seconds for name, seconds in best.items()}
    result = {
        "layer": layer,
        "importance_sps": round(sps["importance"], 1),
        "importance_default_layer_sps": round(sps["importance_default_layer"], 1),
        "fwd_bwd_sps": round(sps["fwd_bwd"], 1),
        "ratio": round(sps["importance"] / sps["fwd_bwd"], 3),
        "ratio_default_layer": round(sps["importance_default_layer"] / sps["fwd_bwd"], 3),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch": args.batch_size,
        "samples": samples,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "note": note,
    }
    print(
        f"filter importance (grad_amap, layer {layer}) vs forward+backward: {result['device']}, "
        f"batch {args.batch_size}, {samples} samples, {result['threads']} threads{'; ' + note if note else ''}\n"
        f"  importance {result['importance_sps']:.0f}/s, "
        f"with layer=None {result['importance_default_layer_sps']:.0f}/s, "
        f"fwd+bwd {result['fwd_bwd_sps']:.0f}/s\n"
        f"  ratio {result['ratio']:.2f}x (layer=None {result['ratio_default_layer']:.2f}x; target >= 0.8)"
    )
    if args.json:
        print(json.dumps(result))
    return 0


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--samples", type=int, default=512, help="samples per round (whole batches)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    if min(args.batch_size, args.samples, args.repeats) < 1 or args.samples < args.batch_size:
        p.error("--batch-size, --samples and --repeats must be positive, --samples >= --batch-size")
    return args


def _workload(n: int):
    """(demo model, Fashion-MNIST test images and labels, note); random weights/inputs when unavailable."""
    from parasal.indexer.zoo import DEMO_PREPROCESSING, build_demo_model, load_demo_model

    note = ""
    try:
        model = load_demo_model()
    except (FileNotFoundError, RuntimeError) as exc:
        model, note = build_demo_model(), f"random demo weights ({str(exc).splitlines()[0][:80]})"
    try:
        from parasal.indexer import open_dataset

        data = open_dataset("fashion-mnist:test")
        items = [data[i] for i in range(min(n, len(data)))]
        x = torch.stack([DEMO_PREPROCESSING(item.image) for item in items])
        y = torch.tensor([int(item.label) for item in items])
    except Exception as exc:  # noqa: BLE001 - the benchmark still runs on noise without the dataset
        note += f" Fashion-MNIST unavailable ({type(exc).__name__}); random inputs"
        x, y = torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))
    return model, x, y, note.strip()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    sys.exit(main())
