"""Credentials and endpoint, from flags or the environment names Zenlayer's own tools use."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import yarl

from .errors import UsageError

__all__ = ["DEFAULT_ENDPOINT", "Credentials", "credentials_from_env", "parse_endpoint"]

DEFAULT_ENDPOINT = "https://console.zenlayer.com"

# (id variable, secret variable, where the names come from)
_KEY_PAIRS = (
    ("ZENLAYER_ACCESS_KEY_ID", "ZENLAYER_ACCESS_KEY_SECRET", "zeno CLI"),
    ("ZENLAYERCLOUD_ACCESS_KEY_ID", "ZENLAYERCLOUD_ACCESS_KEY_PASSWORD", "Terraform provider"),
)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key pair or a bearer token. The secret never shows in a repr.

    Args:
        access_key_id: public id of an access key (``None`` in token mode).
        secret: the access key password, or the bearer token.
        bearer: ``True`` when ``secret`` is a personal access token.
    """

    access_key_id: str | None
    secret: str = field(repr=False)
    bearer: bool = False

    def __repr__(self) -> str:
        kind = "token" if self.bearer else f"key {self.access_key_id}"
        return f"Credentials({kind}, secret=***)"

    __str__ = __repr__

    @property
    def source_label(self) -> str:
        """What to show in logs: the key id, never the secret."""
        return "bearer-token" if self.bearer else f"access-key:{self.access_key_id}"


def credentials_from_env(env: Mapping[str, str] | None = None) -> Credentials:
    """Read credentials from the environment.

    ``ZENLAYER_TOKEN`` wins (as in the zeno CLI); then the zeno key pair, then Terraform's.

    Args:
        env: the environment to read, ``os.environ`` by default.

    Raises:
        UsageError: when nothing usable is set, or only half of a key pair.
    """
    env = os.environ if env is None else env
    token = env.get("ZENLAYER_TOKEN", "").strip()
    if token:
        return Credentials(access_key_id=None, secret=token, bearer=True)
    for id_var, secret_var, _origin in _KEY_PAIRS:
        key_id = env.get(id_var, "").strip()
        secret = env.get(secret_var, "")
        if key_id and secret:
            return Credentials(access_key_id=key_id, secret=secret)
        if key_id or secret:
            missing = secret_var if key_id else id_var
            msg = f"{id_var if key_id else secret_var} is set but {missing} is not; set both"
            raise UsageError(msg)
    names = ", ".join(f"{i} + {s}" for i, s, _ in _KEY_PAIRS)
    msg = f"no Zenlayer credentials: set ZENLAYER_TOKEN, or {names}"
    raise UsageError(msg)


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
