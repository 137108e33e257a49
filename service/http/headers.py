"""Header names and values every response of the service shares (service/http/edge.py,
service/hotpath/prebuilt.py)."""

from __future__ import annotations

from multidict import istr

# No version on the wire.
SERVER_NAME = "coupons"
# Header names as multidict's case-insensitive strings, made once: a plain str is converted on
# every lookup or insert.
X_REQUEST_ID = istr("X-Request-ID")
X_CACHE = istr("X-Cache")
# What every response carries: no server version; JSON never sniffed into something executable;
# nothing shared between callers.
COMMON = {istr("Server"): SERVER_NAME, istr("X-Content-Type-Options"): "nosniff"}
CACHE_CONTROL = istr("Cache-Control")
PRIVATE = "private, no-cache"
