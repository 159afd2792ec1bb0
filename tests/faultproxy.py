"""A TCP proxy on loopback that cuts transfers short: real connections to a real S3 server, broken the way a
network breaks them (both sockets shut down after some bytes), to test what a cut transfer leaves behind.

Every connection is forwarded to ``target``; once a connection has carried more than ``cut_after`` bytes in one
direction it is closed abruptly, for the first ``cuts`` such connections (None: every one).
"""
from __future__ import annotations

import socket
import threading


class FaultProxy:
    def __init__(self, target: tuple[str, int], cut_after: int, cuts: int | None = 1) -> None:
        self.target, self.cut_after, self.cuts_left = target, cut_after, cuts
        self.cut = 0                                       # connections cut so far
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            state = {"closed": False}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, client, upstream, state), daemon=True).start()

    def _should_cut(self) -> bool:
        with self._lock:
            if self.cuts_left is not None and self.cuts_left <= 0:
                return False
            if self.cuts_left is not None:
                self.cuts_left -= 1
            self.cut += 1
            return True

    def _pump(self, source: socket.socket, sink: socket.socket, client: socket.socket, upstream: socket.socket,
              state: dict[str, bool]) -> None:
        carried = 0
        try:
            while data := source.recv(65536):
                carried += len(data)
                if carried > self.cut_after and self._should_cut():
                    sink.sendall(data[: max(0, len(data) - (carried - self.cut_after))])
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            if not state["closed"]:
                state["closed"] = True
                for sock in (client, upstream):   # shutdown wakes the other pump, blocked in recv
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()

    def close(self) -> None:
        self._closing = True
        self._server.close()
