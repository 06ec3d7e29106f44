"""imagebatch benchmarks: how close to the API's limit, against what users would use instead.

Every scenario runs against the fake Zenlayer server on loopback, started here in its own
process, so the client's CPU and memory are measured alone (``os.wait4`` rusage of the client
process). Each figure is the median of ``--repeat`` runs, and every ratio compares tools
measured in the same invocation on the same machine.

    python benchmarks/run.py             # full run (about 55 minutes on 2 cores)
    python benchmarks/run.py --quick     # smoke test of the harness (about a minute)
    python benchmarks/run.py --only 8    # CPU that follows the work: paced, waiting, start-up

Needs the ``bench`` extra: ``pip install -e '.[bench]'`` (the official SDK for the baselines).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from batch.fake.fleet import fleet_from_count, instance_id  # noqa: E402

PY = sys.executable
ENV = {
    **os.environ,
    "ZENLAYER_ACCESS_KEY_ID": "fake-access-key-id",
    "ZENLAYER_ACCESS_KEY_SECRET": "fake-access-key-secret",
}
# Measured as installed: pip compiles an installed package's bytecode, and the baselines'
# libraries have theirs. Without this an editable checkout recompiles imagebatch at every start
# (about 70 ms of CPU, a third of its start-up), which no user pays.
ENV.pop("PYTHONDONTWRITEBYTECODE", None)


@dataclass
class Measured:
    """One client process: wall seconds, CPU seconds, peak RSS, exit code, output, what the fake saw."""

    wall: float
    cpu: float
    rss_mb: float
    returncode: int
    stdout: str
    timed_out: bool = False
    seen: dict[str, Any] = field(default_factory=dict)


def run_child(argv: list[str], *, timeout: float = 3600) -> Measured:
    """Run a client process and measure it with wait4 (its own rusage, not the harness's)."""
    with tempfile.TemporaryFile("w+") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, env=ENV, cwd=HERE.parent)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if not timed_out and time.monotonic() > started + timeout:
                timed_out = True
                proc.kill()
            time.sleep(0.01)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        return Measured(wall, cpu, usage.ru_maxrss / 1024, proc.returncode, out.read(), timed_out)


class Fake:
    """``imagebatch fake-server`` in its own process."""

    def __init__(self, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "batch", "fake-server", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=HERE.parent,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            msg = "fake server did not start"
            raise RuntimeError(msg)

    def inspect(self) -> dict[str, Any]:
        """What the fake has seen (``/_fake/inspect``)."""
        with urllib.request.urlopen(f"{self.url}/_fake/inspect", timeout=120) as resp:
            return json.load(resp)  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Stop the fake and reap it."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)


@contextmanager
def fake_server(*flags: str) -> Iterator[Fake]:
    fake = Fake(*flags)
    try:
        yield fake
    finally:
        fake.stop()


def write_jobs(path: Path, count: int) -> Path:
    """A CSV job list of the fake's first ``count`` instances."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instanceId"])
        for n in range(1, count + 1):
            writer.writerow([instance_id(n)])
    return path


# ----- the tools -------------------------------------------------------------------------------


def imagebatch(jobs: Path, url: str, work: Path, *, rate: float, concurrency: int = 8) -> list[str]:
    out = tempfile.mkdtemp(dir=work)
    return [
        PY,
        "-m",
        "batch",
        "run",
        str(jobs),
        "--endpoint",
        url,
        "--out",
        out,
        "--rate",
        str(rate),
        "--concurrency",
        str(concurrency),
        "--quiet",
    ]


def sdk(jobs: Path, url: str, _work: Path, *, mode: str, concurrency: int = 8) -> list[str]:
    return [
        PY,
        str(HERE / "baseline_sdk.py"),
        str(jobs),
        "--endpoint",
        url,
        "--mode",
        mode,
        "--concurrency",
        str(concurrency),
    ]


def bare(jobs: Path, url: str, _work: Path, *, concurrency: int = 8, rate: float | None = None) -> list[str]:
    argv = [PY, str(HERE / "baseline_aiohttp.py"), str(jobs), "--endpoint", url, "--concurrency", str(concurrency)]
    return argv + (["--rate", str(rate)] if rate is not None else [])


Tool = Callable[[Path, str, Path], list[str]]


def measure(
    tool: Tool, jobs: Path, work: Path, fake_flags: list[str], repeat: int, time_limit: float = 3600
) -> list[Measured]:
    runs = []
    for _ in range(repeat):
        with fake_server(*fake_flags) as fake:
            measured = run_child(tool(jobs, fake.url, work), timeout=time_limit)
            measured.seen = fake.inspect()
        runs.append(measured)
    return runs


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def succeeded(m: Measured) -> int:
    return sum(1 for n in m.seen.get("createdPerInstance", {}).values() if n >= 1)


def load(runs: list[Measured], jobs: int) -> dict[str, str]:
    """What a tool costs: client CPU per job, API requests per job (429s included), 429 answers."""
    calls = median([sum(r.seen.get("calls", {}).values()) / jobs for r in runs])
    throttled = median([float(r.seen.get("codes", {}).get("REQUEST_LIMIT_EXCEEDED", 0)) for r in runs])
    return {
        "CPU ms/job": f"{median([r.cpu for r in runs]) * 1000 / jobs:.3f}",
        "calls/job": f"{calls:.2f}",
        "429s": f"{throttled:.0f}",
    }


def share_429_after(m: Measured, skip_seconds: int) -> float:
    timeline = m.seen.get("timeline", [])[skip_seconds:]
    total = sum(t[0] for t in timeline)
    return sum(t[1] for t in timeline) / total if total else 0.0


# ----- scenarios -------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    tool: str
    figures: dict[str, str]


def compare(
    title: str,
    tools: dict[str, Tool],
    jobs: Path,
    work: Path,
    flags: list[str],
    repeat: int,
    figures: Callable[[list[Measured], float], dict[str, str]],
    *,
    time_limit: float = 3600,
) -> list[Row]:
    """Run every tool on the same scenario; each row gets the scenario's figures and the load.

    A run still going after ``time_limit`` seconds is killed and measured as it stands (its
    ``done`` shows how far it got).
    """
    n = int(flags[flags.index("--instances") + 1])
    rows, walls = [], {}
    for name, tool in tools.items():
        runs = measure(tool, jobs, work, flags, repeat, time_limit)
        wall = median([r.wall for r in runs])
        walls[name] = wall
        row = Row(title, name, {"wall s": f"{wall:.1f}", **figures(runs, wall), **load(runs, n)})
        killed = sum(1 for r in runs if r.wall >= time_limit)
        if killed:
            row.figures["stopped"] = f"{killed}/{len(runs)} runs killed at {time_limit:.0f} s"
        rows.append(row)
    base = walls.get("imagebatch")
    for row in rows:
        if base and row.tool != "imagebatch":
            at_least = ">=" if "stopped" in row.figures else ""  # a killed run would have taken longer
            row.figures["imagebatch speed-up"] = f"{at_least}{walls[row.tool] / base:.2f}x"
    return rows


def scenario_rate_bound(size: dict[str, Any], work: Path, repeat: int, tools: dict[str, Tool]) -> list[Row]:
    n, limit = size["jobs"], size["limit"]
    flags = ["--instances", str(n), "--rate-limit", str(limit), "--image-ready-seconds", "1"]

    def figures(runs: list[Measured], wall: float) -> dict[str, str]:
        return {
            "efficiency": f"{(n / limit) / wall:.3f}",
            "target": ">= 0.95",
            "done": f"{median([float(succeeded(r)) for r in runs]):.0f}/{n}",
        }

    return compare("1 rate-bound", tools, write_jobs(work / "s1.csv", n), work, flags, repeat, figures)


def scenario_busy(size: dict[str, Any], work: Path, repeat: int, tools: dict[str, Tool]) -> list[Row]:
    n, limit, busy_s = size["jobs"], size["limit"], size["busy_seconds"]
    busy = sum(1 for i in fleet_from_count(n, busy_fraction=0.3, busy_max_seconds=busy_s, seed=0) if i.busy_until)
    bound = (n + busy) / limit
    flags = ["--instances", str(n), "--rate-limit", str(limit), "--image-ready-seconds", "1"]
    flags += ["--busy-fraction", "0.3", "--busy-max-seconds", str(busy_s)]

    def figures(runs: list[Measured], wall: float) -> dict[str, str]:
        return {
            "wall/limit": f"{wall / bound:.3f}",
            "target": "<= 1.10, 0 failed",
            "failed": f"{n - median([float(succeeded(r)) for r in runs]):.0f}",
            "limit s": f"{bound:.1f}",
        }

    return compare("2 busy 30%", tools, write_jobs(work / "s2.csv", n), work, flags, repeat, figures)


def scenario_over_limit(
    title: str, size: dict[str, Any], work: Path, repeat: int, tools: dict[str, Tool], *, target: str
) -> list[Row]:
    """A client sending faster than the server's limit: how soon and how well it settles.

    ``size`` holds ``jobs``, the server's ``limit`` and, optionally, its token-bucket ``burst``
    (the fake's default is one second of ``limit``; a small bucket forgives no burst).
    """
    n, limit, burst = size["jobs"], size["limit"], size.get("burst")
    flags = ["--instances", str(n), "--rate-limit", str(limit), "--image-ready-seconds", "1"]
    if burst is not None:
        flags += ["--burst", str(burst)]

    def figures(runs: list[Measured], _wall: float) -> dict[str, str]:
        return {
            "429 share after 5 s": f"{median([share_429_after(r, 5) for r in runs]):.3f}",
            "goodput/limit": f"{median([succeeded(r) / r.wall / limit for r in runs]):.3f}",
            "target": target,
            "done": f"{median([float(succeeded(r)) for r in runs]):.0f}/{n}",
        }

    # A baseline that cannot keep up (the SDK sleeps 1 s after each 429) is stopped at 3x the
    # ideal time: its goodput and 429 share are as telling by then.
    jobs = write_jobs(work / f"over-{limit}-{burst}-{n}.csv", n)
    return compare(title, tools, jobs, work, flags, repeat, figures, time_limit=3 * n / limit + 30)


def scenario_overhead(size: dict[str, Any], work: Path, repeat: int, tools: dict[str, Tool]) -> list[Row]:
    n = size["jobs"]
    flags = ["--instances", str(n), "--image-ready-seconds", "1"]

    def figures(runs: list[Measured], _wall: float) -> dict[str, str]:
        return {"jobs/s": f"{median([n / r.wall for r in runs]):.0f}", "target": "imagebatch <= 0.25 ms, >= 0.8x bare"}

    rows = compare("4 overhead", tools, write_jobs(work / "s4.csv", n), work, flags, repeat, figures)
    rates = {row.tool: float(row.figures["jobs/s"]) for row in rows}
    limit = rates.get("bare aiohttp")
    for row in rows:
        if limit:
            row.figures["vs bare aiohttp"] = f"{rates[row.tool] / limit:.2f}x"
    return rows


def scenario_memory(size: dict[str, Any], work: Path, repeat: int) -> list[Row]:
    big, run_big = size["validate_rows"], size["run_rows"]
    small, run_small = min(10_000, big // 10), min(10_000, run_big // 10)
    rows = []
    for label, count in (("validate", small), ("validate", big)):
        jobs = write_jobs(work / f"m{count}.csv", count)
        runs = [run_child([PY, "-m", "batch", "validate", str(jobs)]) for _ in range(repeat)]
        rows.append(
            Row(
                "5 memory",
                f"imagebatch {label} {count:,} rows",
                {
                    "peak RSS MB": f"{median([r.rss_mb for r in runs]):.1f}",
                    "wall s": f"{median([r.wall for r in runs]):.1f}",
                    "target": "<= 150 MB",
                },
            )
        )
    for count in (run_small, run_big):
        jobs = write_jobs(work / f"r{count}.csv", count)
        runs = measure(
            lambda j, u, w: imagebatch(j, u, w, rate=100_000),
            jobs,
            work,
            ["--instances", str(count), "--image-ready-seconds", "1"],
            1 if count > 50_000 else repeat,
        )
        rows.append(
            Row(
                "5 memory",
                f"imagebatch run {count:,} rows",
                {
                    "peak RSS MB": f"{median([r.rss_mb for r in runs]):.1f}",
                    "wall s": f"{median([r.wall for r in runs]):.1f}",
                    "target": "<= 150 MB",
                },
            )
        )
    for pair in ((rows[0], rows[1]), (rows[2], rows[3])):
        growth = float(pair[1].figures["peak RSS MB"]) - float(pair[0].figures["peak RSS MB"])
        pair[1].figures["growth MB"] = f"{growth:+.1f}"
    return rows


def cpu_figures(runs: list[Measured], jobs: int) -> dict[str, str]:
    """CPU of the client process, start-up included: per job, and as a share of one core."""
    return {
        "CPU ms/job": f"{median([r.cpu for r in runs]) * 1000 / jobs:.3f}",
        "CPU s": f"{median([r.cpu for r in runs]):.2f}",
        "% of a core": f"{median([100 * r.cpu / r.wall for r in runs]):.1f}",
    }


def scenario_cpu(size: dict[str, Any], work: Path, repeat: int, tools: dict[str, Tool], *, quick: bool) -> list[Row]:
    """8: CPU that follows the work, not the clock.

    * paced: ``jobs`` jobs at the API's pace (server limit and client rate ``rate``, concurrency
      ``concurrency``), start-up included, beside the SDK baselines and a bare paced aiohttp loop;
      and the same jobs unpaced, so that ``paced - unpaced`` is what the pacing itself costs;
    * start-up: ``--help``, ``validate`` of a 1-row list, and a 1-job run (does a command that
      sends nothing import aiohttp's server or the fake?);
    * waiting only: ``wait_jobs`` jobs whose images stay CREATING ``wait_seconds``;
    * poller: ``poll_jobs`` awaited images, run twice with images ready after ``poll_short`` and
      ``poll_long`` seconds: the extra CPU of the longer run over its extra polls is the CPU of
      one poll, which should follow the instances in its answers, not the wall time.
    """
    n, rate, conc = size["jobs"], size["rate"], size["concurrency"]
    rows: list[Row] = []
    jobs = write_jobs(work / f"cpu-{n}.csv", n)
    paced = ["--instances", str(n), "--rate-limit", str(rate), "--image-ready-seconds", "1"]
    title = f"8 CPU at {rate:g} req/s ({n:,} jobs, concurrency {conc}, start-up included)"
    cpu: dict[str, float] = {}
    for name, tool in tools.items():
        runs = measure(tool, jobs, work, paced, repeat)
        cpu[name] = median([r.cpu for r in runs])
        figures = {"wall s": f"{median([r.wall for r in runs]):.1f}", **cpu_figures(runs, n)}
        figures["done"] = f"{median([float(succeeded(r)) for r in runs]):.0f}/{n}"
        rows.append(Row(title, name, figures))
    unpaced = ["--instances", str(n), "--image-ready-seconds", "1"]
    free = measure(lambda j, u, w: imagebatch(j, u, w, rate=1_000_000, concurrency=conc), jobs, work, unpaced, repeat)
    free_cpu = median([r.cpu for r in free])
    free_figures = {"wall s": f"{median([r.wall for r in free]):.1f}", **cpu_figures(free, n)}
    rows.append(Row(title, "imagebatch unpaced (same jobs)", free_figures))
    mine = cpu.get("imagebatch")
    for row in rows:
        if row.tool == "imagebatch" and mine is not None:
            row.figures["target"] = "<= 0.5 ms/job, >= 2.8x less than SDK threads"
            wall = float(row.figures["wall s"])
            extra = mine - free_cpu
            row.figures["pacing costs"] = f"{extra * 1000 / n:.3f} ms/job = {100 * extra / wall:.1f}% of a core"
        elif mine and row.tool in cpu:
            row.figures["imagebatch uses"] = f"{cpu[row.tool] / mine:.2f}x less CPU"

    title = "8 start-up (CPU of a command that sends nothing, and of a 1-job run)"
    one = write_jobs(work / "one.csv", 1)
    probe = (
        "import sys, atexit\n"
        "names = ('aiohttp.web', 'batch.fake')\n"
        "atexit.register(lambda: print('imported:', sorted(m for m in names if m in sys.modules)))\n"
        "from batch.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for label, args in (("imagebatch --help", ["--help"]), ("imagebatch validate (1 row)", ["validate", str(one)])):
        runs = [run_child([PY, "-c", probe, *args]) for _ in range(repeat)]
        imported = runs[0].stdout.strip().splitlines()[-1].removeprefix("imported: ")
        figures = {"CPU ms": f"{median([r.cpu for r in runs]) * 1000:.0f}", "server or fake imported": imported}
        rows.append(Row(title, label, figures))
    flags = ["--instances", "1", "--image-ready-seconds", "1"]
    starts = {
        "imagebatch run (1 job)": lambda j, u, w: imagebatch(j, u, w, rate=rate, concurrency=conc),
        "bare aiohttp (1 job)": lambda j, u, w: bare(j, u, w),
    }
    if any(name.startswith("SDK") for name in tools):
        starts["SDK (1 job)"] = lambda j, u, w: sdk(j, u, w, mode="sequential")
    for label, tool in starts.items():
        runs = measure(tool, one, work, flags, repeat)
        rows.append(Row(title, label, {"CPU ms": f"{median([r.cpu for r in runs]) * 1000:.0f}"}))

    w_n, w_s = size["wait_jobs"], size["wait_seconds"]
    title = f"8 waiting only ({w_n} jobs, images CREATING {w_s:g} s, --wait, poll every {size['poll_interval']:g} s)"
    wait_jobs = write_jobs(work / f"wait-{w_n}.csv", w_n)
    wait_flags = ["--instances", str(w_n), "--rate-limit", str(rate), "--image-ready-seconds", str(w_s)]

    def waiting(j: Path, u: str, w: Path) -> list[str]:
        flags = ["--wait", "--poll-interval", str(size["poll_interval"])]
        return [*imagebatch(j, u, w, rate=rate, concurrency=conc), *flags]

    runs = measure(waiting, wait_jobs, work, wait_flags, repeat)
    figures = {"wall s": f"{median([r.wall for r in runs]):.1f}", **cpu_figures(runs, w_n), "target": "< 3% of a core"}
    rows.append(Row(title, "imagebatch --wait", figures))

    p_n, interval = size["poll_jobs"], size["poller_interval"]
    title = f"8 poller (images awaited at once, --wait --poll-interval {interval:g}, unpaced)"
    for count in (p_n // 10, p_n):
        poll_jobs = write_jobs(work / f"poll-{count}.csv", count)
        per_run = []
        for ready in (size["poll_short"], size["poll_long"]):
            flags = ["--instances", str(count), "--image-ready-seconds", str(ready)]

            def polling(j: Path, u: str, w: Path) -> list[str]:
                flags = ["--wait", "--poll-interval", str(interval)]
                return [*imagebatch(j, u, w, rate=1_000_000, concurrency=conc), *flags]

            runs = measure(polling, poll_jobs, work, flags, repeat)
            calls = median([float(r.seen.get("calls", {}).get("DescribeCustomImages", 0)) for r in runs])
            per_run.append((median([r.cpu for r in runs]), median([r.wall for r in runs]), calls))
        (cpu_a, wall_a, calls_a), (cpu_b, wall_b, calls_b) = per_run
        # Each poll asks about every awaited image, 100 ids a call: extra calls x 100 is the
        # extra instances in the answers (the listing at the start is the same in both runs).
        extra_polls = max(1.0, (calls_b - calls_a) / max(1, math.ceil(count / 100)))
        figures = {
            "CPU s short/long": f"{cpu_a:.2f}/{cpu_b:.2f}",
            "wall s short/long": f"{wall_a:.1f}/{wall_b:.1f}",
            "extra polls": f"{extra_polls:.0f}",
            "CPU ms/poll": f"{(cpu_b - cpu_a) * 1000 / extra_polls:.1f}",
            "CPU us/instance polled": f"{(cpu_b - cpu_a) * 1e6 / (extra_polls * count):.1f}",
        }
        rows.append(Row(title, f"imagebatch, {count:,} awaited", figures))
    if len(rows) >= 2 and not quick:
        small, big = rows[-2], rows[-1]
        ratio = float(big.figures["CPU ms/poll"]) / max(1e-9, float(small.figures["CPU ms/poll"]))
        big.figures["per poll vs 10x fewer"] = f"{ratio:.1f}x (proportional: 10x)"
    return rows


# ----- main ------------------------------------------------------------------------------------

SIZES = {
    "full": {
        "s1": {"jobs": 5000, "limit": 100},
        "s2": {"jobs": 5000, "limit": 100, "busy_seconds": 20},
        "s3": {"jobs": 5000, "limit": 100},
        "s4": {"jobs": 20_000},
        "s5": {"validate_rows": 1_000_000, "run_rows": 200_000},
        "s6": {"jobs": 600, "limit": 20, "client_rate": 200, "concurrency": 32},
        "s7": {"jobs": 3000, "limit": 100, "burst": 5, "client_rate": 200},
        "s8": {
            "jobs": 3000,
            "rate": 100,
            "concurrency": 16,
            "wait_jobs": 200,
            "wait_seconds": 40,
            "poll_interval": 10,
            "poll_jobs": 10_000,
            "poller_interval": 2,
            "poll_short": 10,
            "poll_long": 40,
        },
    },
    "quick": {
        "s1": {"jobs": 200, "limit": 100},
        "s2": {"jobs": 200, "limit": 100, "busy_seconds": 1},
        "s3": {"jobs": 200, "limit": 100},
        "s4": {"jobs": 1000},
        "s5": {"validate_rows": 20_000, "run_rows": 2_000},
        # imagebatch alone in quick mode (see main): the harness is what the smoke test checks.
        "s6": {"jobs": 40, "limit": 20, "client_rate": 200, "concurrency": 32},
        "s7": {"jobs": 100, "limit": 100, "burst": 5, "client_rate": 200},
        "s8": {
            "jobs": 100,
            "rate": 100,
            "concurrency": 16,
            "wait_jobs": 20,
            "wait_seconds": 2,
            "poll_interval": 0.5,
            "poll_jobs": 200,
            "poller_interval": 0.5,
            "poll_short": 1,
            "poll_long": 2,
        },
    },
}


def print_table(rows: list[Row]) -> None:
    for scenario in dict.fromkeys(r.scenario for r in rows):
        print(f"\n## {scenario}")
        for row in (r for r in rows if r.scenario == scenario):
            figures = "  ".join(f"{k}={v}" for k, v in row.figures.items())
            print(f"  {row.tool:<34} {figures}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke test of the harness")
    parser.add_argument("--repeat", type=int, help="runs per figure (median); default 3, 1 with --quick")
    parser.add_argument("--only", help="comma-separated scenario numbers, e.g. 1,4")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-baselines", action="store_true", help="measure imagebatch alone (for tuning)")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="REPORT",
        help="run imagebatch under pyinstrument in scenario 4 and write its text report here "
        "(its figures then include the profiler's cost)",
    )
    args = parser.parse_args()
    sizes = SIZES["quick" if args.quick else "full"]
    repeat = args.repeat or (1 if args.quick else 3)
    only = set(args.only.split(",")) if args.only else {"1", "2", "3", "4", "5", "6", "7", "8"}
    print(f"# imagebatch benchmarks ({'quick' if args.quick else 'full'}, median of {repeat})")
    py = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"# {py}, {os.cpu_count()} cores, {platform.machine()}")
    try:
        import zenlayercloud  # noqa: F401

        have_sdk = True
    except ImportError:
        have_sdk = False
        print("# zenlayercloud-sdk-python not installed: SDK baselines left out (pip install -e '.[bench]')")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def tools(rate: float, concurrency: int = 8, *, baselines: bool = True) -> dict[str, Tool]:
            found: dict[str, Tool] = {
                "imagebatch": lambda j, u, w: imagebatch(j, u, w, rate=rate, concurrency=concurrency)
            }
            if have_sdk and baselines and not args.no_baselines:
                # The threads baseline gets the same parallelism as imagebatch's --concurrency.
                found[f"SDK + ThreadPoolExecutor({concurrency})"] = lambda j, u, w: sdk(
                    j, u, w, mode="threads", concurrency=concurrency
                )
                found["SDK sequential loop"] = lambda j, u, w: sdk(j, u, w, mode="sequential")
            return found

        if "1" in only:
            rows += scenario_rate_bound(sizes["s1"], work, repeat, tools(sizes["s1"]["limit"]))
        if "2" in only:
            rows += scenario_busy(sizes["s2"], work, repeat, tools(sizes["s2"]["limit"]))
        if "3" in only:
            s3 = sizes["s3"]
            target = "429 <= 0.05, goodput >= 0.90"
            rows += scenario_over_limit("3 client at 2x limit", s3, work, repeat, tools(2 * s3["limit"]), target=target)
        if "4" in only:
            s4_tools = {"bare aiohttp": lambda j, u, w: bare(j, u, w), **tools(1_000_000)}
            if args.profile:
                report = str(args.profile.resolve())
                s4_tools["imagebatch"] = lambda j, u, w: [
                    PY,
                    "-m",
                    "pyinstrument",
                    "-r",
                    "text",
                    "-o",
                    report,
                    *imagebatch(j, u, w, rate=1_000_000)[1:],
                ]
            rows += scenario_overhead(sizes["s4"], work, repeat, s4_tools)
        if "5" in only:
            rows += scenario_memory(sizes["s5"], work, repeat)
        # 6 and 7: far over the limit, and a small bucket. Quick mode measures imagebatch alone
        # there, to keep the smoke test under a minute.
        if "6" in only:
            s6 = sizes["s6"]
            rows += scenario_over_limit(
                "6 client at 10x limit",
                s6,
                work,
                repeat,
                tools(s6["client_rate"], s6["concurrency"], baselines=not args.quick),
                target="429 <= 0.05, goodput >= 0.90",
            )
        if "7" in only:
            s7 = sizes["s7"]
            rows += scenario_over_limit(
                "7 client at 2x limit, bucket of 5",
                s7,
                work,
                repeat,
                tools(s7["client_rate"], baselines=not args.quick),
                target="429 <= 0.03",
            )
        if "8" in only:
            s8 = sizes["s8"]
            paced_tools = tools(s8["rate"], s8["concurrency"])
            paced_tools["bare aiohttp, paced"] = lambda j, u, w: bare(
                j, u, w, concurrency=s8["concurrency"], rate=s8["rate"]
            )
            rows += scenario_cpu(s8, work, repeat, paced_tools, quick=args.quick)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
