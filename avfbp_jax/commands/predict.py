"""`avfbp predict MODEL_DIR MEDIA...`: per-class probabilities for media files.

A thin command over avfbp_jax.predict.predict (what it reads, and how it falls back when a
recording lacks a modality, is described there). Prints one line per file; --json writes all.
"""

import argparse
import os
import sys
import time

from avfbp_jax import atomic
from avfbp_jax.data.config import data_config
from avfbp_jax.predict import format_result, predict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a bundle from `avfbp export`")
    parser.add_argument("media", metavar="MEDIA", nargs="+",
                        help="video files, audio files, or folders (searched recursively)")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    parser.add_argument("--batch-size", type=int, default=8, help="recordings per batch")
    parser.add_argument("--workers", type=int, default=data_config().workers,
                        help="processes decoding media ahead of the model (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.workers < 1:
        print("avfbp predict: error: --batch-size and --workers must be positive",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = []
    try:
        for result in predict(args.model_dir, args.media, batch_size=args.batch_size,
                              workers=args.workers):
            results.append(result)
            print(format_result(result), file=sys.stderr if "skipped" in result else sys.stdout,
                  flush=True)
    except (OSError, ValueError) as e:
        print(f"avfbp predict: error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    done = sum("skipped" not in r for r in results)
    print(f"{done} files predicted, {len(results) - done} skipped, in {seconds:.1f} s "
          f"({len(results) / seconds:.2f} files/s)", file=sys.stderr)
    if args.json:
        report = {"model": os.path.abspath(args.model_dir), "results": results,
                  "seconds": seconds, "files_per_second": len(results) / seconds}
        atomic.write_json(args.json, report)
    return 0 if done else 1
