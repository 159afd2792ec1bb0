"""AWS credentials for the client, from the file ``clowdr cloud`` is given, held only in its own sessions.

The file may be what the AWS console hands out (a CSV with ``Access key ID`` and ``Secret access key``
columns) or a shared credentials or config file (INI, ``[name]`` or ``[profile name]`` sections; the profile
is ``AWS_PROFILE`` if set, else ``default``, else the file's only one). No file: the standard chain
(environment, ``~/.aws``, an instance or task role).

Keys live in the returned boto3 session and in the s3fs filesystem built from it, nowhere else: never in
``os.environ``, the dask config, a file clowdr writes, or an error message (a bad file is described by its
name and the missing field, never by its content). Workers never receive them: on AWS they get a task role.
"""
from __future__ import annotations

import configparser
import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clowdr.errors import InputError

CSV_KEY_ID, CSV_SECRET = "Access key ID", "Secret access key"


@dataclass
class AwsSession:
    """The client's AWS session (boto3) and where its credentials came from (for messages: never the keys)."""

    session: Any
    source: str                    # "file.csv", "file (profile dev)", "the standard chain"

    def __repr__(self) -> str:     # a session printed in a traceback says where, never what
        return f"AwsSession(source={self.source!r})"

    def client(self, service: str, **kwargs: Any) -> Any:
        return self.session.client(service, **kwargs)

    @property
    def region(self) -> str | None:
        return self.session.region_name

    def s3fs(self) -> Any:
        """An s3fs filesystem with this session's credentials (the environment's endpoint, if it names one)."""
        import s3fs

        from clowdr import storage

        frozen = self.session.get_credentials().get_frozen_credentials()
        endpoint = storage.endpoint_url()
        return s3fs.S3FileSystem(key=frozen.access_key, secret=frozen.secret_key, token=frozen.token,
                                 skip_instance_cache=True, use_listings_cache=False,
                                 client_kwargs={"endpoint_url": endpoint, "region_name": self.region}
                                 if endpoint else {"region_name": self.region},
                                 config_kwargs=storage.CLIENT_CONFIG)


def load(path: str | None, region: str | None = None) -> AwsSession:
    """The session for ``path`` (None: the standard chain); InputError naming the file for a bad one."""
    import boto3

    if path is None:
        session = boto3.Session(region_name=region)
        if session.get_credentials() is None:
            raise InputError("credentials", "no AWS credentials found (give a credentials file, or set "
                                            "AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
        return AwsSession(session, "the standard chain")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a text file"
        raise InputError(path, f"cannot read the credentials file ({why})") from None
    first_line = text.lstrip().partition("\n")[0]
    if CSV_KEY_ID in first_line:
        return _from_csv(path, text, region)
    return _from_ini(path, text, region)


def _from_csv(path: str, text: str, region: str | None) -> AwsSession:
    import boto3

    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise InputError(path, "the CSV has a header but no row of keys")
    row = {(k or "").strip(): (v or "").strip() for k, v in rows[0].items()}
    for column in (CSV_KEY_ID, CSV_SECRET):
        if not row.get(column):
            raise InputError(path, f"column '{column}': empty or missing (expected an AWS console access key CSV)")
    session = boto3.Session(aws_access_key_id=row[CSV_KEY_ID], aws_secret_access_key=row[CSV_SECRET],
                            region_name=region)
    return AwsSession(session, Path(path).name)


def _from_ini(path: str, text: str, region: str | None) -> AwsSession:
    import boto3
    import botocore.session

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        raise InputError(path, "neither an AWS console CSV (columns 'Access key ID', 'Secret access key') nor a "
                               "shared credentials/config file ([profile] sections)") from None
    profiles = [name.removeprefix("profile ").strip() for name in parser.sections()]
    if not profiles:
        raise InputError(path, "no profile in the credentials file")
    wanted = os.environ.get("AWS_PROFILE")
    profile = (wanted if wanted in profiles else "default" if "default" in profiles
               else profiles[0] if len(profiles) == 1 else None)
    if profile is None:
        raise InputError(path, f"several profiles ({', '.join(profiles)}): choose one with AWS_PROFILE")
    core = botocore.session.Session()
    core.set_config_variable("credentials_file", str(Path(path).resolve()))
    core.set_config_variable("config_file", str(Path(path).resolve()))
    try:
        session = boto3.Session(botocore_session=core, profile_name=profile, region_name=region)
        found = session.get_credentials()
    except Exception as exc:  # noqa: BLE001 -- described by kind only: botocore's text may quote the file
        raise InputError(path, f"profile '{profile}': unusable ({type(exc).__name__})") from None
    if found is None or not found.access_key:
        raise InputError(path, f"profile '{profile}': no aws_access_key_id/aws_secret_access_key (or role) in it")
    return AwsSession(session, f"{Path(path).name} (profile {profile})")
