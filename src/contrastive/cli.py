"""The ``contrastive`` command line. Each subcommand lives in its own module, which adds
itself to the parser through a ``register(subparsers)`` function; the modules are imported
here by name, so the entry point's dependencies are visible to readers and tools."""

from __future__ import annotations

import argparse
import sys

from . import gradcheck
from .train import cli as train_cli

# the modules whose ``register(subparsers)`` adds subcommands, in the order ``--help`` lists them
SUBCOMMANDS = (gradcheck, train_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrastive", description="Contrastive objectives and training recipes."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
