"""The ``contrastive`` command line. Each subcommand lives in its own module, which adds
itself to the parser through a ``register(subparsers)`` function."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import List, Optional

# modules that may register subcommands; a missing optional one is skipped
SUBCOMMAND_MODULES = ["contrastive.verify", "contrastive.train.cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contrastive", description="Contrastive objectives and training recipes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
