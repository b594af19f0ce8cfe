#!/usr/bin/env bash
# Debian packages the C++ build needs (libpng, libjpeg, nlohmann-json headers and libraries) as .deb files in
# ./.debs (git-ignored), for the lent GPU machine, which cannot fetch anything. tools/gpu_check.sh unpacks them
# into /tmp/debroot. Run from the repository root.
set -euo pipefail
mkdir -p .debs
apt-get update -qq
(cd .debs && apt-get download libpng-dev libpng16-16 libjpeg62-turbo-dev libjpeg62-turbo nlohmann-json3-dev zlib1g-dev)
ls .debs
