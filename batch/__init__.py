"""imagebatch: snapshot whole fleets of Zenlayer ZEC instances into custom images."""

from __future__ import annotations

from ._version import __version__
from .client import ApiResponse, CreatedImage, RequestRecord, ZecClient
from .credentials import Credentials, credentials_from_env
from .errors import (
    AmbiguousError,
    ApiError,
    AuthenticationError,
    ConnectError,
    FatalRunError,
    ImagebatchError,
    InstanceBusyError,
    JobListError,
    PermanentJobError,
    QuotaExceededError,
    RetryableError,
    RunDirectoryError,
    ThrottledError,
    TransientServerError,
    UsageError,
)
from .signing import sign

__all__ = [
    "AmbiguousError",
    "ApiError",
    "ApiResponse",
    "AuthenticationError",
    "ConnectError",
    "CreatedImage",
    "Credentials",
    "FatalRunError",
    "ImagebatchError",
    "InstanceBusyError",
    "JobListError",
    "PermanentJobError",
    "QuotaExceededError",
    "RequestRecord",
    "RetryableError",
    "RunDirectoryError",
    "ThrottledError",
    "TransientServerError",
    "UsageError",
    "ZecClient",
    "__version__",
    "credentials_from_env",
    "sign",
]
