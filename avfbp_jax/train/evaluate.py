"""`avfbp evaluate --workdir DIR [--checkpoint STEP] [--split val|test]`.

Evaluates a checkpoint of a training workdir (the best by the validation metric unless STEP is
given) and writes DIR/eval/<split>-step<STEP>.json and .png (confusion matrix).
"""

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="a training workdir")
    parser.add_argument("--checkpoint", type=int, default=None,
                        help="checkpoint step (default: best by the validation metric)")
    parser.add_argument("--split", choices=("val", "test", "train"), default="test")
    parser.add_argument("--num-devices", type=int, default=0, help="0 = every visible device")


def run(args: argparse.Namespace) -> int:
    import jax

    from avfbp_jax.train import checkpoint, report
    from avfbp_jax.train.evaluation import EVAL_DIR, evaluate_checkpoint

    try:
        result = evaluate_checkpoint(args.workdir, args.checkpoint, args.split, args.num_devices)
    except (FileNotFoundError, ValueError) as e:
        print(f"avfbp evaluate: error: {e}", file=sys.stderr)
        return 2
    if jax.process_index() == 0:
        fusion = checkpoint.load_config(args.workdir).model.fusion
        step = result["step"]
        print(report.summary({args.split: result}, result["classes"],
                             f"{fusion}, checkpoint step {step}, {args.workdir}"))
        name = os.path.join(args.workdir, EVAL_DIR, f"{args.split}-step{step}")
        print(f"wrote {name}.json and {name}.png")
    return 0
