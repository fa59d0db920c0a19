"""`avfbp evaluate --workdir DIR [--checkpoint STEP] [--split val|test]`.

Evaluates a checkpoint of a training workdir (the best by the validation metric unless STEP is
given) and writes DIR/eval/<split>-step<STEP>.json and .png (confusion matrix).
"""

import argparse
import os
import sys

from avfbp_jax.train import checkpoint, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="a training workdir")
    parser.add_argument("--checkpoint", type=int, default=None,
                        help="checkpoint step (default: best by the validation metric)")
    parser.add_argument("--split", choices=("val", "test", "train"), default="test")
    parser.add_argument("--num-devices", type=int, default=0, help="0 = every visible device")


def evaluate_checkpoint(workdir: str, step: int | None, split: str, num_devices: int = 0) -> dict:
    """Metrics of one checkpoint on one split; writes the JSON and PNG under WORKDIR/eval."""
    import jax

    from avfbp_jax.data.cache import FeatureCache
    from avfbp_jax.models.model import AVModel
    from avfbp_jax.train import parallel
    from avfbp_jax.train.loop import evaluate, split_of
    from avfbp_jax.train.step import make_eval_step

    params, config = checkpoint.load_for_inference(workdir, step)
    step = checkpoint.resolve_step(workdir, step)
    cache = FeatureCache(config.data.cache_dir, in_memory=False,
                         frame_input=config.data.frame_input)
    indices = split_of(cache, config.data, split)
    if len(indices) == 0:
        raise ValueError(f"{config.data.cache_dir}: the {split} split is empty")
    mesh = parallel.make_mesh(num_devices)
    model = AVModel(config=config.model)
    params = parallel.replicate(params, mesh)
    result = evaluate(make_eval_step(model, mesh), params, cache, indices, config, mesh, split)
    result["step"] = step
    if jax.process_index() == 0:
        out = os.path.join(workdir, "eval")
        os.makedirs(out, exist_ok=True)
        name = os.path.join(out, f"{split}-step{step}")
        report.write_json(name + ".json", result)
        report.plot_confusion(name + ".png", result["confusion"], cache.classes,
                              f"{config.model.fusion}, {split} (step {step})")
        print(report.summary({split: result}, cache.classes,
                             f"{config.model.fusion}, checkpoint step {step}, {workdir}"))
        print(f"wrote {name}.json and {name}.png")
    return result


def run(args: argparse.Namespace) -> int:
    try:
        evaluate_checkpoint(args.workdir, args.checkpoint, args.split, args.num_devices)
    except (FileNotFoundError, ValueError) as e:
        print(f"avfbp evaluate: error: {e}", file=sys.stderr)
        return 2
    return 0
