"""The restart guarantee when a resume is refused.

A resume can be refused before it does anything (the job list given differs from the run's copy,
an option that names the images changed, a damaged copy): exit 2, bad input. If the run it was
asked to continue had stopped instances that it did not see RUNNING again (a kill -9 in the
middle of ``--stop-running``), refusing must not leave them down until someone notices: they are
started first, with the credentials and the API the resume was given, then the refusal is told.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from ..client import ZecClient
from ..credentials import DEFAULT_ENDPOINT, Credentials
from ..errors import ApiError, ImagebatchError
from ..journal import JOURNAL_FILE, RunDirectory, read_journal
from ..options import RunOptions
from ..power import PowerLedger, restore_power

__all__ = ["restore_before_refusal"]


async def restore_before_refusal(
    directory: RunDirectory,
    *,
    credentials: Credentials | None,
    endpoint: str | None,
    options: RunOptions,
    client_factory: Callable[..., ZecClient],
    notice: Callable[[str], None],
) -> list[str]:
    """Start the instances a refused resume's run stopped and did not see RUNNING again.

    Nothing is done unless this process holds the directory's lock (another process that holds
    it does its own restore) and the run's journal owes starts (and the run was not
    ``--leave-stopped``).

    Args:
        directory: the run directory the resume was refused for.
        credentials: the resume's credentials.
        endpoint: the API the resume was given (``None``: the run's own).
        options: the resume's options (timeouts).
        client_factory: makes the API client.
        notice: tells the user (stderr).

    Returns:
        The instances still not RUNNING (empty when nothing was owed or all are RUNNING).
    """
    if not directory.locked or credentials is None:
        return []
    try:
        state = read_journal(directory.file(JOURNAL_FILE))
    except (ImagebatchError, OSError, ValueError):
        return []
    try:
        header = directory.read_header()
    except (ImagebatchError, OSError, ValueError):
        header = None  # a damaged run.json: the journal still says what the run stopped
    if header is not None and header.options.get("leave_stopped"):
        return []
    owed = sorted(state.stopped - state.started)
    if not owed:
        return []
    shown = ", ".join(owed[:10]) + (f" and {len(owed) - 10} more" if len(owed) > 10 else "")
    notice(f"the run stopped {len(owed)} instance(s) it has not seen RUNNING again; starting them first: {shown}")
    ledger = PowerLedger(record_started=_nothing)
    for instance_id in owed:
        ledger.stopped[instance_id] = 0.0
    client = client_factory(
        endpoint or (header.endpoint if header is not None else None) or DEFAULT_ENDPOINT,
        credentials,
        connect_timeout=options.connect_timeout,
        total_timeout=options.total_timeout,
    )
    try:
        async with client:
            deadline = anyio.current_time() + options.start_timeout
            left = await restore_power(client, ledger, deadline=deadline, interval=min(options.poll_interval, 5.0))
    except ApiError as err:
        notice(f"could not start them: {err.code}: {err.message}")
        return owed
    if left:
        notice(f"still not RUNNING: {', '.join(left[:10])}; start them by hand or resume the run once it can be")
    else:
        notice("they are RUNNING again")
    return left


def _nothing(_instance_id: Any) -> None:
    """The refused resume writes nothing into the run's journal: a later resume looks again."""
