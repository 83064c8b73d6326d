#!/usr/bin/env python3
"""Writes the hand-made seed corpus (fuzz/corpus/<target>/seed-*).

Run from fuzz/: python3 seeds.py. Each seed starts with the target's
control byte (see the target's doc comment), except config_compile (the
text alone) and router (structured bytes).
"""
import glob, os, random

def put(target, name, data):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

R = b"\r\n"
requests = {
    "get": b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
    "post-length": b"POST /api/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": b"POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
    "chunked-upper-hex": b"PUT /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
    "pipelined": b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "pipelined-chunked": b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /d HTTP/1.1\r\nHost: a\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: a\n\n",
    "cl-te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-gzip-chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "two-cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "absolute-form": b"GET http://api.example.com:81/x?y HTTP/1.1\r\nHost: other\r\n\r\n",
    "absolute-query": b"GET http://a?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "websocket": b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    "hop-by-hop": b"GET /api/v HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\nX_Under: 1\r\nX-Remove: 1\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.1 edge\r\n\r\n",
    "dot-path": b"GET /x/../admin/%2e%2e/./%61b?z=/../ HTTP/1.1\r\nHost: a\r\n\r\n",
    "expect": b"PUT /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    "chunk-overflow": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
    "connect": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    "options-star": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
}
for i, (name, req) in enumerate(requests.items()):
    put("http1_request", name, bytes([i % 128]) + req)

responses = {
    "200-length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    "200-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\ngrpc-status: 0\r\n\r\n",
    "200-close": b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end",
    "204": b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    "304": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\nETag: \"x\"\r\n\r\n",
    "101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "hop-by-hop": b"HTTP/1.1 200 OK\r\nConnection: X-Internal, keep-alive\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nVia: 1.1 a, 1.0 b\r\nTrailer: x\r\nX-Remove: 1\r\nContent-Length: 2\r\n\r\nok",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n",
    "cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz",
    "no-reason": b"HTTP/1.1 500 \r\nContent-Length: 0\r\n\r\n",
    "odd-status": b"HTTP/1.1 099 Weird\r\nContent-Length: 0\r\n\r\n",
}
for i, (name, resp) in enumerate(responses.items()):
    put("http1_response", name, bytes([(i * 9) % 256]) + resp)

trailers = b"grpc-status: 0\r\ngrpc-message: ok\r\ncontent-length: 5\r\nx-a: 1\r\n"
pairs = [
    ("get-200", requests["get"], responses["200-length"]),
    ("chunked", requests["chunked"], responses["200-chunked"]),
    ("hop-by-hop", requests["hop-by-hop"], responses["hop-by-hop"]),
    ("absolute", requests["absolute-form"], responses["304"]),
    ("http10", requests["http10"], responses["200-close"]),
]
for i, (name, req, resp) in enumerate(pairs):
    put("convert", name, bytes([i * 3]) + req + b"\0\0\n" + resp + b"\0\0\n" + trailers)

paths = [b"/", b"/a/b/c", b"/x/../admin/secret", b"/./admin", b"//admin//x", b"/%61dmin/", b"/x/%2e%2e/admin/",
         b"/a/b/..", b"/a/b/.", b"/..", b"/a/../../b", b"/admin%2fx", b"/a%5cb", b"/x%2F..%2Fadmin",
         b"/a%20b%3f?q=/../%2e", b"/%7euser/%41%2d%5f", b"/a%", b"/a%zz", b"*", b"/a/.%2e/b", b"/%252e%252e/",
         b"/.../a/..../", b"/a//..//b/./"]
for i, p in enumerate(paths):
    put("path_normalize", "p%02d" % i, bytes([i % 8]) + p)

for f in glob.glob("../examples/*.toml"):
    put("config_compile", os.path.basename(f), open(f, "rb").read())
put("config_compile", "small.toml", b'''[[listener]]
name = "edge"
listen = "127.0.0.1:0"
merge_slashes = false

[cluster.api]
endpoints = ["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 3 }]
balancer = "maglev"

[[route]]
name = "api"
match = { host = "*.example.com", path_prefix = "/api/", methods = ["GET"] }
cluster = "api"
''')

rng = random.Random(14)
for i in range(8):
    put("router", "r%d" % i, bytes(rng.randrange(256) for _ in range(64 * (i + 1))))
