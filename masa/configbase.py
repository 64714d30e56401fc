"""Typed, frozen configuration dataclasses built from plain dicts (YAML presets, `--set` overrides).

Every concern (rollout, training, gating, ...) owns a frozen dataclass validated in `__post_init__`.
`from_dict` builds one from a mapping and reports *all* problems at once, naming each key: unknown
keys (with the valid ones), wrong types, and the `ValueError`s raised by `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid configuration; `problems` lists every offending key with the reason.

    `partial` is the object built from the keys that were valid (None when even those fail its
    `__post_init__`): the enclosing section's cross-checks then see the values the user gave, not
    the defaults, and report beside the type error.
    """

    def __init__(self, problems: list[str], partial: Any = None) -> None:
        self.problems = problems
        self.partial = partial
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


def _check_type(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, (tuple, list)):
            return False
        if args and args[-1] is Ellipsis:
            return all(_check_type(v, args[0]) for v in value)
        if args and origin is tuple:
            return len(args) == len(value) and all(_check_type(v, a) for v, a in zip(value, args, strict=True))
        return all(_check_type(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is type(None):
        return value is None
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type[T], data: dict[str, Any] | None, *, prefix: str = "") -> T:
    """Build the frozen dataclass `cls` from `data`, validating keys, types and values.

    Nested dataclass fields take nested dicts. Raises ConfigError naming every problem.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    problems: list[str] = []
    for key in data:
        if key not in fields:
            problems.append(f"{prefix}{key}: unknown key; valid keys: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name in fields:
        if name not in data:
            continue
        value, tp = data[name], hints[name]
        if dataclasses.is_dataclass(tp):
            try:
                kwargs[name] = from_dict(tp, value if isinstance(value, dict) else {}, prefix=f"{prefix}{name}.")
                if not isinstance(value, dict):
                    problems.append(f"{prefix}{name}: expected a mapping, got {type(value).__name__}")
            except ConfigError as e:
                problems.extend(e.problems)
                if e.partial is not None:
                    kwargs[name] = e.partial
            continue
        if typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not _check_type(value, tp):
            problems.append(f"{prefix}{name}: expected {_describe(tp)}, got {value!r}")
            continue
        kwargs[name] = value
    # Build even when some keys were bad, so value checks (`__post_init__`) report too: the user
    # sees every problem in one go.
    obj = None
    try:
        obj = cls(**kwargs)
    except ValueError as e:
        problems.extend(f"{prefix}{msg}" for msg in str(e).split("\n"))
    if problems:
        raise ConfigError(problems, partial=obj)
    return obj


def check(condition: bool, key: str, message: str, problems: list[str]) -> None:
    """Collect a validation problem for `key` (used inside `__post_init__`)."""
    if not condition:
        problems.append(f"{key}: {message}")


def raise_if(problems: list[str]) -> None:
    """Raise all collected `__post_init__` problems at once (one ValueError, one line each)."""
    if problems:
        raise ValueError("\n".join(problems))
