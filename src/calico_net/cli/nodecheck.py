"""`calicoctl node checksystem` and `calicoctl node diags`: what this host needs to run
calico-node, and a tarball of what support needs to see.

`checksystem` follows Calico's: the kernel version, then each kernel module the
nftables dataplane uses, found when loaded (/proc/modules), built in
(modules.builtin), loadable (modules.dep) or set in the kernel's config; then the host sysctls the agent relies
on and the programs it runs (nft, BIRD). One line per check, OK or the problem; a
missing required item exits non-zero, an optional one (the tunnel drivers, a sysctl
calico-node sets itself) is a WARNING.

`diags` runs each collector with a timeout and never through a shell, and writes
`calico-diags-<time>.tar.gz` with the command outputs, the log directory and the
config directory (files holding a private key are left out), plus `failures.txt`
naming whatever could not be collected. Every path and socket name the user gives
passes `checked_path` first.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import subprocess
import tarfile
import time
from typing import Any, Callable

MIN_KERNEL = (4, 18)  # nftables with the expressions the ruleset uses
# (module, its kernel config option, required): the tunnel drivers only matter with
# IP-in-IP / VXLAN pools.
MODULES = (("nf_tables", "CONFIG_NF_TABLES", True), ("nf_conntrack", "CONFIG_NF_CONNTRACK", True),
           ("nft_ct", "CONFIG_NFT_CT", True), ("nft_chain_nat", "CONFIG_NFT_NAT", True),
           ("nft_masq", "CONFIG_NFT_MASQ", True), ("nft_fib_inet", "CONFIG_NFT_FIB_INET", True),
           ("nf_conntrack_netlink", "CONFIG_NF_CT_NETLINK", True), ("veth", "CONFIG_VETH", True),
           ("ipip", "CONFIG_NET_IPIP", False), ("vxlan", "CONFIG_VXLAN", False))
# (sysctl, wanted value, what it is for): calico-node sets these at start, so a wrong
# value before it runs is a warning.
SYSCTLS = (("net/ipv4/ip_forward", "1", "routing workload traffic"),)
# (program, arguments that show it runs, required); birdc only needs to be there.
PROGRAMS = (("nft", ["--version"], True), ("bird", ["--version"], True), ("birdc", None, False))
COMMAND_TIMEOUT = 10.0
MAX_FILE_BYTES = 64 << 20


def checked_path(text: str, what: str) -> str:
    """A path from the user, fit to be opened or passed as one argument: not empty,
    no control characters, and not starting with '-' (never read as an option)."""
    if not text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) or text.startswith("-"):
        raise ValueError(f"{what} {text[:100]!r} is not a usable path")
    return os.path.normpath(text)


def _modules_known(kernel: str) -> tuple[set[str], set[str], set[str]]:
    def names(path: str) -> set[str]:
        # "nf_tables 348160 ..." (/proc/modules), "kernel/.../nf_tables.ko" (builtin),
        # "kernel/.../nf_tables.ko.zst: deps" (modules.dep): the first word before any ":".
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                first = [line.split(":", 1)[0].split()[0] for line in f if line.strip()]
        except OSError:
            return set()
        return {os.path.basename(n).split(".ko")[0].replace("-", "_") for n in first}

    base = f"/lib/modules/{kernel}"
    return names("/proc/modules"), names(f"{base}/modules.builtin"), names(f"{base}/modules.dep")


def _kernel_config(kernel: str) -> dict[str, str]:
    """The running kernel's build options (CONFIG_X -> y/m), from /proc/config.gz or
    /boot/config-<release>; {} when neither is there. A kernel built without module
    support has no modules files at all, only this."""
    import gzip

    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{kernel}", open)):
        try:
            with opener(path, "rt", encoding="utf-8", errors="replace") as f:  # type: ignore[operator]
                return dict(line.strip().split("=", 1) for line in f if line.startswith("CONFIG_") and "=" in line)
        except OSError:
            continue
    return {}


def run_checks() -> list[tuple[str, str, str]]:
    """(section, item, result) for each check; result is OK, WARNING: ... or FAIL: ..."""
    out = []
    kernel = platform.release()
    try:
        have = tuple(int(x) for x in kernel.split("-")[0].split(".")[:2])
    except ValueError:
        have = (0, 0)
    out.append(("kernel version", kernel, "OK" if have >= MIN_KERNEL
                else f"FAIL: calico.net needs Linux {'.'.join(map(str, MIN_KERNEL))} or later"))
    loaded, builtin, loadable = _modules_known(kernel)
    config = _kernel_config(kernel)
    for mod, option, required in MODULES:
        if mod in loaded or mod in builtin or mod in loadable or config.get(option) in ("y", "m"):
            out.append(("kernel modules", mod, "OK"))
        else:
            word = "FAIL" if required else "WARNING"
            out.append(("kernel modules", mod, f"{word}: not loaded, built in or loadable ({option} not set; modprobe {mod})"))
    for name, want, why in SYSCTLS:
        try:
            with open(f"/proc/sys/{name}", encoding="ascii") as f:
                value = f.read().strip()
        except OSError as e:
            out.append(("sysctls", name.replace("/", "."), f"FAIL: cannot read ({e.strerror})"))
            continue
        out.append(("sysctls", name.replace("/", "."), "OK" if value == want else
                    f"WARNING: is {value}, calico-node sets {want} at start ({why})"))
    for prog, argv, required in PROGRAMS:
        path = shutil.which(prog)
        if path is None:
            word = "FAIL" if required else "WARNING"
            out.append(("programs", prog, f"{word}: not found on PATH"))
            continue
        ok, text = _run([path, *argv]) if argv else (True, "")
        out.append(("programs", prog, "OK" if ok else f"FAIL: {text.strip()[:200]}"))
    return out


def cmd_checksystem(args: argparse.Namespace, ctx) -> int:
    section = None
    failed = False
    for sec, item, result in run_checks():
        if sec != section:
            print(f"Checking {sec}...", file=ctx.out)
            section = sec
        print(f"\t\t{item:<24}\t{result}", file=ctx.out)
        failed = failed or result.startswith("FAIL")
    if failed:
        raise OSError("system doesn't meet one or more minimum requirements to run calico.net")
    print("System meets minimum system requirements to run calico.net!", file=ctx.out)
    return 0


# --- diags ---------------------------------------------------------------------------


def _run(argv: list[str], timeout: float = COMMAND_TIMEOUT) -> tuple[bool, str]:
    """Run one command (argv, no shell); (succeeded, stdout or the reason)."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:g}s"
    except OSError as e:
        return False, f"{argv[0]}: {e.strerror}"
    text = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        return False, f"exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[:500]}"
    return True, text


def diag_commands(bird_socket: str) -> list[tuple[str, list[str]]]:
    return [
        ("date.txt", ["date", "-u"]), ("hostname.txt", ["hostname"]),
        ("ip-addr.txt", ["ip", "addr"]), ("ip-link.txt", ["ip", "-d", "link"]),
        ("ip-route.txt", ["ip", "route"]), ("ip-6-route.txt", ["ip", "-6", "route"]),
        ("ip-rule.txt", ["ip", "rule"]), ("nft-ruleset.txt", ["nft", "list", "ruleset"]),
        ("bird-protocols.txt", ["birdc", "-s", bird_socket, "show", "protocols", "all"]),
        ("bird-status.txt", ["birdc", "-s", bird_socket, "show", "status"]),
    ]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_tree(tar: tarfile.TarFile, root: str, arc: str, failures: list[str]) -> None:
    if not os.path.isdir(root):
        failures.append(f"{root}: not a directory")
        return
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked dirs
        dirnames.sort()
        for fn in sorted(filenames):
            path = os.path.join(dirpath, fn)
            rel = os.path.relpath(path, root)
            try:
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                if os.path.getsize(path) > MAX_FILE_BYTES:
                    failures.append(f"{path}: larger than {MAX_FILE_BYTES} bytes, left out")
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                failures.append(f"{path}: {e.strerror}")
                continue
            if b"PRIVATE KEY" in data:
                failures.append(f"{path}: holds a private key, left out")
                continue
            _add_bytes(tar, f"{arc}/{rel}", data)


def write_diags(out_dir: str, log_dir: str, config_dir: str, bird_socket: str) -> tuple[str, list[str]]:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    top = f"calico-diags-{stamp}"
    path = os.path.join(out_dir, f"{top}.tar.gz")
    failures: list[str] = []
    with tarfile.open(path, "x:gz") as tar:
        for name, argv in diag_commands(bird_socket):
            ok, text = _run(argv)
            if ok:
                _add_bytes(tar, f"{top}/{name}", text.encode())
            else:
                failures.append(f"{' '.join(argv)}: {text}")
        _add_tree(tar, log_dir, f"{top}/logs", failures)
        _add_tree(tar, config_dir, f"{top}/config", failures)
        _add_bytes(tar, f"{top}/failures.txt", "".join(f"{f}\n" for f in failures).encode())
    return path, failures


def cmd_diags(args: argparse.Namespace, ctx) -> int:
    out_dir = checked_path(args.output_dir, "--output-dir")
    if not os.path.isdir(out_dir):
        raise OSError(f"--output-dir {out_dir}: not a directory")
    path, failures = write_diags(out_dir, checked_path(args.log_dir, "--log-dir"),
                                 checked_path(args.config_dir, "--config-dir"),
                                 checked_path(args.bird_socket, "--bird-socket"))
    print(f"Diags saved to {path}", file=ctx.out)
    if failures:
        print(f"{len(failures)} item(s) could not be collected (listed in failures.txt):", file=ctx.out)
        for f in failures:
            print(f"  {f}", file=ctx.out)
    return 0


def register(nsub: Any, add_bird_socket: Callable[[argparse.ArgumentParser], None]) -> None:
    cs = nsub.add_parser("checksystem", help="check this host can run calico-node",
                         description="Check the kernel version, kernel modules, sysctls and programs "
                                     "calico-node needs; exits non-zero when one is missing.")
    cs.set_defaults(func=cmd_checksystem)
    dg = nsub.add_parser("diags", help="collect logs, config, routes, ruleset and BIRD state in a tarball",
                         description="Write calico-diags-<time>.tar.gz: routes, links, the nft ruleset, "
                                     "BIRD's protocols, the log and config directories; each collected "
                                     "with a timeout, failures listed in failures.txt.")
    dg.add_argument("--log-dir", default="/var/log/calico", help="calico-node's log directory (default /var/log/calico)")
    dg.add_argument("--config-dir", default="/etc/calico", help="configuration directory (default /etc/calico)")
    dg.add_argument("--output-dir", default="/tmp", help="where to write the tarball (default /tmp)")
    add_bird_socket(dg)
    dg.set_defaults(func=cmd_diags)
