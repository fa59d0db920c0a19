"""`avfbp prepare CORPUS CACHE_DIR`: decode a corpus into a feature cache.

A thin command over avfbp_jax.data.prepare.prepare_cache; with --fer-features it passes the FER
port (avfbp_jax.models.fer.FrameFeatures) as the per-frame feature function.
"""

import argparse
import sys

from avfbp_jax.data import prepare
from avfbp_jax.data.config import CORPUS_KINDS, FACE_DETECTORS, MARKER_ACTOR_SIDES, data_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = data_config()
    parser.add_argument("corpus_dir", metavar="CORPUS", help="corpus root folder")
    parser.add_argument("cache_dir", metavar="CACHE_DIR", help="feature cache folder to write")
    parser.add_argument("--corpus", choices=CORPUS_KINDS, default=d.corpus,
                        help="corpus layout (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=d.fps, help="face crops per second")
    parser.add_argument("--crop-size", type=int, default=d.crop_size, help="face crop side")
    parser.add_argument("--sample-rate", type=int, default=d.sample_rate)
    parser.add_argument("--workers", type=int, default=d.workers,
                        help="decoding processes (default: %(default)s)")
    parser.add_argument("--keep-excited", action="store_true",
                        help="IEMOCAP: drop 'exc' instead of merging it into happy")
    parser.add_argument("--marker-actor-side", choices=MARKER_ACTOR_SIDES,
                        default=d.marker_actor_side,
                        help="IEMOCAP: side of the dialog video where the dialog-id actor sits, or "
                             "auto (per clip: the face whose mouth moves with the speech)")
    parser.add_argument("--split-seed", type=int, default=d.split_seed,
                        help="folder corpus without splits.csv: seed of the stratified split")
    parser.add_argument("--face-detector", choices=FACE_DETECTORS, default=d.face_detector,
                        help="haar (OpenCV cascade) or mtcnn (needs converted weights: python3 -m "
                             "avfbp_jax.commands.mtcnn_convert) (default: %(default)s)")
    parser.add_argument("--fer-features", action="store_true",
                        help="also store the FER port's per-frame features (needs crop size 64 "
                             "and converted weights: python3 -m avfbp_jax.commands.fer_convert)")


def run(args: argparse.Namespace) -> int:
    settings = {"corpus": args.corpus, "sample_rate": args.sample_rate, "fps": args.fps,
                "crop_size": args.crop_size, "excited_as_happy": not args.keep_excited,
                "marker_actor_side": args.marker_actor_side, "split_seed": args.split_seed,
                "face_detector": args.face_detector}
    try:
        frame_features = None
        if args.fer_features:
            from avfbp_jax.models import fer

            frame_features = fer.FrameFeatures(args.crop_size)
        result = prepare.prepare_cache(args.corpus_dir, args.cache_dir, settings, frame_features,
                                       workers=args.workers)
    except (ValueError, OSError) as e:
        print(f"avfbp prepare: error: {e}", file=sys.stderr)
        return 2
    skipped = result["skipped"]
    for item in skipped[:5]:
        print(f"  skipped {item['id']}: {item['reason']}", file=sys.stderr)
    if len(skipped) > 5:
        print(f"  ... and {len(skipped) - 5} more", file=sys.stderr)
    print(prepare.summary(result, args.cache_dir))
    error = prepare.failure(result, args.corpus_dir)
    if error:
        print(f"avfbp prepare: error: {error}", file=sys.stderr)
        return 1
    return 0
