"""FAISS index types at ResNet-50 width: memory per vector, build time, latency, recall@10.

    .venv/bin/python benchmarks/index_scale.py [--n 100000] [--dim 26560] [--factories F1 F2 ...]

Synthetic standardized profiles with structure (so recall is meaningful): each vector is a
cluster centre (std 1.2 per dimension) + a rank-32 latent variation (std 1.0) + unit
isotropic noise, written as float16 rows of
a memory-mapped ``.npy`` (the bundle's own ``profiles.npy`` format: 100k x 26,560 = 5.3 GB
on disk, never all in RAM). Ground truth is exact cosine over those stored rows (what the
bundle's ``Flat`` index and ``layers`` search compute). Each factory string is built with
the indexer's own ``build_index`` (seeded training sample; wide PCA by randomized SVD on
8,192 rows), then queried with held-out vectors from the same distribution.

Reported per index: bytes per vector in RAM (serialized index / N; the float16 store for
re-ranking is extra, on disk), build time (training + adding), query latency (one query
at a time, and per query in a batch), recall@10 of the index alone and with the bundle's
default exact re-ranking of max(4k, 64) candidates against the float16 store.
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

DEFAULT_FACTORIES = ["PCA256,IVF1024,Flat", "PCA256,IVF1024,PQ32", "PCA64,IVF1024,PQ16"]


def structure(dim: int, seed: int, clusters: int, rank: int, center_scale: float, latent_scale: float):
    """Cluster centres (C, d) and a latent basis (r, d) shared by the store and the queries."""
    rng = np.random.default_rng(seed)
    centers = (center_scale * rng.standard_normal((clusters, dim))).astype(np.float32)
    basis = (latent_scale / np.sqrt(rank) * rng.standard_normal((rank, dim))).astype(np.float32)
    return centers, basis


_NOISE_POOL = 1 << 23  # drawing 2.7e9 fresh normals would dominate the run; windows of a pool do not


def sample(rng, m: int, centers: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(m, d): a random centre + basisᵀz (z ~ N(0, I_r)) + unit noise (a random window of a
    normal pool, randomly signed: rows are uncorrelated for all practical purposes)."""
    d = centers.shape[1]
    pool = getattr(sample, "pool", None)
    if pool is None or len(pool) < _NOISE_POOL + d:
        pool = sample.pool = np.random.default_rng(12345).standard_normal(_NOISE_POOL + d, dtype=np.float32)
    c = rng.integers(0, len(centers), m)
    z = rng.standard_normal((m, len(basis)), dtype=np.float32)
    x = centers[c] + z @ basis  # (m, d)
    starts = rng.integers(0, _NOISE_POOL, m)
    signs = rng.choice(np.array([-1.0, 1.0], np.float32), m)
    for i in range(m):
        x[i] += signs[i] * pool[starts[i] : starts[i] + d]
    return x


def generate(path: Path, n: int, centers, basis, seed: int, chunk: int = 2048) -> np.ndarray:
    """(n, d) float16 memmap of ``sample`` rows, written chunk by chunk."""
    rng = np.random.default_rng(seed + 1000)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, centers.shape[1]))
    for a in range(0, n, chunk):
        out[a : min(n, a + chunk)] = sample(rng, min(n, a + chunk) - a, centers, basis)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def exact_search(store: np.ndarray, qn: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    from parasal.indexer import normalize_rows

    best_s = np.full((len(qn), 0), -np.inf, np.float32)
    best_r = np.zeros((len(qn), 0), np.int64)
    for a in range(0, len(store), chunk):
        s = qn @ normalize_rows(store[a : a + chunk]).T  # (Q, m)
        best_s = np.concatenate([best_s, s], axis=1)
        best_r = np.concatenate([best_r, np.broadcast_to(np.arange(a, a + s.shape[1]), s.shape)], axis=1)
        top = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
        best_s, best_r = np.take_along_axis(best_s, top, 1), np.take_along_axis(best_r, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_r, order, 1)


def recall(got: np.ndarray, want: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(g[:k].tolist()) & set(w[:k].tolist())) / k for g, w in zip(got, want)]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="vectors (default 100,000)")
    p.add_argument("--dim", type=int, default=26_560, help="dimension (default 26,560: ResNet-50's filters)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--factories", nargs="+", default=DEFAULT_FACTORIES)
    p.add_argument("--train-size", type=int, default=40_960, help="training sample (default 40 x 1024 lists)")
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--rank", type=int, default=32, help="latent dimension of the within-cluster variation")
    p.add_argument("--center-scale", type=float, default=1.2, help="std of the cluster centres (noise std is 1)")
    p.add_argument("--latent-scale", type=float, default=1.0, help="std of the latent variation per dimension")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where the float16 store goes (default: a temp dir, removed)")
    args = p.parse_args(argv)

    from parasal.indexer.faiss_index import build_index
    from parasal.indexer.scoring import exact_scores, normalize_rows

    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="parasal-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        centers, basis = structure(args.dim, args.seed, args.clusters, args.rank, args.center_scale, args.latent_scale)
        store = generate(tmp / "profiles.npy", args.n, centers, basis, args.seed)
        queries = sample(np.random.default_rng(args.seed + 1), args.queries, centers, basis)
        qn = normalize_rows(queries.astype(np.float16).astype(np.float32))
        print(
            f"data          {args.n} x {args.dim} float16 ({store.nbytes / 2**30:.1f} GiB on disk), "
            f"{args.clusters} clusters, latent rank {args.rank}: {time.perf_counter() - t:.0f} s"
        )
        del centers, basis
        t = time.perf_counter()
        _, truth = exact_search(store, qn, args.k)
        exact_s = time.perf_counter() - t
        print(
            f"exact         brute force over the float16 store: {exact_s * 1000 / args.queries:.1f} ms/query "
            f"in a batch of {args.queries}; Flat fp32 would hold {4 * args.dim} B/vector "
            f"({4 * args.dim * args.n / 2**30:.1f} GiB)"
        )
        ids = np.arange(args.n, dtype=np.int64)
        rows = []
        for factory in args.factories:
            gc.collect()
            t = time.perf_counter()
            index, info = build_index(
                factory, store, ids, train_size=args.train_size, nprobe=args.nprobe, seed=args.seed
            )
            build_s = time.perf_counter() - t
            bytes_per_vec = faiss.serialize_index(index).nbytes / args.n
            index.search(qn[:1], args.k)
            t = time.perf_counter()
            for j in range(len(qn)):
                index.search(qn[j : j + 1], args.k)
            single_ms = (time.perf_counter() - t) * 1000 / len(qn)
            t = time.perf_counter()
            _, got = index.search(qn, args.k)
            batch_ms = (time.perf_counter() - t) * 1000 / len(qn)
            fetch = max(4 * args.k, 64)
            t = time.perf_counter()
            _, cand = index.search(qn, fetch)
            reranked = []
            for j in range(len(qn)):
                r = cand[j][cand[j] >= 0]
                r, s = exact_scores(qn[j], r, store)
                reranked.append(r[np.argsort(-s, kind="stable")][: args.k])
            rerank_ms = (time.perf_counter() - t) * 1000 / len(qn)
            row = (
                factory,
                bytes_per_vec,
                build_s,
                single_ms,
                batch_ms,
                recall(got, truth, args.k),
                recall(np.array(reranked), truth, args.k),
                rerank_ms,
                info.get("nprobe"),
            )
            rows.append(row)
            print(
                f"{factory:22s} {bytes_per_vec:9.0f} B/vec  build {build_s:6.1f} s  "
                f"{single_ms:7.2f} ms/query (1 at a time)  {batch_ms:6.3f} ms/query (batch)  "
                f"recall@{args.k} {row[5]:.3f}  with re-rank {row[6]:.3f} ({rerank_ms:.2f} ms/query)  "
                f"nprobe {info.get('nprobe')}",
                flush=True,
            )
            del index
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"peak RSS      {peak:.1f} GiB")
        print("\n| index | B/vector | build (s) | ms/query (1) | ms/query (batch) | recall@10 | recall@10 re-ranked |")
        print("|---|---|---|---|---|---|---|")
        for f, b, bs, s1, sb, r, rr, _, _ in rows:
            print(f"| `{f}` | {b:.0f} | {bs:.1f} | {s1:.2f} | {sb:.3f} | {r:.3f} | {rr:.3f} |")
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
