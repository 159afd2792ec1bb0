"""How a worker's events (``clowdr.protocol``) reach the client's monitor.

A worker in another process (a worker process, a batch job, a cloud task) sends them as Dask events: worker to
scheduler to client, two TCP messages and their serialisation each. A worker that is a thread of the client's
own process (the local back-end's default) hands them straight to the monitor instead: every task sends at
least two (started, ended), and through Dask they cost the shared event loop more than the rest of the task's
bookkeeping. Either way an event is delivered before the task's future completes (a direct call returns before
the task does; Dask orders a worker's events before its task-finished message), which the monitor relies on.
"""
from __future__ import annotations

import os
from typing import Any, Callable

Deliver = Callable[[dict[str, Any]], None]
# topic -> (pid of the process that listens, its callback): a forked process inherits the dict, not the listener
_in_process: dict[str, tuple[int, Deliver]] = {}


def listen(client: Any, topic: str, deliver: Deliver) -> None:
    """Deliver ``topic``'s events to ``deliver``, whichever way each worker sends them."""
    _in_process[topic] = (os.getpid(), deliver)
    client.subscribe_topic(topic, lambda event: deliver(event[1]))


def stop_listening(client: Any, topic: str) -> None:
    """No more events of ``topic``: those still on their way (a stopping launch) are dropped."""
    _in_process.pop(topic, None)
    client.unsubscribe_topic(topic)


def emitter(topic: str) -> Deliver:
    """How the running worker sends ``topic``'s events (thread-safe)."""
    listener = _in_process.get(topic)
    if listener is not None and listener[0] == os.getpid():
        return lambda message: _deliver_in_process(topic, message)
    from distributed import get_worker

    worker = get_worker()
    return lambda message: worker.log_event(topic, message)


def _deliver_in_process(topic: str, message: dict[str, Any]) -> None:
    listener = _in_process.get(topic)
    if listener is not None:
        listener[1](message)
