#!/usr/bin/env bash
# Debian packages the suite uses when present: tcmalloc (the CPU vLLM runs faster with it preloaded) and chromium
# (headless browser tests of the reports and the web UI). Installs only what is missing, and only as root;
# otherwise says what to install and goes on.
set -uo pipefail
missing=()
[[ -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 || -e /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 ]] \
  || missing+=(libtcmalloc-minimal4)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "system packages: installing ${missing[*]}"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || echo "system packages: could not install ${missing[*]} (the suite still runs; browser tests will skip)" >&2
else
  echo "system packages: please install ${missing[*]} (the suite still runs without them; browser tests skip)" >&2
fi
exit 0
