"""``--config FILE [--profile NAME]``: run flags from a TOML file, for scheduled runs.

The file holds run flags by their long names (``max-stopped`` or ``max_stopped``). Top-level
keys apply to every run; each table is a profile (``[nightly]``, ``[weekly]``) whose keys win
over the top-level ones when ``--profile`` names it::

    rate = 10
    stop-running = true

    [weekly]
    max-stopped = "20%"

Precedence, as zeno has it: the command line, then the environment (``ZENLAYER_ENDPOINT``, the
only run setting with a variable), then the file, then the defaults. The file's values become
the parser's defaults, so a flag given on the command line wins by argparse's own rule, and they
count as given: a ``--resume`` takes them over the run's stored options, as it would the flags.

Each value is checked as the flag's own parser would check it (``rate = 0.001`` gets the message
``--rate 0.001`` would). Secrets are refused: they belong in the environment or zeno's
credentials file, which are not copied, committed or shown as config files are.
"""

from __future__ import annotations

import argparse
import datetime
import re
import tomllib
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import UsageError
from .options import RunOptions
from .text import clip

__all__ = [
    "ConfigError",
    "Flag",
    "add_config_arguments",
    "apply_config",
    "file_flags",
    "load_config",
    "without_environment",
]

#: Run settings an environment variable sets; it wins over the file.
ENVIRONMENT = {"endpoint": "ZENLAYER_ENDPOINT"}
#: Flags a file cannot set: they choose the file.
_NOT_IN_FILE = {"config": "it names the file itself", "profile": "it is chosen on the command line"}
#: Words that mark a key as a secret (access key id and password, token).
_SECRET_WORDS = ("secret", "password", "token", "access-key", "credential")
#: TOML kinds by Python type, for messages.
_TOML_KINDS = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "a table",
    list: "an array",
    datetime.datetime: "a date-time",
    datetime.date: "a date",
    datetime.time: "a time",
}
#: Run options that take a number or a text (``max-stopped = 5`` or ``"10%"``).
_NUMBER_OR_TEXT = frozenset({"max_stopped"})
_KIND_NAMES = {
    "boolean": "a boolean (true or false)",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "integer or string": 'an integer or a string like "10%"',
}


class ConfigError(UsageError):
    """The config file cannot be used (exit 2): it names the file, the line when known and the key."""


@dataclass(frozen=True, slots=True)
class Flag:
    """A run flag as a config file may set it.

    Args:
        name: the long name without dashes in front (``max-stopped``).
        dest: the parser's destination (``max_stopped``).
        kind: ``boolean``, ``integer``, ``number``, ``string`` or ``integer or string``.
        convert: the flag's own argument type, run on the value's text (``None``: kept as text).
        choices: the values allowed, if the flag has a fixed set.
    """

    name: str
    dest: str
    kind: str
    convert: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and ``--profile`` to a command's parser.

    Args:
        parser: the command's parser (``run``).
    """
    group = parser.add_argument_group("config file")
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file of run flags by long name; the command line and ZENLAYER_ENDPOINT win over it",
    )
    group.add_argument(
        "--profile",
        metavar="NAME",
        help="with --config: also apply the file's [NAME] table (not the credentials profile: that is "
        "ZENLAYER_PROFILE)",
    )


def file_flags(parser: argparse.ArgumentParser) -> dict[str, Flag]:
    """The flags of ``parser`` a config file may set, by long name without dashes.

    Args:
        parser: the command's parser (its actions are the flags).
    """
    hints = typing.get_type_hints(RunOptions)
    options = {f.name for f in fields(RunOptions)}
    flags: dict[str, Flag] = {}
    for action in parser._actions:
        longs = [s[2:] for s in action.option_strings if s.startswith("--") and not s.startswith("--no-")]
        if (
            not longs
            or action.dest in _NOT_IN_FILE
            or isinstance(action, argparse._HelpAction | argparse._VersionAction)
        ):
            continue
        if action.nargs == 0:
            kind = "boolean"
        elif action.dest in _NUMBER_OR_TEXT:
            kind = "integer or string"
        elif action.dest in options and action.choices is None:
            kind = _kind_of(hints[action.dest])
        else:
            kind = "string"
        choices = tuple(str(c) for c in action.choices) if action.choices is not None else None
        for name in longs:
            flags[name] = Flag(name, action.dest, kind, action.type if callable(action.type) else None, choices)
    return flags


def _kind_of(hint: Any) -> str:
    """The TOML kind of a RunOptions field's type (``int | None`` -> integer)."""
    kinds = {t for t in typing.get_args(hint) or (hint,) if t is not type(None)}
    if kinds == {bool}:
        return "boolean"
    if kinds == {int}:
        return "integer"
    if kinds == {float}:
        return "number"
    return "string"


def load_config(path: Path, *, profile: str | None, flags: Mapping[str, Flag]) -> dict[str, Any]:
    """Read a config file: the top-level values, then the profile's over them.

    The whole file is checked, every profile, whichever one is used.

    Args:
        path: the TOML file.
        profile: the table to apply over the top level, or ``None`` for the top level alone.
        flags: the flags the file may set (:func:`file_flags`).

    Returns:
        Parser destinations and their values, converted as the command line would.

    Raises:
        ConfigError: the file cannot be read or parsed, a key is unknown, a secret or given twice,
            a value has the wrong type or is refused by its flag, or the profile is missing.
    """
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read config file {clip(name)}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    try:
        # Editors on Windows start UTF-8 files with a byte order mark; TOML has no place for one.
        text = raw.decode("utf-8").removeprefix("\ufeff")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        msg = f"{name}: not UTF-8 text (byte {exc.start}); a TOML file is UTF-8"
        raise ConfigError(msg) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_syntax_message(name, str(exc))) from None
    top = {key: value for key, value in data.items() if not isinstance(value, dict)}
    profiles = {key: value for key, value in data.items() if isinstance(value, dict)}
    locate = _Locator(name, text)
    values = _read_table(top, None, flags, locate)
    # Every profile is checked, not only the one chosen: a secret or a typo in [weekend] is
    # found on the first night, not on the first weekend.
    tables = {key: _read_table(table, key, flags, locate) for key, table in profiles.items()}
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(f"[{p}]" for p in sorted(profiles)) or "none"
            msg = f"{name}: no profile [{profile}] (--profile); the file's profiles: {known}"
            raise ConfigError(msg)
        values |= tables[profile]
    return values


def _syntax_message(name: str, message: str) -> str:
    """``file:line: not valid TOML: ...`` from tomllib's ``... (at line L, column C)``."""
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if found is None:
        return f"{name}: not valid TOML: {message}"
    return f"{name}:{found[1]}: not valid TOML: {message[: found.start()]} (column {found[2]})"


class _Locator:
    """Finds the line of a key in the file's text (tomllib gives no positions for valid files)."""

    _HEADER = re.compile(r"\s*\[\s*(?P<name>[^\]\[]+?)\s*\]\s*(#.*)?$")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self._lines = text.splitlines()

    def where(self, table: str | None, key: str) -> str:
        """``file:line`` of ``key`` in ``table`` (``None``: the top level), or ``file`` alone."""
        current: str | None = None
        pattern = re.compile(r"\s*([\"']?)" + re.escape(key) + r"\1\s*=")
        for number, line in enumerate(self._lines, 1):
            header = self._HEADER.match(line)
            if header is not None:
                current = header["name"].strip("\"'")
            elif current == table and pattern.match(line):
                return f"{self.name}:{number}"
        return self.name


def _read_table(
    table: Mapping[str, Any], profile: str | None, flags: Mapping[str, Flag], locate: _Locator
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    place = f"[{profile}] " if profile is not None else ""
    for key, value in table.items():
        where = locate.where(profile, key)
        normal = key.replace("_", "-")
        flag = flags.get(normal)
        if flag is None and any(word in normal.lower() for word in _SECRET_WORDS):
            msg = (
                f"{where}: {place}{key!r}: secrets do not go in a config file; set ZENLAYER_ACCESS_KEY_ID and "
                "ZENLAYER_ACCESS_KEY_SECRET (or ZENLAYER_TOKEN) in the environment, or use ~/.zenlayer/credentials.json"
            )
            raise ConfigError(msg)
        if normal in _NOT_IN_FILE:
            msg = f"{where}: {place}{key!r} cannot be set in the file: {_NOT_IN_FILE[normal]}"
            raise ConfigError(msg)
        if flag is None:
            if isinstance(value, dict) and profile is not None:
                msg = f"{where}: {place}[{key}]: profiles cannot be nested; put run flags in [{profile}] itself"
            else:
                msg = f"{where}: {place}unknown key {key!r}: not a flag of imagebatch run (see imagebatch run --help)"
            raise ConfigError(msg)
        if flag.dest in spelled:
            msg = f"{where}: {place}{key!r} is given twice (also as {spelled[flag.dest]!r})"
            raise ConfigError(msg)
        spelled[flag.dest] = key
        values[flag.dest] = _convert(flag, value, f"{where}: {place}{key}")
    return values


def _convert(flag: Flag, value: Any, where: str) -> Any:
    """The value as the flag's parser makes it, or a :class:`ConfigError` naming the expected kind."""
    kind = _TOML_KINDS.get(type(value), type(value).__name__)
    expected = _KIND_NAMES[flag.kind]
    accepted: tuple[type, ...] = {
        "boolean": (bool,),
        "integer": (int,),
        "number": (int, float),
        "string": (str,),
        "integer or string": (int, str),
    }[flag.kind]
    if isinstance(value, bool) != (flag.kind == "boolean") or not isinstance(value, accepted):
        msg = f"{where}: expected {expected}, got {kind}"
        raise ConfigError(msg)
    if flag.kind == "boolean":
        return value
    text = str(value)
    if flag.choices is not None and text not in flag.choices:
        msg = f"{where}: {clip(text)} is not one of {', '.join(flag.choices)}"
        raise ConfigError(msg)
    if flag.convert is None:
        return text
    try:
        return flag.convert(text)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        msg = f"{where}: {exc}"
        raise ConfigError(msg) from None


def without_environment(values: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """The file's values less those an environment variable sets (the environment wins).

    Args:
        values: the file's values by destination.
        environ: the environment variables.
    """
    return {dest: value for dest, value in values.items() if not environ.get(ENVIRONMENT.get(dest, ""), "").strip()}


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-parser of ``command`` (``run``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[command]
            return found
    msg = f"no command {command!r}"
    raise LookupError(msg)


def apply_config(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None, environ: Mapping[str, str]
) -> argparse.Namespace:
    """Parse ``argv`` again with the values of ``args.config`` as the command's defaults.

    Args:
        parser: the whole command line's parser.
        args: the first parse (it names the command, the file and the profile).
        argv: the arguments, as given to the first parse.
        environ: the environment variables (those that set a run setting win over the file).

    Returns:
        The arguments with the file's values where no flag was given.

    Raises:
        ConfigError: ``--profile`` without ``--config``, or the file cannot be used (see :func:`load_config`).
    """
    if args.config is None:
        if args.profile is not None:
            msg = f"--profile {clip(args.profile)} needs --config: the file that holds the profile"
            raise ConfigError(msg)
        return args
    command = _command_parser(parser, args.command)
    values = load_config(args.config, profile=args.profile, flags=file_flags(command))
    command.set_defaults(**without_environment(values, environ))
    return parser.parse_args(argv)
