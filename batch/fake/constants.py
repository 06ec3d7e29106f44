"""The fake's own copy of the API's facts, written from the API fact sheet, not from the client.

The fake must not import the client's constants or rules: a wrong value there would then be
agreed with instead of caught by the tests that run the client against the fake.
"""

from __future__ import annotations

__all__ = [
    "ALGORITHM",
    "API_VERSION",
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_ACCESS_KEY_SECRET",
    "DEFAULT_TOKEN",
    "IMAGE_NAME_MAX",
    "IMAGE_NAME_MIN",
    "MISSING_IMAGE_CODES",
    "SERVICE",
    "SIGNED_HEADERS",
]

#: The zec API version that has the custom-image actions.
API_VERSION = "2025-09-01"
#: The service in ``POST /api/v2/<service>``.
SERVICE = "zec"
#: Signature method, in ``X-ZC-Signature-Method`` and the Authorization header.
ALGORITHM = "ZC2-HMAC-SHA256"
#: The headers every signature covers, in this order.
SIGNED_HEADERS = "content-type;host"
#: CreateImage's imageName length bounds, characters.
IMAGE_NAME_MIN, IMAGE_NAME_MAX = 2, 63
#: The codes the documentation gives for an image that does not exist: zec's (what Terraform
#: takes for "already deleted" on DeleteImages) and the older vm API's.
MISSING_IMAGE_CODES = ("OPERATION_FAILED_RESOURCE_NOT_FOUND", "INVALID_IMAGE_NOT_FOUND")

# Documented, deliberately public credentials of the fake (never valid anywhere else).
DEFAULT_ACCESS_KEY_ID = "fake-access-key-id"
DEFAULT_ACCESS_KEY_SECRET = "fake-access-key-secret"  # noqa: S105
DEFAULT_TOKEN = "fake-bearer-token"  # noqa: S105
