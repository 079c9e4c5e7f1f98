"""Per-sample filter saliency throughput: the paper code's way, the batched engine, a training step.

    python benchmarks/saliency_throughput.py                       # demo-fashion, Fashion-MNIST, CPU
    python benchmarks/saliency_throughput.py --model resnet50 --size 224 --device cuda --reference-samples 128 --json

Measured in one process on the same model, batch, device, dtype (float32) and threads:

1. reference: the paper code's way, one sample at a time with ``autograd.grad(...,
   create_graph=True)`` (``parasal.core.reference.per_sample_filter_saliency``);
2. engine: ``parasal.core.saliency.filter_saliency`` at ``--batch-size``;
3. train step: a normal training step at ``--batch-size`` on a copy of the model in
   train mode: forward, mean cross-entropy, backward, SGD (momentum 0.9) step. On CPU
   the same step run channels-last is also timed, for information, since the engine
   runs the model channels-last there.

Each is warmed up, then timed over ``--samples`` samples (whole batches); the methods
alternate for ``--repeats`` rounds and the best round of each counts, since other
processes may share the CPU. The ratios engine/reference and engine/train step come from
the same run. With ``--json`` the last line of stdout is one JSON object with every figure.
The default model is the embedded ``demo-fashion`` network on real Fashion-MNIST test
images; torchvision names give that architecture with random weights on random inputs.
On CUDA, PyTorch's defaults apply to all three alike (cuDNN convolutions may use TF32).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from parasal.core.layout import filter_layout
from parasal.core.reference import per_sample_filter_saliency
from parasal.core.saliency import filter_saliency

DEMO = "demo-fashion"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but CUDA is not available")
    torch.manual_seed(0)
    model, inputs, targets, notes = _workload(args)
    model = model.to(device).eval()
    inputs, targets = inputs.to(device), targets.to(device)
    layout = filter_layout(model)
    batches = max(1, -(-args.samples // args.batch_size))
    samples = batches * args.batch_size
    inputs, targets = _cycle(inputs, samples), _cycle(targets, samples)
    x_chunks = inputs.split(args.batch_size)
    y_chunks = targets.split(args.batch_size)

    trainee = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(trainee.parameters(), lr=1e-3, momentum=0.9)

    def reference(n):  # n samples, one at a time
        done = 0
        for x, y in zip(x_chunks, y_chunks):
            take = min(len(x), n - done)
            per_sample_filter_saliency(model, x[:take], y[:take], layout=layout, create_graph=True)
            done += take
            if done >= n:
                break

    def engine(n):  # n samples, whole batches
        for x, y in zip(x_chunks[: n // args.batch_size], y_chunks):
            filter_saliency(model, x, y, layout=layout)

    def train_step(n, net=trainee, opt=optimizer, memory_format=torch.contiguous_format):
        for x, y in zip(x_chunks[: n // args.batch_size], y_chunks):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x.contiguous(memory_format=memory_format)), y).backward()
            opt.step()

    ref_samples = min(samples, args.reference_samples or samples)
    runs = {"reference": (reference, ref_samples), "engine": (engine, samples), "train_step": (train_step, samples)}
    if device.type == "cpu" and inputs.dim() == 4:
        # For information: the engine runs the model channels-last on CPU; a training step
        # can too. The required comparison is with the plain (NCHW) step above.
        trainee_cl = copy.deepcopy(model).train().to(memory_format=torch.channels_last)
        optimizer_cl = torch.optim.SGD(trainee_cl.parameters(), lr=1e-3, momentum=0.9)
        stem = next(m for m in trainee_cl.modules() if isinstance(m, nn.Conv2d))
        # a 1-channel input cannot carry the format: switch at the first conv's output, as the engine does
        stem.register_forward_hook(lambda module, args, out: out.contiguous(memory_format=torch.channels_last))

        def train_step_cl(n):
            train_step(n, trainee_cl, optimizer_cl, torch.channels_last)

        runs["train_step_channels_last"] = (train_step_cl, samples)
    # warm-up: one batch each (allocator, oneDNN/cuDNN kernels, autograd caches)
    for fn, _ in runs.values():
        fn(args.batch_size)
    check = _check(model, x_chunks[0][:4], y_chunks[0][:4], layout)
    best = {name: float("inf") for name in runs}
    for _ in range(args.repeats):
        for name, (fn, n) in runs.items():
            _sync(device)
            start = time.perf_counter()
            fn(n)
            _sync(device)
            best[name] = min(best[name], (time.perf_counter() - start) / n)
    sps = {name: 1.0 / seconds for name, seconds in best.items()}
    cl_step = "train_step_channels_last" in sps
    result = {
        "reference_sps": round(sps["reference"], 2),
        "engine_sps": round(sps["engine"], 2),
        "train_step_sps": round(sps["train_step"], 2),
        "engine_vs_reference": round(sps["engine"] / sps["reference"], 3),
        "engine_vs_train_step": round(sps["engine"] / sps["train_step"], 3),
        "train_step_channels_last_sps": round(sps["train_step_channels_last"], 2) if cl_step else None,
        "device": _device_name(device),
        "model": args.model,
        "batch": args.batch_size,
        "size": args.size,
        "input_shape": list(inputs.shape[1:]),
        "filters": layout.num_filters,
        "samples": samples,
        "reference_samples": ref_samples,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "max_rel_error_vs_reference": check,
        "notes": notes,
    }
    _print_table(result)
    if args.json:
        print(json.dumps(result))
    return 0


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEMO, help=f"{DEMO} (default) or a torchvision classification model name")
    p.add_argument("--size", type=int, default=None, help="input side (default 28 for the demo, else 224)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--samples", type=int, default=512, help="samples timed per method and round (whole batches)")
    p.add_argument(
        "--reference-samples",
        type=int,
        default=None,
        help="fewer samples for the slow reference (default: as --samples)",
    )
    p.add_argument("--repeats", type=int, default=5, help="alternating rounds; the best of each counts")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    if args.size is None:
        args.size = 28 if args.model == DEMO else 224
    if min(args.batch_size, args.samples, args.repeats) < 1:
        p.error("--batch-size, --samples and --repeats must be positive")
    return args


def _workload(args) -> tuple[nn.Module, torch.Tensor, torch.Tensor, list[str]]:
    """(model, inputs, targets, notes): the demo on Fashion-MNIST, or a torchvision model on noise."""
    notes: list[str] = []
    n = min(args.samples, 4096)
    if args.model != DEMO:
        import torchvision

        model = torchvision.models.get_model(args.model, weights=None)
        classes = _num_classes(model)
        x = torch.randn(n, 3, args.size, args.size)
        return model, x, torch.randint(0, classes, (n,)), notes
    model = None
    try:
        from parasal.indexer.zoo import build_demo_model, load_demo_model

        try:
            model = load_demo_model()
        except (FileNotFoundError, RuntimeError) as exc:  # not trained yet, or from another architecture
            model = build_demo_model()
            reason = str(exc).splitlines()[0][:120]
            notes.append(f"demo weights not loadable ({reason}); random weights, same architecture")
    except ImportError as exc:
        notes.append(f"parasal.indexer.zoo unavailable ({exc}); stand-in ResNet")
        model = _StandIn()
    try:
        from parasal.indexer import open_dataset
        from parasal.indexer.zoo import DEMO_PREPROCESSING

        data = open_dataset("fashion-mnist:test")
        items = [data[i] for i in range(min(n, len(data)))]
        x = torch.stack([DEMO_PREPROCESSING(item.image) for item in items])
        y = torch.tensor([int(item.label) for item in items])
        if args.size != 28:
            x = F.interpolate(x, size=(args.size, args.size), mode="bilinear", align_corners=False)
    except Exception as exc:  # noqa: BLE001 - the benchmark still runs without the dataset, on noise
        notes.append(f"Fashion-MNIST unavailable ({type(exc).__name__}: {exc}); random inputs")
        x, y = torch.randn(n, 1, args.size, args.size), torch.randint(0, 10, (n,))
    return model, x, y, notes


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 1000


class _StandIn(nn.Module):
    """A small ResNet for 1x28x28 (32/64/128, one block per stage), used only without the zoo."""

    def __init__(self):
        super().__init__()

        def block(cin, cout, stride):
            return nn.ModuleDict(
                {
                    "body": nn.Sequential(
                        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                        nn.BatchNorm2d(cout),
                        nn.ReLU(),
                        nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                        nn.BatchNorm2d(cout),
                    ),
                    "short": nn.Identity()
                    if stride == 1 and cin == cout
                    else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)),
                }
            )

        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.ModuleList([block(32, 32, 1), block(32, 64, 2), block(64, 128, 2)])
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = F.relu(b["body"](x) + b["short"](x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _cycle(t: torch.Tensor, n: int) -> torch.Tensor:
    reps = -(-n // len(t))
    return t.repeat((reps,) + (1,) * (t.dim() - 1))[:n] if reps > 1 else t[:n]


def _check(model, x, y, layout) -> float:
    """Max relative difference engine vs reference on a few samples (a sanity check, not a test)."""
    fast = filter_saliency(model, x, y, layout=layout)
    slow = per_sample_filter_saliency(model, x, y, layout=layout)
    return float(((fast - slow).abs() / (slow.abs() + 1e-3 * slow.abs().max())).max())


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _print_table(r: dict) -> None:
    shape = "x".join(map(str, r["input_shape"]))
    print(
        f"saliency throughput: {r['model']} ({r['filters']} filters), input {shape}, batch {r['batch']}, "
        f"{r['device']}, {r['threads']} threads, torch {r['torch']}"
    )
    for note in r["notes"]:
        print(f"  note: {note}")
    rows = [
        ("reference: batch 1, create_graph=True (paper code)", r["reference_sps"], r["reference_samples"]),
        (f"engine: filter_saliency, batch {r['batch']}", r["engine_sps"], r["samples"]),
        (f"train step: fwd+bwd+SGD, batch {r['batch']}, train mode", r["train_step_sps"], r["samples"]),
    ]
    cl = r["train_step_channels_last_sps"]
    if cl:
        rows.append(("  (info) the same step run channels-last", cl, r["samples"]))
    print(f"  {'method':<56} {'samples/s':>10} {'ms/sample':>10} {'timed':>7}")
    for name, sps, n in rows:
        print(f"  {name:<56} {sps:>10.1f} {1e3 / sps:>10.3f} {n:>7}")
    print(f"  engine / reference:  {r['engine_vs_reference']:.2f}x   (target >= 2)")
    print(f"  engine / train step: {r['engine_vs_train_step']:.2f}x   (target >= 0.6)")
    if cl:
        print(f"  engine / channels-last train step: {r['engine_sps'] / cl:.2f}x   (information)")
    print(
        f"  best of {r['repeats']} alternating rounds; engine vs reference max rel. difference "
        f"{r['max_rel_error_vs_reference']:.1e} on 4 samples"
    )


if __name__ == "__main__":
    sys.exit(main())
