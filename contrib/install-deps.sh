#!/bin/sh
# install-deps.sh - install every Debian package mailwarden needs to build, run and test.
# Idempotent: packages already present are skipped by apt; safe to run repeatedly.
# Usage: contrib/install-deps.sh          build + run the daemon
#        contrib/install-deps.sh --test   also everything the test suite uses
set -eu

# Only what CMakeLists.txt links (no libopendmarc: our own DMARC code, see
# docs/architecture.md; no libevent: our own milter server).  publicsuffix is
# data, read at run time in dmarc.mode rfc7489.
BUILD="build-essential cmake pkg-config clang libclang-rt-14-dev
  libspf2-dev libunbound-dev libconfig-dev libopendkim-dev libsystemd-dev
  publicsuffix libhiredis-dev libssl-dev libxml2-dev zlib1g-dev libidn2-dev
  libmicrohttpd-dev libsqlite3-dev"
TEST="postfix nsd swaks python3-dnslib python3-authres python3-dkim python3-yaml opendkim opendkim-tools
  python3-dnspython iproute2 libxml2-utils dnsutils procps util-linux redis-server redis-sentinel
  ldnsutils debhelper dpkg-dev stunnel4"

want="$BUILD"
[ "${1:-}" = "--test" ] && want="$want $TEST"

missing=""
for p in $want; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "install-deps: all packages present"
    exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# Postfix asks debconf questions on install: answer "No configuration" so the
# system instance stays inert; tests run their own private instance.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
echo "install-deps: installed:$missing"
