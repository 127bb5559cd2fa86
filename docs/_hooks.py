"""MkDocs hooks of the documentation site (loaded by ``mkdocs.yml``: ``hooks``).

- The home page is the README (one source, included by ``pymdownx.snippets``), and
  CONTRIBUTING.md, CHANGELOG.md and LICENSE are pages too: the README's links into
  ``docs/`` and to those files are written relative to the repository root, so that they
  work on a code host; on the site they are made relative to the pages.
- The benchmark plots stay where the benchmark scripts write them (``benchmarks/results/``);
  they are added to the site under the same path instead of being copied into ``docs/``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
_README_LINK = re.compile(r"\]\(docs/")
# files at the repository root that the site shows as pages of their own
ROOT_PAGES = {"CONTRIBUTING.md": "contributing.md", "CHANGELOG.md": "changelog.md", "LICENSE": "license.md"}


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"benchmarks/results/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri not in ("index.md", *ROOT_PAGES.values()):
        return markdown
    markdown = _README_LINK.sub("](", markdown)
    for source, target in ROOT_PAGES.items():
        markdown = markdown.replace(f"]({source})", f"]({target})")
    return markdown
