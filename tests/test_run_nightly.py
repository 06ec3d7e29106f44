"""``imagebatch run`` for scheduled runs: --select, --metrics-file, --output json, JSON progress lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from batch.fake import FakeInstance

from .conftest import CLI_ENV, FakeFactory, run_cli, write_csv

pytestmark = pytest.mark.anyio

ENV = CLI_ENV
FAST = ["--backoff-base", "0.05", "--backoff-cap", "0.2", "--lookup-delay", "0.1", "--rate", "200"]


async def _run(*argv: str) -> tuple[int, str, str]:
    """``imagebatch run ARGV`` in its own process."""
    return await run_cli("run", *argv)


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for s in family.samples:
            extra = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("policy", "job_name")))
            found[s.name, extra] = s.value
    return found


def _tagged(n: int, tag: str | None) -> list[FakeInstance]:
    tags = [{"key": "backup", "value": tag}] if tag else []
    return [FakeInstance(f"i-{tag or 'none'}-{k}", tags=list(tags)) for k in range(n)]


async def test_select_images_the_tagged_instances_and_resume_keeps_them(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--select tag:K=V images exactly the tagged instances; the run keeps them as its list, and the same
    command with --resume acts on that list even after the tags changed."""
    fake = await make_fake(_tagged(3, "nightly") + _tagged(2, "weekly") + _tagged(2, None))
    out = tmp_path / "run"
    code, _, err = await _run(
        "--select", "tag:backup=nightly", "--endpoint", fake.url, "--out", str(out), "--quiet", *FAST
    )
    assert code == 0, err
    assert "--select: 3 instances" in err
    done = {json.loads(line)["instanceId"] for line in (out / "results.jsonl").read_text().splitlines()}
    assert done == {"i-nightly-0", "i-nightly-1", "i-nightly-2"}
    assert set(fake.inspect()["createdPerInstance"]) == done
    copy = next(out.glob("job-list.*"))
    assert "i-nightly-0" in copy.read_text()
    assert "i-weekly-0" not in copy.read_text()
    # tags change after the run started; the same command line again resumes the run's own list
    fake.cloud.instances["i-weekly-0"].tags = [{"key": "backup", "value": "nightly"}]
    code, _, err = await _run(
        "--select", "tag:backup=nightly", "--endpoint", fake.url, "--out", str(out), "--resume", "--quiet", *FAST
    )
    assert code == 0, err
    assert "not resolved again" in err
    assert "i-weekly-0" not in fake.inspect()["createdPerInstance"]
    code, _, err = await _run("--endpoint", fake.url, "--out", str(out), "--resume", "--quiet", *FAST)
    assert code == 0, err


async def test_select_and_a_job_list_together_are_refused(make_fake: FakeFactory, tmp_path: Path) -> None:
    """A JOBLIST and --select together are a usage error (exit 2, nothing sent)."""
    fake = await make_fake(_tagged(1, "nightly"))
    jobs = write_csv(tmp_path / "jobs.csv", ["i-nightly-0"])
    code, _, err = await _run(str(jobs), "--select", "zone:SEL-A", "--endpoint", fake.url, "--out", str(tmp_path / "r"))
    assert code == 2
    assert "not both" in err
    assert sum(fake.inspect()["calls"].values()) == 0


async def test_metrics_file_of_a_run(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--metrics-file leaves the run's final numbers: jobs by status, requests, exit code, last success."""
    fake = await make_fake([FakeInstance(f"i-{k}") for k in range(4)] + [FakeInstance("i-run", status="RUNNING")])
    jobs = write_csv(tmp_path / "jobs.csv", [f"i-{k}" for k in range(4)])
    prom = tmp_path / "imagebatch.prom"
    code, _, err = await _run(
        str(jobs),
        "--endpoint",
        fake.url,
        "--out",
        str(tmp_path / "ok"),
        "--quiet",
        "--metrics-file",
        str(prom),
        "--job-name",
        "nightly",
        *FAST,
    )
    assert code == 0, err
    first = _samples(prom)
    assert first["imagebatch_jobs", (("status", "succeeded"),)] == 4
    assert first["imagebatch_jobs", (("status", "pending"),)] == 0
    assert first["imagebatch_api_requests_total", (("action", "CreateImage"), ("code", "OK"))] == 4
    assert first["imagebatch_run_exit_code", ()] == 0
    assert first["imagebatch_run_running", ()] == 0
    success = first["imagebatch_last_success_timestamp_seconds", ()]
    assert 'job_name="nightly"' in prom.read_text()
    # a failing run keeps the last success of the one before
    bad = write_csv(tmp_path / "bad.csv", ["i-run"])
    code, _, _ = await _run(
        str(bad),
        "--endpoint",
        fake.url,
        "--out",
        str(tmp_path / "bad"),
        "--quiet",
        "--metrics-file",
        str(prom),
        "--job-name",
        "nightly",
        *FAST,
    )
    assert code == 1
    second = _samples(prom)
    assert second["imagebatch_jobs", (("status", "failed"),)] == 1
    assert second["imagebatch_run_exit_code", ()] == 1
    assert second["imagebatch_last_success_timestamp_seconds", ()] == success


async def test_metrics_file_in_a_missing_directory_is_bad_input(make_fake: FakeFactory, tmp_path: Path) -> None:
    """A metrics file whose directory is missing is exit 2 before any call."""
    fake = await make_fake([FakeInstance("i-1")])
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1"])
    code, _, err = await _run(
        str(jobs),
        "--endpoint",
        fake.url,
        "--out",
        str(tmp_path / "r"),
        "--metrics-file",
        str(tmp_path / "nope" / "x.prom"),
    )
    assert code == 2
    assert "nope" in err
    assert sum(fake.inspect()["calls"].values()) == 0


async def test_output_json_prints_the_summary_only(make_fake: FakeFactory, tmp_path: Path) -> None:
    """run --output json prints one JSON document, the summary, and nothing else on stdout."""
    fake = await make_fake([FakeInstance("i-1"), FakeInstance("i-2")])
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1", "i-2"])
    code, out, _ = await _run(
        str(jobs), "--endpoint", fake.url, "--out", str(tmp_path / "r"), "--quiet", "--output", "json", *FAST
    )
    assert code == 0
    summary = json.loads(out)
    assert summary == json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["byStatus"]["succeeded"] == 2


async def test_json_progress_lines_off_a_terminal(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--log-format json writes progress as JSON objects, one a line, on stderr."""
    fake = await make_fake([FakeInstance(f"i-{k}") for k in range(3)])
    jobs = write_csv(tmp_path / "jobs.csv", [f"i-{k}" for k in range(3)])
    code, _, err = await _run(
        str(jobs),
        "--endpoint",
        fake.url,
        "--out",
        str(tmp_path / "r"),
        "--log-format",
        "json",
        "--progress-interval",
        "1",
        *FAST,
    )
    assert code == 0
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert records
    assert all(r["event"] == "progress" for r in records)
    assert records[-1]["phase"] == "ended"
    assert records[-1]["ended"] == 3


async def test_verbose_tells_each_retry_and_failure(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--verbose prints a line on stderr for each retry and failed job; without it, none."""
    fake = await make_fake([FakeInstance("i-1", busy_until=1.5), FakeInstance("i-run", status="RUNNING")])
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1", "i-run"])
    code, _, err = await _run(
        str(jobs), "--endpoint", fake.url, "--out", str(tmp_path / "v"), "--quiet", "--verbose", *FAST
    )
    assert code == 1
    assert "job.retry_scheduled instanceId=i-1 code=OPERATION_DENIED_INSTANCE_IN_OPERATION" in err
    assert "job.ended instanceId=i-run status=failed" in err
    code, _, err = await _run(str(jobs), "--endpoint", fake.url, "--out", str(tmp_path / "q"), "--quiet", *FAST)
    assert "job.retry_scheduled" not in err


async def test_metrics_of_a_resume_of_a_finished_run_keep_its_counts(make_fake: FakeFactory, tmp_path: Path) -> None:
    """Resuming a finished run that had a failure rewrites the metrics with the run's counts, not zeros."""
    fake = await make_fake([FakeInstance("i-1"), FakeInstance("i-run", status="RUNNING")])
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1", "i-run"])
    prom = tmp_path / "imagebatch.prom"
    out = tmp_path / "r"
    flags = ["--endpoint", fake.url, "--out", str(out), "--quiet", "--metrics-file", str(prom), *FAST]
    code, _, _ = await _run(str(jobs), *flags)
    assert code == 1
    code, _, _ = await _run("--resume", *flags)
    assert code == 1
    samples = _samples(prom)
    assert samples["imagebatch_jobs", (("status", "failed"),)] == 1
    assert samples["imagebatch_jobs", (("status", "succeeded"),)] == 1
    assert samples["imagebatch_jobs", (("status", "pending"),)] == 0
    assert samples["imagebatch_run_exit_code", ()] == 1


async def test_json_log_format_makes_every_stderr_line_json(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--log-format json --verbose: progress, notices and verbose lines on stderr all parse as JSON."""
    fake = await make_fake([FakeInstance("i-1", busy_until=1.0), FakeInstance("i-run", status="RUNNING")])
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1", "i-run"])
    code, _, err = await _run(
        str(jobs),
        "--endpoint",
        fake.url,
        "--out",
        str(tmp_path / "r"),
        "--log-format",
        "json",
        "--verbose",
        "--progress-interval",
        "1",
        *FAST,
    )
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert {p["event"] for p in parsed} >= {"progress", "notice"}
    assert any("job.retry_scheduled" in p.get("message", "") for p in parsed)


async def test_metrics_after_kill_9_keep_the_last_write(make_fake: FakeFactory, tmp_path: Path) -> None:
    """A run killed with -9 leaves its last write: imagebatch_run_running 1 and no exit code."""
    import signal
    import subprocess

    fake = await make_fake([FakeInstance(f"i-{k}") for k in range(50)])
    jobs = write_csv(tmp_path / "jobs.csv", [f"i-{k}" for k in range(50)])
    prom = tmp_path / "imagebatch.prom"
    argv = [
        sys.executable,
        "-m",
        "batch",
        "run",
        str(jobs),
        "--endpoint",
        fake.url,
        "--out",
        str(tmp_path / "r"),
        "--quiet",
        "--metrics-file",
        str(prom),
        "--rate",
        "2",
    ]
    child = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        for _ in range(600):
            if prom.exists():
                break
            await anyio.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(child.wait)
    samples = _samples(prom)
    assert samples["imagebatch_run_running", ()] == 1
    assert ("imagebatch_run_exit_code", ()) not in samples
