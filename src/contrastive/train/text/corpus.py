"""Query-document pairs for retrieval: code search over the Python installation, or a user's JSONL.

``pycode`` (the default data) is built from source that every machine running this library
already has. For every function or method with a docstring in the standard library and in a
fixed list of packages (:data:`DEFAULT_PACKAGES`):

- query = the first paragraph of its docstring (whitespace collapsed);
- document = the function's source with the docstring removed (dedented).

Pairs are de-duplicated by normalised docstring (the first in (module, line) order is kept)
and split by module: ``sha1(module) mod 100`` puts a module in train (< 80), validation
(< 90) or test, so no module is in two splits. The build is deterministic given the package
versions; it is cached under ``<run.root>/.cache/`` with a ``meta.json`` recording the
versions, the number of pairs per split and a content hash of the pairs.

``jsonl``: one object per line, ``{"query": str, "positive": str, "negatives": [str, ...]}``
(negatives optional); a malformed line raises ``ValueError`` naming the file, the line and
what is wrong.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import sys
import sysconfig
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._optional import needs

__all__ = [
    "DEFAULT_PACKAGES",
    "Pair",
    "RetrievalData",
    "build_pycode",
    "extract_pairs",
    "first_paragraph",
    "load_pycode",
    "module_split",
    "pycode_meta",
    "read_jsonl",
    "read_corpus",
    "read_texts",
    "text_lines",
]

# The standard library plus packages that `make test` installs (`.[dev]`: the train and metric
# extras and their dependencies: torch brings sympy and networkx, scikit-learn brings joblib).
DEFAULT_PACKAGES = (
    "stdlib",
    "numpy",
    "scipy",
    "sklearn",
    "torch",
    "matplotlib",
    "kornia",
    "PIL",
    "sympy",
    "networkx",
    "joblib",
    "hypothesis",
    "_pytest",
)
SPLITS = ("train", "validation", "test")
# parts of the standard library that are tests, demos or vendored copies, not library code
_STDLIB_SKIP = {
    "test",
    "tests",
    "idle_test",
    "idlelib",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "tkinter",
    "pydoc_data",
    "venv",
}
_DIR_SKIP = {"tests", "test", "testing", "__pycache__", "_vendor", "vendored", "benchmarks"}
_DIST_NAMES = {"sklearn": "scikit-learn", "PIL": "pillow", "_pytest": "pytest"}


@dataclass(frozen=True)
class Pair:
    """One training or evaluation example: a query, its positive document, optional negatives."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    source: str = ""  # module:qualname (pycode) or file:line (jsonl)


@dataclass
class RetrievalData:
    """Train / validation / test pairs and, optionally, extra documents for the test corpus."""

    name: str
    train: list[Pair]
    validation: list[Pair]
    test: list[Pair]
    extra_corpus: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def first_paragraph(doc: str, max_words: int = 64) -> str:
    """The first paragraph of a docstring, whitespace collapsed, at most ``max_words`` words.

    Examples:
        >>> first_paragraph("Add two numbers.\\n\\n    Args: ...")
        'Add two numbers.'
        >>> first_paragraph("Split a\\n    string on commas.")
        'Split a string on commas.'
    """
    text = textwrap.dedent(doc).strip()
    para = re.split(r"\n\s*\n", text, maxsplit=1)[0]
    return " ".join(para.split()[:max_words])


def module_split(module: str, fractions: tuple[int, int] = (80, 90)) -> str:
    """``train``, ``validation`` or ``test`` for a module, from ``sha1(module) mod 100``.

    Examples:
        >>> module_split("json.decoder") in SPLITS
        True
        >>> module_split("json.decoder") == module_split("json.decoder")
        True
    """
    h = int(hashlib.sha1(module.encode()).hexdigest()[:8], 16) % 100
    return "train" if h < fractions[0] else ("validation" if h < fractions[1] else "test")


def _strip_docstring(lines: list[str], node: Any) -> str | None:
    """The source of ``node`` (a function) without its docstring lines, dedented."""
    body = node.body  # type: ignore[attr-defined]
    doc = body[0]
    start = node.lineno - 1
    if getattr(node, "decorator_list", None):
        start = min(d.lineno for d in node.decorator_list) - 1  # type: ignore[attr-defined]
    end = node.end_lineno  # type: ignore[attr-defined]
    if end is None or doc.end_lineno is None:
        return None
    keep = lines[start : doc.lineno - 1] + lines[doc.end_lineno : end]
    # a docstring on the def line itself ("def f(): 'doc'") leaves nothing sensible: skip
    if doc.lineno - 1 <= node.lineno - 1:
        return None
    code = textwrap.dedent("\n".join(keep)).strip("\n")
    return code if len(code.splitlines()) >= 2 else None


def extract_pairs(source: str, module: str) -> list[tuple[str, str, str, int]]:
    """``(query, document, qualname, line)`` for every documented function in ``source``.

    Examples:
        >>> src = 'def add(a, b):\\n    \"\"\"Add two numbers.\\n\\n    More.\"\"\"\\n    return a + b\\n'
        >>> extract_pairs(src, "m")
        [('Add two numbers.', 'def add(a, b):\\n    return a + b', 'add', 1)]
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines()
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                doc = ast.get_docstring(child, clean=True)
                if doc and isinstance(child.body[0], ast.Expr) and len(child.body) > 1:
                    query = first_paragraph(doc)
                    code = _strip_docstring(lines, child)
                    if code and len(query.split()) >= 3:
                        out.append((query, code, name, child.lineno))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    return out


def _stdlib_files() -> Iterator[tuple[str, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _STDLIB_SKIP and not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for f in sorted(filenames):
            if f.endswith(".py") and not f.startswith("test_"):
                parts = list(rel.parts) + [f[:-3]]
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                if parts:
                    yield ".".join(parts), Path(dirpath) / f


def _package_files(name: str) -> Iterator[tuple[str, Path]]:
    """``(module, path)`` of a top-level package or module; a stdlib name such as ``json``
    works too (that is how the tests build a tiny corpus)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return
    origin = Path(spec.origin)
    if origin.name != "__init__.py":
        if origin.suffix == ".py":
            yield name, origin
        return
    root = origin.parent
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _DIR_SKIP and not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for f in sorted(filenames):
            if f.endswith(".py") and not f.startswith(("test_", "conftest")):
                parts = [name] + list(rel.parts) + [f[:-3]]
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                yield ".".join(parts), Path(dirpath) / f


def package_version(name: str) -> str:
    """The installed version of a package (``stdlib``: the Python version; ``missing`` when absent)."""
    if name == "stdlib":
        return sys.version.split()[0]
    if importlib.util.find_spec(name) is None:
        return "missing"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_DIST_NAMES.get(name, name))
    except PackageNotFoundError:
        return "stdlib" if name in getattr(sys, "stdlib_module_names", ()) else "unknown"


def _read_module(item: tuple[str, str]) -> list[tuple[str, str, str, str, int]]:
    module, path = item
    try:
        source = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [(module, q, d, name, line) for q, d, name, line in extract_pairs(source, module)]


def _normalise(query: str) -> str:
    return " ".join(query.lower().split())


def build_pycode(
    packages: Sequence[str] = DEFAULT_PACKAGES,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, list[Pair]], dict]:
    """Extract, de-duplicate and split the pairs of ``packages`` (``stdlib`` = the standard library).

    Returns:
        ``({split: [Pair, ...]}, meta)`` where ``meta`` holds the package versions, the pairs
        per split, the number of modules read and a sha256 of the pairs.
    """
    files: list[tuple[str, str]] = []
    seen_modules = set()
    for name in packages:
        for module, path in _stdlib_files() if name == "stdlib" else _package_files(name):
            if module not in seen_modules:
                seen_modules.add(module)
                files.append((module, str(path)))
    rows: list[tuple[str, str, str, str, int]] = []
    if workers > 1 and len(files) > 50:
        import multiprocessing as mp

        with mp.get_context("fork" if sys.platform.startswith("linux") else "spawn").Pool(workers) as pool:
            for k, part in enumerate(pool.imap(_read_module, files, chunksize=16)):
                rows.extend(part)
                if progress is not None:
                    progress(k + 1, len(files))
    else:
        for k, item in enumerate(files):
            rows.extend(_read_module(item))
            if progress is not None:
                progress(k + 1, len(files))
    rows.sort(key=lambda r: (r[0], r[4], r[3]))
    splits: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    seen_queries = set()
    for module, query, doc, name, _line in rows:
        key = _normalise(query)
        if key in seen_queries:
            continue
        seen_queries.add(key)
        splits[module_split(module)].append(Pair(query, doc, (), f"{module}:{name}"))
    digest = hashlib.sha256()
    for s in SPLITS:
        for p in splits[s]:
            digest.update(f"{s}\0{p.source}\0{p.query}\0{p.positive}\0".encode())
    meta = {
        "packages": {name: package_version(name) for name in packages},
        "python": sys.version.split()[0],
        "modules": len(files),
        "pairs": {s: len(splits[s]) for s in SPLITS},
        "sha256": digest.hexdigest(),
    }
    return splits, meta


def _cache_key(packages: Sequence[str]) -> str:
    text = json.dumps(
        {
            "format": 1,
            "packages": {n: package_version(n) for n in packages},
            "python": sys.version,
            "prefix": sys.prefix,
        }
    )
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _write_jsonl(path: Path, pairs: Iterable[Pair]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for p in pairs:
            fh.write(json.dumps({"query": p.query, "positive": p.positive, "source": p.source}) + "\n")


def load_pycode(
    cache_root, packages: Sequence[str] = DEFAULT_PACKAGES, workers: int = 2, progress: bool = True
) -> RetrievalData:
    """The ``pycode`` pairs, built once and cached in ``cache_root/pycode-<key>/``.

    The key depends on the package names and versions and the Python installation, so an
    upgrade rebuilds the corpus; ``meta.json`` there records what it was built from.
    """
    packages = tuple(packages)
    if not packages:
        raise ValueError("data.packages is empty; name at least one package, e.g. data.packages=stdlib")
    folder = Path(cache_root) / f"pycode-{_cache_key(packages)}"
    if not (folder / "meta.json").is_file():
        bar = None
        if progress:
            with needs("train", "the progress bar"):
                from tqdm.auto import tqdm

            bar = tqdm(
                total=0, unit="file", desc="building the pycode corpus", file=sys.stderr, mininterval=0.5
            )

        def tick(k: int, n: int) -> None:
            if bar is not None:
                bar.total = n
                bar.update(k - bar.n)

        splits, meta = build_pycode(packages, workers, tick)
        if bar is not None:
            bar.close()
        if not splits["train"] or not splits["test"]:
            raise ValueError(
                f"data.packages={','.join(packages)} gave {meta['pairs']} pairs; the train and test "
                f"splits need at least one each: name more (or larger) packages"
            )
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for s in SPLITS:
            _write_jsonl(tmp / f"{s}.jsonl", splits[s])
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process built it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((folder / "meta.json").read_text())
    parts = {s: read_jsonl(folder / f"{s}.jsonl") for s in SPLITS}
    meta["cache"] = str(folder)
    return RetrievalData("pycode", parts["train"], parts["validation"], parts["test"], [], meta)


def pycode_meta(cache_root, packages: Sequence[str] = DEFAULT_PACKAGES) -> dict[str, Any] | None:
    """The ``meta.json`` of the cached ``pycode`` corpus of ``packages`` (its content sha256,
    the pairs per split), without reading the pairs; None where it is not built."""
    folder = Path(cache_root) / f"pycode-{_cache_key(tuple(packages))}"
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    meta["cache"] = str(folder)
    return meta


def text_lines(path, what: str = "file") -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a UTF-8 text file, the line ending removed (a
    UTF-8 byte-order mark at the start is accepted); bytes that are not UTF-8 raise
    :class:`~contrastive.train.checkpoint.CheckpointError` (exit 3) naming the file and the line.

    Examples:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
        >>> _ = f.write_bytes("\\ufeffone\\r\\ntwo\\n".encode())
        >>> list(text_lines(f))
        [(1, 'one'), (2, 'two')]
    """
    from ..checkpoint import CheckpointError

    with open(path, "rb") as fh:
        for k, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8-sig" if k == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise CheckpointError(
                    f"{what} {str(path)!r}, line {k}: not UTF-8 (byte 0x{raw[err.start]:02x} at column "
                    f"{len(raw[: err.start].decode('utf-8', 'replace')) + 1}); save the file as UTF-8"
                ) from None
            yield k, line.rstrip("\r\n")


def _jsonl(
    path: Path, what: str, flag: str, bad: Callable[[int, str], ValueError]
) -> Iterator[tuple[int, Any]]:
    """(line number, decoded JSON value) of each non-blank line of a JSONL file; a missing file
    names ``flag``, a line that is not JSON raises ``bad(line, reason)``."""
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; pass a JSONL file with {flag}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} not found; pass a JSONL file with {flag}")
    for k, line in text_lines(path, what):
        if not line.strip():
            continue
        try:
            yield k, json.loads(line)
        except json.JSONDecodeError as err:
            reason = err.msg.removesuffix(" at")  # "Invalid control character at": json adds "at"
            raise bad(k, f"not valid JSON ({reason} at column {err.colno})") from None


def _bad(path, line: int, what: str) -> ValueError:
    return ValueError(
        f"{path}, line {line}: {what}; each line must be a JSON object like "
        f'{{"query": "...", "positive": "...", "negatives": ["...", ...]}} (negatives optional)'
    )


def read_jsonl(path) -> list[Pair]:
    """Pairs from a JSONL file of ``{"query", "positive", "negatives"?}`` objects (blank lines skipped).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a line that is not such an object (the message names the line).

    Examples:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
        >>> _ = f.write_text('{"query": "q", "positive": "p"}\\n{"query": "q2"}\\n')
        >>> read_jsonl(f)   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: .../d.jsonl, line 2: "positive" is missing; ...
    """
    path = Path(path)
    out = []
    for k, obj in _jsonl(path, "data file", "--data.path", lambda k, what: _bad(path, k, what)):
        if not isinstance(obj, dict):
            raise _bad(path, k, f"a JSON {type(obj).__name__}, not an object")
        for key in ("query", "positive"):
            if key not in obj:
                raise _bad(path, k, f'"{key}" is missing')
            if not isinstance(obj[key], str) or not obj[key].strip():
                raise _bad(path, k, f'"{key}" must be a non-empty string, got {obj[key]!r:.40}')
        neg = obj.get("negatives", [])
        if not isinstance(neg, list) or not all(isinstance(n, str) for n in neg):
            raise _bad(path, k, '"negatives" must be a list of strings')
        out.append(Pair(obj["query"], obj["positive"], tuple(neg), obj.get("source", f"{path.name}:{k}")))
    if not out:
        raise ValueError(f"{path} holds no pairs; each line must be a JSON object with query and positive")
    return out


def read_corpus(path) -> list[str]:
    """Documents for evaluation: JSONL lines ``{"text": ...}`` (or ``"positive"``), or plain strings.

    Raises:
        ValueError: a line without a text (the message names the line).
    """
    return _jsonl_texts(Path(path), ("text", "positive"), "corpus file", "--data.corpus")


def _jsonl_texts(path: Path, keys: tuple[str, ...], what: str, flag: str) -> list[str]:
    """The first of ``keys`` present in each object of a JSONL file (or the line's JSON string)."""
    shown = " or ".join(f'{{"{k}": "..."}}' for k in keys)

    def bad(k: int, why: str) -> ValueError:
        return ValueError(f"{path}, line {k}: {why}; each line must be {shown} or a JSON string")

    docs = []
    for k, obj in _jsonl(path, what, flag, bad):
        text = obj if isinstance(obj, str) else None
        if isinstance(obj, dict):
            text = next((obj[key] for key in keys if key in obj), None)
        if not isinstance(text, str) or not text.strip():
            raise bad(k, f"no {' or '.join(repr(key) for key in keys)} text")
        docs.append(text)
    return docs


def read_texts(path, side: str = "doc") -> list[str]:
    """The texts ``contrastive embed --data FILE`` embeds, one row each, in file order.

    A ``.jsonl`` file: ``side="query"`` reads each object's ``"query"`` (or ``"text"``),
    ``side="doc"`` its ``"text"`` (or ``"positive"``); a line may also be a JSON string. Blank
    lines of a JSONL file separate nothing and are skipped. Any other file: one text per line,
    so row ``i`` is line ``i + 1``; a blank line is refused (it would be a row without text).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a line without the side's text, a blank line of a text file.
        CheckpointError: bytes that are not UTF-8 (the message names the line).

    Examples:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "p.jsonl"
        >>> _ = f.write_text('{"query": "q1", "positive": "d1"}\\n{"query": "q2", "positive": "d2"}\\n')
        >>> read_texts(f, "query"), read_texts(f, "doc")
        (['q1', 'q2'], ['d1', 'd2'])
    """
    if side not in ("query", "doc"):
        raise ValueError(f"side must be 'query' or 'doc', got {side!r}")
    path = Path(path)
    if path.suffix == ".jsonl":
        keys = ("query", "text") if side == "query" else ("text", "positive")
        return _jsonl_texts(path, keys, "--data file", "--data")
    if path.is_dir():
        raise ValueError(f"--data {str(path)!r} is a folder; a text run embeds a file of texts")
    if not path.is_file():
        raise FileNotFoundError(f"--data file {str(path)!r} not found")
    texts = []
    for k, line in text_lines(path, "--data file"):
        if not line.strip():
            raise ValueError(
                f"{path}, line {k} is blank; embed writes one row per line (row i = line i + 1): remove "
                f"the blank line or put a text on it"
            )
        texts.append(line)
    return texts


def split_jsonl(pairs: list[Pair], validation_fraction: float, test_fraction: float, seed: int):
    """Deterministic train / validation / test split of a user's pairs by hashed query."""
    parts: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for p in pairs:
        h = int(hashlib.sha1(f"{seed}\0{p.query}".encode()).hexdigest()[:8], 16) / 16**8
        s = (
            "test"
            if h < test_fraction
            else ("validation" if h < test_fraction + validation_fraction else "train")
        )
        parts[s].append(p)
    return parts
