#!/usr/bin/env bash
# Every Debian package the tests use, installed in one step before them (as root, as CI
# runs); elsewhere it lists what is missing, and the scripts that need it skip and say so.
#   libfabric1                      the fabric backend (loaded at run time)
#   fonts-dejavu-core               the figure tool's text
#   iproute2                        network namespaces (launch tests, ci/netns-topo.sh)
#   slurm-wlm munge openmpi-bin     the Slurm and Open MPI launcher tests
#   qemu-system-x86 busybox-static cpio kmod xz-utils binutils rdma-core ibverbs-providers
#   perftest librdmacm1             the SoftRoCE VM (ci/verbs.sh)
# usage: ci/packages.sh
set -euo pipefail
pkgs="libfabric1 fonts-dejavu-core iproute2 slurm-wlm munge openmpi-bin qemu-system-x86
      busybox-static cpio kmod xz-utils binutils rdma-core ibverbs-providers perftest librdmacm1"
missing=$(for p in $pkgs; do
    dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' ||
        echo "$p"
done)
if [ -z "$missing" ]; then
    echo "packages: all present"
elif [ "$(id -u)" = 0 ]; then
    echo "== apt-get install $(echo $missing)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "packages: not root, so not installed (their tests skip): $(echo $missing)"
fi
