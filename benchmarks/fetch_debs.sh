#!/usr/bin/env bash
# Debian packages the C++ build needs (libpng, libjpeg, nlohmann-json headers and libraries) as .deb files in
# ./.debs, for the lent GPU machine, which cannot fetch anything. gpu_check.sh unpacks them into /tmp/debroot.
set -euo pipefail
grep -qx '/.debs/' .git/info/exclude 2>/dev/null || echo '/.debs/' >> .git/info/exclude
mkdir -p .debs
apt-get update -qq
(cd .debs && apt-get download libpng-dev libpng16-16 libjpeg62-turbo-dev libjpeg62-turbo nlohmann-json3-dev zlib1g-dev)
ls .debs
