"""cli.py, the ``contrastive`` entry point: the parser is built from the subcommand modules it
names, a missing or unknown command is argparse's one-line usage error (exit 2, no traceback),
and ``main`` returns the command's exit status. The commands themselves are tested with their
modules (test_gradcheck.py; train/test_cli.py for train, eval, embed and search)."""

import pytest

from contrastive import cli, gradcheck
from contrastive.train import cli as train_cli


def test_cli_requires_a_command():
    with pytest.raises(SystemExit):
        cli.main([])


def test_help_lists_every_subcommand_in_module_order(capsys):
    assert cli.SUBCOMMANDS == (gradcheck, train_cli)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    names = ["gradcheck", "train", "eval", "embed", "search"]
    positions = [out.index(f"    {name}") for name in names]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    "argv, fragment", [([], "required: COMMAND"), (["frobnicate"], "invalid choice: 'frobnicate'")]
)
def test_missing_or_unknown_command_is_a_one_line_usage_error(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("contrastive: error:")


def test_main_returns_the_command_status(monkeypatch):
    """A command's int is the exit status; None (a command with nothing to report) is 0."""
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_with(lambda args: 3))
    assert cli.main(["x"]) == 3
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_with(lambda args: None))
    assert cli.main(["x"]) == 0


def _parser_with(func):
    import argparse

    p = argparse.ArgumentParser(prog="contrastive")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("x").set_defaults(func=func)
    return p


def _exit_table(text: str) -> dict[int, str]:
    """``{code: first words of its meaning}`` of the first ``| exit | meaning |`` table in ``text``."""
    start = text.index("| exit | meaning |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[int(cells[0])] = cells[1]
    return rows


def test_readme_exit_codes_agree_with_the_cli_page_and_the_code():
    """Issue 24: the README's exit-code table is the CLI page's (docs/cli.md), and both are the
    codes train/cli.py returns."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = _exit_table((root / "README.md").read_text())
    page = _exit_table((root / "docs" / "cli.md").read_text())
    assert readme == page
    codes = {0, train_cli.EXIT_DIVERGED, train_cli.EXIT_USAGE, train_cli.EXIT_FILE, train_cli.EXIT_BUSY}
    assert set(page) == codes | {train_cli.EXIT_SYSTEM, train_cli.EXIT_INTERRUPTED}
