#!/usr/bin/env bash
# The package in a clean Debian 12: a minimal root made by mmdebstrap from Debian's archive
# (the host's apt sources; cached as a tarball in scripts/.cache/package-root, override with
# KIDREAPER_PACKAGE_CACHE), the .deb installed there with apt (so its declared dependencies
# must be enough), then, with /proc, /sys (BTF included) and /dev bind-mounted:
# `kidreaper --version`, `kidreaper check`, the example config checked, the man pages and
# completions in place, the conffile declared and the whole-host unit not enabled.
# Runs in a mount namespace of its own, so no mount outlives it. Root only.
# Usage: tests/package/test_install.sh dist/kidreaper_VERSION_ARCH.deb
set -euo pipefail
if [[ $# -ne 1 || ! -f $1 ]]; then
  echo "usage: $0 PACKAGE.deb" >&2
  exit 2
fi
deb=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
cache=$(realpath -m "${KIDREAPER_PACKAGE_CACHE:-$here/../../scripts/.cache/package-root}")
tarball="$cache/bookworm-apt.tar"

if [[ ! -s $tarball ]]; then
  mkdir -p "$cache"
  sources=()
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -s $file ]] && sources+=("$file")
  done
  echo "test_install: making a clean Debian 12 root (mmdebstrap, cached in $cache)"
  mmdebstrap --quiet --variant=apt --format=tar bookworm "$cache/partial.tar" "${sources[@]}"
  mv "$cache/partial.tar" "$tarball"
fi

root=$(mktemp -d /tmp/kidreaper-debian-root.XXXXXX)
trap 'rm -rf --one-file-system "$root"' EXIT
tar -xf "$tarball" -C "$root"
cp "$deb" "$root/tmp/kidreaper.deb"
cp /etc/resolv.conf "$root/etc/resolv.conf"

unshare --mount --propagation private bash -s "$root" <<'INSIDE'
set -euo pipefail
root=$1
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"; }
fail() { echo "test_install: FAIL: $*" >&2; exit 1; }

in_root apt-get update -qq >/dev/null
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/kidreaper.deb >/dev/null \
  || fail "apt-get install of the package failed"

version=$(in_root kidreaper --version) || fail "kidreaper --version failed"
[[ $version =~ ^kidreaper\ [0-9]+\.[0-9]+\.[0-9]+(\+g[0-9a-f]+(\.dirty)?)?$ ]] \
  || fail "kidreaper --version printed \"$version\""
check=$(in_root kidreaper check) || fail "kidreaper check exited $? in the clean root: $check"
grep -qx "version: ${version#kidreaper }" <<<"$check" || fail "check does not report the version: $check"
grep -q "BPF programs: loaded and attached" <<<"$check" || fail "check did not load the programs: $check"
in_root kidreaper reap --config /etc/kidreaper/kidreaper.toml --check-config >/dev/null \
  || fail "the example config does not pass --check-config"

for file in /usr/sbin/kidreaper /etc/kidreaper/kidreaper.toml \
  /lib/systemd/system/kidreaper.service /lib/systemd/system/kidreaper@.service \
  /usr/share/man/man8/kidreaper.8.gz /usr/share/man/man5/kidreaper.toml.5.gz \
  /usr/share/bash-completion/completions/kidreaper /usr/share/zsh/vendor-completions/_kidreaper \
  /usr/share/doc/kidreaper/copyright /usr/share/doc/kidreaper/changelog.gz \
  /usr/share/doc/kidreaper/changelog.Debian.gz; do
  [[ -e $root$file ]] || fail "$file is not installed"
done
in_root dpkg-query -W -f='${Conffiles}\n' kidreaper | grep -q "/etc/kidreaper/kidreaper.toml" \
  || fail "/etc/kidreaper/kidreaper.toml is not a conffile"
if compgen -G "$root/etc/systemd/system/*.wants/kidreaper.service" >/dev/null; then
  fail "kidreaper.service is enabled on install"
fi
echo "test_install: $version installs into a clean Debian 12 and runs check there"
INSIDE
