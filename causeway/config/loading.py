"""Map YAML recipes and `--set a.b=c` overrides onto the typed dataclasses.

Every mistake is a `ConfigError` whose message is one line naming the key's dotted path,
the file it came from and what was expected, so that the CLI can print it and exit 2
before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from causeway.config.schema import RunConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """A recipe or override that cannot become a valid `RunConfig`."""


def find_recipe(name_or_path: str) -> Path:
    """A recipe is a YAML path, or a name looked up in the repository's `configs/`."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / name_or_path, CONFIG_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    if path.is_dir():
        raise ConfigError(f"recipe '{name_or_path}' is a directory, not a YAML file")
    if len(path.parts) > 1 or path.suffix in (".yaml", ".yml"):  # meant as a file
        raise ConfigError(f"recipe file '{name_or_path}' does not exist")
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(path.stem, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known recipes: {', '.join(known)}"
    raise ConfigError(f"recipe '{name_or_path}' not found (not a file, not in {CONFIG_DIR}){hint}")


def load_config(recipe: str | None = None, overrides: list[str] = ()) -> RunConfig:
    """Resolve a recipe plus dotted overrides into a checked `RunConfig`."""
    from causeway.config.checks import check_config

    raw: dict[str, Any] = {}
    source = "defaults"
    if recipe is not None:
        path = find_recipe(recipe)
        source = str(path)
        raw = read_yaml(path)
    origins: dict[str, str] = {}
    for item in overrides:
        key = apply_override(raw, item)
        origins[key] = f"--set {item}"
    config = build_dataclass(RunConfig, raw, prefix="", source=Source(source, origins))
    return check_config(config)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot be read ({why})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping, got {type(data).__name__}")
    return data


class Source:
    """Where each key came from: the recipe file, or the `--set` that overrode it."""

    def __init__(self, recipe: str, overrides: dict[str, str]):
        self.recipe, self.overrides = recipe, overrides

    def of(self, path: str) -> str:
        """The `--set` of `path`, of a section above it (`--set data.mixture=[...]` for
        data.mixture[0].path) or of a key below it (`--set modle.x=1` for modle), else
        the recipe."""
        if path in self.overrides:
            return self.overrides[path]
        for key, item in self.overrides.items():
            if path.startswith((f"{key}.", f"{key}[")) or key.startswith(f"{path}."):
                return item
        return self.recipe


def apply_override(raw: dict[str, Any], item: str) -> str:
    """`a.b=c` sets raw['a']['b'] = yaml.safe_load('c'), so numbers and lists parse."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}' must look like section.key=value")
    value = yaml.safe_load(text) if text else ""
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{item}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value
    return ".".join(parts)


def build_dataclass(cls: type, raw: Any, prefix: str, source: Source) -> Any:
    where = prefix.rstrip(".") or "the root"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {raw!r} (in {source.of(where)})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown key '{prefix}{key}' (in {source.of(prefix + key)}){hint}")
        kwargs[key] = convert(hints[key], value, f"{prefix}{key}", source)
    return cls(**kwargs)


def convert(tp: Any, value: Any, path: str, source: Source) -> Any:
    """Check `value` against the annotation `tp`; ints widen to floats, nothing else."""
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, f"{path}.", source)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(inner[0], value, path, source)
    if origin is Literal:
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        choices = ", ".join(map(str, args))
        raise ConfigError(f"{path}: '{value}' is not one of {choices} (in {source.of(path)}){hint}")
    if origin is list:
        if not isinstance(value, list):
            raise type_error(path, "list", value, source)
        return [convert(args[0], v, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # PyYAML reads "1e-4" (no dot) as a string; accept what float() accepts.
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise type_error(path, tp.__name__, value, source)
    return value


def type_error(path: str, expected: str, value: Any, source: Source) -> ConfigError:
    got = type(value).__name__
    where = source.of(path.split("[")[0])
    return ConfigError(f"{path} expects {expected}, got {value!r} ({got}) (in {where})")


def to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: RunConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(config))
