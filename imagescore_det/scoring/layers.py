"""Resolving the ``layers`` argument of :class:`ImageScorer` to module names."""
from __future__ import annotations

import difflib
import re
from typing import Callable, Iterable, List, Union

from torch import nn

LayerSpec = Union[None, str, "re.Pattern[str]", Callable[[str, nn.Module], bool], Iterable[str]]

__all__ = ["resolve_layers", "unknown_layer_message"]


def _candidates(names: List[str]) -> List[str]:
    return [n for n in names if n != ""]


def unknown_layer_message(item: str, names: List[str], what: str = "layer") -> str:
    """Error text for a module name that does not exist, with difflib close matches."""
    names = _candidates(names)
    close = difflib.get_close_matches(item, names, n=5, cutoff=0.6)
    msg = f"{what} {item!r} is not a module of the model"
    if close:
        msg += f"; close matches: {', '.join(repr(c) for c in close)}"
    else:
        shown = names[:12]
        more = f" ... ({len(names)} in all)" if len(names) > len(shown) else ""
        msg += f"; the model's module names are: {', '.join(repr(s) for s in shown)}{more}"
    if not close and ("module." + item) in names:
        msg += " (the model looks wrapped, e.g. by DistributedDataParallel: pass model.module)"
    return msg


def _regex_matches(pattern: "re.Pattern[str]", names: List[str]) -> List[str]:
    return [n for n in names if pattern.fullmatch(n)]


def resolve_layers(model: nn.Module, layers: LayerSpec = None) -> List[str]:
    """Resolve ``layers`` to a list of module names of ``model``, in ``named_modules`` order.

    ``layers`` may be

    * ``None``: every ``nn.ReLU`` module (functional ``F.relu`` calls cannot be hooked);
    * a ``str`` or compiled regex: every module whose full name *fully* matches it;
    * a callable ``predicate(name, module) -> bool``;
    * a list/tuple of names: each item is an exact module name, or, when no module has that
      exact name, a regex (full match). An item that matches nothing is an error that lists
      close matches (difflib).

    The root module (name ``""``) is never selected. Duplicates are removed.
    """
    named = [(n, m) for n, m in model.named_modules() if n != ""]
    names = [n for n, _ in named]
    name_set = set(names)
    selected = set()
    if layers is None:
        selected = {n for n, m in named if isinstance(m, nn.ReLU)}
        if not selected:
            raise ValueError(
                "ImageScorer: layers=None selects every nn.ReLU module, but the model has none "
                "(functional F.relu calls cannot be hooked). Pass layers=[module names], a regex "
                "or a predicate(name, module)."
            )
    elif isinstance(layers, (str, re.Pattern)):
        pattern = re.compile(layers) if isinstance(layers, str) else layers
        if isinstance(layers, str) and layers in name_set:
            selected = {layers}
        else:
            selected = set(_regex_matches(pattern, names))
        if not selected:
            raise ValueError(
                f"ImageScorer: the regex {pattern.pattern!r} fully matches no module name. "
                + unknown_layer_message(pattern.pattern, names)
            )
    elif callable(layers):
        selected = {n for n, m in named if layers(n, m)}
        if not selected:
            raise ValueError("ImageScorer: the layers predicate selected no module")
    else:
        try:
            items = list(layers)
        except TypeError:
            raise TypeError(
                "ImageScorer: layers must be None, a regex string, a compiled regex, a "
                f"predicate(name, module) or a list of module names, not {type(layers).__name__}"
            ) from None
        if not items:
            raise ValueError("ImageScorer: layers is an empty list; pass at least one module name")
        for item in items:
            if isinstance(item, re.Pattern):
                matched = _regex_matches(item, names)
                if not matched:
                    raise ValueError(
                        f"ImageScorer: the regex {item.pattern!r} fully matches no module name. "
                        + unknown_layer_message(item.pattern, names)
                    )
                selected.update(matched)
                continue
            if not isinstance(item, str):
                raise TypeError(f"ImageScorer: layer names must be strings, got {item!r}")
            if item in name_set:
                selected.add(item)
                continue
            try:
                matched = _regex_matches(re.compile(item), names)
            except re.error:
                matched = []
            if not matched:
                raise ValueError("ImageScorer: " + unknown_layer_message(item, names))
            selected.update(matched)
    return [n for n in names if n in selected]
