"""TCP proxies for the drills: 127.0.0.1:<port> -> an etcd member, forwarding both ways,
with a fault of their own on the wire.

`Proxy` holds what every one needs (the listening socket, one thread per direction of
each connection, closing everything); a subclass decides what a chunk going up (client
to etcd) or down (etcd to client) becomes:

* `LostReplyProxy` forwards the first request that carries a marker string and drops
  whatever etcd sends back on that connection; once etcd shows the write committed
  (the test's own check, made over a direct connection) it cuts the connection. The
  client sees a failed call for a write that did happen.
* `TripProxy` calls `trip()` (once) just before forwarding the request byte that
  takes the client's total past a threshold, then forwards nothing more: put in front
  of an etcd member with `trip` = SIGKILL of that member, the member dies while a
  request is on the wire, after exactly that many bytes of it.
"""
from __future__ import annotations

import socket
import threading
from typing import Any, Callable

#: chunk() verdicts: forward it, forward this much of it and end the connection's
#: direction, or drop it and keep reading
FORWARD, STOP, DROP = "forward", "stop", "drop"


def close_all(*socks: socket.socket, close: bool = True) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if close:
            s.close()


class Proxy:
    def __init__(self, upstream: tuple[str, int], name: str = "drill-proxy") -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self._lsock.getsockname()[1]
        threading.Thread(target=self._accept, name=name, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._lsock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, server]
            conn: dict[str, Any] = {}
            threading.Thread(target=self._pump, args=(client, server, conn, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, conn, False), daemon=True).start()

    def chunk(self, data: bytes, conn: dict[str, Any], up: bool) -> tuple[str, bytes]:
        """What to do with `data` read from one side (`up`: from the client)."""
        return FORWARD, data

    def after_send(self, conn: dict[str, Any], up: bool) -> None:
        """Called after each chunk went out (or was dropped)."""

    def _pump(self, src: socket.socket, dst: socket.socket, conn: dict[str, Any], up: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                verdict, out = self.chunk(data, conn, up)
                if out and verdict != DROP:
                    dst.sendall(out)
                self.after_send(conn, up)
                if verdict == STOP:
                    break
        except OSError:
            pass
        finally:
            close_all(src, dst, close=False)

    def close(self) -> None:
        self._stop.set()
        self._lsock.close()
        with self._lock:
            socks, self._socks = self._socks, []
        close_all(*socks)


class LostReplyProxy(Proxy):
    """Drops etcd's reply to the first request carrying `marker`; `committed()` says
    when etcd has applied it, and until then the connection is held open, so etcd is
    never told to abandon the request. `fired`: the marked request went up; `cut`: its
    reply was dropped after the commit and the connection cut."""

    def __init__(self, upstream: tuple[str, int], marker: bytes, committed: Callable[[], bool]) -> None:
        self.marker = marker
        self.committed = committed
        self.fired = threading.Event()
        self.cut = threading.Event()
        self.dropped_bytes = 0
        super().__init__(upstream, name="lost-reply-proxy")

    def chunk(self, data: bytes, conn: dict[str, Any], up: bool) -> tuple[str, bytes]:
        if up:
            seen = conn.get("tail", b"") + data
            if not self.fired.is_set() and self.marker in seen:
                # marked before forwarding: no byte of the reply can slip through
                conn["dropping"] = True
                self.fired.set()
            conn["tail"] = seen[-len(self.marker):]
            return FORWARD, data
        if not conn.get("dropping"):
            return FORWARD, data
        self.dropped_bytes += len(data)
        if not self.cut.is_set() and self._wait_committed():
            self.cut.set()
            return STOP, b""
        return DROP, b""

    def _wait_committed(self) -> bool:
        # etcd replies only after applying a txn; this guards against a reply to
        # something else (an HTTP/2 window update) arriving first.
        for _ in range(100):
            if self.committed():
                return True
            self._stop.wait(0.05)
        return False


class TripProxy(Proxy):
    def __init__(self, upstream: tuple[str, int], threshold: int, trip: Callable[[], None]) -> None:
        self.threshold = threshold
        self._trip = trip
        self.sent = 0
        self.tripped = threading.Event()
        super().__init__(upstream, name="trip-proxy")

    def chunk(self, data: bytes, conn: dict[str, Any], up: bool) -> tuple[str, bytes]:
        if not up:
            return FORWARD, data
        with self._lock:
            if self.tripped.is_set():
                return STOP, b""
            room = self.threshold - self.sent
            if len(data) <= room:
                self.sent += len(data)
                return FORWARD, data
            # the bytes before the threshold go out, then the trip (after_send)
            conn["trip"] = True
            head = data[:max(room, 0)]
            self.sent += len(head)
            return STOP, head

    def after_send(self, conn: dict[str, Any], up: bool) -> None:
        if up and conn.pop("trip", False):
            with self._lock:
                self._trip()
                self.tripped.set()
