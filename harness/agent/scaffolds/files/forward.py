#!/usr/bin/env python3
"""Inside the sandbox: 127.0.0.1:PORT -> the model gateway's Unix socket (bind-mounted by the harness).

The container has no network; this is its one way out, and it only leads to the gateway. Standard
library only (it runs on the image's python3)."""

import os
import socket
import sys
import threading

SOCKET = os.environ.get("STAIRCASE_GATEWAY_SOCKET", "/run/staircase/gateway.sock")
PORT = int(os.environ.get("STAIRCASE_GATEWAY_PORT", "8765"))


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def serve(client: socket.socket) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(SOCKET)
    except OSError as e:
        print(f"staircase gateway forwarder: cannot reach {SOCKET}: {e}", file=sys.stderr)
        client.close()
        return
    back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
    back.start()
    pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", PORT))
    listener.listen(64)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main()
