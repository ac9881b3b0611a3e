"""The one escaping path to nft text (calico_net.agent.felix.nftstr): what each role
takes, what it returns, and that nothing that could be syntax gets through."""
from __future__ import annotations

import ipaddress

import pytest

from calico_net.agent.felix import nftstr
from calico_net.agent.felix.nftstr import NftStringError

INJECTION = '*" accept; iifname "cali'

# Strings that must never reach nft text in any role that takes names.
HOSTILE = [
    INJECTION,
    'cali"x',            # a quote would end the string
    "cali'x",
    "cali\nx",           # a newline would end the rule
    "cali\n",            # trailing newline: `$`-anchored patterns let this through
    "cali\r",
    "cali\x00x",         # NUL
    "cali{x",
    "cali}x",
    "cali;x",            # statement separator
    "cali#x",            # comment to the end of the line
    "cali\\x",           # escape
    "cali x",
    "cali\tx",
    "cali*",             # a wildcard where a name is meant
    "caliéx",            # not ASCII
    "",
    "c" * 16,            # over-long for an interface
]


@pytest.mark.parametrize("value", HOSTILE)
def test_ifname_refuses_hostile(value):
    with pytest.raises(NftStringError):
        nftstr.ifname(value)
    with pytest.raises(NftStringError):
        nftstr.ifname_text(value)
    with pytest.raises(NftStringError):
        nftstr.unquote_ifname(f'"{value}"')


@pytest.mark.parametrize("value", HOSTILE + ["cali.x", "cali@x", "cali:x", "cali+x", "a" * 16])
def test_ifname_prefix_refuses_all_but_felix_grammar(value):
    with pytest.raises(NftStringError):
        nftstr.ifname_prefix(value)


@pytest.mark.parametrize("value", [None, 5, b"cali", ["cali"], ".", ".."])
def test_ifname_refuses_non_names(value):
    with pytest.raises(NftStringError):
        nftstr.ifname(value)


def test_ifname_quotes_good_names():
    assert nftstr.ifname("cali0123456789a") == '"cali0123456789a"'
    assert nftstr.ifname("eth0.100") == '"eth0.100"'
    assert nftstr.ifname("a-b_c@d:e+f") == '"a-b_c@d:e+f"'
    assert nftstr.ifname_text("tap1") == "tap1"
    # the cache gives the same answer, and never for a bad name
    assert nftstr.ifname("cali0123456789a") == '"cali0123456789a"'
    with pytest.raises(NftStringError):
        nftstr.ifname("cali\n")


def test_ifname_prefix_is_a_wildcard_match():
    assert nftstr.ifname_prefix("cali") == '"cali*"'
    assert nftstr.ifname_prefix("tap_vm-1") == '"tap_vm-1*"'
    assert nftstr.ifname_prefix("a" * 15) == '"' + "a" * 15 + '*"'


def test_unquote_ifname():
    assert nftstr.unquote_ifname('"cali1"') == b"cali1"
    assert nftstr.unquote_ifname("cali1") == b"cali1"
    for bad in ['"cali*"', '"ca"li"', '"' + "c" * 16 + '"', '"cali\x00"', 7]:
        with pytest.raises(NftStringError):
            nftstr.unquote_ifname(bad)


@pytest.mark.parametrize("value", HOSTILE[:-1] + ["1cali", "cali.x", "x" * 65, "-x"])
def test_ident_refuses(value):
    with pytest.raises(NftStringError):
        nftstr.ident(value)


def test_ident_takes_our_names():
    for name in ("cali-forward", "s4_0123456789abcdef", "cali-pi-0123456789abcdef", "r_ab"):
        assert nftstr.ident(name) == name


@pytest.mark.parametrize("value", [INJECTION, 'a"b', "a\\b", "a\nb", "a\x00b", "a{b", "a}b", "a;b",
                                   "a#b", "a\tb", "é", "x" * 129])
def test_comment_refuses(value):
    with pytest.raises(NftStringError):
        nftstr.comment(value)


def test_comment_quotes():
    assert nftstr.comment("GlobalNetworkPolicy ns/a.b-c") == '"GlobalNetworkPolicy ns/a.b-c"'
    assert nftstr.comment("x" * 128) == '"' + "x" * 128 + '"'
    assert nftstr.comment("") == '""'


@pytest.mark.parametrize("value", [INJECTION, 'p"', "p\n", "p%s", "p;", "x" * 128, "p{"])
def test_log_prefix_refuses(value):
    with pytest.raises(NftStringError):
        nftstr.log_prefix(value)


def test_log_prefix_quotes():
    assert nftstr.log_prefix("calico-packet: ") == '"calico-packet: "'


def test_addresses():
    assert nftstr.ipv4("198.18.0.1") == "198.18.0.1"
    assert nftstr.addr("FD00::0001") == "fd00::1"
    assert nftstr.addr("198.18.0.1") == "198.18.0.1"
    assert nftstr.cidr("198.18.0.5/24") == "198.18.0.0/24"
    assert nftstr.cidr(ipaddress.ip_network("fd00::/64")) == "fd00::/64"
    for bad in ["198.18.0.1\n", "198.18.0.1 ", "198.18.0.1, 0.0.0.0", "198.18.0.256", "01.2.3.4",
                "198.18.0.1/32", "", None, 1]:
        with pytest.raises(NftStringError):
            nftstr.ipv4(bad)
    for bad in ["fd00::1\n", "fd00::1;", "x", None, "198.18.0.1/24"]:
        with pytest.raises(NftStringError):
            nftstr.addr(bad)
    for bad in ["198.18.0.0/24\n", " 198.18.0.0/24", "198.18.0.0/24, 0.0.0.0/0", "198.18.0.0/33", "", 5]:
        with pytest.raises(NftStringError):
            nftstr.cidr(bad)


def test_number():
    assert nftstr.number(22, 1, 65535) == "22"
    for bad in [0, 65536, "22", 22.0, True, None, -1]:
        with pytest.raises(NftStringError):
            nftstr.number(bad, 1, 65535)


def test_check_rule_line():
    line = 'iifname "cali*" ip saddr @s4_0123 meta mark set meta mark | 0x10000 return'
    assert nftstr.check_rule_line(line) == line
    for bad in ['iifname "*" accept; iifname "cali*" drop', "accept\nadd rule inet calico x accept",
                "accept }", "{ accept", "accept # x", 'log prefix "a\\"" accept', "accept\x00"]:
        with pytest.raises(NftStringError):
            nftstr.check_rule_line(bad)


def test_check_element_list():
    body = '"cali1" : jump cali-fw-0123, "cali2" : jump cali-fw-4567'
    assert nftstr.check_element_list(body, 2) == body
    assert nftstr.check_element_list("tcp . 22, udp . 68", 2)
    assert nftstr.check_element_list("198.18.0.0/24, fd00::/64", 2)
    # a stray comma adds an element: refused
    with pytest.raises(NftStringError):
        nftstr.check_element_list("198.18.0.1, 0.0.0.0/0", 1)
    for bad in ['"cali*" : accept', "1.2.3.4 }; add rule inet calico x accept; { 5.6.7.8", "a\nb",
                "1.2.3.4;", "é"]:
        with pytest.raises(NftStringError):
            nftstr.check_element_list(bad, 1)


def test_messages_name_the_role_and_escape_the_value():
    with pytest.raises(NftStringError) as e:
        nftstr.ifname_prefix(INJECTION)
    assert "interface prefix" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(NftStringError) as e:
        nftstr.ifname("x\ny" + "z" * 200)
    assert "\\n" in str(e.value) and len(str(e.value)) < 200
