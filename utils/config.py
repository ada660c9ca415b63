"""Load a script's YAML config, apply ``--key value`` overrides and validate both in one place.

Every script declares its keys as a schema (``utils/config_schema.py``). Errors name the key, the file
(or "command line") and the valid choices, and are raised as ``ConfigError`` (exit code 2).
"""
import os
import re
from dataclasses import dataclass

import yaml

from utils.errors import ConfigError, HelpRequested

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"null", "none", "~", ""}


@dataclass(frozen=True)
class Key:
    """One config key: its type ("int", "float", "bool", "str", "device"), default and constraints."""

    name: str
    kind: str
    default: object
    help: str
    choices: tuple = ()
    nullable: bool = False
    minimum: float = None
    maximum: float = None


def _describe(key):
    if key.choices:
        return "one of " + ", ".join(str(c) for c in key.choices)
    return {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "str": "a string",
        "device": "auto, cpu, mps, cuda or cuda:N",
    }[key.kind] + (" or null" if key.nullable else "")


def _coerce(key, value, from_text):
    """Return ``value`` converted to the key's type, or raise ValueError."""
    if from_text and isinstance(value, str):
        text = value.strip()
        if key.nullable and text.lower() in _NULL:
            return None
        if key.kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if key.kind == "int":
            value = int(text)
        elif key.kind == "float":
            value = float(text)
        else:
            value = text
    if value is None:
        if key.nullable:
            return None
        raise ValueError
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError
    elif key.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
    elif key.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError
    elif key.kind in ("str", "device"):
        if not isinstance(value, str) or not value:
            raise ValueError
        if key.kind == "device" and not _DEVICE_PATTERN.match(value):
            raise ValueError
    if key.choices and value not in key.choices:
        raise ValueError
    if key.minimum is not None and value < key.minimum:
        raise ValueError
    if key.maximum is not None and value > key.maximum:
        raise ValueError
    return value


def _check(key, value, where, from_text=False):
    try:
        return _coerce(key, value, from_text)
    except (ValueError, TypeError):
        bounds = [f"at least {key.minimum}"] if key.minimum is not None else []
        bounds += [f"at most {key.maximum}"] if key.maximum is not None else []
        bound = f" ({', '.join(bounds)})" if bounds else ""
        raise ConfigError(f"{where}: key '{key.name}' must be {_describe(key)}{bound}, got {value!r}") from None


def _unknown(name, schema, where):
    valid = ", ".join(sorted(schema))
    return ConfigError(f"{where}: unknown key '{name}'; valid keys: {valid}")


def read_yaml(path):
    """Read a YAML mapping from ``path``; ConfigError if missing, unreadable or not a mapping."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' not found")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_overrides(argv):
    """Split ``[--config PATH] [--key VALUE | --key=VALUE ...]`` into (config path or None, {key: text})."""
    config_path, overrides = None, {}
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"command line: expected --key value, got '{token}'")
        name, equals, value = token[2:].partition("=")
        if not equals:
            if index + 1 >= len(argv) or argv[index + 1].startswith("--"):
                raise ConfigError(f"command line: --{name} needs a value")
            value = argv[index + 1]
            index += 1
        index += 1
        if name == "config":
            config_path = value
        else:
            overrides[name] = value
    return config_path, overrides


def load_config(schema, default_path, argv):
    """Return the validated config dict for a script.

    Args:
        schema: list of ``Key`` for the script.
        default_path: the YAML read when ``--config`` is not given.
        argv: command-line arguments after the script name.
    Returns:
        dict from each key name to its value, plus ``"config-path"``.
    """
    keys = {key.name: key for key in schema}
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(usage(schema, default_path))
    config_path, overrides = parse_overrides(argv)
    path = config_path or default_path
    data = read_yaml(path)
    config = {name: key.default for name, key in keys.items()}
    for name, value in data.items():
        if name not in keys:
            raise _unknown(name, keys, path)
        # PyYAML reads 1e-5 (no dot) as a string: numbers written that way are parsed like the command line's.
        numeric_text = keys[name].kind in ("int", "float") and isinstance(value, str)
        config[name] = _check(keys[name], value, path, from_text=numeric_text)
    for name, text in overrides.items():
        if name not in keys:
            raise _unknown(name, keys, "command line")
        config[name] = _check(keys[name], text, "command line", from_text=True)
    config["config-path"] = path
    return config


def usage(schema, default_path):
    lines = [f"options (defaults from {default_path}; override any key with --key VALUE):", "  --config PATH"]
    lines += [f"  --{key.name} {_describe(key).upper() if key.choices else key.kind.upper()}  {key.help}" for key in schema]
    return "\n".join(lines)
