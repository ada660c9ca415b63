"""Load a script's YAML config, apply ``--key value`` overrides and validate both in one place.

Every script declares its keys as a schema (``utils/config_schema.py``: type, bounds, help). Each default is
written once, in the script's own config file (``configs/train.yaml`` for train.py), which lists every key.
Any other config names the file it builds on with ``base: ../train.yaml`` (relative to itself) and lists
only what it changes; a config without ``base:`` builds on the script's own file. Errors name the key, the
file (or "command line") and the valid choices, and are raised as ``ConfigError`` (exit code 2).
"""
import os
import re
from dataclasses import dataclass

import yaml

from utils.errors import ConfigError, HelpRequested, first_line

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"null", "none", "~", ""}
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_KEY = "base"


@dataclass(frozen=True)
class Key:
    """One config key: its type ("int", "float", "bool", "str", "device") and constraints.

    ``run_defining`` (training keys): whether a resumed run with another value would differ from the run it
    continues; such changes are refused on resume. None for keys of scripts that do not resume.
    """

    name: str
    kind: str
    help: str
    choices: tuple = ()
    nullable: bool = False
    minimum: float = None
    maximum: float = None
    run_defining: bool = None


class Schema(tuple):
    """A script's keys (a tuple of ``Key``) and ``defaults_path``, the config file that gives each its default."""

    def __new__(cls, defaults_path, keys):
        schema = super().__new__(cls, keys)
        schema.defaults_path = defaults_path
        return schema


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
        raise ConfigError(f"{path}: not valid YAML ({first_line(error)})") from None
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


def _config_chain(path, source=None, seen=()):
    """[(path, mapping)] from the root of ``path``'s ``base:`` chain down to ``path`` itself."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' not found" + (f" (base of {source})" if source else ""))
    data = read_yaml(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return [(path, data)]
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: key '{BASE_KEY}' must be the path of another config file, relative to "
                          f"this one, got {base!r}")
    base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
    if os.path.abspath(base_path) in seen:
        raise ConfigError(f"{path}: base '{base}' leads back to a config already read (a cycle)")
    return _config_chain(base_path, path, seen + (os.path.abspath(path),)) + [(path, data)]


def _same_file(a, b):
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _script_defaults_path(default_path):
    """The script's own config in this project (a relative path is taken from the project's folder)."""
    return default_path if os.path.isabs(default_path) else os.path.join(_ROOT, default_path)


def _config_to_read(default_path):
    """The config read without --config: relative to the working directory if it is there, else the project's."""
    return default_path if os.path.isfile(default_path) else _script_defaults_path(default_path)


def _merged(keys, chain):
    """{name: (value, file it came from)} over the chain, later files overriding earlier ones."""
    merged = {}
    for path, data in chain:
        for name, value in data.items():
            if name not in keys:
                raise _unknown(name, keys, path)
            # PyYAML reads 1e-5 (no dot) as a string: numbers written that way are parsed like the command line's.
            numeric_text = keys[name].kind in ("int", "float") and isinstance(value, str)
            merged[name] = (_check(keys[name], value, path, from_text=numeric_text), path)
    return merged


def read_defaults(schema):
    """{key: default} from the script's own config file, which must list every key of ``schema``."""
    keys = {key.name: key for key in schema}
    path = _script_defaults_path(schema.defaults_path)
    chain = _config_chain(path)
    merged = _merged(keys, chain)
    missing = [name for name in keys if name not in merged]
    if missing:
        raise ConfigError(f"{chain[0][0]}: missing key(s) {', '.join(missing)}: the script's own config must "
                          f"give every key its default")
    return {name: value for name, (value, _) in merged.items()}, chain


def load_config(schema, default_path, argv):
    """Return the validated config dict for a script.

    Args:
        schema: the script's ``Schema``; its ``defaults_path`` file gives every key's default.
        default_path: the config read when ``--config`` is not given (the script's own, as a rule).
        argv: command-line arguments after the script name.
    Returns:
        dict from each key name to its value, plus ``"config-path"``.
    """
    keys = {key.name: key for key in schema}
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(usage(schema, default_path))
    config_path, overrides = parse_overrides(argv)
    path = config_path or default_path
    chain = _config_chain(path if config_path else _config_to_read(default_path))
    defaults, default_chain = read_defaults(schema)
    if not _same_file(chain[0][0], default_chain[0][0]):
        chain = default_chain + chain
    config = dict(defaults)
    config.update({name: value for name, (value, _) in _merged(keys, chain).items()})
    for name, text in overrides.items():
        if name not in keys:
            raise _unknown(name, keys, "command line")
        config[name] = _check(keys[name], text, "command line", from_text=True)
    config["config-path"] = path
    return config


def usage(schema, default_path):
    defaults, _ = read_defaults(schema)
    lines = [f"options (defaults from {default_path}; override any key with --key VALUE; --quiet, --verbose):",
             "  --config PATH  a config file; 'base: FILE' in it names the config it builds on"]
    lines += [f"  --{key.name} {_describe(key).upper() if key.choices else key.kind.upper()}  {key.help} "
              f"(default: {defaults[key.name]})" for key in schema]
    return "\n".join(lines)
