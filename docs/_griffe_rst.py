"""A griffe extension for the documentation site: reST markup in docstrings to Markdown.

The package's docstrings are Google-style with reST inline markup, which pytest's doctests
and ``help()`` show as written. mkdocstrings renders docstrings as Markdown, so before it
does, this extension rewrites the three reST constructs the docstrings use:

- a ``.. math::`` block (its indented body) becomes a ``$$ ... $$`` display block,
- the ``:math:`...``` role becomes inline ``$...$`` (both rendered by pymdownx.arithmatex),
- the cross-reference roles ``:mod:``, ``:func:``, ``:class:``, ... become code spans.

reST literals (````x````) are already Markdown code spans. Loaded by ``mkdocs.yml``
(``plugins: mkdocstrings: handlers: python: options: extensions``); the source files are
never changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_MATH_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. math::\s*(?P<inline>.*)$")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_XREF_ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj):`~?\.?([^`]+)`")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def rst_to_markdown(text: str) -> str:
    """Rewrite ``.. math::`` blocks, ``:math:`` and cross-reference roles of ``text``."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _MATH_DIRECTIVE.match(lines[i])
        if m is None:
            out.append(lines[i])
            i += 1
            continue
        indent = m.group("indent")
        body = [m.group("inline")] if m.group("inline") else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent_of(lines[i]) > len(indent)):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():  # the blank lines after the block stay outside
            body.pop()
            i -= 1
        depth = min((_indent_of(b) for b in body if b.strip()), default=0)
        out.append(f"{indent}$$")
        out.extend(f"{indent}{b[depth:]}" if b.strip() else "" for b in body if b.strip())
        out.append(f"{indent}$$")
    text = "\n".join(out)
    text = _MATH_ROLE.sub(lambda r: f"${r.group(1).strip()}$", text)
    return _XREF_ROLE.sub(lambda r: f"`{r.group(1)}`", text)


class RstMarkup(griffe.Extension):
    """Convert every loaded object's docstring with :func:`rst_to_markdown`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
