#!/usr/bin/env bash
# The static binary on a kernel and a userland that are not this host's: Debian's 5.10 kernel
# under qemu (scripts/kernel-testbed) with nothing in the guest but busybox (static) and the
# static kidreaper, no library copied in (the guest has no dynamic loader: checked there),
# runs `kidreaper check` and `kidreaper diagnose --demo` (its embedded workload).
# Usage: tests/package/test_static_guest.sh build/static/kidreaper [KERNEL]
set -euo pipefail
if [[ $# -lt 1 || ! -x $1 ]]; then
  echo "usage: $0 STATIC_KIDREAPER [KERNEL]" >&2
  exit 2
fi
binary=$(realpath "$1")
kernel=${2:-5.10}
cd "$(dirname "$0")/../.."
if readelf -d "$binary" 2>/dev/null | grep -q NEEDED; then
  echo "test_static_guest: FAIL: $binary needs shared libraries:" >&2
  readelf -d "$binary" | grep NEEDED >&2
  exit 1
fi
busybox=/bin/busybox
if [[ ! -x $busybox ]] || readelf -d "$busybox" 2>/dev/null | grep -q NEEDED; then
  echo "test_static_guest: FAIL: needs a static /bin/busybox (busybox-static)" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
script="for loader in /lib64/ld-linux-x86-64.so.2 /lib/ld-linux-x86-64.so.2; do \
  if [ -e \$loader ]; then echo 'STATIC-GUEST: a dynamic loader is present'; exit 3; fi; done; \
  $binary check && $binary diagnose --demo --format json > /tmp/report.json && \
  grep -Eq '\"verdict\": ?\"leak\"' /tmp/report.json && printf '\\nSTATIC-GUEST-OK\\n'"
status=0
scripts/kernel-testbed --kernel "$kernel" --timeout 600 --copy "$binary" \
  -- "$busybox" sh -c "$script" >"$log" 2>&1 || status=$?
if [[ $status -ne 0 ]] || ! grep -q "^STATIC-GUEST-OK" "$log"; then
  tail -n 60 "$log" >&2
  echo "test_static_guest: FAIL: the static kidreaper on $kernel (exit $status)" >&2
  exit 1
fi
grep -E "^(kernel|version|BPF programs)" "$log" || true
echo "test_static_guest: the static kidreaper runs check and diagnose --demo on $kernel"
