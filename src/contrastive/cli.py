"""The ``contrastive`` command line: ``gradcheck`` (the checks in :mod:`contrastive.gradcheck`),
``train RECIPE`` (one sub-command per recipe, see
:mod:`contrastive.train.recipes`), ``eval RUN_DIR``, ``embed RUN_DIR`` and ``search RUN_DIR``.

``train RECIPE`` takes ``--config run.toml``, ``--resume RUN_DIR`` and any number of
``--section.key=value`` overrides (``--help`` lists the keys); ``eval``, ``embed`` and
``search`` find the recipe in the run folder's ``run.json``. Every user error and environment
failure prints one line naming the problem and the fix, never a traceback, and exits with the
status of its class.

Exit codes of ``contrastive train | eval | embed | search`` (the README and docs/cli.md have
the table with examples; :func:`exit_code` maps an error to its code):

====  =========================================================================
0     success
1     training stopped: the loss or the weights became NaN/Inf; under torchrun,
      a process stopped because another one failed
2     a bad setting, argument or input (configuration, command line, a JSONL
      line, the torchrun variables, a missing optional package)
3     a file that cannot be used: missing, corrupt, not UTF-8, changed since
      training (a hash differs from the run's record), or from another model
4     the run folder is busy (another process trains in it) or already exists
5     the machine refused: disk full, no permission, read-only file system
130   interrupted (Ctrl-C)
====  =========================================================================
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

import numpy as np
import torch

from . import gradcheck
from ._optional import needs
from .train.config import ConfigError, apply_overrides, config_keys, load_toml, parse_override_args
from .train.recipes import available_recipes, get_recipe
from .train.runlog import NonFiniteLossError

__all__ = ["build_parser", "main"]

USER_ERRORS = (ConfigError, ValueError, TypeError, FileNotFoundError, ImportError)
EXIT_DIVERGED, EXIT_USAGE, EXIT_FILE, EXIT_BUSY, EXIT_SYSTEM, EXIT_INTERRUPTED = 1, 2, 3, 4, 5, 130


def exit_code(err: BaseException) -> int:
    """The exit status of an error's class (the README's table)."""
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, NonFiniteLossError):
        return EXIT_DIVERGED
    if hasattr(err, "exit_code"):
        return int(err.exit_code)
    if isinstance(err, FileNotFoundError):
        return EXIT_FILE
    if isinstance(err, OSError):
        return EXIT_SYSTEM
    return EXIT_USAGE


def _describe_os_error(err: OSError) -> str:
    """One line for an error the machine raised while reading or writing a file."""
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on the device{where}; free some space (or pick another run.root) and run again "
            f"(--resume RUN_DIR continues from the last checkpoint)"
        )
    if err.errno == errno.EROFS:
        return f"the file system is read-only{where}; write the run elsewhere (run.root, or --out for embed)"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}; make the folder writable or write elsewhere (run.root, --out)"
    return f"{err.strerror or err}{where}"


def _message(err: BaseException) -> str:
    """The one line shown for ``err``."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (Ctrl-C); a run continues from its last checkpoint with --resume RUN_DIR"
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
        return _describe_os_error(err)
    if isinstance(err, ModuleNotFoundError) and err.name and "pip install" not in str(err):
        from ._optional import install_hint

        return f"{err}; install it: {install_hint(err.name)}"
    return str(err)


def _guarded(command: str, err: BaseException) -> int:
    """Print ``err`` as one line and return its exit status, or re-raise an unexpected error."""
    if isinstance(err, (KeyboardInterrupt, NonFiniteLossError, OSError) + USER_ERRORS):
        print(f"contrastive {command}: error: {_message(err)}", file=sys.stderr)
        return exit_code(err)
    raise err


class _OverrideParser(argparse.ArgumentParser):
    """A recipe's parser: arguments it does not know are collected as config overrides."""

    def parse_known_args(self, args=None, namespace=None):
        ns, extras = super().parse_known_args(args, namespace)
        ns.override_args = list(getattr(ns, "override_args", None) or []) + list(extras)
        return ns, []


def _keys_epilog(config_cls) -> str:
    lines = ["configuration keys (override with --section.key=value):"]
    for key, (typ, value) in config_keys(config_cls()).items():
        lines.append(f"  {key:<28} {typ.__name__:<6} {value!r}")
    return "\n".join(lines)


def _fail(command: str, err, code: int) -> int:
    print(f"contrastive {command}: error: {err}", file=sys.stderr)
    return code


def _train(args: argparse.Namespace) -> int:
    recipe = get_recipe(args.recipe)
    try:
        from .train.rundir import load_run_config, read_run

        cfg = recipe.config_cls()
        if args.resume:
            if read_run(args.resume)["recipe"] != recipe.name:
                raise ValueError(
                    f"{args.resume} was made by another recipe; use contrastive train "
                    f"{read_run(args.resume)['recipe']} --resume {args.resume}"
                )
            cfg = load_run_config(args.resume, recipe.config_cls)
        if args.config:
            try:
                cfg = load_toml(cfg, args.config)
            except FileNotFoundError as err:  # a wrong argument (2), not a damaged run (3)
                raise ConfigError(str(err)) from None
        cfg = apply_overrides(cfg, parse_override_args(args.override_args))
        recipe.train(cfg, args.resume)
    except (NonFiniteLossError, KeyboardInterrupt, OSError) + USER_ERRORS as err:
        return _fail_rank(err, exit_code(err))
    except Exception as err:  # noqa: BLE001 - under torchrun: a collective failed because another rank did
        from .train.dist import launched

        if not launched() or not _is_peer_failure(err):
            raise
        return _fail_rank(err, 1)
    return 0


def _rank() -> int:
    from .train.dist import launched

    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:  # a RANK that is not a number: the error itself says so
        return 0
    return rank if launched() and 0 <= rank < world else 0


def _is_peer_failure(err: BaseException) -> bool:
    import torch.distributed as tdist

    from .ops.collectives import DistributedError

    return isinstance(err, (DistributedError, tdist.DistError)) or "gloo" in str(err).lower()


def _fail_rank(err: BaseException, code: int) -> int:
    """One line on stderr. Under torchrun, ranks other than 0 stay quiet about the errors every
    rank meets alike (configuration, a non-finite global loss) and name themselves otherwise."""
    rank = _rank()
    if rank == 0:
        return _fail("train", _message(err), code)
    from .train.dist import LaunchError

    if isinstance(err, LaunchError) or not isinstance(err, (NonFiniteLossError, ConfigError)):
        hint = "" if not _is_peer_failure(err) else " (another rank probably failed first: see its error)"
        print(f"contrastive train (rank {rank}): error: {_message(err)}{hint}", file=sys.stderr)
    return code


def _eval(args: argparse.Namespace) -> int:
    try:
        recipe = get_recipe(_recipe_of(args.run_dir))
        if args.allow_changed_data and recipe.embed is None:
            raise ValueError(
                f"--allow-changed-data applies to text runs; {args.run_dir} is a {recipe.name} run"
            )
        recipe.evaluate(args.run_dir, args.checkpoint, allow_changed_data=args.allow_changed_data)
    except BaseException as err:  # noqa: BLE001 - _guarded() re-raises what is not a user or environment error
        return _guarded("eval", err)
    return 0


def _recipe_of(run_dir) -> str:
    """The recipe named by ``run_dir/run.json``, known to this installation."""
    from .train.rundir import read_run

    name = read_run(run_dir)["recipe"]
    if name not in available_recipes():
        from .train.checkpoint import CheckpointError

        raise CheckpointError(
            f"{run_dir}/run.json names the recipe {name!r}, which this installation does not "
            f"have (recipes: {', '.join(available_recipes())}); restore run.json"
        )
    return name


def _read_inputs(spec: str, run_dir) -> torch.Tensor:
    """Samples for ``embed``: ``train`` / ``test`` (the run's splits), a ``.npy`` file, an IDX
    file, or a folder of images (searched recursively, sorted by path)."""
    from .train import data
    from .train.rundir import load_run_config, read_run

    info = read_run(run_dir)
    shape = tuple(info.get("sample_shape", ()))
    if spec in ("train", "test"):
        cfg = load_run_config(run_dir, get_recipe(info["recipe"]).config_cls)
        return getattr(data.load_dataset(cfg.data), spec).x
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"--data {spec!r}: no such file or folder; pass train, test, a .npy file, "
            f"an IDX file or an image folder"
        )
    if path.is_dir():
        with needs("train", "reading an image folder"):
            from PIL import Image

        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in data.IMAGE_SUFFIXES)
        if not files:
            raise ValueError(
                f"--data {spec!r}: the folder holds no images ({', '.join(data.IMAGE_SUFFIXES)})"
            )
        mode = "L" if shape and shape[0] == 1 else "RGB"
        size = (shape[2], shape[1]) if len(shape) == 3 else None
        arrays = []
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert(mode)
                    arrays.append(np.asarray(im.resize(size, Image.BILINEAR) if size else im, dtype=np.uint8))
            except (OSError, SyntaxError, ValueError) as err:  # PIL: UnidentifiedImageError, truncated files
                from .train.checkpoint import CheckpointError

                raise CheckpointError(
                    f"--data {spec!r}: cannot read the image {f} ({type(err).__name__}: {err}); "
                    f"remove or replace it"
                ) from None
        x = torch.from_numpy(np.stack(arrays))
        return x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
    if path.suffix == ".npy":
        return data.as_samples(data.read_array(path), path)
    arr = data.read_idx(path)
    return data.as_samples(arr, path)


def _embed(args: argparse.Namespace) -> int:
    from .train.evaluate import embed
    from .train.rundir import read_run

    try:
        info = read_run(args.run_dir)
        recipe = get_recipe(_recipe_of(args.run_dir))
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if Path(args.out).suffix != ".npy":  # before the work, not after it
            raise ValueError(f"--out {args.out!r} must end in .npy")
        if recipe.embed is not None:  # text: the recipe reads and embeds its own inputs
            more = {"allow_changed_data": True} if args.allow_changed_data else {}
            features = recipe.embed(
                args.run_dir, args.data, args.checkpoint, args.batch_size, args.side, **more
            )
        else:
            if args.allow_changed_data:
                raise ValueError(
                    f"--allow-changed-data applies to text runs; {args.run_dir} is a {recipe.name} run"
                )
            encoder, _ = recipe.load_encoder(args.run_dir, args.checkpoint)
            x = _read_inputs(args.data, args.run_dir)
            want = tuple(info.get("sample_shape", x.shape[1:]))
            if tuple(x.shape[1:]) != want:
                raise ValueError(
                    f"--data {args.data!r} has samples of shape {tuple(x.shape[1:])}, the encoder "
                    f"was trained on {want}; resize or reshape the inputs"
                )
            features = embed(encoder, x, args.batch_size).numpy()  # (N, feature_dim)
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            np.save(out, features)
        except (FileNotFoundError, NotADirectoryError, FileExistsError, IsADirectoryError) as err:
            raise ValueError(  # where the user pointed, not the machine: a bad argument
                f"--out {args.out!r}: cannot write the file there ({err.strerror or err}); pass a path "
                f"in a folder you can write to"
            ) from None
    except BaseException as err:  # noqa: BLE001 - _guarded() re-raises what is not a user or environment error
        return _guarded("embed", err)
    print(f"wrote {features.shape[0]} embeddings of size {features.shape[1]} to {out}")
    return 0


def _search(args: argparse.Namespace) -> int:
    try:
        recipe = get_recipe(_recipe_of(args.run_dir))
        if recipe.search is None:
            raise ValueError(
                f"{args.run_dir} is a {recipe.name} run; search needs a text run "
                f"(contrastive train retrieval)"
            )
        if args.k < 1:
            raise ValueError(f"--k must be >= 1, got {args.k}")
        if args.lines < 1:
            raise ValueError(f"--lines must be >= 1 (lines shown of each document), got {args.lines}")
        if (args.query is None) == (args.queries is None):
            raise ValueError('pass one query ("QUERY") or --queries FILE (one query per line, - for stdin)')
        queries = args.query if args.queries is None else _read_queries(args.queries)
        more = {"allow_changed_data": True} if args.allow_changed_data else {}
        hits = recipe.search(args.run_dir, queries, args.k, args.checkpoint, **more)
    except BaseException as err:  # noqa: BLE001 - _guarded() re-raises what is not a user or environment error
        return _guarded("search", err)
    blocks = [(args.query, hits)] if args.queries is None else list(zip(queries, hits))
    for query, found in blocks:
        if args.queries is not None:  # one block per query, headed by it
            print(f"== {query}")
        for rank, (score, text) in enumerate(found, 1):
            lines = text.strip().splitlines()
            more = f"  ... ({len(lines) - args.lines} more lines)" if len(lines) > args.lines else ""
            print(f"#{rank}  score {score:.4f}")
            print("\n".join("    " + line for line in lines[: args.lines]) + more + "\n")
    return 0


def _read_queries(spec: str) -> list[str]:
    """``--queries``: one query per non-blank line of a UTF-8 file, or of stdin for ``-``."""
    if spec == "-":
        text = sys.stdin.read()
    else:
        from .train.text.corpus import text_lines

        if not Path(spec).is_file():
            raise FileNotFoundError(
                f"--queries {spec!r}: no such file; pass a file with one query per line, or -"
            )
        text = "\n".join(line for _, line in text_lines(spec, "--queries file"))
    queries = [line.strip() for line in text.splitlines() if line.strip()]
    if not queries:
        raise ValueError(f"--queries {spec!r} holds no query (one per line)")
    return queries


def _gradcheck(args: argparse.Namespace) -> int:
    dtypes = tuple(args.dtype) if args.dtype else tuple(gradcheck.DTYPES)
    rows = gradcheck.run(dtypes, args.seed)
    print(gradcheck.format_rows(rows))
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} checks passed")
    return 1 if failed else 0


def _seed(text: str) -> int:
    """argparse type: a seed for NumPy's generator, an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 0 (a NumPy seed), got {value}; pass e.g. --seed 0"
        )
    return value


def _register_gradcheck(subparsers) -> None:
    p = subparsers.add_parser(
        "gradcheck",
        help="verify every objective's analytic gradient",
        description="Verify every objective's gradient: the NumPy reference's analytic gradient against "
        "central finite differences (float64), and the torch op against the reference in float64, "
        "float32, bfloat16 and float16. Prints a table; exits 1 when a check fails.",
    )
    p.add_argument(
        "--dtype", action="append", choices=list(gradcheck.DTYPES), help="restrict to dtypes (repeatable)"
    )
    p.add_argument("--seed", type=_seed, default=0, help="seed of the random test data (>= 0)")
    p.set_defaults(func=_gradcheck)


def _run_command(subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """A command on a run folder: ``RUN_DIR``, ``--checkpoint`` and ``--allow-changed-data``."""
    p = subparsers.add_parser(name, help=help)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last")
    p.add_argument(
        "--allow-changed-data",
        action="store_true",
        help="answer even when the run's data file changed since training (the output says so)",
    )
    return p


def _register_train(subparsers) -> None:
    """Add ``train``, ``eval``, ``embed`` and ``search`` to the ``contrastive`` parser."""
    p = subparsers.add_parser(
        "train",
        help="train an embedding model with a recipe (e.g. simclr)",
        description="Train an embedding model. Pick a recipe; `contrastive train "
        "RECIPE --help` lists its configuration keys.",
    )
    recipes = p.add_subparsers(dest="recipe", metavar="RECIPE", parser_class=_OverrideParser)
    recipes.required = True
    for name, recipe in available_recipes().items():
        q = recipes.add_parser(
            name,
            help=recipe.help,
            description=recipe.help,
            epilog=_keys_epilog(recipe.config_cls),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            usage=f"contrastive train {name} [-h] [--config FILE.toml] [--resume RUN_DIR] "
            f"[--section.key=value ...]",
        )
        q.add_argument("--config", metavar="FILE.toml", help="TOML file with [section] tables of settings")
        q.add_argument(
            "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint"
        )
        q.set_defaults(func=_train)

    e = _run_command(subparsers, "eval", "evaluate a run's encoder on its held-out split")
    e.set_defaults(func=_eval)

    m = _run_command(subparsers, "embed", "write a run's embeddings of some data to a .npy file")
    m.add_argument(
        "--data",
        required=True,
        help="train, test, a .npy file, an IDX file or an image folder; text "
        "runs: train, validation, test (their documents, or queries with "
        "--side query) or a file of texts (.jsonl or one per line)",
    )
    m.add_argument("--out", required=True, metavar="FILE.npy")
    m.add_argument("--batch-size", type=int, default=512)
    m.add_argument(
        "--side",
        choices=("query", "doc"),
        default="doc",
        help="text runs: embed with the query or the document tower",
    )
    m.set_defaults(func=_embed)

    s = _run_command(subparsers, "search", "print the documents a retrieval run ranks first for a query")
    s.add_argument("query", nargs="?", help="the query (or --queries)")
    s.add_argument(
        "--queries",
        metavar="FILE",
        help="many queries, one per line (- for stdin); the output has one block per query, headed '== QUERY'",
    )
    s.add_argument("--k", type=int, default=10, help="how many documents (default 10)")
    s.add_argument("--lines", type=int, default=8, help="lines shown of each document (default 8)")
    s.set_defaults(func=_search)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrastive", description="Contrastive objectives and training recipes."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _register_gradcheck(sub)  # listed by --help in this order: gradcheck, train, eval, embed, search
    _register_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
