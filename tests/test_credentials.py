"""Credentials from the environment names Zenlayer's tools use; secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch import Credentials, UsageError, credentials_from_env
from batch.cli import main
from batch.credentials import resolve_credentials

SECRET = "s3cr3t-value"


def test_zeno_names(tmp_path: Path) -> None:
    """ZENLAYER_ACCESS_KEY_ID + ZENLAYER_ACCESS_KEY_SECRET (zeno CLI)."""
    env = {"ZENLAYER_ACCESS_KEY_ID": "kid", "ZENLAYER_ACCESS_KEY_SECRET": SECRET}
    creds = credentials_from_env(env, home=tmp_path)
    assert (creds.access_key_id, creds.secret, creds.bearer) == ("kid", SECRET, False)


def test_terraform_names(tmp_path: Path) -> None:
    """ZENLAYERCLOUD_ACCESS_KEY_ID + ZENLAYERCLOUD_ACCESS_KEY_PASSWORD (Terraform)."""
    env = {"ZENLAYERCLOUD_ACCESS_KEY_ID": "tid", "ZENLAYERCLOUD_ACCESS_KEY_PASSWORD": "pw-value"}
    assert credentials_from_env(env, home=tmp_path) == Credentials("tid", "pw-value")


def test_token_wins(tmp_path: Path) -> None:
    """ZENLAYER_TOKEN takes precedence over any key pair, as in the zeno CLI."""
    env = {"ZENLAYER_TOKEN": "tok", "ZENLAYER_ACCESS_KEY_ID": "kid", "ZENLAYER_ACCESS_KEY_SECRET": "s"}
    creds = credentials_from_env(env, home=tmp_path)
    assert creds.bearer
    assert creds.secret == "tok"


def test_home_defaults_to_the_environments_home(tmp_path: Path) -> None:
    """Without home=, credentials_from_env looks for zeno's file under the mapping's HOME."""
    (tmp_path / ".zenlayer").mkdir()
    (tmp_path / ".zenlayer" / "credentials.json").write_text('{"default": {"token": "file-token"}}')
    assert credentials_from_env({"HOME": str(tmp_path)}).secret == "file-token"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        pytest.param({}, "no Zenlayer credentials", id="none"),
        pytest.param({"ZENLAYER_ACCESS_KEY_ID": "kid"}, "ZENLAYER_ACCESS_KEY_SECRET is not", id="half-pair"),
        pytest.param(
            {"ZENLAYERCLOUD_ACCESS_KEY_PASSWORD": "pw"}, "ZENLAYERCLOUD_ACCESS_KEY_ID is not", id="other-half"
        ),
        pytest.param({"ZENLAYER_ACCESS_KEY_SECRET": "pw\n"}, "ZENLAYER_ACCESS_KEY_ID is not", id="half-with-newline"),
    ],
)
def test_missing_credentials_name_the_variables(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    """Missing or half-set credentials: a usage error that names what to set."""
    with pytest.raises(UsageError, match=needle):
        credentials_from_env(env, home=tmp_path)


def test_secret_is_never_in_repr_or_str() -> None:
    """repr and str show the key id, never the secret or token."""
    for creds in (Credentials("kid", "super-secret-value"), Credentials(None, "super-secret-value", bearer=True)):
        assert "super-secret-value" not in repr(creds)
        assert "super-secret-value" not in str(creds)
        assert "super-secret-value" not in creds.source_label


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({"ZENLAYER_TOKEN": "  tok\n"}, Credentials(None, "tok", bearer=True), id="token"),
        pytest.param(
            {"ZENLAYER_ACCESS_KEY_ID": " kid ", "ZENLAYER_ACCESS_KEY_SECRET": f"{SECRET}\n"},
            Credentials("kid", SECRET),
            id="zeno-secret-newline",
        ),
        pytest.param(
            {"ZENLAYERCLOUD_ACCESS_KEY_ID": "tid", "ZENLAYERCLOUD_ACCESS_KEY_PASSWORD": f"\t{SECRET}\r\n"},
            Credentials("tid", SECRET),
            id="terraform-secret-crlf",
        ),
    ],
)
def test_surrounding_whitespace_is_trimmed(tmp_path: Path, env: dict[str, str], expected: Credentials) -> None:
    """A trailing newline from $(cat file) is trimmed from the secret too, not sent as part of it."""
    assert credentials_from_env(env, home=tmp_path) == expected


@pytest.mark.parametrize("char", ["\r\n", "\n", "\r", "\t", "\x00", "\x7f", "\x85"])
@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"ZENLAYER_TOKEN": "tokhead{c}toktail"}, "ZENLAYER_TOKEN", id="token"),
        pytest.param(
            {"ZENLAYER_ACCESS_KEY_ID": "kidhead{c}kidtail", "ZENLAYER_ACCESS_KEY_SECRET": SECRET},
            "ZENLAYER_ACCESS_KEY_ID",
            id="zeno-id",
        ),
        pytest.param(
            {"ZENLAYER_ACCESS_KEY_ID": "kid", "ZENLAYER_ACCESS_KEY_SECRET": "sechead{c}sectail"},
            "ZENLAYER_ACCESS_KEY_SECRET",
            id="zeno-secret",
        ),
        pytest.param(
            {"ZENLAYERCLOUD_ACCESS_KEY_ID": "tid", "ZENLAYERCLOUD_ACCESS_KEY_PASSWORD": "pwhead{c}pwtail"},
            "ZENLAYERCLOUD_ACCESS_KEY_PASSWORD",
            id="terraform-secret",
        ),
    ],
)
def test_control_characters_are_refused_naming_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str, char: str
) -> None:
    """A control character inside a value is a usage error naming the variable, never the value."""
    env = {name: value.replace("{c}", char) for name, value in env.items()}
    with pytest.raises(UsageError) as info:
        credentials_from_env(env, home=tmp_path)
    text = str(info.value)
    assert text.startswith(f"{variable} contains a control character")
    for value in env.values():
        for part in value.split(char):
            assert part not in text


def test_hand_made_credentials_with_a_line_break_are_refused() -> None:
    """Credentials built in code get the same check, so no request can carry a header break."""
    with pytest.raises(UsageError, match="the token contains a control character"):
        Credentials(None, "tok\r\nX-Injected: 1", bearer=True)


def test_line_break_in_token_exits_2_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the CLI: a CR/LF in ZENLAYER_TOKEN is exit 2 naming the variable, not a traceback."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ZENLAYER_TOKEN", "secret-token-part\r\nX-Evil: 1")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("instanceId\ni-1\n")
    code = main(["run", str(jobs), "--out", str(tmp_path / "out"), "--endpoint", "http://127.0.0.1:9", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "ZENLAYER_TOKEN contains a control character" in err
    assert "secret-token-part" not in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("env", "source", "unused"),
    [
        pytest.param(
            {"ZENLAYER_TOKEN": "tok", "ZENLAYER_ACCESS_KEY_ID": "kid", "ZENLAYER_ACCESS_KEY_SECRET": SECRET},
            "ZENLAYER_TOKEN",
            ["ZENLAYER_ACCESS_KEY_ID + ZENLAYER_ACCESS_KEY_SECRET"],
            id="token-over-zeno",
        ),
        pytest.param(
            {
                "ZENLAYER_ACCESS_KEY_ID": "kid",
                "ZENLAYER_ACCESS_KEY_SECRET": SECRET,
                "ZENLAYERCLOUD_ACCESS_KEY_ID": "tid",
                "ZENLAYERCLOUD_ACCESS_KEY_PASSWORD": "pw",
            },
            "ZENLAYER_ACCESS_KEY_ID + ZENLAYER_ACCESS_KEY_SECRET",
            ["ZENLAYERCLOUD_ACCESS_KEY_ID + ZENLAYERCLOUD_ACCESS_KEY_PASSWORD"],
            id="zeno-over-terraform",
        ),
        pytest.param(
            {"ZENLAYER_TOKEN": "tok", "ZENLAYERCLOUD_ACCESS_KEY_ID": "half-only"},
            "ZENLAYER_TOKEN",
            ["ZENLAYERCLOUD_ACCESS_KEY_ID + ZENLAYERCLOUD_ACCESS_KEY_PASSWORD"],
            id="unused-half-pair",
        ),
        pytest.param({"ZENLAYER_TOKEN": "tok"}, "ZENLAYER_TOKEN", [], id="one-source-no-note"),
    ],
)
def test_which_source_is_used_is_said(tmp_path: Path, env: dict[str, str], source: str, unused: list[str]) -> None:
    """With several sources set, a note says which one is used and which are not; one source: no note."""
    resolved = resolve_credentials(env, tmp_path)
    assert resolved.source == source
    if not unused:
        assert resolved.notes == []
        return
    assert resolved.notes == [f"using credentials from {source}; also set but not used: {', '.join(unused)}"]
    assert all(value not in resolved.notes[0] for value in env.values())


@pytest.mark.parametrize("value", ["abc\u00e9", "tok\u20acen", "a\u2028b", "a\u00a0b", "\u00a0abc", "abc\u2028"])
def test_non_ascii_credentials_are_refused_naming_the_variable(value: str) -> None:
    """A token with a non-ASCII character is refused at start naming the variable, never the value."""
    with pytest.raises(UsageError) as caught:
        resolve_credentials({"ZENLAYER_TOKEN": value}, Path("/nonexistent-home"))
    assert "ZENLAYER_TOKEN" in str(caught.value)
    assert value not in str(caught.value)


@pytest.mark.parametrize("endpoint", ["https://exa mple.com", "https://exam\tple.com", "https://ex\x00.com"])
def test_endpoint_with_a_space_or_control_character_is_refused(endpoint: str) -> None:
    """An endpoint with a space or control character inside is a usage error, not a host to try."""
    from batch.credentials import parse_endpoint

    with pytest.raises(UsageError, match="space or control character"):
        parse_endpoint(endpoint)
