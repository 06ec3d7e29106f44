"""Credentials from the environment names Zenlayer's tools use; secrets never shown."""

from __future__ import annotations

import pytest

from batch import Credentials, UsageError, credentials_from_env


def test_zeno_names() -> None:
    """ZENLAYER_ACCESS_KEY_ID + ZENLAYER_ACCESS_KEY_SECRET (zeno CLI)."""
    creds = credentials_from_env({"ZENLAYER_ACCESS_KEY_ID": "kid", "ZENLAYER_ACCESS_KEY_SECRET": "s3cr3t-value"})
    assert (creds.access_key_id, creds.secret, creds.bearer) == ("kid", "s3cr3t-value", False)


def test_terraform_names() -> None:
    """ZENLAYERCLOUD_ACCESS_KEY_ID + ZENLAYERCLOUD_ACCESS_KEY_PASSWORD (Terraform)."""
    env = {"ZENLAYERCLOUD_ACCESS_KEY_ID": "tid", "ZENLAYERCLOUD_ACCESS_KEY_PASSWORD": "pw-value"}
    assert credentials_from_env(env) == Credentials("tid", "pw-value")


def test_token_wins() -> None:
    """ZENLAYER_TOKEN takes precedence over any key pair, as in the zeno CLI."""
    env = {"ZENLAYER_TOKEN": "tok", "ZENLAYER_ACCESS_KEY_ID": "kid", "ZENLAYER_ACCESS_KEY_SECRET": "s"}
    creds = credentials_from_env(env)
    assert creds.bearer
    assert creds.secret == "tok"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        pytest.param({}, "no Zenlayer credentials", id="none"),
        pytest.param({"ZENLAYER_ACCESS_KEY_ID": "kid"}, "ZENLAYER_ACCESS_KEY_SECRET is not", id="half-pair"),
        pytest.param(
            {"ZENLAYERCLOUD_ACCESS_KEY_PASSWORD": "pw"}, "ZENLAYERCLOUD_ACCESS_KEY_ID is not", id="other-half"
        ),
    ],
)
def test_missing_credentials_name_the_variables(env: dict[str, str], needle: str) -> None:
    """Missing or half-set credentials: a usage error that names what to set."""
    with pytest.raises(UsageError, match=needle):
        credentials_from_env(env)


def test_secret_is_never_in_repr_or_str() -> None:
    """repr and str show the key id, never the secret or token."""
    for creds in (Credentials("kid", "super-secret-value"), Credentials(None, "super-secret-value", bearer=True)):
        assert "super-secret-value" not in repr(creds)
        assert "super-secret-value" not in str(creds)
        assert "super-secret-value" not in creds.source_label
