"""etcd's Watch as one gRPC call on an HTTP/2 connection of its own, without gRPC's
runtime: the watch stream is the one call whose cost follows the cluster's churn.

Each event etcd sends is one gRPC message; read through the gRPC runtime it costs
the process 150–180 µs of CPU (its completion queue, its poller thread waking, the
hand-over to Python), read here 50–70 µs: a socket read, a 9-byte frame header,
a 5-byte message header and protobuf's C decoder (`bench/bench_watch_client.py`,
clients `agent` and `h2`). At 500 changes a second that is 5–6 % of a core.

What the connection does, and no more (RFC 9113; gRPC over HTTP/2):

* it is a client connection with one stream (id 1): the preface, our SETTINGS (no
  push, stream windows of 2³¹−1), the connection window raised to the same, the
  request HEADERS (HPACK literals, never indexed, no Huffman) and the request as
  one gRPC message. The request half stays open, as gRPC's own bidirectional call
  leaves it; closing the socket ends the call;
* it acknowledges SETTINGS and PING, gives the window back (WINDOW_UPDATE for the
  connection and the stream) after each 2³⁰ bytes of DATA read, decodes every
  header block with `hpack.Decoder` (the dynamic table follows the connection)
  and checks the response's `:status` and `content-type`;
* the call ends with the trailers' `grpc-status` (0: ended; anything else: the
  status and `grpc-message`), RST_STREAM, a GOAWAY that does not cover stream 1,
  or the connection closing.

TLS as gRPC does it for the other calls (`etcd_grpc.Channels`): the CA file (else
the system's roots), the client certificate when one is set, the server's name
checked against the endpoint's host, TLS 1.2 or later, ALPN `h2`. No proxy.
"""
from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections import deque
from urllib.parse import unquote, urlsplit

from calico_net.datastore.hpack import Decoder, HpackError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WINDOW = 2**31 - 1           # our stream windows and connection window
GIVE_BACK = 2**30            # DATA bytes read before the window is given back
_DATA, _HEADERS, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WINDOW, _CONT = 0, 1, 3, 4, 5, 6, 7, 8, 9
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_FRAME = struct.Struct(">HBBBI")      # a frame header: length (24 bits), type, flags, stream
_MESSAGE = struct.Struct(">BI")       # a gRPC message header: compressed flag, length
_MAX_MESSAGE = 256 << 20     # a gRPC message longer than this is refused (etcd's are far smaller)
_MAX_HEADERS = 64 << 10      # one header block, CONTINUATION frames included
# gRPC statuses after which another endpoint may answer (UNAVAILABLE, DEADLINE_EXCEEDED)
_TRY_NEXT = {14, 4}
_STATUS_NAMES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
                 5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
                 9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
                 13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED"}


class CallFailed(Exception):
    """The call failed. `try_next`: another endpoint may answer (this one is down,
    unreachable, too slow, refused our TLS, or went away); otherwise etcd refused the
    call (`status`: its gRPC status number, 0 when the failure is not a gRPC status)."""

    def __init__(self, text: str, *, try_next: bool, status: int = 0) -> None:
        super().__init__(text)
        self.try_next = try_next
        self.status = status


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream.to_bytes(4, "big") + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """One header field: HPACK 'literal never indexed, new name', no Huffman."""
    return b"\x10" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


def _hpack_int(n: int, bits: int) -> bytes:
    top = (1 << bits) - 1
    if n < top:
        return bytes((n,))
    out, n = [top], n - top
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tls_context(ca_cert_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """The client TLS context for https:// endpoints (OSError when a file cannot be
    read, ssl.SSLError when one does not hold what it should)."""
    ctx = ssl.create_default_context(cafile=ca_cert_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class StreamCall:
    """One gRPC call with one request and a stream of replies (etcd's Watch), on a
    connection of its own. `next_message` is for one reading thread; `cancel`, from
    any thread, ends the call (the reader then sees None)."""

    def __init__(self, endpoint: str, path: str, request: bytes, *,
                 tls: ssl.SSLContext | None, timeout: float, coalesce: float = 0.0) -> None:
        """Connect and send the request; CallFailed (try_next) when the endpoint
        cannot be reached in `timeout` seconds or refuses the TLS handshake.

        `coalesce` (seconds): while replies keep coming (the last read found data
        less than that long ago), wait that long before the next read, so one read
        takes the replies of that time together instead of one wake-up, socket
        read and hand-over each. A reply after a quiet spell is read at once."""
        parts = urlsplit(endpoint)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 2379
        self._cancelled = False
        self._lock = threading.Lock()
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise CallFailed(f"cannot connect: {e.strerror or e}", try_next=True) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if parts.scheme == "https":
                if tls is None:
                    raise CallFailed("an https:// endpoint without a TLS context", try_next=False)
                sock = tls.wrap_socket(sock, server_hostname=host)
                if sock.selected_alpn_protocol() != "h2":
                    raise CallFailed("TLS error: the server did not agree to HTTP/2 (ALPN h2)", try_next=True)
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            headers = b"".join(_literal(n, v) for n, v in (
                (b":method", b"POST"), (b":scheme", parts.scheme.encode() if parts.scheme == "https" else b"http"),
                (b":path", path.encode()), (b":authority", authority.encode()),
                (b"content-type", b"application/grpc"), (b"te", b"trailers"),
                (b"user-agent", b"calico-net-watch")))
            sock.sendall(PREFACE
                         + frame(_SETTINGS, 0, 0, struct.pack(">HIHI", 0x2, 0, 0x4, WINDOW))
                         + frame(_WINDOW, 0, 0, struct.pack(">I", WINDOW - 65535))
                         + frame(_HEADERS, _END_HEADERS, 1, headers)
                         + frame(_DATA, 0, 1, b"\x00" + len(request).to_bytes(4, "big") + request))
        except ssl.SSLCertVerificationError as e:
            sock.close()
            raise CallFailed(f"TLS error: certificate verify failed ({e.verify_message})", try_next=True) from None
        except (ssl.SSLError, OSError) as e:
            sock.close()
            if isinstance(e, socket.timeout):
                raise CallFailed(f"timed out after {timeout:g} s", try_next=True) from None
            raise CallFailed(f"TLS error: {e}" if isinstance(e, ssl.SSLError) else f"connection failed: {e}",
                             try_next=True) from None
        except CallFailed:
            sock.close()
            raise
        self._sock = sock
        self._coalesce = coalesce
        self._last_data = 0.0            # monotonic time of the last read that found data
        self._timeout: float | None = -1.0   # the socket's timeout as last set here
        self._buf = bytearray()          # bytes read, not yet framed
        self._msg = bytearray()          # DATA of stream 1, not yet cut into messages
        self._messages: deque[bytes | bytearray] = deque()
        self._hpack = Decoder()
        self._block = bytearray()        # a header block continued by CONTINUATION frames
        self._block_end = False          # that block ends the stream
        self._unacked = 0                # DATA bytes read since the window was last given back
        self._headers_seen = False
        self._ended: CallFailed | None = None   # how the call ended, once it has
        self._done = False

    # --- reading ---------------------------------------------------------------------

    def next_message(self, timeout: float | None = None) -> bytes | bytearray | None:
        """The next reply message; None when the call was cancelled or ended with
        status 0. CallFailed when it failed or stayed silent `timeout` seconds."""
        messages = self._messages
        while not messages:
            if self._done:
                if self._ended is not None and not self._cancelled:
                    raise self._ended
                return None
            self._fill(timeout)
        return messages.popleft()

    def _fill(self, timeout: float | None) -> None:
        sock = self._sock
        if self._coalesce:
            since = time.monotonic() - self._last_data
            if since < self._coalesce:
                time.sleep(self._coalesce)
        try:
            if timeout != self._timeout:
                sock.settimeout(timeout)
                self._timeout = timeout
            data = sock.recv(1 << 18)
        except (socket.timeout, BlockingIOError):   # the latter: a timeout of 0
            raise CallFailed(f"timed out after {timeout:g} s with no message", try_next=True) from None
        except (OSError, ValueError) as e:
            if self._cancelled:
                self._done = True
                return
            # etcd refuses a missing or bad client certificate after the handshake,
            # with an alert that arrives on the first read
            self._end(CallFailed(f"TLS error: {e}" if isinstance(e, ssl.SSLError) else f"connection lost: {e}",
                                 try_next=True))
            return
        if not data:
            self._end(None if self._cancelled else CallFailed("etcd closed the connection", try_next=True))
            return
        if self._coalesce:
            self._last_data = time.monotonic()
        buf = self._buf
        if buf:
            buf += data
        else:
            buf = data
        pos, n = 0, len(buf)
        unpack = _FRAME.unpack_from
        while n - pos >= 9:
            high, low, ftype, flags, stream = unpack(buf, pos)
            end = pos + 9 + (high << 8 | low)
            if end > n:
                break
            if ftype == _DATA:
                self._data(flags, stream & 0x7FFFFFFF, buf[pos + 9:end], end - pos - 9)
            else:
                self._control(ftype, flags, stream & 0x7FFFFFFF, bytes(buf[pos + 9:end]))
            pos = end
            if self._done:
                break
        self._buf = bytearray(buf[pos:]) if pos < n else bytearray()

    def _data(self, flags: int, stream: int, payload: bytearray, length: int) -> None:
        if flags & _PADDED:
            if not payload or payload[0] >= len(payload):
                self._end(CallFailed("etcd sent a DATA frame with bad padding", try_next=True))
                return
            payload = payload[1:len(payload) - payload[0]]
        self._unacked += length
        if self._unacked >= GIVE_BACK:
            window = struct.pack(">I", self._unacked)
            self._send(frame(_WINDOW, 0, 0, window) + frame(_WINDOW, 0, 1, window))
            self._unacked = 0
        if stream != 1:
            return
        msg = self._msg
        if msg:
            msg += payload
            payload = msg
        start, n = 0, len(payload)
        while n - start >= 5:
            flag, size = _MESSAGE.unpack_from(payload, start)
            if flag != 0 or size > _MAX_MESSAGE:
                self._end(CallFailed(f"etcd sent a gRPC message we cannot read (flag {flag}, "
                                     f"{size} bytes)", try_next=True))
                return
            if n - start - 5 < size:
                break
            self._messages.append(payload[start + 5:start + 5 + size])
            start += 5 + size
        self._msg = bytearray(payload[start:]) if start < n else bytearray()
        if flags & _END_STREAM:
            self._end(CallFailed("etcd ended the call without a status", try_next=True))

    def _control(self, ftype: int, flags: int, stream: int, payload: bytes) -> None:
        if ftype == _HEADERS or ftype == _CONT:
            if ftype == _HEADERS:
                if flags & _PADDED:
                    if not payload or payload[0] >= len(payload):
                        self._end(CallFailed("etcd sent a HEADERS frame with bad padding", try_next=True))
                        return
                    payload = payload[1:len(payload) - payload[0]]
                if flags & _PRIORITY:
                    payload = payload[5:]
                self._block = bytearray(payload)
                self._block_end = bool(flags & _END_STREAM)
            else:
                self._block += payload
            if len(self._block) > _MAX_HEADERS:
                self._end(CallFailed("etcd sent a header block over 64 KiB", try_next=True))
            elif flags & _END_HEADERS:
                self._headers(stream, bytes(self._block), self._block_end)
        elif ftype == _SETTINGS:
            if not flags & _ACK:
                self._send(frame(_SETTINGS, _ACK, 0))
        elif ftype == _PING:
            if not flags & _ACK:
                self._send(frame(_PING, _ACK, 0, payload))
        elif ftype == _RST and stream == 1:
            code = int.from_bytes(payload[:4], "big")
            self._end(CallFailed(f"etcd reset the stream (HTTP/2 error {code})", try_next=True))
        elif ftype == _GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            code = int.from_bytes(payload[4:8], "big")
            if last < 1 or code:
                debug = payload[8:208].decode("utf-8", "replace")
                self._end(CallFailed(f"etcd closed the connection (GOAWAY, HTTP/2 error {code}"
                                     + (f": {debug})" if debug else ")"), try_next=True))
        elif ftype == _PUSH:
            self._end(CallFailed("etcd pushed a stream we did not allow", try_next=True))
        # WINDOW_UPDATE, PRIORITY and unknown frame types need nothing from us

    def _headers(self, stream: int, block: bytes, ends: bool) -> None:
        try:
            fields = self._hpack.decode(block)   # every block: the table follows the connection
        except HpackError as e:
            self._end(CallFailed(f"etcd sent headers that do not decode: {e}", try_next=True))
            return
        if stream != 1:
            return
        got = {name: value for name, value in fields}
        if not self._headers_seen:
            self._headers_seen = True
            status = got.get(b":status", b"")
            if status != b"200":
                self._end(CallFailed(f"etcd answered HTTP status {status.decode('latin-1') or 'none'}",
                                     try_next=True))
                return
            if not got.get(b"content-type", b"").startswith(b"application/grpc"):
                self._end(CallFailed("etcd answered with content-type "
                                     f"{got.get(b'content-type', b'').decode('latin-1')!r}, not gRPC",
                                     try_next=True))
                return
            if not ends:
                return
        elif not ends:
            self._end(CallFailed("etcd sent a second header block that does not end the call", try_next=True))
            return
        text = got.get(b"grpc-status", b"").decode("latin-1")
        if not (text.isascii() and text.isdigit()):
            self._end(CallFailed(f"etcd ended the call with no valid grpc-status ({text!r})", try_next=True))
            return
        code = int(text)
        if code == 0:
            self._end(None)
            return
        message = unquote(got.get(b"grpc-message", b"").decode("latin-1"), errors="replace")[:300]
        name = _STATUS_NAMES.get(code, str(code))
        self._end(CallFailed(f"{message or name} ({name})", try_next=code in _TRY_NEXT, status=code))

    def _end(self, failure: CallFailed | None) -> None:
        if not self._done:
            self._done = True
            self._ended = failure

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as e:
            if not self._cancelled:
                self._end(CallFailed(f"connection lost: {e}", try_next=True))

    # --- ending ----------------------------------------------------------------------

    def cancel(self) -> None:
        """End the call from any thread: the reader sees None."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
        try:
            # the plain socket's shutdown, also under TLS: it wakes a reader blocked in
            # recv without touching the TLS object that reader is using
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Cancel and release the socket (the reading thread, once done with it)."""
        self.cancel()
        self._sock.close()
