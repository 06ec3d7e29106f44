"""Request authentication as the fake checks it: ZC2-HMAC-SHA256 or a bearer token.

The signature is recomputed here from the API's description (its own code, not the client's):
the canonical request is the method, the URI ``/``, an empty query, the ``content-type`` and
``host`` lines (each ending in a newline) exactly as received, the signed-header names and the
SHA-256 of the raw body; the string to sign is the algorithm, ``X-ZC-Timestamp`` and the
SHA-256 of the canonical request; the secret keys an HMAC-SHA256 over it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from .constants import ALGORITHM, SIGNED_HEADERS
from .errors import InvalidAuthorization, SignatureExpired, SignatureFailure

__all__ = ["expected_signature", "verify_request"]

_AUTH_RE = re.compile(
    rf"^{ALGORITHM} Credential=(?P<cred>[^,\s]+), SignedHeaders=(?P<signed>[^,\s]+), Signature=(?P<sig>[0-9a-f]{{64}})$"
)


def expected_signature(*, secret: str, content_type: str, host: str, timestamp: str, body: bytes) -> str:
    """The lowercase hex signature the API expects for a POST with these headers and body.

    Args:
        secret: the access key's password.
        content_type: the ``Content-Type`` value exactly as received.
        host: the ``Host`` value exactly as received (with its port, when one was sent).
        timestamp: the ``X-ZC-Timestamp`` value exactly as received.
        body: the raw body bytes.
    """
    lines = [
        "POST",
        "/",
        "",
        f"content-type:{content_type}\nhost:{host}\n",
        SIGNED_HEADERS,
        hashlib.sha256(body).hexdigest(),
    ]
    canonical = "\n".join(lines)
    to_sign = f"{ALGORITHM}\n{timestamp}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


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

    Args:
        headers: the request headers (case-insensitive mapping).
        body: the raw body.
        keys: accepted access key ids and their secrets.
        tokens: accepted bearer tokens.
        now: the server's wall clock, Unix seconds.
        max_skew: the largest accepted difference between ``X-ZC-Timestamp`` and ``now``.

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
        raise InvalidAuthorization(f"Authorization header is missing or not in {ALGORITHM} form")
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
    expected = expected_signature(
        secret=secret,
        content_type=headers.get("Content-Type", ""),
        host=headers.get("Host", ""),
        timestamp=stamp,
        body=body,
    )
    if not hmac.compare_digest(expected, match["sig"]):
        raise SignatureFailure("signature does not match the request")
    return match["cred"]
