"""The shared netlink codec (calico_net.agent.felix.netlink): attributes, request
numbering, dumps and ACKs, against a datagram socket pair standing in for the
kernel (no root needed)."""
from __future__ import annotations

import errno
import socket
import struct

import pytest

from calico_net.agent.felix import netlink as n

HDR = struct.Struct("=IHHII")


def test_attributes_pack_and_walk():
    a = n.attr(1, b"abc") + n.nested(2, n.attr(3, b"\x01\x02\x03\x04")) + n.attr(4, n.strz("cali1"))
    assert len(n.attr(1, b"abc")) == 8 and n.attr(1, b"abc")[:4] == struct.pack("=HH", 7, 1)
    got = n.attrs(a, 0, len(a))
    assert set(got) == {1, 2, 4} and got[1] == b"abc"      # the NESTED flag is masked off
    assert n.attr_list(got[2]) == [b"\x01\x02\x03\x04"]
    assert n.cstr(got[4]) == "cali1" and n.cstr(None) == ""
    start, end = n.find_attr(a, 0, len(a), 2)
    assert n.find_attr(a, start, end, 3) is not None and n.find_attr(a, 0, len(a), 9) is None
    # a zero-length attribute ends the walk instead of looping
    assert n.attrs(b"\0\0\0\0" + n.attr(1, b"x"), 0, 9) == {}


def _pair() -> tuple[n.NetlinkSocket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    return n.NetlinkSocket(a), b


def _reply(mtype: int, seq: int, payload: bytes) -> bytes:
    return HDR.pack(16 + len(payload), mtype, 0, seq, 0) + payload + b"\0" * (-len(payload) % 4)


def _ack(seq: int, err: int) -> bytes:
    return _reply(n.NLMSG_ERROR, seq, struct.pack("=i", err) + b"\0" * 16)


def _sent(kernel: socket.socket) -> list[tuple[int, int, int, bytes]]:
    data = kernel.recv(1 << 16)
    out, off = [], 0
    while off < len(data):
        length, mtype, flags, seq, _pid = HDR.unpack_from(data, off)
        out.append((mtype, flags, seq, data[off + 16: off + length]))
        off += (length + 3) & ~3
    return out


def test_send_numbers_a_batch_in_one_sendmsg_and_reads_every_error():
    nl, kernel = _pair()
    nl.seq = 0xFFFFFFFE            # numbering wraps past 0, which is never used
    first = nl.send([(24, 0, b"a" * 4), (24, n.NLM_F_ACK, b"b" * 8), (25, n.NLM_F_ACK, b"")])
    sent = _sent(kernel)
    assert [s[2] for s in sent] == [0xFFFFFFFF, 1, 2] and first == 0xFFFFFFFF
    assert [n.seq_at(first, i) for i in range(3)] == [0xFFFFFFFF, 1, 2]
    assert all(f & n.NLM_F_REQUEST for _t, f, _s, _b in sent) and sent[1][3] == b"b" * 8
    # the kernel reports the first message's failure without being asked, then the ACKs
    kernel.send(_ack(0xFFFFFFFF, -errno.ENETDOWN) + _ack(1, 0))
    kernel.send(_ack(2, -errno.ESRCH))
    assert nl.wait_acks({1, 2}) == {0xFFFFFFFF: errno.ENETDOWN, 2: errno.ESRCH}


def test_wait_acks_settles_after_a_refusal():
    nl, kernel = _pair()
    nl.sock.settimeout(5.0)
    first = nl.send([(1, n.NLM_F_ACK, b""), (1, n.NLM_F_ACK, b"")])
    kernel.send(_ack(first, -errno.EINVAL))   # the second is never answered: the batch was aborted
    assert nl.wait_acks({first, first + 1}, settle=0.05) == {first: errno.EINVAL}
    assert nl.sock.gettimeout() == 5.0
    # without a refusal, silence is a timeout
    nl.send([(1, n.NLM_F_ACK, b"")])
    nl.sock.settimeout(0.05)
    with pytest.raises(socket.timeout):
        nl.wait_acks({nl.seq}, settle=0.05)


def test_dump_yields_this_requests_messages_and_raises_errors():
    nl, kernel = _pair()
    it = nl.dump(18, b"body")
    kernel.send(_reply(99, 77, b"other") + _reply(16, 1, b"link1") + _reply(16, 1, b"link2xx"))
    first = next(it)
    mtype, data, off, end = first
    assert (mtype, data[off:end]) == (16, b"link1")
    assert _sent(kernel) == [(18, n.NLM_F_REQUEST | n.NLM_F_DUMP, 1, b"body")]
    mtype, data, off, end = next(it)
    assert data[off:end] == b"link2xx"
    kernel.send(_reply(n.NLMSG_DONE, 1, b"\0" * 4))
    assert list(it) == []

    it = nl.dump(18, b"")
    kernel.send(_ack(2, -errno.EPERM))
    with pytest.raises(n.NetlinkError) as exc:
        list(it)
    assert exc.value.errno == errno.EPERM

    it = nl.dump(18, b"")
    kernel.send(HDR.pack(8, 16, 0, 3, 0) + b"\0" * 8)
    with pytest.raises(n.NetlinkError) as exc:
        list(it)
    assert exc.value.errno == errno.EBADMSG


def test_in_netns_without_a_namespace_is_a_no_op():
    with n.in_netns(None):
        pass
    with n.in_netns(""):
        pass
