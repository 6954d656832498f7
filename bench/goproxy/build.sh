#!/usr/bin/env bash
# Build the Go proxy people use today (nightshift2k/binance-proxy) from its
# public source, for side-by-side benchmarks against the fake exchange.
# Nothing of it is committed: the build lives in $1 (default /work/gobuild).
#
# Needs the source of the proxy and of each dependency at the versions its
# go.mod names, as git repositories in $MIRROR/<owner>+<name>/repo (the
# workplace's fetch tool puts them there), and Debian's golang-go. The Go
# module proxy is not used (GOPROXY=off): the dependencies are vendored by
# hand. The only patch: every Binance URL points at the fake exchange on
# 127.0.0.1:$FAKE_PORT (default 19000), REST at its root, streams under
# /spot and /usdm.
set -euo pipefail
B=${1:-/work/gobuild}
MIRROR=${MIRROR:-/work/.mirror}
PORT=${FAKE_PORT:-19000}
rm -rf "$B"; mkdir -p "$B"; cd "$B"
git -C "$MIRROR/nightshift2k+binance-proxy/repo" archive HEAD | tar -x
add() { # module-path mirror rev [subdir]
  mkdir -p "vendor/$1"
  if [ -n "${4:-}" ]; then
    git -C "$MIRROR/$2/repo" archive "$3" "$4" | tar -x -C "vendor/$1" --strip-components=1
  else
    git -C "$MIRROR/$2/repo" archive "$3" | tar -x -C "vendor/$1"
  fi
}
add github.com/adshao/go-binance/v2 adshao+go-binance v2.3.1 v2
add github.com/jessevdk/go-flags jessevdk+go-flags v1.5.0
add github.com/sirupsen/logrus sirupsen+logrus v1.8.1
add golang.org/x/time golang+time 1f47c861a9ac
add golang.org/x/sys golang+sys 2c5d950f24ef
add github.com/bitly/go-simplejson bitly+go-simplejson v0.5.0
add github.com/gorilla/websocket gorilla+websocket v1.4.2
python3 - <<'PY'
import os, re
mods = [("github.com/adshao/go-binance/v2", "v2.3.1"), ("github.com/jessevdk/go-flags", "v1.5.0"),
        ("github.com/sirupsen/logrus", "v1.8.1"),
        ("golang.org/x/time", "v0.0.0-20210723032227-1f47c861a9ac"),
        ("github.com/bitly/go-simplejson", "v0.5.0"), ("github.com/gorilla/websocket", "v1.4.2"),
        ("github.com/stretchr/objx", "v0.2.0"), ("github.com/stretchr/testify", "v1.7.0"),
        ("golang.org/x/sys", "v0.0.0-20211004093028-2c5d950f24ef"),
        ("gopkg.in/yaml.v3", "v3.0.0-20210107192922-496545a6307b")]
out = []
for path, ver in mods:
    d = os.path.join("vendor", path)
    gm = os.path.join(d, "go.mod")
    m = re.search(r"^go (\S+)", open(gm).read(), re.M) if os.path.exists(gm) else None
    out += [f"# {path} {ver}", "## explicit" + (f"; go {m.group(1)}" if m else "")]
    for root, dirs, files in os.walk(d):
        dirs[:] = sorted(x for x in dirs if x not in ("testdata", "_examples", "examples")
                         and not x.startswith((".", "_")))
        if any(f.endswith(".go") and not f.endswith("_test.go") for f in files):
            out.append(root[len("vendor/"):])
open("vendor/modules.txt", "w").write("\n".join(out) + "\n")
PY
sed -i "s#https://api[.]binance[.]com#http://127.0.0.1:$PORT#; s#https://fapi[.]binance[.]com#http://127.0.0.1:$PORT#; s#\"api[.]binance[.]com\"#\"127.0.0.1:$PORT\"#; s#\"fapi[.]binance[.]com\"#\"127.0.0.1:$PORT\"#" \
  internal/handler/handler.go internal/service/exchangeinfo.go
V=vendor/github.com/adshao/go-binance/v2
sed -i "s#https://api[.]binance[.]com#http://127.0.0.1:$PORT#" $V/client.go
sed -i "s#https://fapi[.]binance[.]com#http://127.0.0.1:$PORT#" $V/futures/client.go
sed -i "s#wss://stream[.]binance[.]com:9443/ws#ws://127.0.0.1:$PORT/spot/ws#; s#wss://stream[.]binance[.]com:9443/stream#ws://127.0.0.1:$PORT/spot/stream#" $V/websocket_service.go
sed -i "s#wss://fstream[.]binance[.]com/ws#ws://127.0.0.1:$PORT/usdm/ws#; s#wss://fstream[.]binance[.]com/stream#ws://127.0.0.1:$PORT/usdm/stream#" $V/futures/websocket_service.go
if grep -rn "binance\.com" --include=*.go internal cmd "$V"/*.go "$V"/futures/*.go | grep -v _test.go | grep -v "^\S*:\s*//"; then
  echo "a Binance host is left in the build" >&2; exit 1
fi
GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local go build -o binance-proxy ./cmd/binance-proxy
echo "$B/binance-proxy"
