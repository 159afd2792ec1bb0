"""Times as the provenance record writes them."""
from __future__ import annotations

from datetime import datetime, timezone


def iso(timestamp: float) -> str:
    """ISO 8601 with the local zone, to the microsecond."""
    return datetime.fromtimestamp(timestamp, timezone.utc).astimezone().isoformat()
