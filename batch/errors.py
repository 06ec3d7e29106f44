"""Every error imagebatch raises, in one tree.

The scheduler branches on the class, never on message text::

    ImagebatchError
    ├── UsageError                  bad flag, bad endpoint, missing credentials (exit 2)
    │   └── JobListError            a job list that does not validate (carries its problems)
    ├── RunDirectoryError           the run directory is locked, foreign or inconsistent (exit 2)
    └── ApiError                    anything the Zenlayer API (or the way to it) answered
        ├── RetryableError          worth trying again
        │   ├── ThrottledError          429 / REQUEST_LIMIT_EXCEEDED
        │   ├── InstanceBusyError       OPERATION_DENIED_INSTANCE_IN_OPERATION
        │   ├── TransientServerError    5xx, INTERNAL_SERVER_ERROR, SERVICE_TEMPORARY_UNAVAILABLE,
        │   │                           REQUEST_TIMED_OUT
        │   ├── ConnectError            the request never left: safe to resend
        │   ├── LostAnswerError         a read's answer was lost or unreadable: a read changes
        │   │                           nothing, so asking again is safe
        │   └── AmbiguousError          a write may have reached the server and committed
        │                               (connection lost or timed out after sending, unreadable
        │                               answer); look before resending it
        ├── PermanentJobError       this job cannot succeed: not found, GPU, wrong status,
        │                           invalid parameters, any other 4xx
        └── FatalRunError           no job can succeed: stop the run (also TLS_ERROR,
            │                       UNEXPECTED_REDIRECT: a wrong endpoint fails every request)
            ├── AuthenticationError     AUTHFAILURE_*
            └── QuotaExceededError      INVALID_IMAGE_QUOTA_EXCEED

Every ``ApiError`` carries ``code``, ``message``, ``status`` (HTTP status, or ``None`` when no
answer came) and ``request_id``. None of them ever carries a credential.

Only a write (:data:`WRITE_ACTIONS`) can have been applied behind a lost answer, so only writes
get ``may_have_committed`` errors; the same failure on a read is a :class:`LostAnswerError`.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "WRITE_ACTIONS",
    "AmbiguousError",
    "ApiError",
    "AuthenticationError",
    "ConnectError",
    "FatalRunError",
    "ImagebatchError",
    "InstanceBusyError",
    "JobListError",
    "LostAnswerError",
    "PermanentJobError",
    "QuotaExceededError",
    "RetryableError",
    "RunDirectoryError",
    "ThrottledError",
    "TransientServerError",
    "UsageError",
    "error_from_response",
    "is_write_action",
]

#: The actions that change something. A lost answer to one of these may hide a committed change.
WRITE_ACTIONS = frozenset({"CreateImage", "DeleteImages", "ModifyImagesAttributes", "StartInstances", "StopInstances"})


def is_write_action(action: str | None) -> bool:
    """Whether a lost answer to ``action`` may hide a change on the server.

    Zenlayer's reads are all ``Describe*``; any other action we do not know is treated as a
    write, the safe assumption (look before resending).

    Args:
        action: the API action, ``None`` when unknown.
    """
    return action is None or action in WRITE_ACTIONS or not action.startswith("Describe")


class ImagebatchError(Exception):
    """Root of every error imagebatch raises on purpose."""


class UsageError(ImagebatchError):
    """A bad flag, endpoint or credential setting: nothing was sent."""


class JobListError(UsageError):
    """A job list failed validation.

    Args:
        problems: one line per problem, each naming file, line and field.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n".join(problems[:50])
        more = f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s) in the job list:\n{shown}{more}")


class RunDirectoryError(ImagebatchError):
    """The run directory cannot be used as asked (locked, exists, changed job list)."""


class ApiError(ImagebatchError):
    """An answer (or the lack of one) from the Zenlayer API.

    Args:
        code: the API's error code, or one of ours (``NETWORK_ERROR``, ``MALFORMED_RESPONSE``).
        message: human-readable text; the API's text is not stable, key on ``code``.
        status: HTTP status, ``None`` when no answer arrived.
        request_id: the API's ``requestId`` when it gave one.
        action: the API action that failed.
        retry_after: seconds the server asked us to wait (``Retry-After``), when it said.
    """

    #: Whether a write may have been applied even though we saw an error.
    may_have_committed: ClassVar[bool] = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        action: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.retry_after = retry_after
        self.message = message
        self.status = status
        self.request_id = request_id
        self.action = action
        super().__init__(code, message)

    def __str__(self) -> str:
        where = f" ({self.action})" if self.action else ""
        status = f" HTTP {self.status}" if self.status is not None else ""
        rid = f" requestId={self.request_id}" if self.request_id else ""
        return f"{self.code}{where}:{status} {self.message}{rid}"

    def to_record(self) -> dict[str, Any]:
        """The error as it goes into a result line."""
        return {
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "requestId": self.request_id,
        }


class RetryableError(ApiError):
    """Trying the same call again later may succeed."""


class ThrottledError(RetryableError):
    """The API's rate limit was hit (HTTP 429 / ``REQUEST_LIMIT_EXCEEDED``)."""


class InstanceBusyError(RetryableError):
    """The instance is busy with another operation; try again later."""


class TransientServerError(RetryableError):
    """A server-side failure that usually clears (5xx)."""


class ConnectError(RetryableError):
    """The connection could not be made; the request never reached the server."""


class LostAnswerError(RetryableError):
    """A read reached the server (maybe) but its answer was lost, cut or unreadable.

    A read changes nothing, so unlike :class:`AmbiguousError` there is nothing to look up
    before asking again.
    """


class AmbiguousError(RetryableError):
    """A write may have reached the server and been applied; its outcome is unknown."""

    may_have_committed = True


class PermanentJobError(ApiError):
    """This job cannot succeed as asked; retrying will not help."""


class FatalRunError(ApiError):
    """No further job can succeed; the run must stop."""


class AuthenticationError(FatalRunError):
    """The credentials were refused (``AUTHFAILURE_*``)."""


class QuotaExceededError(FatalRunError):
    """The account's custom-image quota is reached."""


_BY_CODE: dict[str, type[ApiError]] = {
    "REQUEST_LIMIT_EXCEEDED": ThrottledError,
    "OPERATION_DENIED_INSTANCE_IN_OPERATION": InstanceBusyError,
    "INTERNAL_SERVER_ERROR": TransientServerError,
    "SERVICE_TEMPORARY_UNAVAILABLE": TransientServerError,
    "INVALID_IMAGE_QUOTA_EXCEED": QuotaExceededError,
}


class _TimedOutError(TransientServerError):
    """``REQUEST_TIMED_OUT``: the server gave up, possibly after applying the write."""

    may_have_committed = True


def error_from_response(
    status: int,
    code: str,
    message: str,
    request_id: str | None,
    action: str | None,
    *,
    retry_after: float | None = None,
) -> ApiError:
    """Map an API error envelope to the class the scheduler acts on.

    Args:
        status: HTTP status of the answer.
        code: the envelope's ``code``.
        message: the envelope's ``message``.
        request_id: the envelope's ``requestId``.
        action: the action that was called.
        retry_after: seconds from the answer's ``Retry-After``; kept only on a throttling error.
    """
    cls: type[ApiError]
    if code == "REQUEST_TIMED_OUT":
        cls = _TimedOutError if is_write_action(action) else TransientServerError
    elif code.startswith("AUTHFAILURE_"):
        cls = AuthenticationError
    elif code in _BY_CODE:
        cls = _BY_CODE[code]
    elif status == 429:
        cls = ThrottledError
    elif status >= 500:
        cls = TransientServerError
    else:
        cls = PermanentJobError
    if not issubclass(cls, ThrottledError):
        retry_after = None
    return cls(code, message, status=status, request_id=request_id, action=action, retry_after=retry_after)
