"""`avfbp synth OUT_DIR [--task TASK]`: write the embedded synthetic corpus as real media files.

A thin command over avfbp_jax.data.synthetic.write_corpus (the corpus and its tasks are described
there and in avfbp_jax.data.cooccurrence).
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from avfbp_jax.data import cooccurrence
from avfbp_jax.data.synthetic import DEFAULT_CLIPS, DEFAULT_CUES, EMOTIONS, TASKS, write_corpus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="output directory: absent, empty, or an unfinished "
                        "corpus of the same settings (it is finished)")
    parser.add_argument("--task", choices=sorted(TASKS), default="emotion",
                        help="emotion (default): 4 emotions from arousal and mouth shape; "
                        "cooccurrence: whether an audio and a facial event overlap in time")
    parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS, help="number of clips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--classes",
        help="comma-separated class names in label order (default: all of the task's, "
        f"emotion: from {sorted(EMOTIONS)}; cooccurrence: {','.join(cooccurrence.CLASSES)})",
    )
    for end, word in (("min", "shortest"), ("max", "longest")):
        field = f"{end}_seconds"
        parser.add_argument(f"--{end}-seconds", type=float, help=f"{word} clip (default: emotion "
                            f"{getattr(DEFAULT_CUES, field)}, cooccurrence "
                            f"{getattr(cooccurrence.CUES, field)})")
    parser.add_argument("--audio-cue", type=float, default=1.0, help="scale audio cue strength")
    parser.add_argument("--video-cue", type=float, default=1.0, help="scale video cue strength")
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="worker processes"
    )


def run(args: argparse.Namespace) -> int:
    classes = None
    if args.classes is not None:
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    cues = TASKS[args.task].cues
    seconds = {k: v for k, v in (("min_seconds", args.min_seconds),
                                 ("max_seconds", args.max_seconds)) if v is not None}
    cues = dataclasses.replace(cues, **seconds).scaled(audio=args.audio_cue, video=args.video_cue)
    start = time.perf_counter()
    finished = (Path(args.out_dir) / "corpus.json").exists()
    try:
        meta = write_corpus(args.out_dir, args.clips, args.seed, classes, cues, args.workers,
                            args.task)
    except (ValueError, FileExistsError) as e:
        print(f"avfbp synth: error: {e}", file=sys.stderr)
        return 2
    if finished:
        print(f"{args.out_dir} already holds this corpus ({meta['num_clips']} clips); "
              "nothing to do")
        return 0
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in Path(args.out_dir).rglob("*") if f.is_file())
    print(
        f"wrote {meta['num_clips']} clips ({', '.join(meta['classes'])}) to {args.out_dir}: "
        f"{size / 2**20:.1f} MiB in {seconds:.1f} s ({meta['num_clips'] / seconds:.1f} clips/s)"
    )
    return 0
