"""MkDocs hooks of the documentation site (loaded by ``mkdocs.yml``: ``hooks``).

- README.md (the home page), CONTRIBUTING.md and CHANGELOG.md stay at the repository root,
  their one source: the pages ``index.md``, ``contributing.md`` and ``changelog.md`` hold
  only an include line (``--8<-- "README.md"``), which this hook replaces by the file. The
  files' links into ``docs/`` and to each other are written relative to the repository root,
  so that they work on a code host; on the site they are made relative to the pages.
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
# files at the repository root that the site shows as pages, and the page each becomes
ROOT_PAGES = {
    "README.md": "index.md",
    "CONTRIBUTING.md": "contributing.md",
    "CHANGELOG.md": "changelog.md",
    "LICENSE": "license.md",
}
_INCLUDE = re.compile(r'^\s*--8<--\s+"(?P<name>[^"/]+)"\s*$')
_DOCS_LINK = re.compile(r"\]\(docs/")


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"benchmarks/results/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    m = _INCLUDE.match(markdown)
    if m is None or ROOT_PAGES.get(m.group("name")) != page.file.src_uri or m.group("name") == "LICENSE":
        return markdown
    text = (ROOT / m.group("name")).read_text(encoding="utf-8")
    text = _DOCS_LINK.sub("](", text)
    for source, target in ROOT_PAGES.items():
        text = text.replace(f"]({source})", f"]({target})")
    return text
