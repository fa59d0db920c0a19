"""`avfbp export CHECKPOINT_OR_WORKDIR OUT_DIR`: a checkpoint as a self-describing bundle.

A thin command over avfbp_jax.export.export_checkpoint (the bundle's contents are described there).
"""

import argparse
import os
import sys

from avfbp_jax.export import DEFAULT_PLATFORMS, export_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT_OR_WORKDIR",
                        help="a training workdir (its best checkpoint) or one checkpoint step "
                             "directory")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the bundle folder to write")
    parser.add_argument("--labels", help="comma-separated class names in label order (default: "
                                         "those of the feature cache the run trained on)")
    parser.add_argument("--platforms", default=",".join(DEFAULT_PLATFORMS),
                        help="comma-separated jax.export platforms (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing out_dir")


def run(args: argparse.Namespace) -> int:
    try:
        labels = args.labels.split(",") if args.labels else None
        metadata = export_checkpoint(args.checkpoint, args.out_dir, labels=labels,
                                     platforms=tuple(args.platforms.split(",")),
                                     overwrite=args.overwrite)
    except (OSError, ValueError) as e:
        print(f"avfbp export: error: {e}", file=sys.stderr)
        return 1
    size = sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(args.out_dir) for name in names)
    print(f"wrote {args.out_dir}: {len(metadata['labels'])} classes "
          f"({', '.join(metadata['labels'])}), platforms {', '.join(metadata['platforms'])}, "
          f"{size / 2**20:.1f} MiB")
    return 0
