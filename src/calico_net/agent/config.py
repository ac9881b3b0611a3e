"""Felix configuration with Calico's precedence.

A parameter's value comes from the first source that has a *valid* value for it:

1. the environment, `FELIX_<PARAM>` (the parameter name matched case-insensitively);
2. the config file `/etc/calico/felix.cfg` (`[global]` section, configparser);
3. the FelixConfiguration `node.<NODENAME>`;
4. the FelixConfiguration `default`;
5. the built-in default.

A value that does not parse is logged once (with its source and the value, escaped)
as an error, counted (`bad_total`, the agent's `felix_config_errors_total`) and
ignored, so the next source — in the end the default — is used: a bad value is
never applied. Values that reach nft text or addresses are checked against
Felix's own grammar: InterfacePrefix is Felix's iface-list
(`model.fields.parse_iface_list`: comma-separated prefixes of 1-15 characters
from a-z A-Z 0-9 _ -), the listener hosts Calico's prometheusHost pattern, a
failsafe entry's CIDR must be a CIDR, and durations must be finite. Environment and file values are
strings in Calico's formats (`90`, `tcp:22,udp:68`, `true`); FelixConfiguration
values are the v3 API's JSON (`"90s"`, `[{"protocol": "TCP", "port": 22}]`, `true`).

`Config` is a plain object: `resolve()` recomputes `values` from the sources it holds,
and returns the names whose value changed, so the daemon can re-apply what it can
live (log level, failsafe ports, refresh intervals, endpoint-to-host action, the
overlay's VXLAN/IPIP/MTU parameters) and warn about what needs a restart (health and
metrics listeners). A parameter may have other spellings Calico accepts
(`Param.aliases`: Felix reads `ipipMTU` as FELIX_IPINIPMTU).
"""
from __future__ import annotations

import configparser
import ipaddress
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from calico_net.model.fields import cidr_problem, parse_iface_list

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "/etc/calico/felix.cfg"

# Calico's failsafe defaults: SSH, DHCP, DNS, BGP, etcd, Typha, kube-apiserver.
DEFAULT_FAILSAFE_IN = "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
DEFAULT_FAILSAFE_OUT = "udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"

LOG_LEVELS = {
    # Calico's Trace is finer than Debug; Python logging's finest level is DEBUG
    "trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
    "warn": logging.WARNING, "error": logging.ERROR, "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL, "critical": logging.CRITICAL, "none": logging.CRITICAL + 10,
}


@dataclass(frozen=True)
class Port:
    """A failsafe port: protocol (tcp/udp/sctp), port number, optional CIDR."""

    protocol: str
    port: int
    net: str | None = None

    def __str__(self) -> str:
        return f"{self.protocol}:{self.net}:{self.port}" if self.net else f"{self.protocol}:{self.port}"


# --- value parsers: each takes a raw value and returns the typed value or raises ValueError


def parse_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "y", "t", "on"):
        return True
    if s in ("false", "0", "no", "n", "f", "off"):
        return False
    raise ValueError(f"{v!r} is not a boolean")


def parse_int_port(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a port")
    n = int(str(v).strip())
    if not 0 <= n <= 65535:
        raise ValueError(f"{v!r} is not a port number (0-65535)")
    return n


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_seconds(v: Any) -> float:
    """Seconds as a number (env/file: `90`, `0.5`) or a Go duration (API: `1m30s`)."""
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a duration")
    if isinstance(v, (int, float)):
        secs = float(v)
    else:
        s = str(v).strip()
        try:
            secs = float(s)
        except ValueError:
            pos, secs = 0, 0.0
            for m in _DURATION_RE.finditer(s):
                if m.start() != pos:
                    break
                secs += float(m.group(1)) * _UNIT[m.group(2)]
                pos = m.end()
            if pos != len(s) or not s:
                raise ValueError(f"{v!r} is not a duration (seconds, or like 90s / 1m30s)") from None
    if not math.isfinite(secs):
        raise ValueError(f"{v!r} is not a finite duration")
    if secs < 0:
        raise ValueError(f"{v!r} is negative")
    return secs


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`parse`, with "" (the built-in default: not set) as None."""
    def parse_optional(v: Any) -> Any:
        return None if v == "" else parse(v)

    return parse_optional


def parse_log_level(v: Any) -> str:
    s = str(v).strip().lower()
    if s not in LOG_LEVELS:
        raise ValueError(f"{v!r} is not a log level (Trace, Debug, Info, Warning, Error, Fatal, None)")
    return s.capitalize()


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        for c in choices:
            if str(v).strip().lower() == c.lower():
                return c
        raise ValueError(f"{v!r} is not one of {', '.join(choices)}")

    return parse


def parse_ports(v: Any) -> tuple[Port, ...]:
    """`tcp:22,udp:68,tcp:10.0.0.0/8:2379`, `none`, or a list of {protocol, port[, net]}."""
    out: list[Port] = []
    if isinstance(v, (list, tuple)):
        for item in v:
            if not isinstance(item, Mapping) or "port" not in item:
                raise ValueError(f"{item!r} is not a {{protocol, port}} entry")
            proto = str(item.get("protocol", "tcp")).lower()
            if proto not in ("tcp", "udp", "sctp"):
                raise ValueError(f"{item.get('protocol')!r} is not tcp, udp or sctp")
            out.append(Port(proto, parse_int_port(item["port"]), _failsafe_net(item.get("net"))))
        return tuple(out)
    s = str(v).strip()
    if s.lower() in ("", "none"):
        return ()
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        bits = part.split(":")
        if len(bits) == 1:
            proto, net, port = "tcp", None, bits[0]
        elif len(bits) == 2:
            proto, net, port = bits[0], None, bits[1]
        else:
            proto, net, port = bits[0], ":".join(bits[1:-1]), bits[-1]
        proto = proto.lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise ValueError(f"{part!r}: {proto!r} is not tcp, udp or sctp")
        out.append(Port(proto, parse_int_port(port), _failsafe_net(net)))
    return tuple(out)


def _failsafe_net(net: Any) -> str | None:
    """A failsafe entry's optional network, as the model takes it (a CIDR without
    host bits, or a bare address): the entry then accepts only from (inbound) or to
    (outbound) that network. Anything else is refused, so the next source is used."""
    if net is None or net == "":
        return None
    problem = cidr_problem(net, None, True, False, "failsafe net") if isinstance(net, str) \
        else f"{net!r} is not a string"
    if problem:
        raise ValueError(problem)
    return net


def parse_iface_prefixes(v: Any) -> tuple[str, ...]:
    """InterfacePrefix: Felix's iface-list grammar, as a tuple of prefixes."""
    return parse_iface_list(v)


# Calico's prometheusHost pattern (libcalico-go validator), for both listeners.
_HOST_RE = re.compile(r"[a-zA-Z0-9:._+-]{1,64}")


def parse_host(v: Any) -> str:
    """A listener host: an address or a host name (Calico's prometheusHost pattern);
    "" (the built-in default of PrometheusMetricsHost) means all addresses."""
    if v == "":
        return ""
    if not isinstance(v, str) or not _HOST_RE.fullmatch(v):
        raise ValueError(f"{v!r} is not a host (1-64 of a-z A-Z 0-9 : . _ + -)")
    return v


def _int_range(lo: int, hi: int, what: str, zero_ok: bool = False) -> Callable[[Any], int]:
    """An integer in lo..hi (or 0 when `zero_ok`: Calico's "auto" for MTUs)."""
    def parse(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError(f"{v!r} is not {what}")
        try:
            n = int(str(v).strip())
        except ValueError:
            raise ValueError(f"{v!r} is not {what}") from None
        if not (lo <= n <= hi or (zero_ok and n == 0)):
            raise ValueError(f"{v!r} is not {what} ({'0 or ' if zero_ok else ''}{lo}-{hi})")
        return n

    return parse


def parse_mtu_file_path(v: Any) -> str:
    """An absolute file path (MTUFilePath): the agent writes the workload MTU there."""
    if not isinstance(v, str) or not v.startswith("/") or "\0" in v or len(v) > 4096 \
            or v.endswith("/"):
        raise ValueError(f"{v!r} is not an absolute file path")
    return v


def parse_regex(v: Any) -> str:
    """A regular expression (MTUIfacePattern); kept as its text, which compiles."""
    if not isinstance(v, str) or not v or len(v) > 1000:
        raise ValueError(f"{v!r} is not a regular expression")
    try:
        re.compile(v)
    except re.error as e:
        raise ValueError(f"{v!r} is not a regular expression: {e}") from None
    return v


def parse_nat_address(v: Any) -> str | None:
    """NATOutgoingAddress: an IPv4 address (Felix's `ipv4` parameter), or empty/none
    for masquerade (the outgoing interface's address)."""
    if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none")):
        return None
    if not isinstance(v, str):
        raise ValueError(f"{v!r} is not an IPv4 address")
    try:
        return str(ipaddress.IPv4Address(v.strip()))
    except ValueError:
        raise ValueError(f"{v!r} is not an IPv4 address") from None


def parse_port_range(v: Any) -> tuple[int, int] | None:
    """NATPortRange: Felix's port range, a port `n` or `n:m` (numorstring.Port), as
    (min, max); empty (the default) is no range. A range with max 0 is none, as in
    Felix (`MaxPort > 0` turns it on)."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a port range (n or n:m)")
    s = str(v).strip()
    m = re.fullmatch(r"(\d{1,5})(?::(\d{1,5}))?", s)
    if not m:
        raise ValueError(f"{v!r} is not a port range (n or n:m, 0-65535)")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if not 0 <= lo <= hi <= 65535:
        raise ValueError(f"{v!r} is not a port range (n:m with 0 <= n <= m <= 65535)")
    return None if hi == 0 else (lo, hi)


#: where a LogFilePath from a FelixConfiguration (etcd) may point: the agent opens it
#: as root, so the datastore may only choose a file under the log directory; the
#: environment and felix.cfg (the host's own configuration) may name any absolute path
DATASTORE_LOG_DIR = "/var/log/"


def parse_log_file_path(v: Any) -> str | None:
    """LogFilePath: an absolute file path, or `none` (Felix's word: no file logging)."""
    if not isinstance(v, str):
        raise ValueError(f"{v!r} is not an absolute file path or none")
    if v.strip().lower() == "none":
        return None
    if not v.startswith("/") or "\0" in v or "\n" in v or len(v) > 4096 or v.endswith("/") \
            or ".." in v.split("/") or os.path.normpath(v) != v:
        raise ValueError(f"{v!r} is not a normalised absolute file path or none")
    return v


def parse_log_file_path_datastore(v: Any) -> str | None:
    """LogFilePath from a FelixConfiguration: `none`, or a file under /var/log/."""
    path = parse_log_file_path(v)
    if path is not None and not path.startswith(DATASTORE_LOG_DIR):
        raise ValueError(f"{v!r} is not under {DATASTORE_LOG_DIR} (a FelixConfiguration may only "
                         "choose a log file there; FELIX_LOGFILEPATH or felix.cfg may name any path)")
    return path


_LOG_PREFIX_RE = re.compile(r"[A-Za-z0-9 :/_.-]{1,125}")


def parse_log_prefix(v: Any) -> str:
    """LogPrefix: the prefix of the `log` rules policy renders (`<prefix>: ` in nft's
    log prefix, at most 127 bytes). Only what nft text takes from this agent:
    A-Z a-z 0-9 space : / _ . - (Calico's %t %k %n %p specifiers are not expanded)."""
    if not isinstance(v, str) or not _LOG_PREFIX_RE.fullmatch(v):
        raise ValueError(f"{v!r} is not a log prefix the agent renders (1-125 of A-Z a-z 0-9 "
                         "space : / _ . -; specifiers such as %n are not expanded)")
    return v


_HEALTH_NAME_RE = re.compile(r"[a-zA-Z0-9_ -]{1,128}")


def parse_health_overrides(v: Any) -> tuple[tuple[str, float], ...]:
    """HealthTimeoutOverrides: `name=duration,...` (env/file, Felix's keydurationlist)
    or [{name, timeout}] (API); (name, seconds) pairs, 0 meaning never times out."""
    items: list[tuple[Any, Any]] = []
    if isinstance(v, (list, tuple)):
        for item in v:
            if not isinstance(item, Mapping) or "name" not in item or "timeout" not in item:
                raise ValueError(f"{item!r} is not a {{name, timeout}} entry")
            items.append((item["name"], item["timeout"]))
    elif isinstance(v, str):
        for part in v.split(","):
            if not part.strip():
                continue
            name, sep, dur = part.partition("=")
            if not sep:
                raise ValueError(f"{part!r} is not name=duration")
            items.append((name.strip(), dur.strip()))
    else:
        raise ValueError(f"{v!r} is not a list of health timeout overrides")
    out: dict[str, float] = {}
    for name, dur in items:
        if not isinstance(name, str) or not _HEALTH_NAME_RE.fullmatch(name):
            raise ValueError(f"{name!r} is not a health reporter name (1-128 of a-z A-Z 0-9 _ - space)")
        out[name] = parse_seconds(dur)
    return tuple(sorted(out.items()))


# Felix's default (config_params.go): the host's physical interfaces by their
# predictable and legacy names; never workload (cali*) or tunnel devices.
DEFAULT_MTU_IFACE_PATTERN = r"^((en|wl|ww|sl|ib)[opsx].*|(eth|wlan|wwan).*)"
DEFAULT_MTU_FILE = "/var/lib/calico/mtu"


@dataclass(frozen=True)
class Param:
    name: str            # Calico's name, e.g. "RouteRefreshInterval"
    parse: Callable[[Any], Any]
    default: Any         # raw default, parsed like any other value
    live: bool = True    # False: a change needs a restart
    #: other spellings Calico accepts (Felix's env name FELIX_IPINIPMTU for ipipMTU)
    aliases: tuple[str, ...] = ()
    #: only from the environment and the config file, never from the datastore (a
    #: path the agent writes as root is the host's business, not etcd's)
    local: bool = False
    #: the parser for values from a FelixConfiguration, when stricter than `parse`
    datastore_parse: Callable[[Any], Any] | None = None
    #: another (earlier) parameter that supplies this one's value when it is set in
    #: the same or a higher-precedence source (Felix in nftables mode reads
    #: NftablesRefreshInterval rather than IptablesRefreshInterval)
    overridden_by: str | None = None

    @property
    def api_field(self) -> str:
        """The FelixConfiguration spec field: lower camel case."""
        return self.name[0].lower() + self.name[1:]


PARAMS: tuple[Param, ...] = (
    Param("LogSeverityScreen", parse_log_level, "Info"),
    # file logging (agent/__main__.py LogSetup): off by default here (Felix's default is
    # /var/log/calico/felix.log); the node image's stderr is the agent's log
    Param("LogSeverityFile", parse_log_level, "Info"),
    Param("LogFilePath", parse_log_file_path, "none", datastore_parse=parse_log_file_path_datastore),
    # syslog (/dev/log): off by default here (Felix's default is Info), as the file
    Param("LogSeveritySys", parse_log_level, "None"),
    # Debug lines only from source files whose name matches (Felix: `int_dataplane.go`,
    # here e.g. `daemon.py`); empty: every file
    Param("LogDebugFilenameRegex", _optional(parse_regex), ""),
    # NAT outgoing (felix/base_chains.py cali-nat-postrouting)
    Param("NATOutgoingAddress", parse_nat_address, ""),
    Param("NATPortRange", parse_port_range, ""),
    # felix/base_chains.py: no `ct state invalid drop` when true
    Param("DisableConntrackInvalidCheck", parse_bool, False),
    Param("FailsafeInboundHostPorts", parse_ports, DEFAULT_FAILSAFE_IN),
    Param("FailsafeOutboundHostPorts", parse_ports, DEFAULT_FAILSAFE_OUT),
    Param("RouteRefreshInterval", parse_seconds, 90),
    # the nft table's refresh (daemon.py reads IptablesRefreshInterval): Felix's
    # nftables mode reads NftablesRefreshInterval, which wins when it is set in the
    # same or a higher-precedence source
    Param("NftablesRefreshInterval", _optional(parse_seconds), ""),
    Param("IptablesRefreshInterval", parse_seconds, 90, overridden_by="NftablesRefreshInterval"),
    Param("DefaultEndpointToHostAction", _choice("Drop", "Return", "Accept"), "Drop"),
    Param("InterfacePrefix", parse_iface_prefixes, "cali", live=False),
    Param("HealthEnabled", parse_bool, True, live=False),
    Param("HealthHost", parse_host, "localhost", live=False),
    Param("HealthPort", parse_int_port, 9099, live=False),
    # the agent's one health reporter is Felix's InternalDataplaneMainLoop (__main__.py)
    Param("HealthTimeoutOverrides", parse_health_overrides, ""),
    Param("PrometheusMetricsEnabled", parse_bool, False, live=False),
    Param("PrometheusMetricsHost", parse_host, "", live=False),
    Param("PrometheusMetricsPort", parse_int_port, 9091, live=False),
    Param("PrometheusProcessMetricsEnabled", parse_bool, True, live=False),
    # Felix's go_* runtime metrics; here the Python runtime's (python_gc_*, python_info)
    Param("PrometheusGoMetricsEnabled", parse_bool, True, live=False),
    # the prefix of policy's Log rules (felix/rules.py through FelixSettings.log_prefix)
    Param("LogPrefix", parse_log_prefix, "calico-packet"),
    Param("NftablesFilterDenyAction", _choice("Drop", "Reject"), "Drop"),
    # The overlay (agent/encap): all live, the encap controller recomputes on change.
    Param("VXLANVNI", _int_range(1, 2**24 - 1, "a VXLAN VNI"), 4096),
    Param("VXLANPort", _int_range(1, 65535, "a UDP port"), 4789),
    Param("VXLANMTU", _int_range(68, 65535, "an MTU", zero_ok=True), 0),
    Param("VXLANMTUV6", _int_range(1280, 65535, "an IPv6 MTU", zero_ok=True), 0),
    Param("IPIPMTU", _int_range(68, 65535, "an MTU", zero_ok=True), 0, aliases=("IpInIpMtu",)),
    Param("MTUIfacePattern", parse_regex, DEFAULT_MTU_IFACE_PATTERN),
    Param("MTUFilePath", parse_mtu_file_path, DEFAULT_MTU_FILE, local=True),
    Param("AllowIPIPPacketsFromWorkloads", parse_bool, False),
    Param("AllowVXLANPacketsFromWorkloads", parse_bool, False),
)
PARAMS_BY_LOWER = {p.name.lower(): p for p in PARAMS}


def read_config_file(path: str) -> dict[str, str]:
    """The `[global]` section of felix.cfg; missing file → {}; unreadable → logged, {}."""
    if not os.path.exists(path):
        return {}
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        cp.read(path, encoding="utf-8")
    except (OSError, configparser.Error) as e:
        log.error("cannot read %s, ignoring it: %s", path, e)
        return {}
    if not cp.has_section("global"):
        return {}
    return dict(cp.items("global"))


class Config:
    """The sources and the resolved values (`values[name]`, also as attributes)."""

    def __init__(
        self,
        node_name: str,
        env: Mapping[str, str] | None = None,
        config_file: str | None = None,
    ) -> None:
        self.node_name = node_name
        env = os.environ if env is None else env
        self.env: dict[str, str] = {}
        for k, v in env.items():
            if k.upper().startswith("FELIX_"):
                self.env[k[6:].lower()] = v
        path = config_file if config_file is not None else os.environ.get("FELIX_CONFIGFILE", DEFAULT_CONFIG_FILE)
        self.file: dict[str, str] = {k.lower(): v for k, v in read_config_file(path).items()} if path else {}
        self.node_spec: dict[str, Any] = {}
        self.default_spec: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self._logged: set[tuple[str, str, str]] = set()
        #: bad values seen (each source, parameter and value once)
        self.bad_total = 0
        #: non-live parameters still taken as they change, without a restart
        #: (the agent's InterfacePrefix until its first snapshot is in)
        self.until_start: set[str] = set()
        #: called with the changed names after each resolve that changed something
        #: (the agent's log setup follows LogFilePath/LogSeverity* this way)
        self.listeners: list[Callable[[list[str]], None]] = []
        self.resolve()

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def set_felix_configuration(self, name: str, spec: Mapping[str, Any] | None) -> list[str]:
        """A FelixConfiguration `default` / `node.<NODENAME>` changed (None: deleted).
        Returns the changed parameter names; other names are ignored."""
        if name == "default":
            self.default_spec = dict(spec or {})
        elif name == f"node.{self.node_name}":
            self.node_spec = dict(spec or {})
        else:
            return []
        return self.resolve()

    def _bad(self, source: str, p: Param, raw: Any, err: Exception) -> None:
        shown = repr(raw)
        key = (source, p.name, shown)
        if key not in self._logged:
            self._logged.add(key)
            self.bad_total += 1
            if len(shown) > 100:
                shown = shown[:97] + "..."
            log.error("ignoring %s = %s from %s: %s; the next source is used", p.name, shown, source,
                      str(err)[:300])

    def resolve(self) -> list[str]:
        changed = []
        lower_node = {k.lower(): v for k, v in self.node_spec.items()}
        lower_default = {k.lower(): v for k, v in self.default_spec.items()}
        ranks: dict[str, int] = {}
        for p in PARAMS:
            keys = (p.name.lower(),) + tuple(a.lower() for a in p.aliases)
            candidates = (
                ("environment", self.env),
                ("config file", self.file),
                (f"FelixConfiguration node.{self.node_name}", lower_node),
                ("FelixConfiguration default", lower_default),
            )
            value, source = None, "default"
            found = False
            rank = len(candidates)
            for rank, (src, table) in enumerate(candidates[:2] if p.local else candidates):
                for key in keys:
                    if key not in table or table[key] is None or table[key] == "":
                        continue
                    parse = p.datastore_parse if p.datastore_parse and src.startswith(
                        "FelixConfiguration") else p.parse
                    try:
                        value, source, found = parse(table[key]), src, True
                        break
                    except (ValueError, TypeError) as e:
                        self._bad(src, p, table[key], e)
                if found:
                    break
            if not found:
                rank = len(candidates)
                value = p.parse(p.default)
            ranks[p.name] = rank
            over = p.overridden_by
            if over is not None and self.values.get(over) is not None and ranks[over] <= rank:
                value, source = self.values[over], f"{self.sources[over]}, as {over}"
            if self.values.get(p.name, _MISSING) != value:
                if p.name in self.values:
                    changed.append(p.name)
                self.values[p.name] = value
            self.sources[p.name] = source
        # the listeners first: the lines below go out with the new log settings
        if changed:
            for listener in list(self.listeners):
                try:
                    listener(changed)
                except Exception:  # noqa: BLE001 - a listener's failure is not the config's
                    log.exception("applying the changed settings %s failed", ",".join(changed))
        for name in changed:
            p = next(q for q in PARAMS if q.name == name)
            if not p.live and name in self.until_start:
                log.info("%s is %r (from %s)", name, self.values[name], self.sources[name])
            elif not p.live:
                log.warning("%s changed to %r: it takes effect when the agent restarts", name, self.values[name])
            else:
                log.info("%s changed to %r (from %s)", name, self.values[name], self.sources[name])
        return changed

    @property
    def log_level(self) -> int:
        """The root logger's level: the lowest of the screen's, the syslog's and (while
        file logging is on) the file's; each handler filters to its own."""
        level = min(self.screen_level, self.sys_level)
        if self.values.get("LogFilePath"):
            level = min(level, self.file_level)
        return level

    @property
    def screen_level(self) -> int:
        return LOG_LEVELS[self.values["LogSeverityScreen"].lower()]

    @property
    def sys_level(self) -> int:
        return LOG_LEVELS[self.values["LogSeveritySys"].lower()]

    @property
    def file_level(self) -> int:
        return LOG_LEVELS[self.values["LogSeverityFile"].lower()]


_MISSING = object()
