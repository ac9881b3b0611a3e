"""Settings that reach the dataplane, files or BIRD as text (Felix and BGP settings):
interface filters, host addresses and names, paths, log prefixes, key=value lists,
regular expressions and WireGuard keys.

Each follows the grammar Calico (Felix's config parameters, libcalico-go's validator)
gives the field, never wider; where Calico takes any text the grammar here is the
plain characters such values are made of, so no value can become syntax elsewhere.
"""
from __future__ import annotations

import base64
from typing import Any

from calico_net.model.fields.checks import pattern_type, regexp_problem, show
from calico_net.model.fields.text import DNS1123_LABEL

# Felix's iface-param (iptablesNATOutgoingInterfaceFilter): a name, '+' as a wildcard.
InterfaceFilter = pattern_type(r"[a-zA-Z0-9:._+-]{1,15}", "1-15 letters, digits, ':', '.', '_', "
                               "'+' or '-'", "interface filter", max_len=15)
# BGPConfiguration.ignoredInterfaces: a name, '*' as a wildcard (never "*" alone).
IgnoredInterface = pattern_type(r"(?!\*\Z)[a-zA-Z0-9_.*-]{1,15}", "1-15 letters, digits, '_', '.', "
                                "'-' or '*', not \"*\" alone", "ignored interface", max_len=15)
# Felix's host-address (healthHost, prometheusMetricsHost): an address or host name.
HostAddress = pattern_type(r"[a-zA-Z0-9:._+-]{1,64}", "an IP address or host name of at most 64 "
                           "letters, digits, ':', '.', '_', '+' or '-'", "host address", max_len=64)
# Felix's hostname (metadataAddr).
Hostname = pattern_type(r"[a-zA-Z0-9_.-]{1,253}", "a host name or IP address of letters, digits, "
                        "'_', '.' and '-'", "host name", max_len=253)
# Felix's region (openstackRegion): a DNS-1123 label short enough for a namespace name.
Region = pattern_type(DNS1123_LABEL, "a DNS-1123 label of at most 46 characters", "region",
                      max_len=46)
# Felix's keyvaluelist (featureGates, featureDetectOverride): "key=value,key=value".
KeyValueList = pattern_type(r"( *[A-Za-z0-9_]+=[A-Za-z0-9_.:/+ -]*)?(,( *[A-Za-z0-9_]+=[A-Za-z0-9_.:/+ -]*)?)*",
                            "comma-separated key=value pairs: keys of letters, digits and '_', "
                            "values of letters, digits, spaces and '_.:/+-'", "key=value list",
                            max_len=1024)
# Paths (logFilePath, iptablesLockFilePath, policySyncPathPrefix, dataplaneDriver, ...).
FilePath = pattern_type(r"[A-Za-z0-9_./@+=,~-]{1,4096}", "a file name of letters, digits and "
                        "'_./@+=,~-', no whitespace or quotes", "file path", max_len=4096)
# Felix's LogPrefix: the text of nft's `log prefix "..."` (at most 127 bytes there);
# Calico's specifiers %t %k %n %p are kept as written.
LogPrefix = pattern_type(r"[A-Za-z0-9 _.:/%@#=+,-]{0,127}", "at most 127 letters, digits, spaces "
                         "and '_.:/%@#=+,-'", "log prefix", max_len=127)
# Calico's HealthTimeoutOverride name rule.
HealthTimeoutName = pattern_type(r"[a-zA-Z0-9_ -]{1,128}", "1-128 letters, digits, spaces, '_' "
                                 "or '-'", "health reporter name", max_len=128)
# A Kubernetes Secret data key (BGP passwords' secretKeyRef.key).
SecretKey = pattern_type(r"[-._a-zA-Z0-9]{1,253}", "1-253 letters, digits, '-', '_' or '.'",
                         "secret key", max_len=253)


def regexp_type(what: str) -> Any:
    """A regular expression setting (mtuIfacePattern, bpfDataIfacePattern, ...): it must
    compile, and it is a pattern only: no whitespace, quotes, ';' or control characters."""
    return pattern_type(r"[^\s\"';\x00-\x1f\x7f]{1,256}", "a regular expression of at most 256 "
                        "characters without whitespace, quotes or ';'", what, max_len=256,
                        extra=lambda v: regexp_problem(v, what))


def _wireguard_key_problem(value: str) -> str | None:
    try:
        ok = len(base64.b64decode(value, validate=True)) == 32
    except (ValueError, TypeError):
        ok = False
    return None if ok else f"{show(value)} is not a WireGuard public key (32 bytes in base64)"


WireguardPublicKey = pattern_type(r"[A-Za-z0-9+/]{43}=", "32 bytes in base64 (44 characters)",
                                  "WireGuard public key", max_len=44, extra=_wireguard_key_problem)
