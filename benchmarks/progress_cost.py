"""The live progress display's CPU cost (issue 11: under 1% of a core at 100 jobs/s).

The run hands the display one snapshot a second (and one at the end), whatever the job rate, so
its cost is the CPU of one redraw times one a second. This measures that: the rich display on a
terminal (a stream that says it is one) and the timed log lines (text and JSON), each redrawn
with snapshots of a run at 100 jobs/s, and prints the CPU per redraw and the share of a core.

    python benchmarks/progress_cost.py [--redraws 300]
"""

from __future__ import annotations

import argparse
import io
import time

from batch.live import LineProgress, RichProgress
from batch.run import Progress


class _Terminal(io.StringIO):
    """A stream that says it is a terminal (rich then draws as on one)."""

    def isatty(self) -> bool:
        return True


def _snapshot(second: int) -> Progress:
    done = min(30_000, 100 * second)
    return Progress(
        total=30_000,
        by_status={"succeeded": done - done // 50, "failed": done // 50},
        in_flight=16,
        waiting=3,
        awaiting_images=120,
        api_calls=done + 200,
        elapsed=float(second),
        rate=100.0,
        requests_in_flight=12,
        power={"down": 10, "queued": 40, "stopping": 3, "starting": 2, "awaiting": 20},
        requests={("CreateImage", "OK"): done},
    )


def measure(make: object, redraws: int) -> float:
    """CPU seconds per redraw."""
    show = make()  # type: ignore[operator]
    show(_snapshot(0))  # the first one sets up (rich: the live display)
    start = time.process_time()
    for second in range(1, redraws + 1):
        show(_snapshot(second))
    spent = time.process_time() - start
    show.finish()
    return spent / redraws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redraws", type=int, default=300)
    args = parser.parse_args()
    rows = {
        "rich display (terminal)": lambda: RichProgress(_Terminal()),
        "log lines, text (every redraw due)": lambda: LineProgress(io.StringIO(), interval=0),
        "log lines, JSON (every redraw due)": lambda: LineProgress(io.StringIO(), interval=0, json_lines=True),
    }
    print(f"progress display cost, {args.redraws} snapshots of a run at 100 jobs/s, one a second")
    for name, make in rows.items():
        per = measure(make, args.redraws)
        print(f"  {name:<36} {per * 1000:7.3f} ms CPU a redraw = {per * 100:.3f}% of a core at one a second")


if __name__ == "__main__":
    main()
