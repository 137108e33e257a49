#!/bin/sh
# As the official image: `redis-server` (or its options alone) runs as the redis user; the
# official build turns protected mode off by default, so the stand-in passes it off.
set -eu
if [ "${1#-}" != "$1" ]; then
  set -- redis-server "$@"
fi
if [ "$1" = "redis-server" ]; then
  shift
  exec setpriv --reuid=redis --regid=redis --init-groups redis-server --protected-mode no "$@"
fi
exec "$@"
