"""``imagebatch fake-server``: its flags, and serving the fake API until interrupted.

:func:`add_arguments` imports nothing heavy (the server and ``aiohttp.web`` are imported when
the fake is built), because ``imagebatch`` builds these flags for every command.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .constants import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, DEFAULT_TOKEN, MISSING_IMAGE_CODES
from .power import BATCH_ERROR_MODES
from .scripts import ScriptError, parse_script_flag

if TYPE_CHECKING:
    from .server import FakeZenlayer

__all__ = ["add_arguments", "build_fake", "host_problem", "serve"]

# The parser, so that serve() can report a flag problem found after parsing as argparse does.
_PARSER = "_fake_server_parser"


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def _fraction(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def _script(text: str) -> tuple[str, str, list[str]]:
    try:
        return parse_script_flag(text)
    except ScriptError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535; 0 picks a free one)")
    return value


def host_problem(host: str, *, allow_remote: bool) -> tuple[str | None, str | None]:
    """Whether the fake may bind ``host``: ``(error, warning)``, each ``None`` when there is none.

    The fake accepts well-known credentials, so it binds a loopback address unless told
    otherwise with ``--allow-remote``, and then says so on stderr.

    Args:
        host: the ``--host`` value.
        allow_remote: ``--allow-remote`` was given.
    """
    if host == "localhost":
        return None, None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a name other than localhost, or "" (every interface)
    if loopback:
        return None, None
    shown = repr(host) if host else "'' (every interface)"
    if not allow_remote:
        return (
            f"argument --host: {shown} is not a loopback address; the fake accepts the well-known credentials "
            f"{DEFAULT_ACCESS_KEY_ID!r}, so it serves only 127.0.0.1, ::1 or localhost unless you add --allow-remote",
            None,
        )
    return None, (
        f"warning: the fake Zenlayer API listens on {shown}, reachable from other machines; it accepts the "
        "well-known fake credentials and is no real service"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fake-server`` flags to ``parser``.

    Args:
        parser: the ``fake-server`` sub-command's parser.
    """
    parser.set_defaults(**{_PARSER: parser})
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default: %(default)s)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not loopback (the fake accepts well-known credentials: a warning is printed)",
    )
    parser.add_argument("--port", type=_port, default=0, help="TCP port, 0-65535 (default: 0, any free port)")
    fleet = parser.add_mutually_exclusive_group()
    fleet.add_argument(
        "--fleet", type=Path, metavar="JOBLIST", help="instances from a job list (fake-only columns apply)"
    )
    fleet.add_argument(
        "--instances",
        type=_non_negative_int,
        default=0,
        help="generate N STOPPED instances 1000000000000000001...",
    )
    parser.add_argument("--busy-fraction", type=_fraction, default=0.0, help="with --instances: share busy at start")
    parser.add_argument(
        "--busy-max-seconds", type=_non_negative_float, default=0.0, help="with --instances: busy up to this long"
    )
    parser.add_argument(
        "--gpu-fraction", type=_fraction, default=0.0, help="with --instances: share that are GPU instances"
    )
    parser.add_argument(
        "--running-fraction", type=_fraction, default=0.0, help="with --instances: share RUNNING at the start"
    )
    parser.add_argument("--rate-limit", type=_positive_float, help="requests per second before 429 (default: none)")
    parser.add_argument(
        "--burst",
        type=_positive_float,
        help="token-bucket size, requests (default: one second of --rate-limit)",
    )
    parser.add_argument(
        "--retry-after", action="store_true", help="send a Retry-After header (whole seconds) with each 429"
    )
    parser.add_argument("--latency", type=_non_negative_float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--error-rate", type=_fraction, default=0.0, help="share of requests answered 503")
    parser.add_argument(
        "--lost-response-rate", type=_fraction, default=0.0, help="share of answers dropped after commit"
    )
    parser.add_argument(
        "--lost-response-actions",
        default="CreateImage",
        help="comma-separated actions whose answers --lost-response-rate drops; * for all (default: %(default)s)",
    )
    parser.add_argument(
        "--image-ready-seconds", type=_non_negative_float, default=2.0, help="time an image stays CREATING"
    )
    parser.add_argument("--quota", type=_non_negative_int, help="custom-image quota (default: none)")
    parser.add_argument(
        "--image-fail-fraction", type=_fraction, default=0.0, help="share of instances whose images end FAILED"
    )
    parser.add_argument(
        "--transition-seconds",
        type=_non_negative_float,
        help="time an image spends DELETING, and the default of the three power times below (default: 1.0)",
    )
    parser.add_argument(
        "--stop-seconds", type=_non_negative_float, help="time a graceful stop spends STOPPING (default: 1.0)"
    )
    parser.add_argument(
        "--force-stop-seconds", type=_non_negative_float, help="time a forced stop spends STOPPING (default: 0.2)"
    )
    parser.add_argument("--boot-seconds", type=_non_negative_float, help="time a start spends BOOTING (default: 1.0)")
    parser.add_argument(
        "--hang-fraction",
        type=_fraction,
        default=0.0,
        help="share of instances (seeded) whose graceful stops hang in STOPPING until a forced stop",
    )
    parser.add_argument(
        "--batch-errors",
        choices=BATCH_ERROR_MODES,
        default="listed",
        help="a Start/Stop id that cannot be started/stopped: listed as failed (a lone id answers its error) "
        "or fails the whole call (default: %(default)s)",
    )
    parser.add_argument(
        "--script",
        type=_script,
        action="append",
        default=[],
        metavar="ACTION:ID:OUTCOME,...",
        help="scripted outcomes of the next ACTION calls naming ID (* for every call), e.g. "
        "StartInstances:i-3:fail,fail,ok or StopInstances:i-4:hang; outcomes: ok lost drop 500 503 504 "
        "garbage busy 429, fail (Start/Stop/DeleteImages), hang (Stop); repeatable",
    )
    parser.add_argument(
        "--max-skew", type=_non_negative_float, default=300.0, help="accepted clock skew of signatures, seconds"
    )
    parser.add_argument(
        "--list-lag-seconds",
        type=_non_negative_float,
        default=0.0,
        help="new images show in DescribeCustomImages only after this long (eventual consistency)",
    )
    parser.add_argument(
        "--missing-image-code",
        choices=MISSING_IMAGE_CODES,
        default=MISSING_IMAGE_CODES[0],
        help="DeleteImages' 404 code for an image that does not exist (default: %(default)s)",
    )
    parser.add_argument("--write-jobs", type=Path, metavar="CSV", help="write a job list of the fleet's instances")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault dice")
    parser.add_argument("--access-key-id", default=DEFAULT_ACCESS_KEY_ID, help="accepted key id (default: %(default)s)")
    parser.add_argument(
        "--access-key-secret", default=DEFAULT_ACCESS_KEY_SECRET, help="its secret (default: %(default)s)"
    )
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="accepted bearer token (default: %(default)s)")


def build_fake(args: argparse.Namespace) -> FakeZenlayer:
    """A fake server from the ``fake-server`` flags.

    Args:
        args: the parsed flags.

    Raises:
        FleetError: the ``--fleet`` file cannot be read.
    """
    from .fleet import fleet_from_count, fleet_from_job_list
    from .server import FakeConfig, FakeZenlayer
    from .state import FakeCloud

    if args.fleet:
        instances = fleet_from_job_list(args.fleet)
    else:
        instances = fleet_from_count(
            args.instances,
            busy_fraction=args.busy_fraction,
            busy_max_seconds=args.busy_max_seconds,
            gpu_fraction=args.gpu_fraction,
            running_fraction=args.running_fraction,
            seed=args.seed,
        )
    dice = random.Random(args.seed)  # noqa: S311 - fixture dice
    failing = {i.instance_id for i in instances if i.image_fails or dice.random() < args.image_fail_fraction}
    hang_dice = random.Random(f"{args.seed}:hang")  # noqa: S311 - fixture dice; its own, so image failures stay
    for inst in instances:
        inst.hangs = hang_dice.random() < args.hang_fraction or inst.hangs
    scripts: dict[str, dict[str, list[str]]] = {}
    for action, ident, outcomes in args.script:
        scripts.setdefault(action, {}).setdefault(ident, []).extend(outcomes)
    cloud = FakeCloud(
        instances,
        image_ready_seconds=args.image_ready_seconds,
        image_quota=args.quota,
        failed_images=failing,
        transition_seconds=args.transition_seconds,
        stop_seconds=args.stop_seconds,
        force_stop_seconds=args.force_stop_seconds,
        boot_seconds=args.boot_seconds,
        batch_errors=args.batch_errors,
        list_lag_seconds=args.list_lag_seconds,
        missing_image_code=args.missing_image_code,
    )
    config = FakeConfig(
        access_key_id=args.access_key_id,
        access_key_secret=args.access_key_secret,
        tokens=frozenset({args.token}),
        rate_limit=args.rate_limit,
        burst=args.burst,
        retry_after=args.retry_after,
        latency=args.latency,
        error_rate=args.error_rate,
        lost_response_rate=args.lost_response_rate,
        lost_actions=tuple(a.strip() for a in args.lost_response_actions.split(",") if a.strip()),
        seed=args.seed,
        max_skew=args.max_skew,
        scripts=scripts,
    )
    return FakeZenlayer(cloud, config)


async def serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; the first stdout line is the base URL.

    Args:
        args: the parsed ``fake-server`` flags.

    Returns:
        0 after a clean stop; 2 when the fleet file cannot be read.
    """
    from .fleet import FleetError

    error, warning = host_problem(args.host, allow_remote=args.allow_remote)
    parser: argparse.ArgumentParser | None = getattr(args, _PARSER, None)
    if error is not None:
        if parser is not None:
            parser.error(error)  # exits 2 with the usage line, as for any other bad flag
        print(f"imagebatch fake-server: error: {error}", file=sys.stderr)
        return 2
    if warning is not None:
        print(f"imagebatch fake-server: {warning}", file=sys.stderr)
    try:
        fake = build_fake(args)
    except FleetError as exc:
        print(f"imagebatch fake-server: error: {exc}", file=sys.stderr)
        return 2
    if args.write_jobs:
        ids = sorted(fake.cloud.instances)
        args.write_jobs.write_text("instanceId\n" + "".join(f"{i}\n" for i in ids), encoding="utf-8")
    try:
        url = await fake.start(args.host, args.port)
    except OSError as exc:
        print(
            f"imagebatch fake-server: error: cannot listen on {args.host} port {args.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    print(url, flush=True)
    print(f"fake Zenlayer API: {len(fake.cloud.instances)} instances; inspect at {url}/_fake/inspect", file=sys.stderr)
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
    finally:
        await fake.stop()
    return 0
