"""Turn plain mappings (from YAML) into typed, validated dataclasses.

Every error names the offending key with its full dotted path and the file it came from, and for
an unknown key the nearest valid keys.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

from .errors import ConfigError


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{where}: value {value!r} is not one of {', '.join(map(repr, choices))}")
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: value {value!r} has type {type(value).__name__}; "
                          f"expected {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, (list, tuple)):
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        raise ConfigError(f"{where}: value {value!r} has type {type(value).__name__}; "
                          f"expected {_type_name(tp)}")
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where}: value {value!r} has type {type(value).__name__}; expected a mapping")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: value {value!r} has type {type(value).__name__}; "
                      f"expected {_type_name(tp)}")


def build(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from mapping ``data``; ``where`` prefixes every error message."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.4)
        hint = (f"; nearest valid keys: {', '.join(close)}" if close
                else f"; valid keys: {', '.join(fields)}")
        raise ConfigError(f"{where}: unknown key '{key}'{hint}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}")
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key '{missing[0]}'")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        problem = check()
        if problem:
            raise ConfigError(f"{where}: {problem}")
    return obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


PATH_SETTING = {"path": True}
"""``field(metadata=PATH_SETTING)`` marks a setting that names a file or folder: a relative path is
made absolute when the config is loaded (written in a config file: relative to that file's folder;
given on the command line: relative to the working directory), so the setting means the same file
from wherever a command starts, and every message shows the absolute path."""


def path_setting(default: str | None = "") -> Any:
    """A dataclass field holding a path (see :data:`PATH_SETTING`)."""
    return dataclasses.field(default=default, metadata=PATH_SETTING)


NO_DEFAULT = object()
"""What :func:`field_defaults` gives a field that has no default."""


def field_defaults(cls: type) -> dict[str, Any]:
    """Each field of dataclass ``cls`` with its default as :func:`to_dict` writes it (or
    :data:`NO_DEFAULT`)."""
    out = {}
    if not dataclasses.is_dataclass(cls):
        return out
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = to_dict(f.default_factory())
        else:
            out[f.name] = NO_DEFAULT
    return out
