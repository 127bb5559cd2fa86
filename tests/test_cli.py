"""cli.py, the ``contrastive`` entry point: the parser is built from the subcommand modules it
names, a missing or unknown command is argparse's one-line usage error (exit 2, no traceback),
and ``main`` returns the command's exit status. The commands themselves are tested with their
modules (test_gradcheck.py; train/test_cli.py for train, eval, embed and search)."""

import pytest

from contrastive import cli


def test_cli_requires_a_command():
    with pytest.raises(SystemExit):
        cli.main([])
