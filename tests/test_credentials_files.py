"""Credentials from zeno's files (~/.zenlayer/credentials.json and config.json), after the variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batch import Credentials, UsageError
from batch.credentials import resolve_credentials

SECRET = "file-s3cr3t-value"
TOKEN = "file-t0ken-value"
CREDS_FILE = "~/.zenlayer/credentials.json"


def write(home: Path, name: str, doc: Any, *, mode: int = 0o600) -> Path:
    """Write one of zeno's files under home/.zenlayer with the given mode."""
    folder = home / ".zenlayer"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    path.chmod(mode)
    return path


def test_default_profile_key_pair(tmp_path: Path) -> None:
    """No variables, no config: the 'default' profile's key pair, named as the source, no notes."""
    write(tmp_path, "credentials.json", {"default": {"access_key_id": "fkid", "access_key_secret": SECRET}})
    resolved = resolve_credentials({}, tmp_path)
    assert resolved.credentials == Credentials("fkid", SECRET)
    assert resolved.source == f"{CREDS_FILE} profile 'default'"
    assert resolved.notes == []


def test_values_in_the_file_are_trimmed(tmp_path: Path) -> None:
    """Whitespace around a profile's values is trimmed like the variables'."""
    write(tmp_path, "credentials.json", {"default": {"access_key_id": " fkid\n", "access_key_secret": f"{SECRET}\n"}})
    assert resolve_credentials({}, tmp_path).credentials == Credentials("fkid", SECRET)


@pytest.mark.parametrize(
    ("environ", "config", "profile"),
    [
        pytest.param({"ZENLAYER_PROFILE": "prod"}, None, "prod", id="variable"),
        pytest.param({}, {"current_profile": "prod"}, "prod", id="config-current"),
        pytest.param({"ZENLAYER_PROFILE": "stage"}, {"current_profile": "prod"}, "stage", id="variable-over-config"),
        pytest.param({}, {"profiles": {}}, "default", id="config-without-current"),
        pytest.param({"ZENLAYER_PROFILE": "  "}, {"current_profile": ""}, "default", id="blank-means-default"),
    ],
)
def test_profile_choice(tmp_path: Path, environ: dict[str, str], config: Any, profile: str) -> None:
    """ZENLAYER_PROFILE, else config.json's current_profile, else 'default', as zeno picks."""
    profiles = {name: {"token": f"{TOKEN}-{name}"} for name in ("default", "prod", "stage")}
    write(tmp_path, "credentials.json", profiles)
    if config is not None:
        write(tmp_path, "config.json", config)
    resolved = resolve_credentials(environ, tmp_path)
    assert resolved.credentials == Credentials(None, f"{TOKEN}-{profile}", bearer=True)
    assert resolved.source == f"{CREDS_FILE} profile {profile!r}"


def test_token_wins_inside_a_profile(tmp_path: Path) -> None:
    """A profile with a token and a key pair uses the token, and says so."""
    write(
        tmp_path, "credentials.json", {"default": {"token": TOKEN, "access_key_id": "k", "access_key_secret": SECRET}}
    )
    resolved = resolve_credentials({}, tmp_path)
    assert resolved.credentials == Credentials(None, TOKEN, bearer=True)
    assert resolved.notes == [
        f"profile 'default' in {CREDS_FILE} has both a token and an access key; using the token (as zeno does)"
    ]


def test_variables_win_over_the_file_and_the_note_says_so(tmp_path: Path) -> None:
    """Credentials in the environment win over zeno's file; the note names the file as unused."""
    write(tmp_path, "credentials.json", {"default": {"token": TOKEN}})
    resolved = resolve_credentials({"ZENLAYER_ACCESS_KEY_ID": "kid", "ZENLAYER_ACCESS_KEY_SECRET": "s"}, tmp_path)
    assert resolved.credentials == Credentials("kid", "s")
    assert resolved.notes == [
        "using credentials from ZENLAYER_ACCESS_KEY_ID + ZENLAYER_ACCESS_KEY_SECRET; "
        f"also set but not used: {CREDS_FILE}"
    ]


@pytest.mark.parametrize(
    ("mode", "noted"),
    [
        pytest.param(0o600, False, id="0600"),
        pytest.param(0o400, False, id="0400"),
        pytest.param(0o640, True, id="group-readable"),
        pytest.param(0o604, True, id="world-readable"),
        pytest.param(0o620, True, id="group-writable"),
    ],
)
def test_loose_file_mode_is_noted(tmp_path: Path, mode: int, noted: bool) -> None:
    """A credentials file others can read or write gets a note saying the mode and the fix."""
    write(tmp_path, "credentials.json", {"default": {"token": TOKEN}}, mode=mode)
    notes = resolve_credentials({}, tmp_path).notes
    expected = [
        f"{CREDS_FILE} is readable or writable by group or others (mode {mode:04o}); run: chmod 600 {CREDS_FILE}"
    ]
    assert notes == (expected if noted else [])


def test_nothing_anywhere_names_every_source_tried(tmp_path: Path) -> None:
    """No variables and no file: the error names each variable and the file with its profile."""
    with pytest.raises(UsageError) as info:
        resolve_credentials({"ZENLAYER_PROFILE": "prod"}, tmp_path)
    text = str(info.value)
    for name in (
        "ZENLAYER_TOKEN",
        "ZENLAYER_ACCESS_KEY_ID + ZENLAYER_ACCESS_KEY_SECRET",
        "ZENLAYERCLOUD_ACCESS_KEY_ID + ZENLAYERCLOUD_ACCESS_KEY_PASSWORD",
        f"{CREDS_FILE} profile 'prod' (from ZENLAYER_PROFILE; no such file)",
    ):
        assert name in text


def test_broken_config_does_not_matter_without_a_credentials_file(tmp_path: Path) -> None:
    """A broken config.json alone does not hide the real problem: no credentials anywhere."""
    write(tmp_path, "config.json", "{not json")
    with pytest.raises(UsageError, match=r"no Zenlayer credentials; tried: .* profile 'default'"):
        resolve_credentials({}, tmp_path)


@pytest.mark.parametrize(
    ("files", "environ", "message"),
    [
        pytest.param(
            {"credentials.json": '{"default": {"token": "' + TOKEN + '",}}'},
            {},
            f"{CREDS_FILE} is not valid JSON (line 1, column ",
            id="malformed-json",
        ),
        pytest.param(
            {"credentials.json": [TOKEN]},
            {},
            f"{CREDS_FILE} must be a JSON object mapping profile names to credentials",
            id="not-an-object",
        ),
        pytest.param(
            {"credentials.json": {"default": {"token": TOKEN}, "stage": {"token": TOKEN}}},
            {"ZENLAYER_PROFILE": "prod"},
            f"profile 'prod' (from ZENLAYER_PROFILE) is not in {CREDS_FILE}; profiles there: 'default', 'stage'",
            id="missing-profile",
        ),
        pytest.param(
            {"credentials.json": {"default": {"token": TOKEN}}, "config.json": {"current_profile": "gone"}},
            {},
            f"profile 'gone' (current_profile in ~/.zenlayer/config.json) is not in {CREDS_FILE}",
            id="missing-current-profile",
        ),
        pytest.param(
            {"credentials.json": {"default": {"language": "en"}}},
            {},
            f"profile 'default' in {CREDS_FILE} has neither 'token' nor 'access_key_id' + 'access_key_secret'",
            id="neither",
        ),
        pytest.param(
            {"credentials.json": {"default": {"access_key_secret": SECRET, "token": ""}}},
            {},
            f"profile 'default' in {CREDS_FILE} has access_key_secret but no access_key_id; set both",
            id="half-pair",
        ),
        pytest.param(
            {"credentials.json": {"default": TOKEN}},
            {},
            f"profile 'default' in {CREDS_FILE} must be a JSON object",
            id="profile-not-object",
        ),
        pytest.param(
            {"credentials.json": {"default": {"token": 12345}}},
            {},
            f"'token' of profile 'default' in {CREDS_FILE} must be a string",
            id="token-not-string",
        ),
        pytest.param(
            {"credentials.json": {"default": {"access_key_id": "k", "access_key_secret": SECRET + "\r\nx"}}},
            {},
            f"'access_key_secret' of profile 'default' in {CREDS_FILE} contains a control character",
            id="control-character",
        ),
        pytest.param(
            {"credentials.json": {"default": {"token": TOKEN}}, "config.json": "[" + TOKEN},
            {},
            "~/.zenlayer/config.json is not valid JSON (line 1, column ",
            id="malformed-config",
        ),
        pytest.param(
            {"credentials.json": {"default": {"token": TOKEN}}, "config.json": {"current_profile": 7}},
            {},
            "'current_profile' in ~/.zenlayer/config.json must be a profile name (a string)",
            id="config-current-not-string",
        ),
    ],
)
def test_unusable_files_are_clear_errors(
    tmp_path: Path, files: dict[str, Any], environ: dict[str, str], message: str
) -> None:
    """A file that cannot be used is a usage error naming the file and profile, never a value."""
    for name, doc in files.items():
        write(tmp_path, name, doc)
    with pytest.raises(UsageError) as info:
        resolve_credentials(environ, tmp_path)
    text = str(info.value)
    assert text.startswith(message)
    assert SECRET not in text
    assert TOKEN not in text
    assert str(tmp_path) not in text


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    """A credentials path that cannot be read (here a directory) is named, not a traceback."""
    (tmp_path / ".zenlayer" / "credentials.json").mkdir(parents=True)
    with pytest.raises(UsageError, match=f"cannot read {CREDS_FILE}: "):
        resolve_credentials({}, tmp_path)
