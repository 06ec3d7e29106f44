"""Request authentication as the fake checks it: ZC2-HMAC-SHA256 or a bearer token."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping

from ..signing import ALGORITHM, SIGNED_HEADERS, sign
from .errors import InvalidAuthorization, SignatureExpired, SignatureFailure

__all__ = ["verify_request"]

_AUTH_RE = re.compile(
    rf"^{ALGORITHM} Credential=(?P<cred>[^,\s]+), SignedHeaders=(?P<signed>[^,\s]+), Signature=(?P<sig>[0-9a-f]{{64}})$"
)


def verify_request(
    headers: Mapping[str, str],
    body: bytes,
    *,
    keys: Mapping[str, str],
    tokens: frozenset[str],
    now: float,
    max_skew: float,
) -> str:
    """Check a request's credentials; return the caller's key id (or ``"token"``).

    The signature is recomputed over the raw body and the Content-Type and Host values exactly
    as received, as the real service does.

    Raises:
        FakeApiError: ``AUTHFAILURE_*`` with the reason.
    """
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        if any(hmac.compare_digest(auth[7:], t) for t in tokens):
            return "token"
        raise InvalidAuthorization("bearer token is not valid")
    match = _AUTH_RE.match(auth)
    if match is None:
        raise InvalidAuthorization("Authorization header is missing or not in ZC2-HMAC-SHA256 form")
    if match["signed"] != SIGNED_HEADERS:
        raise InvalidAuthorization(f"SignedHeaders must be {SIGNED_HEADERS}")
    if headers.get("X-ZC-Signature-Method", ALGORITHM) != ALGORITHM:
        raise InvalidAuthorization(f"X-ZC-Signature-Method must be {ALGORITHM}")
    secret = keys.get(match["cred"])
    if secret is None:
        raise InvalidAuthorization("access key id is not valid")
    stamp = headers.get("X-ZC-Timestamp", "")
    if not stamp.isdigit():
        raise InvalidAuthorization("X-ZC-Timestamp must be Unix seconds")
    if abs(int(stamp) - now) > max_skew:
        raise SignatureExpired(f"timestamp and server time differ by more than {int(max_skew)} seconds")
    expected = sign(
        access_key_id=match["cred"],
        secret=secret,
        method="POST",
        content_type=headers.get("Content-Type", ""),
        host=headers.get("Host", ""),
        timestamp=int(stamp),
        body=body,
    ).signature
    if not hmac.compare_digest(expected, match["sig"]):
        raise SignatureFailure("signature does not match the request")
    return match["cred"]
