#!/usr/bin/env bash
# Builds localhost/calico-lab-base:latest: a minimal Debian 12 (bookworm) rootfs made with
# debootstrap from the Debian mirror this host's apt already uses, then `podman import`ed.
# No registry is involved. This is the slow step (network + dpkg), so it is cached on its
# own: it is redone only when this file or the host's mirror changes.
# Usage: build.sh HASH   (called by lab/build-images.sh, which decides whether to build)
set -euo pipefail
LOG_TAG=base
# shellcheck source=../../lib.sh
source "$(dirname "$0")/../../lib.sh"
require_root

HASH=${1:?recipe hash}
SUITE=bookworm
ROOTFS=$WORK_DIR/base-rootfs
TARBALL=$WORK_DIR/base-rootfs.tar

# debian_sources : print "URI SUITE..." lines for the host's enabled Debian deb sources,
# from both one-line (*.list) and deb822 (*.sources) files.
debian_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk '$1=="deb" { i=2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                         print $i, $(i+1) }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk 'function flush() { if (uri != "" && types ~ /(^| )deb( |$)/ && enabled != "no")
                                   print uri, suites; uri=""; suites=""; types=""; enabled="" }
             /^[[:space:]]*$/ { flush(); next }
             /^[[:space:]]*#/ { next }
             tolower($1)=="types:"   { $1=""; types=substr($0,2) }
             tolower($1)=="uris:"    { uri=$2 }
             tolower($1)=="suites:"  { $1=""; suites=substr($0,2) }
             tolower($1)=="enabled:" { enabled=tolower($2) }
             END { flush() }' "$f"
    done
}

# The main archive: a source listing the plain suite; security: one listing SUITE-security.
MIRROR=$(debian_sources | awk -v s="$SUITE" '{ for (i=2;i<=NF;i++) if ($i==s) { print $1; exit } }')
SECURITY=$(debian_sources | awk -v s="$SUITE-security" '{ for (i=2;i<=NF;i++) if ($i==s) { print $1; exit } }')
MIRROR=${CALICO_LAB_MIRROR:-${MIRROR:-http://deb.debian.org/debian}}
log "mirror: $MIRROR  security: ${SECURITY:-none}"

# Restartable: whatever a killed run left behind is ours and is thrown away. debootstrap
# mounts /proc and /sys inside the target while it configures packages: a run killed
# then leaves them mounted, so unmount everything below the rootfs before deleting it.
if [[ -d $ROOTFS ]]; then
    findmnt -rn -o TARGET | grep -E "^$ROOTFS(/|\$)" | sort -r | while read -r m; do
        umount -l "$m" || true
    done
fi
rm -rf "$ROOTFS" "$TARBALL"
mkdir -p "$WORK_DIR" "$CACHE_DIR/debootstrap"

build_rootfs() {
    # minbase: apt + dpkg + essentials; each image adds what it needs on top.
    debootstrap --variant=minbase --cache-dir="$CACHE_DIR/debootstrap" \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK_DIR/debootstrap.log" 2>&1 || {
        tail -30 "$WORK_DIR/debootstrap.log" >&2
        return 1
    }
}
timed "base: debootstrap $SUITE" build_rootfs

# apt sources inside the image: the same mirror, with updates and security when the host
# has them.
rm -f "$ROOTFS/etc/apt/sources.list"
{
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$MIRROR" "$SUITE" "$SUITE"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [[ -n $SECURITY ]]; then
        printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$SECURITY" "$SUITE"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
} >"$ROOTFS/etc/apt/sources.list.d/debian.sources"

# Small images: no recommends, no docs/man/locales beyond English.
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$ROOTFS/etc/apt/apt.conf.d/90calico-lab-norecommends"
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/90calico-lab-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/en*
EOF
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
# The rootfs gets a hostname and resolv.conf from podman at run time.
: >"$ROOTFS/etc/hostname"
rm -f "$ROOTFS/etc/resolv.conf"

tar -C "$ROOTFS" --numeric-owner --xattrs -cf "$TARBALL" .
old_id=$(image_id "$BASE_IMAGE")
timed "base: podman import" podman import --quiet \
    --change "LABEL $RECIPE_LABEL=$HASH" \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV LANG=C.UTF-8' \
    --message "calico.net lab base: debootstrap $SUITE from $MIRROR" \
    "$TARBALL" "$BASE_IMAGE" >/dev/null
rm -rf "$ROOTFS" "$TARBALL"
drop_replaced "$old_id" "$BASE_IMAGE"
log "built $BASE_IMAGE ($HASH)"
