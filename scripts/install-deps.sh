#!/usr/bin/env bash
# Installs the Debian packages the tests and the lab need, only when something is
# missing, so a second `make test` on the same machine does not touch apt.
set -euo pipefail
pkgs=(etcd-server etcd-client bird2 nftables iproute2 iputils-ping netcat-openbsd
      procps podman debootstrap uidmap fuse-overlayfs slirp4netns openssh-client
      busybox-static openssl conntrack containernetworking-plugins tcpdump docker.io)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Debian's etcd-server would start a default etcd on 127.0.0.1:2379 where an init
  # system runs; tests start their own on free ports, so keep package scripts quiet.
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The host quirks without which podman cannot start a container on these machines
# (cgroup hugetlb, ulimits), and the guard route that keeps 198.18.0.0/15 packets on the
# machine (lab/hostnet.sh says why): before any test or lab node needs them.
bash "$(dirname "$0")/../lab/bootstrap-host.sh"
