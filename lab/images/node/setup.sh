#!/usr/bin/env bash
# Runs INSIDE a build container started from localhost/calico-lab-base:latest (with
# --network host, so apt reaches the host's mirror) and turns it into a lab node: a
# systemd-booted Debian 12 "host" with everything the calico.net roles need already
# installed, because lab nodes cannot reach any mirror once running.
# Called by lab/images/node/build.sh, which commits the result.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
HERE=$(cd "$(dirname "$0")" && pwd)

# Nothing may start while we install (no systemd runs here anyway; this is belt and braces).
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d

PKGS=(
    # boot and log in like a host
    systemd systemd-sysv dbus openssh-server sudo ca-certificates procps less
    # Ansible on the managed side: python, apt module support, venvs for calico_net
    python3 python3-apt python3-venv
    # container runtime for calico/node and workloads. With --no-install-recommends apt
    # picks containernetworking-plugins (CNI) rather than netavark as podman's network
    # stack, which is what the calico CNI plugin needs.
    podman crun conmon containernetworking-plugins
    # cluster pieces the roles configure and start
    etcd-server etcd-client bird2 nftables
    # networking tools for checks and the connectivity matrix
    iproute2 iputils-ping netcat-openbsd curl kmod
)
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null

# Services the roles start themselves: do not let them auto-start on boot.
systemctl disable etcd.service bird.service >/dev/null 2>&1 || true
# Units that make no sense (or fail) inside a container.
systemctl mask systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
    getty@tty1.service console-getty.service serial-getty@.service \
    systemd-logind.service sys-kernel-config.mount sys-kernel-debug.mount \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
systemctl enable ssh.service >/dev/null 2>&1

# sshd: root by key only; fresh host keys per node (generated on first boot, so nodes made
# from one image do not share keys).
install -m 0644 "$HERE/sshd-calico-lab.conf" /etc/ssh/sshd_config.d/calico-lab.conf
rm -f /etc/ssh/ssh_host_*
install -d /etc/systemd/system/ssh.service.d
install -m 0644 "$HERE/ssh-hostkeys.conf" /etc/systemd/system/ssh.service.d/calico-lab-hostkeys.conf
install -d -m 0700 /root/.ssh

# Ansible logs in as calico-admin, a plain user with passwordless sudo, as on real hosts
# where root cannot log in: the playbooks escalate with `become` where the work needs
# root. (root keeps key-only login for the lab's own scripts: demo.sh, the matrix.)
useradd --create-home --shell /bin/bash --uid 1000 calico-admin
printf 'calico-admin ALL=(ALL) NOPASSWD: ALL\n' >/etc/sudoers.d/calico-admin
chmod 0440 /etc/sudoers.d/calico-admin
visudo -cqf /etc/sudoers.d/calico-admin
install -d -m 0700 -o calico-admin -g calico-admin /home/calico-admin/.ssh

# podman inside the node: the same sandbox quirk as on the host (see lab/bootstrap-host.sh).
install -m 0644 "$HERE/containers.conf" /etc/containers/containers.conf
# ...and its OCI runtime goes through a wrapper that mounts cgroup hierarchies the kernel
# gained after the node started (containers.conf names it; the script says why).
install -m 0755 "$HERE/calico-lab-crun" /usr/local/sbin/calico-lab-crun
# The lab uses 198.18.0.0/15 only: Debian's podman ships its default CNI bridge "podman"
# on 10.88.0.0/16; move it to 198.18.128.0/24 (calico workloads do not use it).
sed -i -e 's|"10.88.0.0/16"|"198.18.128.0/24"|' -e 's|"10.88.0.1"|"198.18.128.1"|' \
    /etc/cni/net.d/87-podman-bridge.conflist
grep -q '198.18.128.0/24' /etc/cni/net.d/87-podman-bridge.conflist

# Each container gets its own machine id at boot.
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id

rm -f /usr/sbin/policy-rc.d
apt-get clean
# Package lists stay: the roles' apt tasks look packages up (and find them installed)
# without any mirror.
