"""Converts torchvision's ImageNet AlexNet weights into an init checkpoint for the audio FCN.

  python3 -m avfbp_jax.commands.alexnet_convert \
      ~/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth --out weights/alexnet

Reads the `.pth` that torchvision caches (a state_dict; reading it needs torch, nothing is
downloaded), checks its layer names and shapes, and, when the file carries torchvision's published
name, that its SHA-256 starts with the 8 hex digits in that name. OUT receives `params/` (Orbax,
the FCN's conv1..conv5) and `alexnet.json` (source, SHA-256, layout, the stated channel and
orientation mapping of `models.alexnet`), both at once. Train with them through
`--config.model.audio.init_weights=OUT` on a config whose FCN has the torchvision layout
(`models.config.torchvision_alexnet`, e.g. `experiments/iemocap_audio_fcn.py:torchvision`).
"""

import argparse
import re
import sys
from pathlib import Path

from avfbp_jax import interrupt, pinned_wheel, weights
from avfbp_jax.models import alexnet


def read_state_dict(path: Path) -> dict:
    """The .pth file's state_dict as numpy arrays (torch.load with weights_only)."""
    try:
        import torch
    except ImportError:
        raise alexnet.WeightsError(f"{path}: reading a .pth file needs torch "
                                   "(python3 -m pip install torch)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for unreadable files
        raise alexnet.WeightsError(f"{path}: not a readable torch state_dict ({e})") from None
    if not isinstance(state, dict):
        raise alexnet.WeightsError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    return {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "numpy")}


def convert(pth: str | Path, out: str | Path) -> Path:
    """Checks and converts `pth`, writes OUT; returns OUT."""
    pth = Path(pth)
    if not pth.is_file():
        raise alexnet.WeightsError(f"{pth}: no such file")
    digest = pinned_wheel.sha256_of(pth)
    named = re.fullmatch(r"alexnet-owt-([0-9a-f]{8})\.pth", pth.name)
    if named and not digest.startswith(named.group(1)):
        raise alexnet.WeightsError(f"{pth}: SHA-256 {digest[:8]}... does not match the "
                                   f"{named.group(1)} in torchvision's file name (damaged?)")
    params = alexnet.fcn_params_from_state_dict(read_state_dict(pth))
    meta = {
        "layout": "torchvision",
        "source": str(pth.resolve()),
        "sha256": digest,
        "published": pth.name == alexnet.PUBLISHED_FILE,
        "torchvision_keys": list(alexnet.TORCHVISION_KEYS),
        "rgb": "conv1's R, G, B filters summed (= gray input replicated to 3 channels)",
        "orientation": "image height = frequency (row 0 lowest bin), width = time",
    }
    return weights.write(out, params, alexnet.META_FILE, meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m avfbp_jax.commands.alexnet_convert",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("pth",
                        help=f"torchvision's AlexNet weights (e.g. {alexnet.PUBLISHED_FILE})")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)

    def run() -> int:
        try:
            out = convert(args.pth, args.out)
        except alexnet.WeightsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"wrote the audio FCN's AlexNet init to {out}")
        return 0

    return interrupt.run_command(parser.prog, run)


if __name__ == "__main__":
    sys.exit(main())
