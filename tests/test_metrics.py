"""The metrics file: Prometheus text format, the carried-over last success, atomic rewrites, the ticker."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from batch.errors import UsageError
from batch.metrics import LAST_SUCCESS, MetricsFile, MetricsSnapshot, MetricsTicker, previous_success

LABELS = {"policy": "default", "job_name": "nightly"}


def read_samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics file, by name and its labels other than policy/job_name."""
    samples = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            assert {k: sample.labels[k] for k in LABELS} == LABELS, sample
            extra = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in LABELS))
            samples[sample.name, extra] = sample.value
    return samples


def metrics_file(path: Path, **labels: str) -> MetricsFile:
    """A metrics file with the test's labels (or others)."""
    chosen = {**LABELS, **labels}
    return MetricsFile(path, job_name=chosen["job_name"], policy=chosen["policy"])


def test_the_file_parses_and_holds_every_number_of_the_snapshot(tmp_path: Path) -> None:
    """Each snapshot field lands in its series, with the policy and job_name labels."""
    path = tmp_path / "imagebatch.prom"
    snapshot = MetricsSnapshot(
        now=1_700_000_000.5,
        duration_seconds=42.25,
        jobs={"succeeded": 7, "failed": 2, "pending": 3},
        requests={("CreateImage", "OK"): 9, ("CreateImage", "REQUEST_LIMIT_EXCEEDED"): 4, ("StopInstances", "OK"): 1},
        retries=5,
        throttled=4,
        in_flight=6,
        instances_stopped=2,
        instances_left_stopped=1,
        exit_code=1,
    )
    metrics_file(path).write(snapshot)
    samples = read_samples(path)
    assert samples == {
        ("imagebatch_jobs", (("status", "failed"),)): 2,
        ("imagebatch_jobs", (("status", "interrupted"),)): 0,
        ("imagebatch_jobs", (("status", "pending"),)): 3,
        ("imagebatch_jobs", (("status", "skipped"),)): 0,
        ("imagebatch_jobs", (("status", "succeeded"),)): 7,
        ("imagebatch_jobs", (("status", "unknown"),)): 0,
        ("imagebatch_api_requests_total", (("action", "CreateImage"), ("code", "OK"))): 9,
        ("imagebatch_api_requests_total", (("action", "CreateImage"), ("code", "REQUEST_LIMIT_EXCEEDED"))): 4,
        ("imagebatch_api_requests_total", (("action", "StopInstances"), ("code", "OK"))): 1,
        ("imagebatch_retries_total", ()): 5,
        ("imagebatch_throttled_total", ()): 4,
        ("imagebatch_requests_in_flight", ()): 6,
        ("imagebatch_instances_stopped", ()): 2,
        ("imagebatch_instances_left_stopped", ()): 1,
        ("imagebatch_run_duration_seconds", ()): 42.25,
        ("imagebatch_run_running", ()): 0,
        ("imagebatch_run_exit_code", ()): 1,
        ("imagebatch_last_run_timestamp_seconds", ()): 1_700_000_000.5,
    }
    assert not list(tmp_path.glob("*.prom.*")), "the temporary file is renamed, never left behind"


def test_a_running_run_has_no_exit_code_and_says_it_runs(tmp_path: Path) -> None:
    """While the run goes on, imagebatch_run_running is 1 and no exit code or success is written."""
    path = tmp_path / "imagebatch.prom"
    metrics_file(path).write(MetricsSnapshot(now=10.0, duration_seconds=1.0))
    samples = read_samples(path)
    assert samples["imagebatch_run_running", ()] == 1
    assert ("imagebatch_run_exit_code", ()) not in samples
    assert (LAST_SUCCESS, ()) not in samples


@pytest.mark.parametrize(
    ("previous", "exit_code", "expected"),
    [
        pytest.param(None, 0, 2000.0, id="first-run-succeeds"),
        pytest.param(None, 1, None, id="first-run-fails-no-success-known"),
        pytest.param(1000.0, 1, 1000.0, id="failed-run-carries-the-last-success-over"),
        pytest.param(1000.0, None, 1000.0, id="running-run-carries-the-last-success-over"),
        pytest.param(1000.0, 3, 1000.0, id="stopped-early-carries-it-over"),
        pytest.param(1000.0, 0, 2000.0, id="success-replaces-it"),
    ],
)
def test_the_last_success_is_carried_over_unless_this_run_succeeds(
    tmp_path: Path, previous: float | None, exit_code: int | None, expected: float | None
) -> None:
    """The last success time is this run's when it ended with 0, else the previous file's."""
    path = tmp_path / "imagebatch.prom"
    if previous is not None:
        metrics_file(path).write(MetricsSnapshot(now=previous, duration_seconds=1.0, exit_code=0))
    metrics_file(path).write(MetricsSnapshot(now=2000.0, duration_seconds=1.0, exit_code=exit_code))
    assert read_samples(path).get((LAST_SUCCESS, ())) == expected
    assert read_samples(path)["imagebatch_last_run_timestamp_seconds", ()] == 2000.0


def test_the_last_success_survives_many_failed_runs_and_the_file_being_deleted_mid_run(tmp_path: Path) -> None:
    """Three failed runs in a row keep the success of the run before them, even if a write finds no file."""
    path = tmp_path / "imagebatch.prom"
    metrics_file(path).write(MetricsSnapshot(now=100.0, duration_seconds=1.0, exit_code=0))
    for night in range(1, 4):
        run = metrics_file(path)
        run.write(MetricsSnapshot(now=100.0 + night, duration_seconds=1.0))
        path.unlink()
        run.write(MetricsSnapshot(now=100.5 + night, duration_seconds=2.0, exit_code=1))
    assert read_samples(path)[LAST_SUCCESS, ()] == 100.0


@pytest.mark.parametrize(
    ("content", "labels"),
    [
        pytest.param("this is { not prometheus\n", LABELS, id="unparsable"),
        pytest.param(b"\xff\xfe", LABELS, id="not-utf8"),
        pytest.param(None, {"policy": "weekly", "job_name": "nightly"}, id="other-policy"),
        pytest.param(None, {"policy": "default", "job_name": "weekly"}, id="other-job-name"),
    ],
)
def test_no_success_is_carried_from_a_bad_file_or_other_labels(
    tmp_path: Path, content: str | bytes | None, labels: dict[str, str]
) -> None:
    """A previous file that cannot be read, or of another job or policy, gives no last success."""
    path = tmp_path / "imagebatch.prom"
    if content is None:
        metrics_file(path).write(MetricsSnapshot(now=100.0, duration_seconds=1.0, exit_code=0))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    assert previous_success(path, job_name=labels["job_name"], policy=labels["policy"]) is None
    metrics_file(path, **labels).write(MetricsSnapshot(now=200.0, duration_seconds=1.0, exit_code=1))
    assert LAST_SUCCESS not in path.read_text(encoding="utf-8")


def test_label_values_are_escaped(tmp_path: Path) -> None:
    """A job name with quotes, backslashes and a line break still gives a file that parses back to it."""
    path = tmp_path / "imagebatch.prom"
    name = 'night "A"\\B\nC'
    MetricsFile(path, job_name=name, policy="default").write(MetricsSnapshot(now=1.0, duration_seconds=1.0))
    families = list(text_string_to_metric_families(path.read_text(encoding="utf-8")))
    assert {s.labels["job_name"] for f in families for s in f.samples} == {name}


@pytest.mark.parametrize(
    ("name", "job_name", "policy", "message"),
    [
        pytest.param("metrics.txt", "nightly", "default", "must end in .prom", id="wrong-suffix"),
        pytest.param("imagebatch.prom", " ", "default", "--job-name must not be empty", id="empty-job-name"),
        pytest.param("imagebatch.prom", "nightly", "", "policy must not be empty", id="empty-policy"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(
    tmp_path: Path, name: str, job_name: str, policy: str, message: str
) -> None:
    """A file node_exporter would never read, or an empty label, is a usage error."""
    with pytest.raises(UsageError, match=message):
        MetricsFile(tmp_path / name, job_name=job_name, policy=policy)


def test_check_names_a_missing_directory(tmp_path: Path) -> None:
    """check() refuses a file whose directory does not exist, naming the directory."""
    metrics = metrics_file(tmp_path / "absent" / "imagebatch.prom")
    with pytest.raises(UsageError, match="absent' does not exist"):
        metrics.check()
    metrics_file(tmp_path / "imagebatch.prom").check()


def big_snapshot(version: int) -> MetricsSnapshot:
    """A snapshot whose every number is ``version``, with enough series (300 requests) to make a file of ~40 KB."""
    requests = {(f"Action{i}", f"CODE_{j}"): version for i in range(12) for j in range(25)}
    return MetricsSnapshot(
        now=float(version),
        duration_seconds=float(version),
        jobs={"succeeded": version},
        requests=requests,
        retries=version,
        exit_code=0,
    )


def test_a_reader_never_sees_the_file_half_written(tmp_path: Path) -> None:
    """A reader looping while a writer rewrites a large file sees only whole files of a single version."""
    path = tmp_path / "imagebatch.prom"
    metrics = metrics_file(path)
    metrics.write(big_snapshot(0))
    reads = 0
    versions: set[float] = set()
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        # Keep rewriting until the reader has overlapped many writes (bounded, in case it is slow).
        version = 1
        while not stop.is_set() and version < 100_000:
            metrics.write(big_snapshot(version))
            written[0] = version
            version += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while reads < 100 or len(versions) < 5:
            samples = read_samples(path)
            reads += 1
            values = {value for (name, _), value in samples.items() if name != "imagebatch_run_running"}
            version = samples["imagebatch_last_run_timestamp_seconds", ()]
            # Whole and of one version: every series is there and all hold the same number.
            assert values == {version} | {0.0}, f"mixed versions in read {reads}"
            assert sum(1 for name, _ in samples if name == "imagebatch_api_requests_total") == 300
            versions.add(version)
            if written[0] >= 99_999:
                break
    finally:
        stop.set()
        thread.join()
    assert len(versions) >= 5, "the reader saw the file change while it was being rewritten"


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the ticker until ``condition`` holds (the ticker has no event to wait on)."""
    while not condition():  # noqa: ASYNC110 - the ticker's writes are counted, not signalled
        await anyio.sleep(0.005)


@pytest.mark.anyio
async def test_the_ticker_writes_during_the_run_and_the_final_numbers_after_stop(tmp_path: Path) -> None:
    """The ticker rewrites the file while the run goes on, and writes the exit code once stopped."""
    path = tmp_path / "imagebatch.prom"
    state = {"done": 0, "exit": None}

    def snapshot() -> MetricsSnapshot:
        return MetricsSnapshot(
            now=1000.0 + state["done"], duration_seconds=1.0, jobs={"succeeded": state["done"]}, exit_code=state["exit"]
        )

    errors: list[OSError] = []
    ticker = MetricsTicker(metrics_file(path), snapshot, on_error=errors.append, interval=0.01)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        for done in range(1, 4):
            state["done"] = done
            before = ticker.writes
            await until(lambda: ticker.writes > before)  # noqa: B023 - awaited before the loop moves on
            assert read_samples(path)["imagebatch_jobs", (("status", "succeeded"),)] >= done
            assert read_samples(path)["imagebatch_run_running", ()] == 1
        state["exit"] = 0
        ticker.stop()
    samples = read_samples(path)
    assert samples["imagebatch_run_exit_code", ()] == 0
    assert samples[LAST_SUCCESS, ()] == 1003.0
    assert errors == []


@pytest.mark.anyio
async def test_a_cancelled_ticker_still_writes_once_more(tmp_path: Path) -> None:
    """Cancelling the run's task group (a second signal) still leaves the latest numbers in the file."""
    path = tmp_path / "imagebatch.prom"
    state = {"done": 0}
    ticker = MetricsTicker(
        metrics_file(path),
        lambda: MetricsSnapshot(now=1.0, duration_seconds=1.0, jobs={"failed": state["done"]}),
        on_error=lambda exc: None,
        interval=3600,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        await until(lambda: ticker.writes >= 1)
        state["done"] = 5
        tg.cancel_scope.cancel()
    assert ticker.writes == 2
    assert read_samples(path)["imagebatch_jobs", (("status", "failed"),)] == 5


@pytest.mark.anyio
async def test_a_failing_write_is_reported_once_and_never_stops_the_ticker(tmp_path: Path) -> None:
    """Writes into a missing directory are reported once; the ticker goes on and writes when it is back."""
    folder = tmp_path / "textfile"
    path = folder / "imagebatch.prom"
    errors: list[OSError] = []
    calls = [0]

    def snapshot() -> MetricsSnapshot:
        calls[0] += 1
        return MetricsSnapshot(now=float(calls[0]), duration_seconds=1.0)

    ticker = MetricsTicker(metrics_file(path), snapshot, on_error=errors.append, interval=0.005)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        await until(lambda: calls[0] >= 5)
        assert len(errors) == 1
        assert isinstance(errors[0], FileNotFoundError)
        folder.mkdir()
        await until(lambda: ticker.writes >= 1)
        ticker.stop()
    assert len(errors) == 1
    assert path.exists()


def test_the_interval_must_be_positive(tmp_path: Path) -> None:
    """An interval of zero would spin: refused."""
    with pytest.raises(ValueError, match="positive"):
        MetricsTicker(
            metrics_file(tmp_path / "m.prom"),
            lambda: MetricsSnapshot(now=0, duration_seconds=0),
            on_error=print,
            interval=0,
        )


def readme_section(title: str) -> str:
    """The text of a README.md section, from its heading to the next one."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    return text.split(f"\n### {title}", 1)[1].split("\n#", 1)[0]


def test_the_readme_alert_rules_use_only_series_the_file_has(tmp_path: Path) -> None:
    """README's two alert rules parse as a Prometheus rule group and name only series and labels the file has."""
    section = readme_section("Metrics (`--metrics-file`)")
    (block,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    (group,) = yaml.safe_load(block)["groups"]
    rules = {rule["alert"]: rule for rule in group["rules"]}
    assert set(rules) == {"ImagebatchNoRecentSuccess", "ImagebatchRunNeedsAttention"}
    assert "> 26 * 3600" in rules["ImagebatchNoRecentSuccess"]["expr"]
    path = tmp_path / "imagebatch.prom"
    metrics_file(path).write(
        MetricsSnapshot(now=1.0, duration_seconds=1.0, requests={("CreateImage", "OK"): 1}, exit_code=0)
    )
    families = list(text_string_to_metric_families(path.read_text(encoding="utf-8")))
    written = {s.name for f in families for s in f.samples}
    labels = {k for f in families for s in f.samples for k in s.labels}
    named = set(re.findall(r"imagebatch_\w+", block)) | set(re.findall(r"`(imagebatch_\w+)", section))
    assert named <= written, named - written
    assert set(re.findall(r"\$labels\.(\w+)", block)) <= labels
    assert 'status="failed"' in rules["ImagebatchRunNeedsAttention"]["expr"]
    assert "imagebatch_instances_left_stopped > 0" in rules["ImagebatchRunNeedsAttention"]["expr"]
