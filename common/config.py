"""One config mechanism for every job: dataclasses, YAML, dotted CLI overrides.

A job config is a dataclass whose fields are component dataclasses (``input``, ``flow``,
``model`` ...). Values are layered, later wins:

    dataclass defaults  <-  named preset  <-  YAML file (--config)  <-  CLI (--flow.backend x)

Every key is checked: an unknown key, a value of the wrong type or a value that a
component's ``__post_init__`` rejects raises :class:`ConfigError` naming the dotted field.
Fields are declared with :func:`opt` (a one-line help text) or :func:`required`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import yaml

T = TypeVar("T")

_REQUIRED = "required"


class ConfigError(ValueError):
    """A configuration problem, with the dotted name of the field at fault."""


class JobFailed(RuntimeError):
    """A job ran but cannot give a result; the message says why and where to look (exit 1)."""


def opt(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    """A config field with a default and a one-line help text."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return dataclasses.field(default_factory=lambda: dataclasses.replace(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def nested(cls: type, help: str) -> Any:  # noqa: A002
    """A field holding a component dataclass, default-constructed."""
    return dataclasses.field(default_factory=cls, metadata={"help": help})


def required(help: str) -> Any:  # noqa: A002
    """A field the user must set (from YAML or the command line); ``None`` until then."""
    return dataclasses.field(default=None, metadata={"help": help, _REQUIRED: True})


def check(condition: bool, field: str, message: str) -> None:
    """Raise ConfigError(``field: message``) unless ``condition``; for ``__post_init__``."""
    if not condition:
        raise ConfigError(f"{field}: {message}")


def check_choice(value: Any, field: str, choices: Sequence[Any]) -> None:
    check(value in choices, field, f"got {value!r}, allowed: {', '.join(map(str, choices))}")


# --------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert only lossless cases (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        check_choice(value, name, args)
        return value
    if origin in (list, tuple):
        if isinstance(value, str) and origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] is str:
            value = [value]  # a lone string where a list of strings goes (``--model.lora style.safetensors``)
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            check(len(value) == len(args), name, f"expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        items = [_coerce(v, args[0], f"{name}[{i}]") if args else v for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a numeric id given on the command line
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a section of settings, got {value!r}")
        return from_dict(tp, value, prefix=name)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f" in section '{prefix}'" if prefix else ""
        raise ConfigError(
            f"unknown setting {', '.join(_join(prefix, k) for k in unknown)}{where}; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(value, hints[key], _join(prefix, key))
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not str(exc).startswith(prefix):
            raise ConfigError(f"{prefix}.{exc}") from None
        raise


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts/lists (YAML/JSON-ready)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def flatten(cfg: Any) -> dict[str, Any]:
    """``{"flow.backend": "raft_large", ...}``: for logging as MLflow params."""
    out: dict[str, Any] = {}

    def walk(d: Mapping[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v, _join(prefix, k))
            else:
                out[_join(prefix, k)] = v

    walk(to_dict(cfg), "")
    return out


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def missing_required(cfg: Any, prefix: str = "") -> list[str]:
    """Dotted names of ``required`` fields still unset."""
    names = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get(_REQUIRED) and value is None:
            names.append(_join(prefix, f.name))
        elif dataclasses.is_dataclass(value):
            names.extend(missing_required(value, _join(prefix, f.name)))
    return names


def field_docs(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted name, default, help)`` for every leaf field: the ``--help`` table."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(field_docs(tp, _join(prefix, f.name)))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        shown = "(required)" if f.metadata.get(_REQUIRED) else json.dumps(default, default=str)
        rows.append((_join(prefix, f.name), shown, f.metadata.get("help", "")))
    return rows


# --------------------------------------------------------------------------- loading


def parse_value(text: str) -> Any:
    """A command-line value: YAML scalars/lists (``true``, ``3``, ``[1, 2]``), else the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def overrides_to_dict(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """``{"flow.backend": "x"}`` -> ``{"flow": {"backend": "x"}}``."""
    out: dict[str, Any] = {}
    for dotted, value in pairs.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: '{part}' is a value, not a section")
        node[parts[-1]] = value
    return out


def parse_argv(argv: Sequence[str]) -> tuple[str | None, str | None, dict[str, Any], bool]:
    """Split ``argv`` into (config file, preset, dotted overrides, wants help)."""
    config_file = preset = None
    overrides: dict[str, Any] = {}
    wants_help = False
    i = 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            wants_help = True
            i += 1
            continue
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument {arg!r}: settings are given as --section.key VALUE")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv) or (argv[i + 1].startswith("--") and len(argv[i + 1]) > 2):
                raise ConfigError(f"--{key}: missing value")
            value = argv[i + 1]
            i += 1
        i += 1
        if key == "config":
            config_file = value
        elif key == "preset":
            preset = value
        else:
            overrides[key] = parse_value(value)
    return config_file, preset, overrides, wants_help


def load(
    cls: type[T],
    *,
    presets: Mapping[str, Callable[[], Mapping[str, Any]]] | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    check_required: bool = True,
) -> T:
    """Layer defaults, preset, YAML file and dotted overrides into a validated ``cls``."""
    data: dict[str, Any] = {}
    file_data: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config: no such file {str(path)!r}")
        try:
            file_data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from None
        if not isinstance(file_data, dict):
            raise ConfigError(f"--config: {path} must hold a mapping of sections")
        preset = preset or file_data.pop("preset", None)
        file_data.pop("preset", None)
    if preset is not None:
        presets = presets or {}
        if preset not in presets:
            raise ConfigError(f"preset: got {preset!r}, allowed: {', '.join(presets) or '(none)'}")
        data = deep_merge(data, presets[preset]())
    data = deep_merge(data, file_data)
    data = deep_merge(data, overrides_to_dict(overrides or {}))
    cfg = from_dict(cls, data)
    if check_required:
        missing = missing_required(cfg)
        if missing:
            flags = " ".join(f"--{m} VALUE" for m in missing)
            raise ConfigError(f"missing required setting(s) {', '.join(missing)}: give {flags} or set them in --config")
    return cfg


def load_from_argv(
    cls: type[T],
    argv: Sequence[str],
    presets: Mapping[str, Callable[[], Mapping[str, Any]]] | None = None,
    prog: str = "job",
) -> T:
    """The jobs' entry: parse argv, print ``--help`` and exit, or return the config."""
    config_file, preset, overrides, wants_help = parse_argv(argv)
    if wants_help:
        print(usage(cls, presets, prog))
        raise SystemExit(0)
    return load(cls, presets=presets, preset=preset, config_file=config_file, overrides=overrides)


def usage(cls: type, presets: Mapping[str, Any] | None, prog: str) -> str:
    lines = [
        f"usage: {prog} [--config FILE.yaml] [--preset {'|'.join(presets or ['NAME'])}] [--section.key VALUE ...]",
        "",
        "settings (default, meaning):",
    ]
    rows = field_docs(cls)
    width = max(len(r[0]) for r in rows) + 2
    for name, default, text in rows:
        lines.append(f"  --{name.ljust(width)} {default}  {text}")
    return "\n".join(lines)


def main_with_errors(main: Callable[[Sequence[str]], Any], argv: Sequence[str]) -> int:
    """Run a job's ``main``; a ConfigError prints one line and exits 2, a JobFailed prints
    one line and exits 1 (no traceback)."""
    import sys

    try:
        main(argv)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except JobFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
