"""The original tool's base class of cloud endpoints: it holds the credentials file it was given."""
from __future__ import annotations


class Endpoint:
    """A cloud to launch tasks on, reached with the credentials in the file ``auth``."""

    def __init__(self, auth: str) -> None:
        self.credentials = auth
