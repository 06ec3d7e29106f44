"""Credentials and endpoint: from the environment names Zenlayer's own tools use, or zeno's files.

The first source that is set wins, in the zeno CLI's order (a token wins over a key pair)::

    ZENLAYER_TOKEN
    ZENLAYER_ACCESS_KEY_ID + ZENLAYER_ACCESS_KEY_SECRET              (zeno CLI names)
    ZENLAYERCLOUD_ACCESS_KEY_ID + ZENLAYERCLOUD_ACCESS_KEY_PASSWORD  (Terraform names)
    ~/.zenlayer/credentials.json, profile ZENLAYER_PROFILE, else the current_profile of
        ~/.zenlayer/config.json, else "default"; its token wins over its key pair

Values are trimmed (a trailing newline from ``$(cat file)`` is harmless) and refused when they
hold a control character. No message ever shows a secret, only where it came from.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yarl

from .errors import UsageError
from .text import clip

__all__ = [
    "DEFAULT_ENDPOINT",
    "Credentials",
    "ResolvedCredentials",
    "credentials_from_env",
    "parse_endpoint",
    "resolve_credentials",
]

#: What is trimmed from a credential: ASCII white space only (a trailing newline from
#: ``$(cat file)``); a non-ASCII space is a paste accident, refused like any non-ASCII character.
_TRIM = " \t\r\n\v\f"

DEFAULT_ENDPOINT = "https://console.zenlayer.com"

TOKEN_VAR = "ZENLAYER_TOKEN"  # noqa: S105 - the name of a variable, not a password
PROFILE_VAR = "ZENLAYER_PROFILE"

# (id variable, secret variable, where the names come from)
_KEY_PAIRS = (
    ("ZENLAYER_ACCESS_KEY_ID", "ZENLAYER_ACCESS_KEY_SECRET", "zeno CLI"),
    ("ZENLAYERCLOUD_ACCESS_KEY_ID", "ZENLAYERCLOUD_ACCESS_KEY_PASSWORD", "Terraform provider"),
)

# zeno's files, relative to the home directory, and how messages name them.
_CREDENTIALS_FILE = (".zenlayer", "credentials.json")
_CONFIG_FILE = (".zenlayer", "config.json")


def _display(parts: tuple[str, ...]) -> str:
    return "~/" + "/".join(parts)


def _check_value(value: str, where: str) -> None:
    """Refuse a control character inside a credential: in a header it would crash the request
    (or inject a header), in a secret it is a paste accident that only shows as a bad signature."""
    if any(unicodedata.category(char) == "Cc" for char in value):
        msg = (
            f"{where} contains a control character (a line break, tab or similar) inside the value; "
            "set it to the value alone"
        )
        raise UsageError(msg)
    if not value.isascii() or any(unicodedata.category(char) in {"Zl", "Zp", "Cf"} for char in value):
        # Keys and tokens are ASCII; anything else is a paste accident (a smart quote, a
        # non-breaking space) and a token could not even go into an HTTP header.
        msg = f"{where} contains a character that is not plain ASCII; keys and tokens are ASCII"
        raise UsageError(msg)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key pair or a bearer token. The secret never shows in a repr.

    Args:
        access_key_id: public id of an access key (``None`` in token mode).
        secret: the access key password, or the bearer token.
        bearer: ``True`` when ``secret`` is a personal access token.

    Raises:
        UsageError: when a value holds a control character (it cannot go into a request).
    """

    access_key_id: str | None
    secret: str = field(repr=False)
    bearer: bool = False

    def __post_init__(self) -> None:
        # resolve_credentials() checks first and names the variable; this catches hand-made ones.
        _check_value(self.access_key_id or "", "the access key id")
        _check_value(self.secret, "the token" if self.bearer else "the access key secret")

    def __repr__(self) -> str:
        kind = "token" if self.bearer else f"key {self.access_key_id}"
        return f"Credentials({kind}, secret=***)"

    __str__ = __repr__

    @property
    def source_label(self) -> str:
        """What to show in logs: the key id, never the secret."""
        return "bearer-token" if self.bearer else f"access-key:{self.access_key_id}"


@dataclass(frozen=True, slots=True)
class ResolvedCredentials:
    """Credentials, where they came from, and notes for the person running the tool.

    Args:
        credentials: what to sign with.
        source: where they came from, for people: ``ZENLAYER_TOKEN`` or
            ``~/.zenlayer/credentials.json profile 'prod'``.
        notes: things worth saying on stderr (another source also set, a loose file mode).
    """

    credentials: Credentials
    source: str
    notes: list[str] = field(default_factory=list)


def resolve_credentials(environ: Mapping[str, str], home: Path) -> ResolvedCredentials:
    """Find the credentials to use, in zeno's order (see the module docstring).

    Args:
        environ: the environment variables (``os.environ`` in the CLI).
        home: the home directory holding ``.zenlayer/`` (``Path.home()`` in the CLI).

    Raises:
        UsageError: nothing set (the message names every source tried), half a key pair, a
            control character in a value, or a credentials file that cannot be used.
    """
    found = _from_environment(environ)
    cred_path = home.joinpath(*_CREDENTIALS_FILE)
    if found:
        source, credentials = found[0]
        others = [label for label, _ in found[1:]]
        if _exists(cred_path):
            others.append(_display(_CREDENTIALS_FILE))
        notes = [f"using credentials from {source}; also set but not used: {', '.join(others)}"] if others else []
        return ResolvedCredentials(credentials, source, notes)
    resolved = _from_file(environ, home)
    if resolved is not None:
        return resolved
    tried = [TOKEN_VAR, *(f"{i} + {s}" for i, s, _ in _KEY_PAIRS)]
    profile, why = _choose_profile(environ, home, strict=False)
    tried.append(f"{_display(_CREDENTIALS_FILE)} profile {clip(profile)} ({why}; no such file)")
    msg = "no Zenlayer credentials; tried: " + ", ".join(tried) + "; set one of the variables, or set up a zeno profile"
    raise UsageError(msg)


def credentials_from_env(env: Mapping[str, str] | None = None, *, home: Path | None = None) -> Credentials:
    """The credentials :func:`resolve_credentials` finds, without its source or notes.

    Args:
        env: the environment to read, ``os.environ`` by default.
        home: the home directory; ``$HOME`` of ``env`` (else the user's home) by default.

    Raises:
        UsageError: as :func:`resolve_credentials`.
    """
    environ = os.environ if env is None else env
    if home is None:
        home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    return resolve_credentials(environ, home).credentials


def _from_environment(environ: Mapping[str, str]) -> list[tuple[str, Credentials]]:
    """Every environment source that is set, best first (the first one is used)."""
    found: list[tuple[str, Credentials]] = []
    token = environ.get(TOKEN_VAR, "").strip(_TRIM)
    if token:
        _check_value(token, TOKEN_VAR)
        found.append((TOKEN_VAR, Credentials(access_key_id=None, secret=token, bearer=True)))
    for id_var, secret_var, _origin in _KEY_PAIRS:
        key_id = environ.get(id_var, "").strip(_TRIM)
        secret = environ.get(secret_var, "").strip(_TRIM)
        if not (key_id or secret):
            continue
        label = f"{id_var} + {secret_var}"
        if found:  # not used: only worth naming in the note
            found.append((label, found[0][1]))
            continue
        if not (key_id and secret):
            missing = secret_var if key_id else id_var
            msg = f"{id_var if key_id else secret_var} is set but {missing} is not; set both"
            raise UsageError(msg)
        _check_value(key_id, id_var)
        _check_value(secret, secret_var)
        found.append((label, Credentials(access_key_id=key_id, secret=secret)))
    return found


# ----- zeno's files ------------------------------------------------------------------------------


def _read_json(path: Path, display: str) -> object | None:
    """The file's JSON, ``None`` when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        msg = f"cannot read {display}: {reason}"
        raise UsageError(msg) from exc
    try:
        doc: object = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg describes the syntax only; the text around it could be a secret.
        msg = f"{display} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        raise UsageError(msg) from None
    return doc


def _choose_profile(environ: Mapping[str, str], home: Path, *, strict: bool) -> tuple[str, str]:
    """The profile to read and why (for messages): ZENLAYER_PROFILE, config.json, or default.

    With ``strict`` off (the credentials file is missing anyway) a broken config.json is ignored.
    """
    profile = environ.get(PROFILE_VAR, "").strip()
    if profile:
        return profile, f"from {PROFILE_VAR}"
    display = _display(_CONFIG_FILE)
    try:
        config = _read_json(home.joinpath(*_CONFIG_FILE), display)
    except UsageError:
        if strict:
            raise
        config = None
    if isinstance(config, dict):
        current = config.get("current_profile")
        if isinstance(current, str) and current.strip():
            return current.strip(), f"current_profile in {display}"
        if strict and not isinstance(current, str | None):
            msg = f"'current_profile' in {display} must be a profile name (a string)"
            raise UsageError(msg)
    elif config is not None and strict:
        msg = f"{display} must be a JSON object (with a 'current_profile')"
        raise UsageError(msg)
    return "default", "the default profile"


def _from_file(environ: Mapping[str, str], home: Path) -> ResolvedCredentials | None:
    """Credentials from zeno's credentials file, ``None`` when the file does not exist."""
    path = home.joinpath(*_CREDENTIALS_FILE)
    display = _display(_CREDENTIALS_FILE)
    doc = _read_json(path, display)
    if doc is None:
        return None
    if not isinstance(doc, dict):
        msg = f"{display} must be a JSON object mapping profile names to credentials"
        raise UsageError(msg)
    profile, why = _choose_profile(environ, home, strict=True)
    where = f"profile {clip(profile)} in {display}"
    entry = doc.get(profile)
    if entry is None:
        names = ", ".join(clip(name, 40) for name in sorted(doc)[:10]) or "none"
        msg = f"profile {clip(profile)} ({why}) is not in {display}; profiles there: {names}"
        raise UsageError(msg)
    if not isinstance(entry, dict):
        msg = f"{where} must be a JSON object"
        raise UsageError(msg)
    token, key_id, secret = (_field(entry, name, where) for name in ("token", "access_key_id", "access_key_secret"))
    source = f"{display} profile {clip(profile)}"
    notes = _mode_notes(path, display)
    if token:
        if key_id or secret:
            notes.append(f"{where} has both a token and an access key; using the token (as zeno does)")
        return ResolvedCredentials(Credentials(None, token, bearer=True), source, notes)
    if key_id and secret:
        return ResolvedCredentials(Credentials(key_id, secret), source, notes)
    if key_id or secret:
        missing = "access_key_secret" if key_id else "access_key_id"
        msg = f"{where} has {'access_key_id' if key_id else 'access_key_secret'} but no {missing}; set both"
        raise UsageError(msg)
    msg = f"{where} has neither 'token' nor 'access_key_id' + 'access_key_secret'"
    raise UsageError(msg)


def _field(entry: dict[str, object], name: str, where: str) -> str:
    """A profile's string field, trimmed and checked; ``""`` when absent or null."""
    value = entry.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        msg = f"'{name}' of {where} must be a string"
        raise UsageError(msg)
    value = value.strip(_TRIM)
    _check_value(value, f"'{name}' of {where}")
    return value


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. an unreadable ~/.zenlayer: it is not ours to use either way
        return False


def _mode_notes(path: Path, display: str) -> list[str]:
    """A note when others could read (or replace) the credentials; zeno writes the file 0600."""
    if os.name != "posix":
        return []
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o066:
        return [f"{display} is readable or writable by group or others (mode {mode:04o}); run: chmod 600 {display}"]
    return []


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_endpoint(endpoint: str) -> yarl.URL:
    """Check an endpoint and return its base URL.

    Args:
        endpoint: e.g. ``https://console.zenlayer.com``; plain ``http://`` only for loopback.

    Raises:
        UsageError: for anything but https (or http on loopback) with a host and no path.
    """
    if any(char.isspace() or not char.isprintable() for char in endpoint.strip()):
        msg = f"endpoint {endpoint!r} has a space or control character in it"
        raise UsageError(msg)
    try:
        url = yarl.URL(endpoint.strip())
    except (ValueError, TypeError) as exc:
        msg = f"endpoint {endpoint!r} is not a URL: {exc}"
        raise UsageError(msg) from exc
    if url.scheme not in {"http", "https"} or not url.host:
        msg = f"endpoint {endpoint!r} must look like https://HOST[:PORT]"
        raise UsageError(msg)
    if url.user or url.password:
        msg = "endpoint must not carry credentials in the URL; use the environment variables"
        raise UsageError(msg)
    if url.scheme == "http" and not _is_loopback(url.host):
        msg = f"endpoint {endpoint!r}: plain http is allowed only for loopback hosts; use https"
        raise UsageError(msg)
    if url.path not in {"", "/"} or url.query_string or url.fragment:
        msg = f"endpoint {endpoint!r} must have no path or query (the client adds /api/v2/zec)"
        raise UsageError(msg)
    return url.with_path("/")
