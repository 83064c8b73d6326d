#!/usr/bin/env python3
"""Real origins for the health-check tests.

    health_peer.py https CA CERT KEY N SICK
        N HTTPS (HTTP/1.1) origins, each requiring a client certificate
        issued by CA; origin number SICK (0-based; -1: none) answers 503
        to /healthz. Prints `listening PORT...`. Every request prints
        `req PORT HOST PATH`; every other path answers 200 `origin PORT
        PATH`.

    health_peer.py grpc CERT KEY
        grpcio's own health service (`pip install grpcio-health-checking`)
        on a plaintext port and a TLS port, prints `listening PLAIN TLS`.
        The server as a whole ("") and `shop.Cart` start SERVING. Each
        Check prints `check SERVICE`. A line `set SERVICE STATUS` on stdin
        (STATUS: SERVING or NOT_SERVING) sets it and prints `set SERVICE
        STATUS`.

Both serve until killed or their stdin closes.
"""

import ssl
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PRINT_LOCK = threading.Lock()


def say(*words):
    with PRINT_LOCK:
        print(*words, flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        port = self.server.server_address[1]
        say("req", port, self.headers.get("Host"), self.path)
        sick = self.path == "/healthz" and self.server.sick
        body = ("origin %d %s" % (port, self.path)).encode()
        self.send_response(503 if sick else 200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A failed handshake (the test's own refusals) is not news.
        pass


def https(ca, cert, key, n, sick):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    ports = []
    for i in range(n):
        server = Server(("127.0.0.1", 0), Handler)
        server.sick = i == sick
        # The handshake happens in the connection's own thread, on its
        # first read, not in the accept loop.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        ports.append(server.server_address[1])
        threading.Thread(target=server.serve_forever, daemon=True).start()
    say("listening", *ports)
    sys.stdin.read()


def grpc_health(cert, key):
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    class Servicer(health.HealthServicer):
        def Check(self, request, context):
            say("check", request.service or '""')
            return super().Check(request, context)

    servicer = Servicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    plain = server.add_insecure_port("127.0.0.1:0")
    with open(cert, "rb") as c, open(key, "rb") as k:
        credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
    tls = server.add_secure_port("127.0.0.1:0", credentials)
    serving = health_pb2.HealthCheckResponse.SERVING
    servicer.set("", serving)
    servicer.set("shop.Cart", serving)
    server.start()
    say("listening", plain, tls)
    for line in sys.stdin:
        words = line.split()
        if len(words) == 3 and words[0] == "set":
            status = health_pb2.HealthCheckResponse.ServingStatus.Value(words[2])
            servicer.set(words[1], status)
            say("set", words[1], words[2])
    server.stop(0)


def main():
    if sys.argv[1] == "https":
        https(*sys.argv[2:5], int(sys.argv[5]), int(sys.argv[6]))
    elif sys.argv[1] == "grpc":
        grpc_health(*sys.argv[2:4])
    else:
        sys.exit("usage: health_peer.py https CA CERT KEY N SICK | grpc CERT KEY")


if __name__ == "__main__":
    main()
