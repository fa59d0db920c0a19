"""The `avfbp` command: a thin dispatcher to the modules that implement each subcommand.

Each subcommand lives in its own module as `add_arguments(parser)` plus `run(args) -> int`,
imported only when that subcommand is used so that `avfbp --help` stays fast. Every command runs
under interrupt.run_command: Ctrl-C or SIGTERM ends it with one line and status 130 / 143.
"""

import argparse
import importlib
import sys

from avfbp_jax import interrupt

# name -> (module, one-line help)
COMMANDS = {
    "synth": ("avfbp_jax.data.synthetic", "write the embedded synthetic audio-visual corpus"),
    "prepare": ("avfbp_jax.prepare_cli", "decode a corpus into a feature cache"),
    "train": ("avfbp_jax.train.main", "train a model from an experiment config"),
    "evaluate": ("avfbp_jax.train.evaluate", "evaluate a checkpoint"),
    "export": ("avfbp_jax.export", "export a checkpoint as a self-describing inference bundle"),
    "predict": ("avfbp_jax.predict", "per-class probabilities for media files"),
    "faces": ("avfbp_jax.fer_cli", "per-frame facial-expression probabilities (FER port)"),
    "launch": ("avfbp_jax.launch", "start N local processes of one multi-process run"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="avfbp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.print_help() if not argv or argv[0] in ("-h", "--help") else parser.parse_args(argv)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name = argv[0]
    return interrupt.run_command(f"avfbp {name}", lambda: _run(name, argv[1:]))


def _run(name: str, argv: list[str]) -> int:
    """Imports the command's module, parses its arguments and runs it."""
    module = importlib.import_module(COMMANDS[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"avfbp {name}", description=COMMANDS[name][1])
    module.add_arguments(cmd_parser)
    args, extra = cmd_parser.parse_known_args(argv)
    # `--config.FIELD=VALUE` overrides go to the commands that take a config (`avfbp train`).
    takes_overrides = getattr(module, "TAKES_CONFIG_OVERRIDES", False)
    bad = [e for e in extra if not (takes_overrides and e.startswith("--config."))]
    if bad:
        cmd_parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.extra = extra
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
