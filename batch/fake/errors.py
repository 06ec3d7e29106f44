"""Errors the fake Zenlayer server answers with: each a code and an HTTP status."""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "FakeApiError",
    "GpuNotSupported",
    "ImageQuotaExceeded",
    "InstanceInOperation",
    "InstanceNotFound",
    "InstanceNotRunning",
    "InstanceNotStopped",
    "InstanceRecycled",
    "InstanceStatusNotSupported",
    "InvalidAuthorization",
    "InvalidParameter",
    "MissingParameter",
    "RateLimited",
    "RecycledResource",
    "SignatureExpired",
    "SignatureFailure",
    "UnauthorizedOperation",
]


class FakeApiError(Exception):
    """An error envelope the fake sends: ``{"requestId", "code", "message"}``."""

    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]


class RateLimited(FakeApiError):
    code = "REQUEST_LIMIT_EXCEEDED"
    status = 429


class InvalidAuthorization(FakeApiError):
    code = "AUTHFAILURE_INVALID_AUTHORIZATION"
    status = 401


class SignatureFailure(FakeApiError):
    code = "AUTHFAILURE_SIGNATURE_FAILURE"
    status = 401


class SignatureExpired(FakeApiError):
    code = "AUTHFAILURE_SIGNATURE_EXPIRED"
    status = 401


class UnauthorizedOperation(FakeApiError):
    code = "AUTHFAILURE_UNAUTHORIZED_OPERATION"
    status = 403


class MissingParameter(FakeApiError):
    code = "MISSING_PARAMETER"
    status = 400


class InvalidParameter(FakeApiError):
    """Any ``INVALID_PARAMETER_*`` code; pass the exact one as ``code``."""

    code = "INVALID_PARAMETER_VALUE"
    status = 400


class InstanceNotFound(FakeApiError):
    code = "INVALID_INSTANCE_NOT_FOUND"
    status = 404


class GpuNotSupported(FakeApiError):
    code = "OPERATION_DENIED_GPU_INSTANCE_NOT_SUPPORT"
    status = 400


class InstanceInOperation(FakeApiError):
    code = "OPERATION_DENIED_INSTANCE_IN_OPERATION"
    status = 400


class InstanceStatusNotSupported(FakeApiError):
    code = "OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT"
    status = 400


class ImageQuotaExceeded(FakeApiError):
    code = "INVALID_IMAGE_QUOTA_EXCEED"
    status = 400


class InstanceRecycled(FakeApiError):
    """Start/Stop of an instance in the recycle bin."""

    code = "OPERATION_DENIED_INSTANCE_RECYCLED"
    status = 403


class InstanceNotRunning(FakeApiError):
    """StopInstances of an instance that is not RUNNING (nor STOPPING, for a forced stop)."""

    code = "OPERATION_DENIED_INSTANCE_NOT_RUNNING"
    status = 403


class InstanceNotStopped(FakeApiError):
    """StartInstances of an instance that is not STOPPED."""

    code = "OPERATION_DENIED_INSTANCE_NOT_STOPPED"
    status = 403


class RecycledResource(FakeApiError):
    """CreateImage of an instance in the recycle bin (403 is the fact sheet's placeholder status)."""

    code = "OPERATION_FAILED_FOR_RECYCLE_RESOURCE"
    status = 403
