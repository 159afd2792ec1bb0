"""The original tool's ``clowdr.controller`` package: ``metadata`` plans and records runs, as ``clowdr local`` does."""
