"""ZC2-HMAC-SHA256, the Zenlayer Cloud API v2 request signature, as pure functions.

The canonical request signs the method, the URI ``/`` (always, whatever the path), an empty
query, the ``content-type`` and ``host`` header values exactly as sent, and the SHA-256 of the
exact body bytes. Only the secret keys the HMAC; the access key id is not signed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

__all__ = [
    "ALGORITHM",
    "SIGNED_HEADERS",
    "Signature",
    "authorization_header",
    "canonical_request",
    "sign",
    "string_to_sign",
]

ALGORITHM = "ZC2-HMAC-SHA256"
SIGNED_HEADERS = "content-type;host"


@dataclass(frozen=True, slots=True)
class Signature:
    """The pieces of one signature, kept for tests and debugging (none of them is secret)."""

    hashed_payload: str
    canonical_request: str
    string_to_sign: str
    signature: str
    authorization: str


def canonical_request(*, method: str, content_type: str, host: str, body: bytes) -> str:
    """Build the canonical request text.

    Args:
        method: HTTP method, ``POST`` for every Zenlayer action.
        content_type: the ``Content-Type`` header value exactly as sent.
        host: the ``Host`` header value exactly as sent (with the port when one is sent).
        body: the exact body bytes sent.
    """
    hashed_payload = hashlib.sha256(body).hexdigest()
    headers = f"content-type:{content_type}\nhost:{host}\n"
    return f"{method}\n/\n\n{headers}\n{SIGNED_HEADERS}\n{hashed_payload}"


def string_to_sign(*, timestamp: int, canonical: str) -> str:
    """Build the string to sign from the timestamp and the canonical request.

    Args:
        timestamp: Unix seconds, the same value sent as ``X-ZC-Timestamp``.
        canonical: the output of :func:`canonical_request`.
    """
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{digest}"


def authorization_header(access_key_id: str, signature: str) -> str:
    """Format the ``Authorization`` header value.

    Args:
        access_key_id: the public key id.
        signature: lowercase hex signature.
    """
    return f"{ALGORITHM} Credential={access_key_id}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}"


def sign(
    *,
    access_key_id: str,
    secret: str,
    method: str,
    content_type: str,
    host: str,
    timestamp: int,
    body: bytes,
) -> Signature:
    """Sign one request.

    Args:
        access_key_id: the public key id (goes into the header, not into the HMAC).
        secret: the AccessKeyPassword; keys the HMAC as UTF-8 bytes.
        method: HTTP method.
        content_type: ``Content-Type`` exactly as sent.
        host: ``Host`` exactly as sent.
        timestamp: Unix seconds sent as ``X-ZC-Timestamp``.
        body: exact body bytes.
    """
    canonical = canonical_request(method=method, content_type=content_type, host=host, body=body)
    to_sign = string_to_sign(timestamp=timestamp, canonical=canonical)
    signature = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return Signature(
        hashed_payload=canonical.rsplit("\n", 1)[1],
        canonical_request=canonical,
        string_to_sign=to_sign,
        signature=signature,
        authorization=authorization_header(access_key_id, signature),
    )
