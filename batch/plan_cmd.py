"""``imagebatch plan``: the command around :mod:`batch.plan` (options, job list, rendering).

Exit codes: 0 the run would go through; 1 some jobs would fail (or the quota would be met);
2 bad input (job list, flags, credentials refused); 3 the API could not be asked.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from .client import ZecClient
from .config import ConfigError, file_flags, load_config, without_environment
from .credentials import DEFAULT_ENDPOINT, Credentials, resolve_credentials
from .errors import ApiError, AuthenticationError, JobListError, UsageError
from .forecast import Durations
from .header import new_run_id
from .journal import RunDirectory
from .keep import KeepRule
from .models import Job
from .options import RunOptions, parse_max_stopped
from .output import add_output_option, print_json
from .plan import Plan, _Calls, gather_plan, predict
from .policy import RetryOptions
from .report import format_seconds
from .scheduling import RateMeter
from .snapshot import JobSource
from .sources import JobList, detect_format
from .text import clip

__all__ = ["add_arguments", "apply_config", "main", "options_from", "render_plan"]

EXIT_OK, EXIT_WOULD_FAIL, EXIT_BAD_INPUT, EXIT_API = 0, 1, 2, 3
#: failing jobs listed on a terminal (all of them are in --output json)
_SHOWN = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add what ``plan`` has beyond the run's flags."""
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="SELECTOR",
        help="instead of a JOBLIST: instances by tag:K=V, zone:Z, resource-group:R, status:S (repeatable)",
    )
    parser.add_argument("--quota", type=int, default=None, help="the account's custom-image quota, to check against")
    for what, default in (("stop", 60.0), ("image", 300.0), ("boot", 60.0)):
        parser.add_argument(
            f"--assume-{what}-seconds",
            type=float,
            default=default,
            help=f"seconds a {what} is assumed to take in the prediction (default: {default:g})",
        )
    add_output_option(parser)


def main(args: argparse.Namespace, options: RunOptions) -> int:
    """Run ``imagebatch plan``; returns the exit code.

    Args:
        args: the parsed command line.
        options: the run options the flags give.
    """
    if (args.job_list is None) == (not args.select):
        raise UsageError("give a JOBLIST or --select (one of them)")
    _check_new_run(args)
    if args.quota is not None and args.quota < 0:
        raise UsageError("--quota must not be negative")
    endpoint = args.endpoint or os.environ.get("ZENLAYER_ENDPOINT") or DEFAULT_ENDPOINT
    resolved = resolve_credentials(os.environ, Path.home())
    for note in resolved.notes:
        print(f"imagebatch: note: {note}", file=sys.stderr)
    jobs: list[Job] | None = None
    if args.job_list is not None:
        jobs = _read_jobs(args.job_list, getattr(args, "fmt", None), options.name_template)
    try:
        plan = anyio.run(_gather, endpoint, resolved.credentials, options, jobs, list(args.select))
    except AuthenticationError as err:
        print(f"imagebatch: error: the API refused the credentials: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ApiError as err:
        print(f"imagebatch: error: could not ask the API: {err}", file=sys.stderr)
        return EXIT_API
    plan.quota = args.quota
    plan.notes = not_simulated(options)
    plan.forecast = predict(
        plan,
        rate=options.rate,
        concurrency=options.concurrency,
        max_stopped=parse_max_stopped(options.max_stopped, len(plan.jobs)),
        poll_interval=options.poll_interval,
        wait=options.wait or options.keep is not None,
        durations=Durations(args.assume_stop_seconds, args.assume_image_seconds, args.assume_boot_seconds),
    )
    code = EXIT_WOULD_FAIL if plan.failing or plan.over_quota() else EXIT_OK
    if args.output == "json":
        print_json({**plan.to_record(), "exitCode": code})
    else:
        print(render_plan(plan))
    return code


def not_simulated(options: RunOptions) -> list[str]:
    """What the plan does not simulate among the flags given, one note each.

    Args:
        options: the run options the flags give.
    """
    notes = []
    if options.halt is not None:
        notes.append(
            f"the plan does not simulate --halt {options.halt}: it predicts every job as if the run did "
            "not halt; a run that halts starts fewer jobs (exit 4)"
        )
    if options.canary:
        notes.append(
            f"the plan does not simulate --canary {options.canary}: it predicts every job as if the "
            "canaries went through; a canary that fails halts the run before the rest (exit 4)"
        )
    return notes


def _check_new_run(args: argparse.Namespace) -> None:
    """A plan describes a new run: refuse what only a resume means (exit 2), rather than ignore it."""
    if getattr(args, "resume", False):
        msg = (
            "plan describes a new run; --resume continues the run in --out, which a plan does not read "
            "(imagebatch report RUN_DIR shows where that run stands)"
        )
        raise UsageError(msg)
    out = getattr(args, "out", None)
    if out is not None and RunDirectory(out).exists:
        msg = (
            f"plan describes a new run; {clip(str(out))} already holds a run, and a run with this --out "
            "would refuse it without --resume (choose a new --out)"
        )
        raise UsageError(msg)


def apply_config(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None, environ: Mapping[str, str]
) -> argparse.Namespace:
    """``plan --config FILE --profile NAME``: the run's file, read as ``run`` reads it.

    The file is checked against ``run``'s flags (a file ``run`` accepts, ``plan`` accepts); the
    values of flags ``plan`` also has become its defaults, so flags given still win. Those only a
    run uses (``metrics-file``, ``job-name``) are left out: they change nothing a plan predicts.

    Args:
        parser: the whole command line's parser.
        args: the first parse (it names the file and the profile).
        argv: the arguments, as given to the first parse.
        environ: the environment variables (those that set a run setting win over the file).

    Raises:
        ConfigError: ``--profile`` without ``--config``, or the file cannot be used.
    """
    if args.config is None:
        if args.profile is not None:
            msg = f"--profile {clip(args.profile)} needs --config: the file that holds the profile"
            raise ConfigError(msg)
        return args
    run, plan = _command_parser(parser, "run"), _command_parser(parser, "plan")
    values = load_config(args.config, profile=args.profile, flags=file_flags(run))
    known = {action.dest for action in plan._actions}
    plan.set_defaults(**{dest: v for dest, v in without_environment(values, environ).items() if dest in known})
    return parser.parse_args(argv)


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[command]
            return found
    msg = f"no command {command!r}"
    raise LookupError(msg)


def _read_jobs(argument: str, fmt: str | None, template: str) -> list[Job]:
    """The job list, checked as ``validate`` checks it; problems end the plan (exit 2)."""
    source = JobSource.from_argument(argument)
    if source.path is None:
        raise UsageError("plan reads a job list from a file (standard input is not supported here)")
    kind = detect_format(Path(source.suffix_name), fmt, display=source.label)
    now = datetime.now(UTC)
    run_id = new_run_id(now)
    jobs = JobList(source.path, fmt=kind, name_template=template, date=now, run_id=run_id, display=source.label)
    result = jobs.validate()
    if not result.ok:
        raise JobListError(list(result.problems))
    return list(jobs)


async def _gather(
    endpoint: str, credentials: Credentials, options: RunOptions, jobs: list[Job] | None, selectors: list[str]
) -> Plan:
    calls = _Calls()
    async with ZecClient(
        endpoint,
        credentials,
        connect_timeout=options.connect_timeout,
        total_timeout=options.total_timeout,
        gate=_gate(RateMeter(options.rate)),
        observer=calls,
    ) as client:
        if jobs is None:
            jobs = await _selected_jobs(client, selectors, options.name_template)
        keep = None
        if options.keep is not None:
            keep = KeepRule(options.policy, options.keep, options.max_age_days, options.prune_failed)
        return await gather_plan(
            client,
            jobs,
            stop_running=options.stop_running,
            leave_stopped=options.leave_stopped,
            calls=calls,
            keep=keep,
            retry=RetryOptions.of(options),
            total_timeout=options.total_timeout,
            rng=random.Random(options.seed),  # noqa: S311 - back-off jitter, not a secret
        )


async def _selected_jobs(client: ZecClient, selectors: Sequence[str], template: str) -> list[Job]:
    """``--select``: the instances the API lists, as the job list a run would write for them."""
    from .inventory import resolve_selection, write_job_list

    instances = await resolve_selection(client, selectors)
    with tempfile.TemporaryDirectory(prefix="imagebatch-plan-") as tmp:
        path = Path(tmp) / "job-list.csv"
        write_job_list(instances, path)
        now = datetime.now(UTC)
        return list(JobList(path, fmt="csv", name_template=template, date=now, run_id=new_run_id(now)))


def _gate(meter: RateMeter) -> Callable[[str], Awaitable[None]]:
    """The run's own pacing for the plan's calls (they count against the account's limit too)."""

    async def gate(_action: str) -> None:
        await meter.acquire()

    return gate


def render_plan(plan: Plan) -> str:
    """The plan for people: what the jobs would do, what would fail, the prediction, the quota."""
    lines = [f"plan: {len(plan.jobs)} jobs, {plan.images_listed} custom images in the account"]
    width = max([len(a) for a in plan.by_action] + [6])
    for action, count in sorted(plan.by_action.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {action:<{width}}  {count}")
    failing = plan.failing
    if failing:
        lines.append(f"would fail: {len(failing)} job(s)")
        lines.append(f"  {'line':>6}  {'instance':<24}  {'code':<44}  reason")
        for job, _state, verdict in failing[:_SHOWN]:
            code = verdict.code or "(the API's answer)"  # a plain run's CreateImage: the plan cannot know
            lines.append(f"  {job.line:>6}  {clip(job.instance_id, 22):<24}  {code:<44}  {verdict.reason}")
        if len(failing) > _SHOWN:
            lines.append(f"  ... and {len(failing) - _SHOWN} more (--output json lists them all)")
    if plan.deletions:
        instances = len({d["instanceId"] for d in plan.deletions})
        lines.append(f"retention would delete {len(plan.deletions)} image(s) of {instances} instance(s)")
        lines.append(f"  {'instance':<24}  {'image':<24}  name")
        for d in plan.deletions[:_SHOWN]:
            lines.append(
                f"  {clip(d['instanceId'], 22):<24}  {clip(d['imageId'], 22):<24}  {clip(d['imageName'] or '')}"
            )
        if len(plan.deletions) > _SHOWN:
            lines.append(f"  ... and {len(plan.deletions) - _SHOWN} more (--output json lists them all)")
    f = plan.forecast
    if f is not None:
        per_action = ", ".join(f"{k} {v}" for k, v in f.calls.items())
        lines.append(f"predicted: {f.total_calls} API calls ({per_action})")
        bounds = ", ".join(f"{k} {format_seconds(v)}" for k, v in f.bounds.items())
        lines.append(f"  wall time about {format_seconds(f.seconds)}, bound by {f.bound} ({bounds})")
        seen = sum(plan.calls.values())
        lines.append(f"  from a latency of {plan.latency * 1000:.0f} ms seen by the plan's {seen} calls")
    if plan.quota is not None:
        over = "OVER the quota: the run would stop with INVALID_IMAGE_QUOTA_EXCEED"
        quota = over if plan.over_quota() else "within"
        lines.append(f"images: {plan.images_peak()} at most during the run, quota {plan.quota}: {quota}")
    lines.extend(f"note: {note}" for note in plan.notes)
    return "\n".join(lines)


def options_from(args: argparse.Namespace, fields: frozenset[str]) -> RunOptions:
    """The run options the flags give (the same flags as ``run``)."""
    given: dict[str, Any] = {name: value for name, value in vars(args).items() if name in fields}
    options = RunOptions(**given)
    options.check()
    return options
