"""params.yaml sections -> frozen dataclasses. An unknown or mistyped key is an error naming file:line."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from sdcaff.errors import ParamsError

T = TypeVar("T")
DEFAULT_PATH = "params.yaml"
# The profile in use lives in its own file beside the params file, so that `dvc exp run -S
# profile.yaml:profile=paper` rewrites two lines, not the whole commented params.yaml.
PROFILE_FILE = "profile.yaml"


def params_path() -> Path:
    """Returns the params file in use: $SDCAFF_PARAMS, else ./params.yaml."""
    return Path(os.environ.get("SDCAFF_PARAMS", DEFAULT_PATH))


def profile_name(path: str | os.PathLike | None = None) -> str:
    """Returns the profile in use, a key of `profiles`: profile.yaml's beside the params file, else the file's own."""
    path = Path(path) if path is not None else params_path()
    data, lines = read(path)
    beside = path.parent / PROFILE_FILE
    if beside.is_file():
        chosen, chosen_lines = read(beside)
        for key in chosen:
            if key != "profile":
                raise ParamsError(
                    f"{beside}:{chosen_lines[(key,)]}: unknown key '{key}'; {PROFILE_FILE} holds only 'profile'"
                )
        if "profile" in data:
            # Two sources of truth: DVC interpolates ${profile} from profile.yaml, so the other would be ignored.
            raise ParamsError(
                f"{path}:{lines[('profile',)]}: 'profile' is set here and in {_where(beside, chosen_lines, ('profile',))}; "
                f"keep it in {beside} only"
            )
        where, name = _where(beside, chosen_lines, ("profile",)), chosen.get("profile")
    else:
        where, name = _where(path, lines, ("profile",)), data.get("profile")
    if not isinstance(name, str):
        raise ParamsError(f"{where}: 'profile' must name one of the profiles, got {name!r}")
    profiles = data.get("profiles")
    if not isinstance(profiles, dict):
        raise ParamsError(f"{path}: missing section 'profiles'")
    if name not in profiles:
        raise ParamsError(f"{where}: unknown profile '{name}'; known: {', '.join(sorted(profiles))}")
    return name


def read(path: str | os.PathLike | None = None) -> tuple[dict, dict[tuple, int]]:
    """Returns the whole params file as plain data and a map from key path to 1-based line."""
    path = Path(path) if path is not None else params_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read params file: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    lines: dict[tuple, int] = {}
    _index_lines(node, (), lines)
    if not isinstance(data, dict):
        raise ParamsError(f"{path}:1: expected a mapping of sections at the top level")
    return data, lines


def _index_lines(node: yaml.Node | None, keypath: tuple, lines: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = keypath + (key_node.value,)
            lines[sub] = key_node.start_mark.line + 1
            _index_lines(value_node, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[keypath + (i,)] = item.start_mark.line + 1
            _index_lines(item, keypath + (i,), lines)


def load(section: str, cls: type[T], path: str | os.PathLike | None = None) -> T:
    """Returns params.yaml[section] as an instance of the frozen dataclass `cls`."""
    path = Path(path) if path is not None else params_path()
    data, lines = read(path)
    if section not in data:
        raise ParamsError(f"{path}: missing section '{section}'")
    return build(cls, data[section], path, lines, (section,))


def build(cls: Any, value: Any, path: Path, lines: dict[tuple, int], keypath: tuple) -> Any:
    """Converts plain YAML data at `keypath` to type `cls`, checking every key and type."""
    where = _where(path, lines, keypath)
    name = ".".join(str(k) for k in keypath)
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)

    if cls is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return build(option, value, path, lines, keypath)
            except ParamsError as exc:
                errors.append(str(exc))
        raise ParamsError(errors[0] if len(errors) == 1 else f"{where}: '{name}' = {value!r} fits none of {options}")
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{where}: '{name}' must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(cls):
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: '{name}' must be a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in value:
            if key not in fields:
                raise ParamsError(
                    f"{_where(path, lines, keypath + (key,))}: unknown key '{name}.{key}'; "
                    f"known keys: {', '.join(fields)}"
                )
        kwargs = {}
        for fname, field in fields.items():
            if fname in value:
                kwargs[fname] = build(hints[fname], value[fname], path, lines, keypath + (fname,))
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{where}: '{name}' lacks the required key '{fname}'")
        return cls(**kwargs)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ParamsError(f"{where}: '{name}' must be a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [build(item_type, v, path, lines, keypath + (i,)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: '{name}' must be a mapping, got {value!r}")
        key_type, value_type = args if args else (Any, Any)
        return {
            build(key_type, k, path, lines, keypath + (k,)): build(value_type, v, path, lines, keypath + (k,))
            for k, v in value.items()
        }
    if cls is float:
        # PyYAML reads 5e-4 as a string; accept ints for floats, nothing else.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{where}: '{name}' must be a number, got {value!r} (write 5.0e-4, not 5e-4)")
        return float(value)
    if cls is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: '{name}' must be an integer, got {value!r}")
        return value
    if cls is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: '{name}' must be true or false, got {value!r}")
        return value
    if cls is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: '{name}' must be a string, got {value!r}")
        return value
    raise TypeError(f"params.build: unsupported type {cls!r} for '{name}'")


def _where(path: Path, lines: dict[tuple, int], keypath: tuple) -> str:
    while keypath and keypath not in lines:
        keypath = keypath[:-1]
    return f"{path}:{lines[keypath]}" if keypath else str(path)


def to_dict(obj: Any) -> Any:
    """Returns a dataclass (nested) as plain data, for hashing and for metrics records."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def per_profile(value: Any, profile: str) -> Any:
    """Returns value[profile] when `value` is chosen per profile ({profile: value}), else `value` itself; a
    mapping without the profile gives None (the caller says what is missing)."""
    return value.get(profile) if isinstance(value, dict) else value


def no_upstream_reason(set_name: str, entry: dict, profile: str) -> str | None:
    """Returns why a feature set of kind ssl cannot run with profile `profile` (no upstream checkpoint named for
    it), in the words train, evaluate, features and the report print; None when it can, or is no ssl set.
    `entry` is the set's merged settings (the `features` section under feature_sets.<set_name>)."""
    if entry.get("kind") != "ssl":
        return None
    upstream = entry.get("upstream")
    if per_profile(upstream, profile):
        return None
    if isinstance(upstream, dict):
        return f"no upstream checkpoint configured for profile {profile} (feature_sets.{set_name}.upstream.{profile})"
    return f"no upstream checkpoint configured (feature_sets.{set_name}.upstream)"
