"""`avfbp evaluate --workdir DIR [--checkpoint STEP] [--split val|test] [--without audio|faces]`.

Evaluates a checkpoint of a training workdir (the best by the validation metric unless STEP is
given), optionally with one modality removed from every clip, and writes
DIR/eval/<split>-step<STEP>[-without-<MODALITY>].json and .png (confusion matrix).
"""

import argparse
import os
import sys

from avfbp_jax.train.modality_dropout import MODALITIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="a training workdir")
    parser.add_argument("--checkpoint", type=int, default=None,
                        help="checkpoint step (default: best by the validation metric)")
    parser.add_argument("--split", choices=("val", "test", "train"), default="test")
    parser.add_argument("--without", choices=MODALITIES, default=None,
                        help="remove this modality from every clip (as predict meets it)")
    parser.add_argument("--num-devices", type=int, default=0, help="0 = every visible device")


def run(args: argparse.Namespace) -> int:
    import jax

    from avfbp_jax.train import checkpoint, report
    from avfbp_jax.train.evaluation import EVAL_DIR, eval_name, evaluate_checkpoint

    try:
        result = evaluate_checkpoint(args.workdir, args.checkpoint, args.split, args.num_devices,
                                     args.without)
    except (FileNotFoundError, ValueError) as e:
        print(f"avfbp evaluate: error: {e}", file=sys.stderr)
        return 2
    if jax.process_index() == 0:
        fusion = checkpoint.load_config(args.workdir).model.fusion
        step = result["step"]
        missing = f", without {args.without}" if args.without else ""
        print(report.summary({args.split: result}, result["classes"],
                             f"{fusion}, checkpoint step {step}{missing}, {args.workdir}"))
        name = os.path.join(args.workdir, EVAL_DIR, eval_name(args.split, step, args.without))
        print(f"wrote {name}.json and {name}.png")
    return 0
