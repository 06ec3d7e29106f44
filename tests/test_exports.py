"""The public API is what __all__ says, sorted, and every name exists."""

from __future__ import annotations

import batch
import batch.fake


def test_all_is_sorted_and_complete() -> None:
    """Every exported name resolves and the list is kept sorted."""
    for module in (batch, batch.fake):
        assert list(module.__all__) == sorted(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), name


def test_exported_members() -> None:
    """Pin the top-level API so changes to it are deliberate."""
    assert set(batch.__all__) == {
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
    }
