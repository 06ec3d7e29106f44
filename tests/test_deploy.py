"""deploy/: the systemd units, the crontab, the Kubernetes CronJob and the Dockerfile, parsed and checked."""

from __future__ import annotations

import argparse
import configparser
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from batch.cli import build_parser
from batch.config import apply_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CONFIG = DEPLOY / "imagebatch.toml"

#: Flags the deploy files use that `imagebatch run` does not have yet (issue 11 adds them), with
#: the number of values each takes. Remove a flag from here when it lands.
PENDING: dict[str, int] = {}
#: Exit codes a restart cannot fix (failed jobs, bad input, halted), and those it continues.
PERMANENT = {1, 2, 4}
RESUMED = {3, 5, 130, 143}
#: The --grace drain must end this long before the SIGKILL (writing the summary, a restart's call).
MARGIN_SECONDS = 30
DAY = 24 * 3600
A_DATE = "2030-01-31"


def unit(name: str) -> configparser.ConfigParser:
    """A systemd unit file of deploy/, parsed (keys keep their case)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / name).read_text(encoding="utf-8"))
    return parser


def seconds(value: str) -> float:
    """A systemd time span (``20h``, ``10min``, ``180``) in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "d": DAY}
    total = 0.0
    for number, suffix in re.findall(r"(\d+)\s*([a-z]*)", value):
        total += int(number) * units[suffix]
    return total


def service_argv() -> list[str]:
    """imagebatch's argv in the service's ExecStart, after systemd's and the shell's unescaping."""
    exec_start = unit("imagebatch.service")["Service"]["ExecStart"]
    shell, flag, script = shlex.split(exec_start)
    assert (shell, flag) == ("/bin/sh", "-c")
    # systemd turns $$ into $ and %% into %; then the shell runs the date.
    script = script.replace("$$", "$").replace("%%", "%")
    assert "$(date -u +%F)" in script, "the run directory is named by the UTC date"
    words = shlex.split(script.replace("$(date -u +%F)", A_DATE))
    assert words[0] == "exec", "exec: imagebatch itself gets systemd's SIGTERM"
    return words[1:]


def cron_entries() -> list[list[str]]:
    """The crontab's schedule lines as (5 time fields, command)."""
    entries = []
    for line in (DEPLOY / "crontab").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 5)
        entries.append(fields)
    return entries


def cron_argv() -> list[str]:
    """imagebatch's argv in the crontab line, inside its flock."""
    (entry,) = cron_entries()
    command = entry[5]
    assert re.search(r"(?<!\\)%", command) is None, "an unescaped % ends a cron command"
    command = command.replace("\\%", "%")
    assert "$(date -u +%F)" in command, "the run directory is named by the UTC date"
    words = shlex.split(command.replace("$(date -u +%F)", A_DATE))
    assert words[:2] == ["flock", "-n"], "flock -n: a run still going makes the next exit"
    return [w for w in words[3:] if not w.startswith((">", "2>"))]


def kubernetes() -> dict[str, dict[str, Any]]:
    """kubernetes.yaml's documents by kind."""
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text(encoding="utf-8")))
    return {doc["kind"]: doc for doc in docs}


def pod_spec() -> dict[str, Any]:
    """The CronJob's pod template spec."""
    spec: dict[str, Any] = kubernetes()["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    """The CronJob's only container."""
    (only,) = pod_spec()["containers"]
    return dict(only)


def kubernetes_argv() -> list[str]:
    """imagebatch's argv in the CronJob, with the Job's name put in as the kubelet does."""
    args = container()["args"]
    return ["imagebatch", *(a.replace("$(JOB_NAME)", "imagebatch-29000000") for a in args)]


COMMANDS = {"systemd": service_argv, "cron": cron_argv, "kubernetes": kubernetes_argv}


def without_pending(argv: list[str]) -> list[str]:
    """``argv`` less the pending flags and their values."""
    kept: list[str] = []
    skip = 0
    for word in argv:
        if skip:
            skip -= 1
        elif word in PENDING:
            skip = PENDING[word]
        else:
            kept.append(word)
    return kept


def run_flags() -> set[str]:
    """Every option string `imagebatch run --help` knows, from the real parser."""
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {s for a in action.choices["run"]._actions for s in a.option_strings}


def effective(argv: list[str]) -> argparse.Namespace:
    """The arguments of a deploy command as main() would see them, with deploy/imagebatch.toml as --config."""
    words = without_pending(argv)[1:]
    assert words[0] == "run"
    words[words.index("--config") + 1] = str(CONFIG)
    parser = build_parser()
    return apply_config(parser, parser.parse_args(words), words, {})


@pytest.mark.parametrize("where", COMMANDS)
def test_every_flag_in_the_deploy_files_is_a_flag_of_imagebatch_run(where: str) -> None:
    """Each --flag a deploy file passes is one `imagebatch run --help` lists, or a listed pending one."""
    argv = COMMANDS[where]()
    assert Path(argv[0]).name == "imagebatch"
    used = {word.split("=")[0] for word in argv if word.startswith("--")}
    assert used - run_flags() <= set(PENDING), used - run_flags()


def test_pending_flags_are_not_known_yet() -> None:
    """A pending flag that `imagebatch run` now knows must leave PENDING, so the check above covers it."""
    landed = set(PENDING) & run_flags()
    assert not landed, f"{landed} landed: remove them from PENDING in tests/test_deploy.py"


@pytest.mark.parametrize("where", COMMANDS)
def test_every_deploy_command_parses_as_a_resumable_run_with_the_nightly_profile(where: str) -> None:
    """Each command is `run LIST --config F --profile nightly --out DIR --resume` to the real parser."""
    args = effective(COMMANDS[where]())
    assert args.command == "run"
    assert args.job_list == "/etc/imagebatch/fleet.csv"
    assert args.resume is True
    assert args.profile == "nightly"
    assert args.out.parent == Path("/var/lib/imagebatch/runs")
    assert args.stop_running is True, "the nightly profile of imagebatch.toml applies"
    assert args.grace == grace()


def grace() -> float:
    """--grace as the nightly profile sets it."""
    data = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    value = data.get("nightly", {}).get("grace", data["grace"])
    assert isinstance(value, int | float)
    return float(value)


def test_the_config_file_loads_every_profile() -> None:
    """imagebatch.toml is read without error by the real config loader, for each of its profiles."""
    data = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    profiles = [name for name, value in data.items() if isinstance(value, dict)]
    assert profiles == ["nightly", "weekend"]
    for profile in profiles:
        words = ["run", "fleet.csv", "--config", str(CONFIG), "--profile", profile]
        parser = build_parser()
        args = apply_config(parser, parser.parse_args(words), words, {})
        assert args.stop_running is True
        assert args.max_stopped.endswith("%")


def test_the_service_is_a_oneshot_with_timeouts_that_fit_a_night_and_the_grace() -> None:
    """Start timeout: hours, below a day (not the 90 s default); stop timeout: past --grace; no credential inside."""
    service = unit("imagebatch.service")["Service"]
    assert service["Type"] == "oneshot"
    assert 3600 <= seconds(service["TimeoutStartSec"]) < DAY
    assert seconds(service["TimeoutStopSec"]) >= grace() + MARGIN_SECONDS
    assert service["KillMode"] == "mixed"
    assert service["User"] == "imagebatch"
    text = (DEPLOY / "imagebatch.service").read_text(encoding="utf-8")
    assert "Environment" not in service, "credentials come from the EnvironmentFile, not the unit"
    assert re.search(r"ZENLAYER_\w+=(?!\.\.\.)", text) is None, "no credential value in the unit"
    assert service["EnvironmentFile"] == "/etc/imagebatch/credentials.env"


#: Sandbox settings whose paths must exist when the unit starts, unless marked optional with "-".
SANDBOX_PATHS = ("ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths", "BindPaths")


def test_sandbox_paths_are_optional_and_cover_what_the_run_writes() -> None:
    """Each sandbox path is "-"-prefixed (a missing one fails the unit with 226/NAMESPACE before imagebatch
    runs), and the run's --out and --metrics-file fall under the paths it may write."""
    service = unit("imagebatch.service")["Service"]
    listed = {key: service[key].split() for key in SANDBOX_PATHS if key in service}
    assert listed, "the unit names the paths it writes outside its StateDirectory"
    for key, paths in listed.items():
        for path in paths:
            assert path.startswith("-/"), f"{key}={path}: a missing path would fail the unit; write -{path}"
    writable = [Path(p.lstrip("-")) for p in listed.get("ReadWritePaths", [])]
    writable.append(Path("/var/lib") / service["StateDirectory"])
    argv = service_argv()
    for flag in ("--out", "--metrics-file"):
        target = Path(argv[argv.index(flag) + 1])
        assert any(target.is_relative_to(root) for root in writable), f"{flag} {target} is not writable in the sandbox"


def test_the_service_maps_the_exit_codes() -> None:
    """Codes a restart cannot fix stop it; the others restart the unit, a bounded number of times."""
    parsed = unit("imagebatch.service")
    service = parsed["Service"]
    assert service["Restart"] == "on-failure"
    assert {int(code) for code in service["RestartPreventExitStatus"].split()} == PERMANENT
    assert "SuccessExitStatus" not in service, "only 0 is a success"
    assert seconds(service["RestartSec"]) >= 60
    assert int(parsed["Unit"]["StartLimitBurst"]) >= 2
    assert seconds(parsed["Unit"]["StartLimitIntervalSec"]) > seconds(service["RestartSec"]) * 3


def readme_exit_codes() -> set[int]:
    """The exit codes of README.md's table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    codes: set[int] = set()
    for cell in re.findall(r"^\| ([\d /]+) \|", table, flags=re.MULTILINE):
        codes.update(int(code) for code in cell.split("/"))
    return codes


def test_every_exit_code_of_the_readme_is_mapped() -> None:
    """Each code of README's exit-code table is 0, permanent or resumed, in the deploy files' mapping."""
    codes = readme_exit_codes()
    assert {0, 1, 2, 3, 5, 130, 143} <= codes
    assert codes <= {0} | PERMANENT | RESUMED


def test_the_timer_is_persistent_and_randomised_within_the_day() -> None:
    """The timer runs a missed night at boot and spreads starts, ending within the same UTC day."""
    timer = unit("imagebatch.timer")
    section = timer["Timer"]
    assert section["Persistent"] == "true"
    delay = seconds(section["RandomizedDelaySec"])
    assert delay > 0
    found = re.fullmatch(r"\*-\*-\* (\d\d):(\d\d):(\d\d) UTC", section["OnCalendar"])
    assert found is not None, "a daily time in UTC, like the run directory's date"
    start = int(found[1]) * 3600 + int(found[2]) * 60 + int(found[3])
    assert start + delay < DAY, "the latest start is the same UTC day"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_systemd_analyze_verify_accepts_the_units() -> None:
    """`systemd-analyze verify` finds nothing to say about the units (run only where systemd-analyze exists)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return  # no systemd here: the parsed checks above still hold
    done = subprocess.run(
        [tool, "verify", str(DEPLOY / "imagebatch.service"), str(DEPLOY / "imagebatch.timer")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_crontab_runs_nightly_under_flock() -> None:
    """One daily line, under flock -n, its output kept, at the timer's time."""
    (entry,) = cron_entries()
    minute, hour, day, month, weekday = entry[:5]
    assert (day, month, weekday) == ("*", "*", "*")
    calendar = unit("imagebatch.timer")["Timer"]["OnCalendar"]
    assert f"{int(hour):02d}:{int(minute):02d}:00" in calendar
    assert entry[5].startswith("flock -n ")
    assert ">>" in entry[5]
    assert "2>&1" in entry[5]


def test_the_cronjob_forbids_overlap_and_has_a_starting_deadline() -> None:
    """concurrencyPolicy Forbid, a starting deadline, a deadline below a day, the Job's exit codes mapped."""
    cronjob = kubernetes()["CronJob"]["spec"]
    assert cronjob["concurrencyPolicy"] == "Forbid"
    assert 0 < cronjob["startingDeadlineSeconds"] <= 6 * 3600
    assert cronjob["timeZone"] == "Etc/UTC"
    job = cronjob["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] < DAY
    assert job["backoffLimit"] >= 1
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["operator"] == "In"
    assert set(rule["onExitCodes"]["values"]) == PERMANENT
    assert rule["onExitCodes"]["containerName"] == container()["name"]
    assert pod_spec()["restartPolicy"] == "Never", "podFailurePolicy needs it; a retry is a new pod"


def test_the_cronjob_lets_the_run_drain_before_the_kill() -> None:
    """terminationGracePeriodSeconds is longer than --grace."""
    assert pod_spec()["terminationGracePeriodSeconds"] >= grace() + MARGIN_SECONDS


def test_the_cronjob_keeps_runs_on_a_volume_named_by_the_job() -> None:
    """runs/ is on the PersistentVolumeClaim, and each scheduled Job has its own directory."""
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    args = container()["args"]
    out = args[args.index("--out") + 1]
    assert out == "/var/lib/imagebatch/runs/$(JOB_NAME)"
    claim = volumes[mounts["/var/lib/imagebatch"]]["persistentVolumeClaim"]["claimName"]
    assert claim == kubernetes()["PersistentVolumeClaim"]["metadata"]["name"]
    (job_name,) = [e for e in container()["env"] if e["name"] == "JOB_NAME"]
    assert job_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"


def test_the_cronjob_takes_credentials_from_a_secret_only() -> None:
    """The credentials come from a Secret; no variable of the pod holds a literal credential."""
    spec = container()
    assert spec["envFrom"] == [{"secretRef": {"name": "imagebatch-credentials"}}]
    for variable in spec.get("env", []):
        assert "value" not in variable or "ZENLAYER" not in variable["name"]
    text = (DEPLOY / "kubernetes.yaml").read_text(encoding="utf-8")
    assert "kind: Secret" not in text, "the Secret is made by the operator, never shipped"


def test_the_cronjob_runs_as_the_images_non_root_user() -> None:
    """runAsNonRoot with the Dockerfile's numeric user, no privilege escalation, a read-only root."""
    security = pod_spec()["securityContext"]
    uid, gid = dockerfile_user()
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
    own = container()["securityContext"]
    assert own["allowPrivilegeEscalation"] is False
    assert own["readOnlyRootFilesystem"] is True


def test_the_configmap_is_a_copy_of_the_config_file() -> None:
    """The ConfigMap holds deploy/imagebatch.toml byte for byte, mounted where --config points."""
    config_map = kubernetes()["ConfigMap"]
    assert config_map["data"]["imagebatch.toml"] == CONFIG.read_text(encoding="utf-8")
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    sources = volumes[mounts["/etc/imagebatch"]]["projected"]["sources"]
    assert {"configMap": {"name": config_map["metadata"]["name"]}} in sources


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def dockerfile_user() -> tuple[int, int]:
    """The Dockerfile's last USER as numeric (uid, gid)."""
    users = [rest for word, rest in dockerfile() if word == "USER"]
    uid, _, gid = users[-1].partition(":")
    return int(uid), int(gid)


def test_the_dockerfile_is_slim_python_non_root_and_pip_installs_the_project() -> None:
    """A slim Python at least as new as requires-python, a numeric non-root user, `pip install .`."""
    instructions = dockerfile()
    (base,) = [rest for word, rest in instructions if word == "FROM"]
    found = re.fullmatch(r"python:3\.(\d+)-slim", base)
    assert found is not None, base
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    minimum = re.fullmatch(r">=3\.(\d+)", pyproject["project"]["requires-python"])
    assert minimum is not None
    assert int(found[1]) >= int(minimum[1])
    uid, gid = dockerfile_user()
    assert uid > 0
    assert gid > 0
    runs = [rest for word, rest in instructions if word == "RUN"]
    assert any(re.search(r"\bpip install \.(\s|$)", run) for run in runs)
    assert instructions[-2:] == [("ENTRYPOINT", '["imagebatch"]'), ("CMD", '["--help"]')]
    assert [word for word, _ in instructions].index("USER") > max(
        i for i, (word, _) in enumerate(instructions) if word == "RUN"
    ), "nothing runs as root after the switch"


def test_the_dockerfile_copies_everything_pip_install_reads() -> None:
    """COPY brings pyproject.toml, its readme, the package and the wheel's extras; the ignore file lets them in."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", pyproject["project"]["readme"], *wheel["packages"], *wheel["force-include"]}
    copied: set[str] = set()
    for word, rest in dockerfile():
        if word == "COPY":
            copied.update(rest.split()[:-1])
    assert needed <= copied
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[ignore.index("*") :]  # everything excluded first, then each copied path let in again
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert copied == kept
    for path in copied:
        assert (ROOT / path).exists(), path


def test_the_deploy_readme_names_every_deploy_file() -> None:
    """deploy/README.md describes each file of deploy/, and names only files that exist."""
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    files = {p.name for p in DEPLOY.iterdir() if p.name != "README.md"}
    named = set(re.findall(r"`([\w.]+\.(?:toml|service|timer|yaml|dockerignore))`|`(crontab|Dockerfile)`", text))
    mentioned = {a or b for a, b in named}
    assert files <= mentioned
    assert mentioned <= files


def readme_section(title: str) -> str:
    """The text of a README.md section, from its heading to the next heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split(f"\n{title}\n", 1)[1].split("\n#", 1)[0]


def test_the_readme_nightly_command_is_the_one_the_deploy_files_run() -> None:
    """README's nightly command is each deploy file's command (less pending flags and the binary's path)."""
    section = readme_section("## Nightly runs")
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    command = block.replace("\\\n", " ").replace("$(date -u +%F)", A_DATE)
    readme = shlex.split(command)
    assert readme[0] == "imagebatch"
    for where in ("systemd", "cron"):
        argv = without_pending(COMMANDS[where]())
        assert ["imagebatch", *argv[1:]] == readme, where
    kubernetes_run = kubernetes_argv()
    kubernetes_run[kubernetes_run.index("--out") + 1] = f"/var/lib/imagebatch/runs/{A_DATE}"
    # a pod has no node_exporter beside it: the CronJob writes no metrics file
    at = readme.index("--metrics-file")
    assert kubernetes_run == readme[:at] + readme[at + 2 :], "the same command, with the Job's name for the date"


def spoken(codes: set[int]) -> str:
    """``{1, 2, 4}`` as README writes it: ``1, 2 and 4``."""
    ordered = [str(code) for code in sorted(codes)]
    return ", ".join(ordered[:-1]) + " and " + ordered[-1]


def test_the_readme_nightly_numbers_are_the_deploy_files_numbers() -> None:
    """The times, delays and limits README's nightly section states are those the deploy files set."""
    section = " ".join(readme_section("## Nightly runs").split())
    timer = unit("imagebatch.timer")["Timer"]
    service = unit("imagebatch.service")["Service"]
    cronjob = kubernetes()["CronJob"]["spec"]
    assert "fires at 02:30 UTC plus up to 30 minutes at random" in section
    assert timer["OnCalendar"] == "*-*-* 02:30:00 UTC"
    assert seconds(timer["RandomizedDelaySec"]) == 30 * 60
    assert "catches up a missed night at boot (`Persistent=true`)" in section
    assert "the service may run 20 hours, and has 180 s to drain after SIGTERM, more than `--grace`" in section
    assert seconds(service["TimeoutStartSec"]) == 20 * 3600
    assert seconds(service["TimeoutStopSec"]) == 180 > grace()
    assert f"Exit codes {spoken(PERMANENT)} are final" in section
    assert f"Codes {spoken(RESUMED)} restart it" in section
    assert "a one-hour `startingDeadlineSeconds`" in section
    assert cronjob["startingDeadlineSeconds"] == 3600
    assert "`concurrencyPolicy: Forbid`" in section
    assert "the line runs under `flock -n`" in section


def test_the_readme_config_example_loads_with_both_profiles(tmp_path: Path) -> None:
    """README's TOML example is a config file the real loader reads, for each profile it shows."""
    section = readme_section("### Config files (`--config FILE`, `--profile NAME`)")
    (block,) = re.findall(r"```toml\n(.*?)```", section, flags=re.DOTALL)
    path = tmp_path / "imagebatch.toml"
    path.write_text(block, encoding="utf-8")
    for profile, share in (("nightly", "10%"), ("weekend", "25%")):
        words = ["run", "fleet.csv", "--config", str(path), "--profile", profile]
        parser = build_parser()
        args = apply_config(parser, parser.parse_args(words), words, {})
        assert (args.rate, args.grace, args.stop_running, args.max_stopped) == (10.0, 120.0, True, share)
    assert "Precedence: the command line, then the environment (`ZENLAYER_ENDPOINT`)" in section
