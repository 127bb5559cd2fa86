"""cli.py, the ``contrastive`` entry point: every command listed, a missing or unknown command is
argparse's one-line usage error (exit 2, no traceback), ``main`` returns the command's exit
status, the recipes it dispatches to, and the exit codes the README and docs/cli.md list. The
commands' runs are tested with what they run (test_gradcheck.py; train/test_simclr.py,
test_siamese.py, test_retrieval.py, test_rundir.py for train, eval, embed and search)."""

import pytest

from contrastive import cli


def test_cli_requires_a_command():
    with pytest.raises(SystemExit):
        cli.main([])


def test_help_lists_every_subcommand_in_order(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    names = ["gradcheck", "train", "eval", "embed", "search"]
    positions = [out.index(f"    {name}") for name in names]
    assert positions == sorted(positions)


def test_recipes_are_imported_by_name():
    from contrastive.train import recipes

    assert set(recipes.available_recipes()) == {"simclr", "siamese", "retrieval"}
    assert [m.RECIPE.name for m in recipes.RECIPES] == ["simclr", "siamese", "retrieval"]
    with pytest.raises(AttributeError):
        _ = recipes.RECIPE_MODULES


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
    codes cli.py returns."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = _exit_table((root / "README.md").read_text())
    page = _exit_table((root / "docs" / "cli.md").read_text())
    assert readme == page
    codes = {0, cli.EXIT_DIVERGED, cli.EXIT_USAGE, cli.EXIT_FILE, cli.EXIT_BUSY}
    assert set(page) == codes | {cli.EXIT_SYSTEM, cli.EXIT_INTERRUPTED}
