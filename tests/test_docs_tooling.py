"""The documentation site's docstring conversion (docs/_griffe_rst.py): reST maths and roles
become Markdown and MathJax, everything else is left as written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("griffe")

_PATH = Path(__file__).resolve().parent.parent / "docs" / "_griffe_rst.py"
_spec = importlib.util.spec_from_file_location("_griffe_rst", _PATH)
rst = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rst)


def test_math_block_becomes_display_maths_and_keeps_the_text_around_it():
    doc = "Summary.\n\n.. math::\n\n    a = b,\n    c = d\n\nAfter ``x``.\n\nArgs:\n    x: a tensor."
    assert rst.rst_to_markdown(doc) == (
        "Summary.\n\n$$\na = b,\nc = d\n$$\n\nAfter ``x``.\n\nArgs:\n    x: a tensor."
    )


def test_indented_math_block_keeps_its_indentation():
    doc = "Returns:\n    the loss\n\n    .. math::\n\n        L = 1\n\n    done"
    assert rst.rst_to_markdown(doc) == "Returns:\n    the loss\n\n    $$\n    L = 1\n    $$\n\n    done"


def test_math_block_at_the_end_and_one_line_form():
    assert rst.rst_to_markdown("Text\n\n.. math::\n\n    x^2") == "Text\n\n$$\nx^2\n$$"
    assert rst.rst_to_markdown(".. math:: x = 1") == "$$\nx = 1\n$$"


def test_roles():
    doc = "At :math:`D = 0` see :func:`nt_xent`, :class:`~torch.Tensor` and :mod:`.data`."
    assert rst.rst_to_markdown(doc) == "At $D = 0$ see `nt_xent`, `torch.Tensor` and `data`."


def test_text_without_rest_markup_is_unchanged():
    doc = "Plain ``code`` and *emphasis*.\n\n    >>> 1 + 1\n    2"
    assert rst.rst_to_markdown(doc) == doc
