"""The original tool's ``clowdr.endpoint.AWS.AWS(auth)``: Amazon Web Services as a place to run tasks.

Kept as the name scripts import; it runs on clowdr's cloud back-end once that exists. Until then, making one
says so plainly instead of half-configuring an AWS account.
"""
from __future__ import annotations

from clowdr.endpoint.remote import Endpoint
from clowdr.errors import NotAvailableError


class AWS(Endpoint):
    """An AWS endpoint reached with the credentials file ``auth`` (a CSV of access key id and secret)."""

    def __init__(self, auth: str) -> None:
        super().__init__(auth)
        raise NotAvailableError("clowdr.endpoint.AWS: the AWS cloud back-end is not available yet in this version "
                                "of clowdr (run on this machine or a cluster with clowdr.driver.local)")
