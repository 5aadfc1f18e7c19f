#!/bin/sh
# OCI backend bench: our umoci-style build vs umoci, our sloci-style build vs tar|gzip,
# on one generated rootfs (VCONTAINER_BENCH_MB, default 200). Also run by `make bench`.
set -eu
cd "$(dirname "$0")/.."
exec cargo bench -p vcontainer-backend-umoci --bench oci "$@"
