"""Typed configs: one dataclass per component, strict about unknown keys.

Every component's config is a frozen dataclass. ``to_dict`` / ``from_dict`` turn it into the
JSON stored next to data and checkpoints; ``from_dict`` rejects unknown keys so a config file
always says exactly what runs (no ``getattr(cfg, "x", default)``).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (nested dataclasses become dicts)."""
    return dataclasses.asdict(cfg)


def as_stored(cfg: Any) -> dict[str, Any]:
    """A config dataclass as its saved JSON reads back (tuples become lists), to compare with one."""
    return json.loads(json.dumps(to_dict(cfg)))


def require_counts(cfg: Any, positive: tuple[str, ...] = (), nonnegative: tuple[str, ...] = ()) -> None:
    """A config's counts and rates that must be above (or at least) zero, checked when it is made: a bad
    command-line value is a clear error before data is read or a model built, not an index error minutes later."""
    for names, ok, says in ((positive, lambda v: v > 0, "more than 0"), (nonnegative, lambda v: v >= 0, "0 or more")):
        for name in names:
            v = getattr(cfg, name)
            if not ok(v):
                raise ValueError(f"{type(cfg).__name__}.{name} = {v!r}: must be {says}")


def stored_with_defaults(cls: type, saved: dict[str, Any]) -> dict[str, Any]:
    """A config of ``cls`` saved (as a dict) before some of its fields existed, those fields filled in
    with their defaults as stored: settings added later start off, so what was saved still matches."""
    out = dict(saved)
    for f in dataclasses.fields(cls):
        if f.name in out:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = json.loads(json.dumps(f.default, default=to_dict))
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = json.loads(json.dumps(f.default_factory(), default=to_dict))
    return out


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from ``data``; unknown keys are an error that names them."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; known keys are {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        ftype = hints[name]
        if dataclasses.is_dataclass(ftype) and isinstance(value, dict):
            value = from_dict(ftype, value)
        elif isinstance(value, list):  # JSON has no tuples; configs use tuples to stay hashable
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
