"""Loader throughput: batches/s and samples/s of TrainLoader over a feature cache.

  python3 tools/bench_loader.py [--cache DIR | --corpus DIR] [--batch-sizes 32 64 128]

With neither --cache nor --corpus it writes the synthetic corpus (`avfbp synth`) and prepares
it in a temporary folder first. Each batch size is measured with the packed cache read into host
memory (FeatureCache in_memory=True, the default) and memory-mapped (in_memory=False, for caches
larger than memory). "cold" is the first pass, "warm" the steady state after it. Also reports the
bucket shapes used and the padding efficiency (real / padded audio samples). Prints a table and
writes JSON.
"""

import argparse
import json
import os
import platform
import shlex
import tempfile
import time

import numpy as np

from avfbp_jax import atomic, cli
from avfbp_jax.data.cache import FeatureCache
from avfbp_jax.data.config import data_config
from avfbp_jax.data.loader import TrainLoader


def build_cache(args: argparse.Namespace, workdir: str) -> str:
    corpus = args.corpus
    if corpus is None:
        corpus = os.path.join(workdir, "corpus")
        if cli.main(["synth", corpus, *shlex.split(args.synth_args)]) != 0:
            raise SystemExit("avfbp synth failed")
    cache_dir = os.path.join(workdir, "cache")
    if cli.main(["prepare", corpus, cache_dir, "--workers", str(args.workers)]) != 0:
        raise SystemExit("avfbp prepare failed")
    return cache_dir


def measure(cache: FeatureCache, batch_size: int, seconds: float, buckets, *,
            threads: int | None = None, prefetch: int | None = None) -> dict:
    """Batches/s over the first pass (cold) and over `seconds` after it (warm), and the bytes
    per sample of a batch (what goes host -> device; by key in `bytes_per_sample_by_key`).

    threads, prefetch: TrainLoader's (default: data_config()'s).
    """
    d = data_config()
    loader = TrainLoader(cache, np.arange(len(cache)), batch_size, seed=0, buckets=buckets,
                         threads=threads or d.loader_threads, prefetch=prefetch or d.prefetch)
    start = time.perf_counter()
    real = padded = 0
    for _ in range(loader.steps_per_epoch):
        batch = next(loader)
        keep = batch["weight"] > 0
        real += int(batch["audio_len"][keep].sum())
        padded += int(keep.sum()) * batch["audio"].shape[1]
    cold = loader.steps_per_epoch / (time.perf_counter() - start)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(loader)
        count += 1
    warm = count / (time.perf_counter() - start)
    loader.close()
    by_key = {k: v.nbytes / batch_size for k, v in batch.items()}
    return {"batch_size": batch_size, "cold_batches_per_s": cold, "warm_batches_per_s": warm,
            "warm_samples_per_s": warm * batch_size, "steps_per_epoch": loader.steps_per_epoch,
            "shapes": loader.num_shapes, "padding_efficiency": real / max(padded, 1),
            "threads": loader.threads, "bytes_per_sample": sum(by_key.values()),
            "bytes_per_sample_by_key": by_key,
            "dtypes": {k: str(v.dtype) for k, v in batch.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="a prepared feature cache")
    parser.add_argument("--corpus", help="a folder corpus to prepare first")
    parser.add_argument("--synth-args", default="", help="extra `avfbp synth` arguments")
    parser.add_argument("--workers", type=int, default=2, help="prepare processes")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--buckets", type=float, nargs="+", default=list(data_config().buckets),
                        help="bucket lengths in seconds (default: data_config().buckets)")
    parser.add_argument("--seconds", type=float, default=3.0, help="warm measuring time")
    parser.add_argument("--out", default="runs/bench_loader.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        cache_dir = args.cache or build_cache(args, workdir)
        buckets = tuple(args.buckets)
        rows = [{**measure(FeatureCache(cache_dir, in_memory=in_memory), b, args.seconds,
                           buckets), "in_memory": in_memory}
                for in_memory in (True, False) for b in args.batch_sizes]
        size = sum(e.stat().st_size for e in os.scandir(os.path.join(cache_dir, "packed")))
        clips = len(FeatureCache(cache_dir))

    print(f"cache: {clips} clips, {size / 2**20:.1f} MiB packed; buckets {buckets} s; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'in memory':>9} {'batch':>6} {'cold b/s':>9} {'warm b/s':>9} {'samples/s':>10} "
          f"{'steps/ep':>9} {'shapes':>7} {'pad eff':>8}")
    for r in rows:
        print(f"{r['in_memory']!s:>9} {r['batch_size']:>6} {r['cold_batches_per_s']:>9.1f} "
              f"{r['warm_batches_per_s']:>9.1f} {r['warm_samples_per_s']:>10.0f} "
              f"{r['steps_per_epoch']:>9} {r['shapes']:>7} {r['padding_efficiency']:>8.2f}")
    result = {"clips": clips, "cache_bytes": size, "buckets": buckets, "rows": rows,
              "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
              "python": platform.python_version()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic.write(args.out, lambda f: f.write(json.dumps(result, indent=1).encode()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
