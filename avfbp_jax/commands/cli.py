"""The `avfbp` command: a thin dispatcher to the modules that implement each subcommand.

Each subcommand lives in its own module as `add_arguments(parser)` plus `run(args) -> int`,
imported only when that subcommand is used so that `avfbp --help` stays fast. Every command runs
under interrupt.run_command: Ctrl-C or SIGTERM ends it with one line and status 130 / 143.
Python logging is configured here, once, for every command (configure_logging).
"""

import argparse
import importlib
import logging
import sys

from avfbp_jax import interrupt

# name -> (module, one-line help)
COMMANDS = {
    "synth": ("avfbp_jax.commands.synth", "write the embedded synthetic audio-visual corpus"),
    "prepare": ("avfbp_jax.commands.prepare", "decode a corpus into a feature cache"),
    "train": ("avfbp_jax.commands.train", "train a model from an experiment config"),
    "evaluate": ("avfbp_jax.commands.evaluate", "evaluate a checkpoint"),
    "export": ("avfbp_jax.commands.export",
               "export a checkpoint as a self-describing inference bundle"),
    "predict": ("avfbp_jax.commands.predict", "per-class probabilities for media files"),
    "faces": ("avfbp_jax.commands.faces", "per-frame facial-expression probabilities (FER port)"),
    "launch": ("avfbp_jax.commands.launch", "start N local processes of one multi-process run"),
}


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LOGGERS = ("absl", "jax", "orbax")  # libraries whose INFO lines are routine chatter


def configure_logging(level: int = logging.INFO) -> None:
    """Log records of `level` and above to stderr, one concise line each (the root logger).

    The libraries in QUIET_LOGGERS log at WARNING and above only. absl's own handler is never
    installed (that takes absl.app.run or absl.logging.use_absl_handler), so absl records (Orbax
    logs through absl) reach stderr once, through the root logger. Does nothing when the root
    logger already has a handler (a second call, or a host program's own configuration).
    """
    if logging.getLogger().handlers:
        return
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S", stream=sys.stderr)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    configure_logging()
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
    # The commands that take a config (`avfbp train`) parse what argparse leaves themselves: the
    # `--config.FIELD=VALUE` / `--config.FIELD VALUE` overrides (ml_collections.config_flags).
    # Their options are never abbreviated, so a mistyped one reaches that parser as an error.
    overrides = getattr(module, "TAKES_CONFIG_OVERRIDES", False)
    cmd_parser = argparse.ArgumentParser(prog=f"avfbp {name}", description=COMMANDS[name][1],
                                         allow_abbrev=not overrides)
    module.add_arguments(cmd_parser)
    args, extra = cmd_parser.parse_known_args(argv)
    if extra and not overrides:
        cmd_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
