"""The credentials file of ``clowdr cloud``: an AWS console CSV or a shared credentials/config file, or the
standard chain; keys only ever in the client's own sessions, never in a message, the environment or dask's
config. Checked against a real S3 API (moto on 127.0.0.1), which accepts any key."""
from __future__ import annotations

import json
import os

import pytest
from conftest import SECRET

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")

import dask.config  # noqa: E402

from clowdr import credentials  # noqa: E402
from clowdr.errors import InputError  # noqa: E402

KEY_ID = "AKIACLOWDRTEST" + SECRET[-6:].upper()


def assert_nowhere(*texts: str) -> None:
    """The secret (and the key id) in none of these, nor in the environment or dask's config."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}   # names the test's params
    for text in (*texts, json.dumps(environment), json.dumps(dask.config.config, default=str)):
        assert SECRET not in text and KEY_ID not in text


@pytest.fixture
def no_chain(tmp_path, monkeypatch):
    """No credentials anywhere but the file under test (no environment keys, no ~/.aws)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def keys_of(aws: credentials.AwsSession) -> tuple[str, str]:
    frozen = aws.session.get_credentials().get_frozen_credentials()
    return frozen.access_key, frozen.secret_key


def test_console_csv(tmp_path, no_chain):
    path = tmp_path / "new_user_credentials.csv"
    path.write_text("User name,Password,Access key ID,Secret access key,Console login link\n"
                    f"clowdr,,{KEY_ID},{SECRET},https://example.invalid/console\n", encoding="utf-8-sig")
    aws = credentials.load(str(path), "eu-west-2")
    assert keys_of(aws) == (KEY_ID, SECRET) and aws.region == "eu-west-2"
    assert_nowhere(repr(aws), aws.source)


def test_shared_credentials_file_with_a_profile(tmp_path, no_chain, monkeypatch):
    path = tmp_path / "credentials"
    path.write_text(f"[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = defaultsecret\n\n"
                    f"[dev]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n")
    assert keys_of(credentials.load(str(path)))[0] == "DEFAULTKEY"
    monkeypatch.setenv("AWS_PROFILE", "dev")
    aws = credentials.load(str(path))
    assert keys_of(aws) == (KEY_ID, SECRET) and aws.source == "credentials (profile dev)"
    assert_nowhere(repr(aws))


def test_config_file_with_a_profile_section(tmp_path, no_chain):
    path = tmp_path / "config"
    path.write_text(f"[profile only]\nregion = ca-central-1\naws_access_key_id = {KEY_ID}\n"
                    f"aws_secret_access_key = {SECRET}\n")
    aws = credentials.load(str(path))
    assert keys_of(aws) == (KEY_ID, SECRET) and aws.region == "ca-central-1"


def test_no_file_is_the_standard_chain(no_chain, monkeypatch):
    with pytest.raises(InputError, match="no AWS credentials found"):
        credentials.load(None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert keys_of(credentials.load(None, "us-west-2")) == (KEY_ID, SECRET)


def test_the_session_reaches_s3_with_its_own_keys_only(aws_env, tmp_path, monkeypatch):
    """s3fs built from the file's session lists a real bucket while the environment holds no key at all."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    path = tmp_path / "keys.csv"
    path.write_text(f"Access key ID,Secret access key\n{KEY_ID},{SECRET}\n")
    aws = credentials.load(str(path), "us-east-1")
    aws.client("s3").create_bucket(Bucket="clowdr-creds")
    fs = aws.s3fs()
    fs.pipe("clowdr-creds/a.txt", b"a")
    assert fs.ls("clowdr-creds") == ["clowdr-creds/a.txt"]
    assert_nowhere()


@pytest.mark.parametrize("content, says", [
    (None, "cannot read the credentials file (No such file or directory)"),
    ("", "no profile in the credentials file"),
    ("Access key ID,Secret access key\n", "header but no row"),
    (f"User name,Access key ID\nclowdr,{KEY_ID}\n", "column 'Secret access key': empty or missing"),
    (f"aws_secret_access_key={SECRET}\n", "neither an AWS console CSV"),
    (f"[a]\naws_access_key_id={KEY_ID}\naws_secret_access_key={SECRET}\n[b]\naws_access_key_id=x\n",
     "several profiles (a, b): choose one with AWS_PROFILE"),
    (f"[only]\nregion=us-east-1\nnote={SECRET}\n", "profile 'only': no aws_access_key_id"),
    (b"\xff\xfe\x00garbage" + SECRET.encode(), "cannot read the credentials file (not a text file)"),
])
def test_bad_credentials_files_are_one_line_naming_the_file(tmp_path, no_chain, content, says):
    path = tmp_path / "creds"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InputError) as error:
        credentials.load(str(path))
    message = str(error.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message
    assert_nowhere(message)


def test_a_directory_is_refused(tmp_path, no_chain):
    with pytest.raises(InputError, match="cannot read the credentials file"):
        credentials.load(str(tmp_path))
