"""Live-fleet benchmark: ``imagebatch run --stop-running`` against the official SDK, side by side.

The scenario (real time): N RUNNING instances, an account limit of 20 req/s, a 5 s poll interval,
a graceful stop of 30 s, an image of 60 s, a boot of 30 s, 0.2 s per answer, at most 10% of the
fleet down at once. The fake runs it ``--time-scale`` times faster (10 by default): every
duration is divided by the scale and every rate multiplied by it, so request counts and the
ratio of wall time to its bound are those of the real-time run; the token bucket keeps one real
second of requests (20). Both tools get the scaled rate, poll interval and cap.

Each tool runs against a fresh fake (``imagebatch fake-server`` in its own process) and is
measured alone: wall time, CPU and peak RSS of the client process (``os.wait4``), and the
server's own count of calls, 429s, images per instance and instances down (``/_fake/inspect``).

The bound a tool's wall time is compared with (scaled seconds):

* cap bound = ceil(N / cap) * (stop + image + boot + 2 poll intervals): waves of ``cap``
  instances, each wave a full cycle plus the time to notice it ended;
* rate bound = the calls the server admitted (all actions, 429s excluded: a 429 takes no token)
  / the server's rate limit;
* bound = max(cap bound, rate bound).

    python benchmarks/lifecycle.py                 # N=1,000, both tools (about 5 minutes)
    python benchmarks/lifecycle.py --quick         # 40 instances, 50x faster (about 25 s)
    python benchmarks/lifecycle.py --quick --tools imagebatch --json figures.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from run import PY, Fake, Measured, run_child, write_jobs  # noqa: E402  (benchmarks/run.py: one harness)

from batch.fake.fleet import instance_id  # noqa: E402
from batch.options import parse_max_stopped  # noqa: E402

TOOLS = ("imagebatch", "sdk")
LABELS = {"imagebatch": "imagebatch --stop-running", "sdk": "SDK + ThreadPoolExecutor(cap)"}


@dataclass(frozen=True)
class Scenario:
    """The live-fleet scenario, in real-time units, and how much faster the fake runs it.

    Args:
        instances: fleet size, all RUNNING.
        max_stopped: the cap, ``N`` or ``N%`` of the fleet (imagebatch's ``--max-stopped``).
        time_scale: the fake runs this many times faster than real time.
        account_rate: the account's limit, requests per real second.
        poll: seconds between polls.
        stop: seconds a graceful stop takes.
        image: seconds an image stays CREATING.
        boot: seconds a start takes.
        latency: seconds the API takes to answer.
    """

    instances: int = 1000
    max_stopped: str = "10%"
    time_scale: float = 10.0
    account_rate: float = 20.0
    poll: float = 5.0
    stop: float = 30.0
    image: float = 60.0
    boot: float = 30.0
    latency: float = 0.2

    @property
    def cap(self) -> int:
        """The cap as a count of instances."""
        return parse_max_stopped(self.max_stopped, self.instances)

    @property
    def rate(self) -> float:
        """The fake's rate limit, requests per (scaled) second."""
        return self.account_rate * self.time_scale

    def scaled(self, seconds: float) -> float:
        """A real-time duration on the fake's clock."""
        return seconds / self.time_scale

    def cap_bound(self) -> float:
        """Scaled seconds: ceil(N / cap) waves of one cycle plus two poll intervals each."""
        cycle = self.stop + self.image + self.boot + 2 * self.poll
        return math.ceil(self.instances / self.cap) * self.scaled(cycle)

    def fake_flags(self) -> list[str]:
        """The fake's flags for this scenario."""
        values = {
            "--instances": self.instances,
            "--running-fraction": 1,
            "--rate-limit": self.rate,
            # One real second of requests: a bucket of rate * scale would forgive bursts ten
            # times longer than the real account does.
            "--burst": max(1, round(self.account_rate)),
            "--latency": self.scaled(self.latency),
            "--stop-seconds": self.scaled(self.stop),
            "--image-ready-seconds": self.scaled(self.image),
            "--boot-seconds": self.scaled(self.boot),
        }
        return [str(item) for pair in values.items() for item in pair]


FULL = Scenario()
# Quick: 40 instances, 50x faster, 25% down at once (4 waves), so both tools take seconds.
QUICK = Scenario(instances=40, max_stopped="25%", time_scale=50.0)


def command(tool: str, sc: Scenario, jobs: Path, url: str, work: Path) -> list[str]:
    """The client's command line: the scenario's scaled rate, poll interval and cap."""
    poll = str(sc.scaled(sc.poll))
    if tool == "imagebatch":
        return [
            *(PY, "-m", "batch", "run", str(jobs), "--endpoint", url, "--out", tempfile.mkdtemp(dir=work)),
            *("--stop-running", "--max-stopped", str(sc.cap), "--rate", str(sc.rate), "--poll-interval", poll),
            # imagebatch's defaults that time a healthy or throttled run, on the scenario's clock
            # (the SDK's back-off is scaled the same way): stop time-out 300 s, back-off 1-60 s,
            # look-up delay 10 s.
            *("--stop-timeout", str(sc.scaled(300.0)), "--lookup-delay", str(sc.scaled(10.0))),
            *("--backoff-base", str(sc.scaled(1.0)), "--backoff-cap", str(sc.scaled(60.0)), "--quiet"),
        ]
    return [
        *(PY, str(HERE / "baseline_sdk_lifecycle.py"), str(jobs), "--endpoint", url),
        *("--threads", str(sc.cap), "--poll-interval", poll, "--time-scale", str(sc.time_scale)),
    ]


def measure(tool: str, sc: Scenario, jobs: Path, work: Path, timeout: float) -> Measured:
    """One run of one tool against a fresh fake."""
    fake = Fake(*sc.fake_flags())
    try:
        measured = run_child(command(tool, sc, jobs, fake.url, work), timeout=timeout)
        measured.seen = fake.inspect()
    finally:
        fake.stop()
    return measured


def figures(m: Measured, sc: Scenario) -> dict[str, Any]:
    """A run's figures: load, wall against its bound, and the fleet's end state."""
    n, seen = sc.instances, m.seen
    calls = sum(seen.get("calls", {}).values())
    throttled = seen.get("codes", {}).get("REQUEST_LIMIT_EXCEEDED", 0)
    cap_bound = sc.cap_bound()
    rate_bound = (calls - throttled) / sc.rate
    bound = max(cap_bound, rate_bound)
    per_instance = seen.get("createdPerInstance", {})
    return {
        "calls/instance": round(calls / n, 3),
        "429s": throttled,
        "wall s": round(m.wall, 1),
        "bound s": round(bound, 1),
        "wall/bound": round(m.wall / bound, 3),
        "cap bound s": round(cap_bound, 1),
        "rate bound s": round(rate_bound, 1),
        "CPU ms/instance": round(m.cpu * 1000 / n, 2),
        "peak RSS MB": round(m.rss_mb, 1),
        "peakStopped": seen.get("peakStopped"),
        "cap": sc.cap,
        "not running at end": len(seen.get("notRunningAnymore", [])),
        "one image each": sum(1 for i in range(1, n + 1) if per_instance.get(instance_id(i)) == 1),
        "duplicates": len(seen.get("duplicateInstances", [])),
        "forced stops": seen.get("forcedStops"),
        "calls by action": seen.get("calls", {}),
        "exit": "timed out" if m.timed_out else m.returncode,
    }


TARGETS = {"calls/instance": "<= 1.5", "wall/bound": "<= 1.15"}
SHOWN = (
    "calls/instance",
    "wall s",
    "bound s",
    "wall/bound",
    "429s",
    "CPU ms/instance",
    "peak RSS MB",
    "peakStopped",
    "not running at end",
    "one image each",
    "exit",
)


def print_report(sc: Scenario, rows: dict[str, dict[str, Any]]) -> None:
    """The figures as text: one line per tool, then the bound and the per-action calls."""
    print(f"\n## live fleet: stop -> image -> start, {sc.instances} RUNNING instances, cap {sc.cap}")
    for tool, row in rows.items():
        shown = "  ".join(f"{key}={row[key]}" for key in SHOWN)
        print(f"  {LABELS[tool]:<30} {shown}")
    print(f"  targets (imagebatch): {', '.join(f'{k} {v}' for k, v in TARGETS.items())}, peakStopped <= cap,")
    print("    not running at end = 0, one image each = N")
    rate_bounds = ", ".join(f"{tool} {row['rate bound s']} s" for tool, row in rows.items())
    print(
        f"  bound = max(cap bound {sc.cap_bound():.1f} s, rate bound = admitted calls / {sc.rate:g} req/s);"
        f" rate bounds: {rate_bounds}"
    )
    for tool, row in rows.items():
        print(f"  calls by action, {tool}: {json.dumps(row['calls by action'], sort_keys=True)}")


def main(argv: list[str] | None = None) -> int:
    """Run the scenario for each tool and print (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 instances, 50x faster, cap 25%%: a smoke test")
    parser.add_argument("--instances", type=int, help=f"fleet size (default {FULL.instances})")
    parser.add_argument("--max-stopped", help=f"cap, N or N%% (default {FULL.max_stopped})")
    parser.add_argument("--time-scale", type=float, help=f"fake runs this much faster (default {FULL.time_scale:g})")
    parser.add_argument("--account-rate", type=float, help=f"req per real second (default {FULL.account_rate:g})")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated: imagebatch,sdk (default both)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one client may run (default 3600)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    sc = Scenario(
        instances=args.instances or base.instances,
        max_stopped=args.max_stopped or base.max_stopped,
        time_scale=args.time_scale or base.time_scale,
        account_rate=args.account_rate or base.account_rate,
    )
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not tools:
        parser.error(f"--tools: {', '.join(unknown) or 'none given'}; choose from {', '.join(TOOLS)}")
    if "sdk" in tools:
        try:
            import zenlayercloud  # noqa: F401
        except ImportError:
            tools.remove("sdk")
            print("# zenlayercloud-sdk-python not installed: SDK baseline left out (pip install -e '.[bench]')")
    py = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"# imagebatch live-fleet benchmark ({'quick' if args.quick else 'full'})")
    print(f"# {py}, {os.cpu_count()} cores, {platform.machine()}")
    print(
        f"# real time: {sc.account_rate:g} req/s, poll {sc.poll:g} s, stop {sc.stop:g} s, image {sc.image:g} s, "
        f"boot {sc.boot:g} s, latency {sc.latency:g} s; run {sc.time_scale:g}x faster: "
        f"{sc.rate:g} req/s (bucket {max(1, round(sc.account_rate))}), poll {sc.scaled(sc.poll):g} s, "
        f"stop {sc.scaled(sc.stop):g} s, image {sc.scaled(sc.image):g} s, boot {sc.scaled(sc.boot):g} s"
    )
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        jobs = write_jobs(work / "fleet.csv", sc.instances)
        for tool in tools:
            rows[tool] = figures(measure(tool, sc, jobs, work, args.timeout), sc)
    print_report(sc, rows)
    if args.json:
        scenario = {**asdict(sc), "cap": sc.cap, "rate": sc.rate, "cap bound s": sc.cap_bound()}
        args.json.write_text(json.dumps({"scenario": scenario, "tools": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
