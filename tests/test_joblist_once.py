"""A short valid job list is read once: the run takes the jobs its validation read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from batch.errors import JobListError
from batch.options import RunOptions
from batch.run import Run
from batch.sources import JobList, joblist

from .conftest import CREDS, FakeFactory, instances, write_csv

DATE = datetime(2026, 11, 30, tzinfo=UTC)

LISTS = {
    "jobs.csv": "instanceId,tags\n i-1 ,a=1\n\ni-2,\ni-3,b=2;c=3\n",
    "jobs.jsonl": '{"instanceId": "i-1", "tags": "a=1"}\n\n{"instanceId": "i-2"}\n'
    '{"instanceId": "i-3", "imageName": "n3"}\n',
    "jobs.json": '{"defaults": {"tags": {"team": "x"}},\n "jobs": [\n  {"instanceId": "i-1"},\n'
    '  {"instanceId": "i-2"},\n  {"instanceId": "i-3", "tags": {"team": "y"}}\n ]}\n',
}


@pytest.mark.parametrize("name", [pytest.param(n, id=n.split(".")[1]) for n in LISTS])
def test_kept_jobs_are_the_jobs_a_second_read_would_give(tmp_path: Path, name: str) -> None:
    """The jobs kept from validation equal, line numbers and defaults included, those read from the file."""
    path = tmp_path / name
    path.write_text(LISTS[name], encoding="utf-8")
    validated = JobList(path, date=DATE, run_id="r1")
    assert validated.validate().jobs == 3
    assert list(validated) == list(JobList(path, date=DATE, run_id="r1"))


def test_after_validation_the_file_is_not_read_again(tmp_path: Path) -> None:
    """Once validated, iterating gives the validated jobs even if the file is gone."""
    path = tmp_path / "jobs.csv"
    path.write_text(LISTS["jobs.csv"], encoding="utf-8")
    jobs = JobList(path, date=DATE)
    assert jobs.validate().ok
    path.unlink()
    assert [j.instance_id for j in jobs] == ["i-1", "i-2", "i-3"]
    assert [j.instance_id for j in jobs] == ["i-1", "i-2", "i-3"]  # as often as asked


def test_a_list_longer_than_the_bound_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past KEEP_JOBS jobs nothing is kept (memory stays flat): the jobs come from the file again."""
    monkeypatch.setattr(joblist, "KEEP_JOBS", 2)
    path = tmp_path / "jobs.csv"
    path.write_text(LISTS["jobs.csv"], encoding="utf-8")
    jobs = JobList(path, date=DATE)
    assert jobs.validate().jobs == 3
    assert jobs._kept is None
    path.write_text("instanceId\ni-9\n", encoding="utf-8")
    assert [j.instance_id for j in jobs] == ["i-9"]


def test_a_list_with_a_problem_keeps_nothing(tmp_path: Path) -> None:
    """A list that failed validation keeps no job: iterating reads the file and names the bad row."""
    path = tmp_path / "jobs.csv"
    path.write_text("instanceId\ni-1\nnot an id\n", encoding="utf-8")
    jobs = JobList(path, date=DATE)
    assert not jobs.validate().ok
    with pytest.raises(JobListError, match=r"jobs.csv:3"):
        list(jobs)


@pytest.mark.anyio
async def test_rows_appended_to_a_kept_copy_are_never_read(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A run whose list was kept from its validation acts on those jobs only: rows appended to its
    copy mid-run are neither read nor sent, and the run ends normally."""
    ids = [f"i-{n}" for n in range(40)]
    extra = [f"x-{n}" for n in range(10)]
    fake = await make_fake(instances(*ids, *extra))
    run = Run(
        write_csv(tmp_path / "jobs.csv", ids),
        tmp_path / "run",
        RunOptions(rate=20, seed=1),
        credentials=CREDS,
        endpoint=fake.url,
    )

    async def grow_the_copy() -> None:
        # Polls outside state (a file, the fake's counters): there is no event to wait on.
        while not fake.calls.get("CreateImage"):  # noqa: ASYNC110
            await anyio.sleep(0.01)
        with (tmp_path / "run" / "job-list.csv").open("a") as handle:
            handle.write("".join(f"{i}\n" for i in extra))

    async with anyio.create_task_group() as tg:
        tg.start_soon(grow_the_copy)
        outcome = await run.execute()
    assert outcome.exit_code == 0
    assert outcome.summary["jobs"] == 40
    created = fake.inspect()["createdPerInstance"]
    assert sorted(created) == sorted(ids)
