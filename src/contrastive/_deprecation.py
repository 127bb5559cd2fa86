"""Deprecation shims for changed signatures: the old call keeps working for one release and
warns ``DeprecationWarning`` naming the new spelling.

The decorated function keeps its new signature (``functools.wraps``: ``inspect.signature``,
the documentation and type checkers see the new one); only the wrapper accepts the old call.
None of these helpers is public API.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

Fn = TypeVar("Fn", bound=Callable[..., Any])


def keyword_only(n_positional: int, names: tuple[str, ...]) -> Callable[[Fn], Fn]:
    """Make ``names`` keyword-only, still accepting them positionally (with a warning).

    A call with more than ``n_positional`` positional arguments maps the extra ones, in
    order, onto ``names`` and warns; more extras than ``names`` fall through to the function,
    which raises Python's own ``TypeError``.

    Args:
        n_positional: how many positional parameters the new signature has.
        names: the parameters, in their old positional order, that became keyword-only.

    Returns:
        A decorator.

    Raises:
        TypeError: (from the wrapper) a parameter given both positionally and by keyword.

    Example:
        >>> import warnings
        >>> @keyword_only(1, ("scale",))
        ... def f(x, *, scale=1.0):
        ...     return x * scale
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     f(2, 3.0)
        6.0
        >>> caught[0].category.__name__
        'DeprecationWarning'
    """

    def decorate(fn: Fn) -> Fn:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            extra = args[n_positional:]
            if extra and len(extra) <= len(names):
                moved = names[: len(extra)]
                for name in moved:
                    if name in kwargs:
                        raise TypeError(f"{fn.__qualname__}() got {name} both positionally and as {name}=")
                kwargs.update(zip(moved, extra))
                args = args[:n_positional]
                spelled = ", ".join(f"{name}=..." for name in moved)
                warnings.warn(
                    f"{fn.__qualname__}: passing {', '.join(moved)} positionally is deprecated and stops "
                    f"working in the next release; pass {spelled} by keyword",
                    DeprecationWarning,
                    stacklevel=2,
                )
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]  # same signature as fn for its callers

    return decorate


def renamed_keywords(renames: dict[str, str]) -> Callable[[Fn], Fn]:
    """Accept the old keyword names in ``renames`` (``{old: new}``) for one release, with a warning.

    Args:
        renames: old keyword name -> new parameter name.

    Returns:
        A decorator.

    Raises:
        TypeError: (from the wrapper) both the old and the new name given.

    Example:
        >>> import warnings
        >>> @renamed_keywords({"y": "x2"})
        ... def f(x1, x2):
        ...     return x1 - x2
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     f(5, y=3)
        2
        >>> caught[0].category.__name__
        'DeprecationWarning'
    """

    def decorate(fn: Fn) -> Fn:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            used = [old for old in renames if old in kwargs]
            for old in used:
                new = renames[old]
                if new in kwargs:
                    raise TypeError(
                        f"{fn.__qualname__}() got both {new}= and {old}=; pass only {new}= "
                        f"({old}= is its deprecated name)"
                    )
                kwargs[new] = kwargs.pop(old)
            if used:  # one warning per call, naming every old keyword it used
                olds = ", ".join(f"{old}=..." for old in used)
                news = ", ".join(f"{renames[old]}=..." for old in used)
                warnings.warn(
                    f"{fn.__qualname__}({olds}) is deprecated and stops working in the next release; "
                    f"pass {news}",
                    DeprecationWarning,
                    stacklevel=2,
                )
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]  # same signature as fn for its callers

    return decorate
