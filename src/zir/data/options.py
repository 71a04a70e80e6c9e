"""Checking `data.options` against the source they go to, before any source is built.

A recipe's options are written for its own source (`size: 32` for `shapes`); a user who points
`data.source` at a folder keeps them. So: an option that the chosen source takes goes through; one that
only another source takes (`objects` of `shapes` given to a folder) is dropped with a warning; a key no
source takes (a typo) is an error naming `data.options.KEY` and the keys this source accepts.
"""

from __future__ import annotations

import inspect
import logging
from typing import Callable, Iterable

from zir.errors import ConfigError

log = logging.getLogger("zir.data")


def accepted_options(factory: Callable) -> set[str] | None:
    """Keyword options of a source factory (its first parameter, the split or path, excluded); None: any."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None  # a callable without a signature: let it decide
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    named = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    return {p.name for p in named[1:]}


def check_options(what: str, factory: Callable, options: dict, everyone: Iterable[tuple[str, Callable]]) -> dict:
    """The options `factory` takes; others' options dropped with a warning; unknown keys a ConfigError."""
    accepted = accepted_options(factory)
    if accepted is None:
        return dict(options)
    kept, ignored = {}, {}
    for key, value in options.items():
        if key in accepted:
            kept[key] = value
            continue
        owners = sorted(name for name, other in everyone if key in (accepted_options(other) or ()))
        if not owners:  # an error before any warning: a user error prints one line
            raise ConfigError(f"data.options.{key}: not an option of {what}; accepted: {', '.join(sorted(accepted))}")
        ignored[key] = ", ".join(owners)
    if ignored:  # one line, however many: a shipped recipe's shapes options on a user's own folder
        by_owner: dict[str, list[str]] = {}
        for key, owners in ignored.items():
            by_owner.setdefault(owners, []).append(key)
        parts = "; ".join(f"{', '.join(keys)} (options of {owners})" for owners, keys in by_owner.items())
        log.warning("data.options %s do not apply to %s: ignored", parts, what)
    return kept
