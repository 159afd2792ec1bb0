"""The original tool's ``clowdr.endpoint.AWS.AWS(auth)``: Amazon Web Services as a place to run tasks.

Kept as the name scripts import. The original drove AWS Batch (a compute environment, a job queue and a job
per task, with keys passed to the jobs); clowdr runs on AWS through its cloud back-end instead (``clowdr cloud``,
``clowdr.driver.cloud``: Fargate or EC2 workers through dask-cloudprovider, keys kept in the client). Making one
says so plainly instead of half-configuring an AWS account the old way.
"""
from __future__ import annotations

from clowdr.endpoint.remote import Endpoint
from clowdr.errors import NotAvailableError


class AWS(Endpoint):
    """An AWS endpoint reached with the credentials file ``auth`` (a CSV of access key id and secret)."""

    def __init__(self, auth: str) -> None:
        super().__init__(auth)
        raise NotAvailableError("clowdr.endpoint.AWS: the original's AWS Batch endpoint is not part of this clowdr; "
                                "run on AWS with clowdr cloud or clowdr.driver.cloud (Fargate or EC2 workers)")
