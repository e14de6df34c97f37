"""Typed, validated YAML configuration.

Configs are YAML files in `configs/`. A config section is a frozen dataclass whose fields carry
their type; `from_dict` checks every key (unknown, missing, wrong type) and then the dataclass's
own `check()` for ranges and cross-field rules. Errors name the file and the dotted key, so a user
can fix the file without reading code. The YAML files in `configs/` are the only place defaults
live: a user's file is merged over them, so it only needs the keys it changes. (The one exception:
ModelConfig's later fields have the values of the models trained before those fields existed, so
that an older checkpoint's recorded config still loads.)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from engines.errors import ConfigError

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def config_path(name: str) -> Path:
    """The path of a built-in config in `configs/` (e.g. 'model.yaml')."""
    return CONFIG_DIR / name


def _unique_key_loader() -> type:
    """YAML's safe loader, refusing a key given twice in one mapping: the last one silently won.
    Made when a file is read: every stage process imports this module, and none reads YAML."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue                 # '<<: *base' brings keys in; one given here beside it overrides
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, Hashable):
                    break                    # the loader's own error names an unhashable key
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key '{key}' is given twice in one mapping", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_yaml(path: str | Path) -> dict[str, Any]:
    if not str(path).strip():
        raise ConfigError("the config file's path is empty; give a YAML file")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; give a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    import yaml

    try:
        data = yaml.load(text, Loader=_unique_key_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` laid over `base`, recursively for nested mappings."""
    out = dict(base)
    for key, value in override.items():
        if value is None and isinstance(out.get(key), dict):
            continue                     # a section left empty ('tracking:') changes nothing in it
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return "a list"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    def fail() -> typing.NoReturn:
        raise ConfigError(f"{source}: '{key}' must be {_type_name(tp)} (got {value!r})")

    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        # YAML 1.1 reads an unquoted off / no as false and on / yes as true: `method: off`
        # means the choice "off", as the configs' comments write it.
        if isinstance(value, bool) and ("on" if value else "off") in choices:
            return "on" if value else "off"
        if value not in choices:
            fail()
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        present = [o for o in options if o is not type(None)]
        if value is not None and len(present) == 1:
            # An optional setting that is given: its own type's message says what is wrong.
            return _convert(value, present[0], key, source)
        for option in options:
            try:
                return _convert(value, option, key, source)
            except ConfigError:
                continue
        fail()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail()
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{source}: '{key}' must be a list of {len(args)} items (got {value!r})")
        return tuple(_convert(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail()
        return from_dict(tp, value, source=source, prefix=key + ".")
    if tp is type(None):
        if value is not None:
            fail()
        return None
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, str) and _reads_as_number(value):
            raise ConfigError(f"{source}: '{key}' must be a number (got the text {value!r}; {_number_hint(value)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        if not math.isfinite(value):
            raise ConfigError(f"{source}: '{key}' must be a finite number (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _number_hint(text: str) -> str:
    """How to write a number that YAML read as text."""
    if "e" in text.lower():
        # YAML 1.1 (PyYAML) reads 1e9 as text: a number needs a dot and a signed exponent.
        return "YAML reads an exponent as a number only in the form 1.0e+9"
    return "write it without quotes"      # '0.1' in quotes: the exponent form is not the problem


def _unknown_key(key: str, known: list[str]) -> str:
    """A suggestion for an unknown key: the known key it most likely misspells (batch_sise: batch_size)."""
    close = difflib.get_close_matches(key, known, n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config", prefix: str = "") -> T:
    """Build dataclass `cls` from `data`, checking keys, types and the class's `check()`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, not {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)   # YAML keys may be numbers too: `1: 2`
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' ({_unknown_key(str(unknown[0]), sorted(fields))}"
            f"known keys here: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING:
                continue
            raise ConfigError(f"{source}: missing key '{prefix}{name}'")
        kwargs[name] = _convert(data[name], hints[name], prefix + name, source)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{source}: {prefix}{exc}") from None
    return obj


def check_range(name: str, value: float, lo: float, hi: float, unit: str = "") -> None:
    """A config value's bounds, named in the error: within them every stage computes with finite
    numbers (NaN is outside any range)."""
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {_bound(lo)} and {_bound(hi)}{unit} (got {value!r})")


def _bound(value: float) -> str:
    return (f"{value:,}" if abs(value) >= 100_000 else str(value)) if isinstance(value, int) else f"{value:g}"


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain YAML/JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


OVERRIDES_SOURCE = "command-line options"       # how errors in `load_config`'s overrides name them


def load_config(cls: type[T], default_file: str, user_file: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> T:
    """The built-in `configs/<default_file>`, with the user's file and overrides laid over it."""
    data = load_yaml(config_path(default_file))
    source = str(config_path(default_file))
    if user_file is not None:
        data = merge(data, load_yaml(user_file))
        source = str(user_file)
    if overrides:
        # Check the files alone first, so an error is blamed on whichever is wrong.
        from_dict(cls, data, source=source)
        return from_dict(cls, merge(data, overrides), source=OVERRIDES_SOURCE)
    return from_dict(cls, data, source=source)
