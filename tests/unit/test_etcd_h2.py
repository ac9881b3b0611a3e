"""etcd_h2.StreamCall, the watch's own HTTP/2 client, against a scripted HTTP/2
server: a TCP listener on 127.0.0.1 whose thread records the client's preface and
frames (header blocks decoded with hpack.Decoder) and sends what the test tells
it to. Then etcd.Watch on top of it: how a refused or unreachable watch is
reported, and a watch that works.

The server's header blocks are HPACK literals without indexing, new name, no
Huffman, encoded here; frames and gRPC messages are built here from RFC 9113 and
gRPC's wire format, not with the module's own helpers."""
from __future__ import annotations

import queue
import socket
import struct
import sys
import threading
import time
from typing import Callable, Iterator, NamedTuple

import pytest

from calico_net.datastore import etcd_h2
from calico_net.datastore.config import EtcdConfig
from calico_net.datastore.errors import DatastoreError, DatastoreUnavailable
from calico_net.datastore.etcd import EtcdClient
from calico_net.datastore.etcd_h2 import CallFailed, StreamCall
from calico_net.datastore.etcdpb import rpc_pb2 as pb
from calico_net.datastore.hpack import Decoder

pytestmark = pytest.mark.timeout(60)

GUARD = 5.0     # seconds: the longest any wait here takes before the test fails

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
PATH = "/etcdserverpb.Watch/Watch"


# --- what the server sends ------------------------------------------------------------

def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream.to_bytes(4, "big") + payload


def header_block(*fields: tuple[str, str | bytes]) -> bytes:
    """HPACK: each field a literal without indexing with a new name, no Huffman."""
    out = bytearray()
    for name, value in fields:
        out.append(0x00)
        for text in (name, value):
            raw = text if isinstance(text, bytes) else text.encode()
            assert len(raw) < 127, "one-byte lengths only"
            out += bytes((len(raw),)) + raw
    return bytes(out)


def message(payload: bytes, compressed: int = 0) -> bytes:
    """One gRPC message: the compressed flag, the length (32 bits), the bytes."""
    return bytes((compressed,)) + len(payload).to_bytes(4, "big") + payload


def data(payload: bytes, *, pad: int | None = None) -> bytes:
    """A DATA frame on stream 1; with `pad`, PADDED with that many zero bytes."""
    if pad is None:
        return frame(DATA, 0, 1, payload)
    return frame(DATA, PADDED, 1, bytes((pad,)) + payload + bytes(pad))


OK_FIELDS = ((":status", "200"), ("content-type", "application/grpc"))
RESPONSE = frame(HEADERS, END_HEADERS, 1, header_block(*OK_FIELDS))


def trailers(status: int, text: str = "") -> bytes:
    fields = [("grpc-status", str(status))] + ([("grpc-message", text)] if text else [])
    return frame(HEADERS, END_HEADERS | END_STREAM, 1, header_block(*fields))


def trailers_only(status: int) -> bytes:
    return frame(HEADERS, END_HEADERS | END_STREAM, 1, header_block(*OK_FIELDS, ("grpc-status", str(status))))


# --- the scripted server --------------------------------------------------------------

class Frame(NamedTuple):
    type: int
    flags: int
    stream: int
    payload: bytes
    fields: list[tuple[str, str]] | None     # a HEADERS frame's block, decoded


class ScriptedServer:
    """Accepts one connection. Its thread reads the client's preface into `preface`
    and every frame after it into `frames`, and sends `reply` once the client's
    request (DATA on stream 1) is in; the test sends anything else with `send`."""

    def __init__(self, reply: bytes = b"") -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)      # so the thread notices `close` when no one connects
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.reply = reply
        self.preface = b""
        self.frames: queue.Queue[Frame] = queue.Queue()
        self._conn: socket.socket | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="h2-scripted-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            if self._stop.is_set():
                return
            try:
                conn, _ = self._listener.accept()
                break
            except socket.timeout:
                continue
            except OSError:
                return
        conn.settimeout(None)
        self._conn = conn
        self._connected.set()
        decoder, reply = Decoder(), self.reply
        try:
            self.preface = self._read(conn, 24)
            while True:
                head = self._read(conn, 9)
                length, ftype, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
                stream = int.from_bytes(head[5:], "big") & 0x7FFFFFFF
                payload = self._read(conn, length)
                fields = None
                if ftype == HEADERS:
                    fields = [(n.decode(), v.decode()) for n, v in decoder.decode(payload)]
                self.frames.put(Frame(ftype, flags, stream, payload, fields))
                if ftype == DATA and stream == 1 and reply:
                    conn.sendall(reply)
                    reply = b""
        except (EOFError, OSError, ValueError):
            return       # the client closed, or sent what does not decode: the test sees frames missing

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            got = conn.recv(n - len(buf))
            if not got:
                raise EOFError
            buf += got
        return buf

    def send(self, *frames: bytes) -> None:
        assert self._connected.wait(GUARD), "the client never connected"
        assert self._conn is not None
        self._conn.sendall(b"".join(frames))

    def hang_up(self) -> None:
        """Close our sending side (a FIN), without trailers."""
        assert self._connected.wait(GUARD), "the client never connected"
        assert self._conn is not None
        self._conn.shutdown(socket.SHUT_WR)

    def next_frame(self) -> Frame:
        try:
            return self.frames.get(timeout=GUARD)
        except queue.Empty:
            raise AssertionError(f"the client sent no frame in {GUARD} s") from None

    def handshake(self) -> list[Frame]:
        """The four frames the client opens the call with."""
        return [self.next_frame() for _ in range(4)]

    def close(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(GUARD)
        if self._conn is not None:
            self._conn.close()
        self._listener.close()


class H2:
    """Scripted servers and the calls made to them, all closed when the test ends."""

    def __init__(self) -> None:
        self._servers: list[ScriptedServer] = []
        self._calls: list[StreamCall] = []

    def server(self, reply: bytes = b"") -> ScriptedServer:
        server = ScriptedServer(reply)
        self._servers.append(server)
        return server

    def call(self, server: ScriptedServer, request: bytes = b"\x0a\x01x", **kwargs) -> StreamCall:
        kwargs.setdefault("timeout", GUARD)
        call = StreamCall(server.endpoint, PATH, request, tls=None, **kwargs)
        self._calls.append(call)
        return call

    def open(self, **kwargs) -> tuple[ScriptedServer, StreamCall]:
        """A server and a call to it, the client's opening frames already read."""
        server = self.server()
        call = self.call(server, **kwargs)
        server.handshake()
        return server, call

    def close(self) -> None:
        for call in self._calls:
            call.close()
        for server in self._servers:
            server.close()


@pytest.fixture
def h2() -> Iterator[H2]:
    harness = H2()
    try:
        yield harness
    finally:
        harness.close()


def read_all(call: StreamCall) -> list[bytes]:
    out = []
    while (msg := call.next_message(GUARD)) is not None:
        out.append(bytes(msg))
    return out


def failure(call: StreamCall) -> CallFailed:
    """How the call fails (reading every message before that)."""
    with pytest.raises(CallFailed) as info:
        read_all(call)
    return info.value


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        threading.Event().wait(0.005)


# --- the call as the client opens it --------------------------------------------------

def test_client_opens_the_call_with_preface_settings_window_headers_and_the_request(h2):
    server = h2.server()
    request = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"/calico/")).SerializeToString()
    h2.call(server, request)
    settings, window, headers, body = server.handshake()

    assert server.preface == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    assert (settings.type, settings.flags, settings.stream) == (SETTINGS, 0, 0)
    assert dict(struct.iter_unpack(">HI", settings.payload)) == {0x2: 0, 0x4: 2**31 - 1}
    assert (window.type, window.flags, window.stream) == (WINDOW_UPDATE, 0, 0)
    assert 65535 + int.from_bytes(window.payload, "big") == 2**31 - 1   # the connection window raised

    assert (headers.type, headers.stream) == (HEADERS, 1)
    assert headers.flags & END_HEADERS and not headers.flags & END_STREAM
    fields = dict(headers.fields)
    assert len(fields) == len(headers.fields), "a field given twice"
    assert {name: fields[name] for name in (":method", ":scheme", ":path", ":authority", "content-type", "te")} == {
        ":method": "POST", ":scheme": "http", ":path": PATH, ":authority": f"127.0.0.1:{server.port}",
        "content-type": "application/grpc", "te": "trailers"}
    names = [name for name, _ in headers.fields]
    pseudo = [name.startswith(":") for name in names]
    assert pseudo == sorted(pseudo, reverse=True), f"pseudo-headers after regular ones: {names}"

    # the request half stays open: no END_STREAM
    assert (body.type, body.flags, body.stream, body.payload) == (DATA, 0, 1, message(request))


def test_a_long_path_is_sent_with_multi_byte_hpack_lengths(h2):
    server = h2.server()
    path = "/" + "p" * 300
    StreamCall(server.endpoint, path, b"", tls=None, timeout=GUARD).close()
    headers = server.handshake()[2]
    assert dict(headers.fields)[":path"] == path


# --- replies --------------------------------------------------------------------------

def test_messages_split_and_padded_are_delivered_in_order_then_none(h2):
    server, call = h2.open()
    first, second = b"first message " * 5, b"second"
    m1 = message(first)
    server.send(RESPONSE, data(m1[:3]), data(m1[3:]), data(message(second), pad=6), trailers(0))
    assert read_all(call) == [first, second]
    assert call.next_message(GUARD) is None       # and stays ended


def test_a_frame_and_a_message_split_across_reads(h2):
    server, call = h2.open()
    wire = RESPONSE + data(message(b"abcdef" * 10))
    server.send(wire[:len(RESPONSE) + 5])          # the DATA frame's header cut short
    with pytest.raises(CallFailed, match="timed out"):
        call.next_message(0.2)                     # nothing whole yet; the call goes on
    server.send(wire[len(RESPONSE) + 5:], data(message(b"next")))
    assert call.next_message(GUARD) == b"abcdef" * 10
    assert call.next_message(GUARD) == b"next"


def test_header_blocks_continued_in_continuation_frames(h2):
    server, call = h2.open()
    block = header_block(*OK_FIELDS)
    end = header_block(("grpc-status", "0"))
    server.send(frame(HEADERS, 0, 1, block[:4]), frame(CONTINUATION, 0, 1, block[4:10]),
                frame(CONTINUATION, END_HEADERS, 1, block[10:]),
                data(message(b"payload")),
                frame(HEADERS, END_STREAM, 1, end[:3]), frame(CONTINUATION, END_HEADERS, 1, end[3:]))
    assert read_all(call) == [b"payload"]


def test_settings_and_ping_are_acknowledged_and_acks_are_not(h2):
    server, call = h2.open()
    server.send(frame(SETTINGS, ACK, 0), frame(PING, ACK, 0, b"pong-ack"),
                frame(SETTINGS, 0, 0, struct.pack(">HI", 0x3, 100)), frame(PING, 0, 0, b"12345678"),
                RESPONSE, data(message(b"one")))
    assert call.next_message(GUARD) == b"one"
    server.send(frame(PING, 0, 0, b"sentinel"), data(message(b"two")))
    assert call.next_message(GUARD) == b"two"
    got = [server.next_frame() for _ in range(3)]
    assert [(f.type, f.flags, f.stream, f.payload) for f in got] == [
        (SETTINGS, ACK, 0, b""), (PING, ACK, 0, b"12345678"), (PING, ACK, 0, b"sentinel")]


def test_the_window_is_given_back_for_the_connection_and_the_stream(h2, monkeypatch):
    monkeypatch.setattr(etcd_h2, "GIVE_BACK", 100)
    server, call = h2.open()
    big = message(b"x" * 150)                      # a 155-byte DATA payload
    server.send(RESPONSE, data(big))
    assert call.next_message(GUARD) == b"x" * 150
    updates = {(f.type, f.stream, int.from_bytes(f.payload, "big")) for f in (server.next_frame(), server.next_frame())}
    assert updates == {(WINDOW_UPDATE, 0, 155), (WINDOW_UPDATE, 1, 155)}

    # 60 bytes (padding counts) is under 100: nothing given back yet (the PING's ACK comes first)
    small = message(b"y" * 40)                     # 45 bytes; with the pad-length byte and 14 pad: 60
    server.send(data(small, pad=14), frame(PING, 0, 0, b"sentinel"))
    assert call.next_message(GUARD) == b"y" * 40
    ack = server.next_frame()
    assert (ack.type, ack.payload) == (PING, b"sentinel")

    server.send(data(small, pad=14))               # 120 in all now
    assert call.next_message(GUARD) == b"y" * 40
    updates = {(f.type, f.stream, int.from_bytes(f.payload, "big")) for f in (server.next_frame(), server.next_frame())}
    assert updates == {(WINDOW_UPDATE, 0, 120), (WINDOW_UPDATE, 1, 120)}


# --- how a call ends ------------------------------------------------------------------

def test_grpc_status_refusal_is_not_for_the_next_endpoint(h2):
    server, call = h2.open()
    server.send(RESPONSE, data(message(b"before")), trailers(7, "etcdserver%3A%20permission%20denied"))
    assert call.next_message(GUARD) == b"before"
    error = failure(call)
    assert (error.try_next, error.status) == (False, 7)
    assert "etcdserver: permission denied" in str(error)
    assert "PERMISSION_DENIED" in str(error)


def test_trailers_only_unavailable_is_for_the_next_endpoint(h2):
    server, call = h2.open()
    server.send(trailers_only(14))
    error = failure(call)
    assert (error.try_next, error.status) == (True, 14)
    assert "UNAVAILABLE" in str(error)


def test_the_hpack_dynamic_table_follows_the_connection(h2):
    """The response headers add a field to the dynamic table (literal with
    incremental indexing); the trailers name it by its index (62, the first
    dynamic entry), as only a decoder kept across the connection can read."""
    server, call = h2.open()
    indexed = b"\x40" + header_block(("grpc-status", "7"))[1:]
    server.send(frame(HEADERS, END_HEADERS, 1, header_block(*OK_FIELDS) + indexed),
                frame(HEADERS, END_HEADERS | END_STREAM, 1, bytes((0x80 | 62,))))
    error = failure(call)
    assert (error.try_next, error.status) == (False, 7)


@pytest.mark.parametrize("status", [b"", b"OK", b"-1", b"\xb2"])   # the last: a digit to str.isdigit
def test_a_grpc_status_that_is_not_a_number_fails_the_call(h2, status):
    server, call = h2.open()
    server.send(RESPONSE, frame(HEADERS, END_HEADERS | END_STREAM, 1, header_block(("grpc-status", status))))
    error = failure(call)
    assert error.try_next
    assert "no valid grpc-status" in str(error)


def test_rst_stream_fails_the_call(h2):
    server, call = h2.open()
    server.send(RESPONSE, frame(RST_STREAM, 0, 1, (8).to_bytes(4, "big")))
    error = failure(call)
    assert error.try_next
    assert "HTTP/2 error 8" in str(error)


@pytest.mark.parametrize("last, code, debug, text", [
    (0, 0, b"", "GOAWAY, HTTP/2 error 0"),
    (1, 11, b"too_many_pings", "too_many_pings"),
])
def test_goaway_not_covering_the_call_fails_it(h2, last, code, debug, text):
    server, call = h2.open()
    server.send(RESPONSE, frame(GOAWAY, 0, 0, last.to_bytes(4, "big") + code.to_bytes(4, "big") + debug))
    error = failure(call)
    assert error.try_next
    assert text in str(error)


def test_goaway_covering_the_call_lets_it_go_on(h2):
    server, call = h2.open()
    server.send(RESPONSE, frame(GOAWAY, 0, 0, (1).to_bytes(4, "big") + (0).to_bytes(4, "big")),
                data(message(b"after the goaway")), trailers(0))
    assert read_all(call) == [b"after the goaway"]


@pytest.mark.parametrize("fields, text", [
    (((":status", "503"), ("content-type", "application/grpc")), "503"),
    (((":status", "200"), ("content-type", "text/html")), "text/html"),
])
def test_a_response_that_is_not_grpc_fails_the_call(h2, fields, text):
    server, call = h2.open()
    server.send(frame(HEADERS, END_HEADERS, 1, header_block(*fields)), data(message(b"x")))
    error = failure(call)
    assert error.try_next
    assert text in str(error)


def test_a_compressed_message_fails_the_call(h2):
    server, call = h2.open()
    server.send(RESPONSE, data(message(b"gzipped", compressed=1)))
    error = failure(call)
    assert "cannot read" in str(error)


def test_the_server_closing_without_trailers_fails_the_call(h2):
    server, call = h2.open()
    server.send(RESPONSE, data(message(b"one")))
    server.hang_up()
    assert call.next_message(GUARD) == b"one"
    error = failure(call)
    assert error.try_next
    assert "closed the connection" in str(error)


def _blocked_in(thread: threading.Thread, function: str) -> bool:
    top = sys._current_frames().get(thread.ident or -1)
    while top is not None:
        if top.f_code.co_name == function:
            return True
        top = top.f_back
    return False


def test_cancel_from_another_thread_ends_a_blocked_read_quietly(h2):
    server, call = h2.open()
    server.send(RESPONSE, data(message(b"one")))
    assert call.next_message(GUARD) == b"one"
    result: dict[str, object] = {}

    def read() -> None:
        try:
            result["message"] = call.next_message()        # no timeout: blocks until cancelled
        except BaseException as e:  # noqa: BLE001 - shown by the assertion below
            result["error"] = e

    reader = threading.Thread(target=read, name="h2-reader", daemon=True)
    reader.start()
    wait_until(lambda: _blocked_in(reader, "_fill"), "the reader waits for data")
    call.cancel()
    reader.join(GUARD)
    assert not reader.is_alive(), "cancel did not wake the reader"
    assert result == {"message": None}
    assert call.next_message(GUARD) is None


def test_a_silent_server_times_the_read_out(h2):
    server, call = h2.open()
    server.send(RESPONSE)
    started = time.monotonic()
    with pytest.raises(CallFailed, match="timed out") as info:
        call.next_message(timeout=0.2)
    assert info.value.try_next
    assert time.monotonic() - started < GUARD


def test_connection_refused_fails_the_constructor():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    # nothing listens on `port` now
    with pytest.raises(CallFailed) as info:
        StreamCall(f"http://127.0.0.1:{port}", PATH, b"", tls=None, timeout=GUARD)
    assert info.value.try_next


# --- coalescing -----------------------------------------------------------------------

@pytest.mark.parametrize("coalesce", [0.05, 0.0])
def test_coalesce_waits_only_while_replies_keep_coming(h2, monkeypatch, coalesce):
    slept: list[float] = []
    real_sleep, reader = time.sleep, threading.get_ident()

    def sleep(seconds: float) -> None:
        if threading.get_ident() == reader:
            slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(etcd_h2.time, "sleep", sleep)
    server, call = h2.open(coalesce=coalesce)

    server.send(RESPONSE, data(message(b"one")))
    assert call.next_message(GUARD) == b"one"
    assert slept == [], "the first read after connecting waited"

    server.send(data(message(b"two")))             # right after the first
    assert call.next_message(GUARD) == b"two"
    assert slept == ([0.05] if coalesce else [])

    threading.Event().wait(0.2)                    # a quiet spell longer than `coalesce`
    server.send(data(message(b"three")))
    assert call.next_message(GUARD) == b"three"
    assert slept == ([0.05] if coalesce else []), "a reply after a quiet spell waited"


# --- etcd.Watch on top of it ----------------------------------------------------------

@pytest.fixture
def client_for(h2) -> Iterator[Callable[..., EtcdClient]]:
    clients: list[EtcdClient] = []

    def make(*servers: ScriptedServer) -> EtcdClient:
        client = EtcdClient(EtcdConfig(endpoints=[s.endpoint for s in servers], timeout=2))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_watch_refused_by_etcd_raises_datastore_error(h2, client_for):
    server = h2.server(reply=RESPONSE + trailers(7, "etcdserver%3A%20permission%20denied"))
    watch = client_for(server).watch_prefix("/calico/x/", 5)
    with pytest.raises(DatastoreError) as info:
        next(iter(watch))
    assert not isinstance(info.value, DatastoreUnavailable)
    assert "etcdserver: permission denied" in str(info.value)


def test_watch_unavailable_on_every_endpoint_names_them_all(h2, client_for):
    servers = [h2.server(reply=trailers_only(14)) for _ in range(2)]
    watch = client_for(*servers).watch_prefix("/calico/x/", 5)
    with pytest.raises(DatastoreUnavailable) as info:
        next(iter(watch))
    for server in servers:
        assert server.endpoint in str(info.value)


def test_watch_sends_its_request_and_yields_the_events(h2, client_for):
    change = pb.WatchResponse()
    event = change.events.add()
    event.kv.key, event.kv.value, event.kv.mod_revision = b"/calico/x/a", b"v", 6
    server = h2.server(reply=RESPONSE + data(message(pb.WatchResponse(created=True).SerializeToString()))
                       + data(message(change.SerializeToString())))
    watch = client_for(server).watch_prefix("/calico/x/", 5)
    batches = iter(watch)
    batch = next(batches)
    assert [(e.type, e.kv.key, e.kv.value, e.revision) for e in batch] == [("PUT", "/calico/x/a", b"v", 6)]

    request = pb.WatchRequest.FromString(server.handshake()[3].payload[5:]).create_request
    assert (request.key, request.range_end, request.start_revision) == (b"/calico/x/", b"/calico/x0", 5)
    watch.cancel()
    assert list(batches) == []
