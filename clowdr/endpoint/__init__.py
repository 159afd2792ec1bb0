"""The original tool's ``clowdr.endpoint`` package: where a cloud run's tasks go (``AWS``)."""
