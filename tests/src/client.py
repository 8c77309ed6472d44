# The e2e test client: one request described by the JSON in argv[1]; prints
# one JSON object with what happened. Standard library only.
import json
import os
import socket
import sys
import time

req = json.loads(sys.argv[1])
host, port = req["host"], int(req["port"])
path = req.get("path", "/")
timeout = float(req.get("timeout", 10))
mode = req.get("mode", "socket")
out = {"ok": False, "status": None, "body": None, "peer": None, "local": None,
       "errno": None, "error": None, "connect_ms": None, "pid": os.getpid()}
hosthdr = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def fmt(addr):
    return "[%s]:%d" % (addr[0], addr[1]) if ":" in addr[0] else "%s:%d" % (addr[0], addr[1])


def fail(e):
    reason = getattr(e, "reason", None)
    if isinstance(reason, OSError):
        e = reason
    out["errno"] = getattr(e, "errno", None)
    out["error"] = "%s: %s" % (type(e).__name__, e)


t0 = time.monotonic()
try:
    if mode == "urllib":
        import urllib.request
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open("http://%s%s" % (hosthdr, path), timeout=timeout) as r:
            out["status"] = r.status
            out["body"] = r.read().decode()
        out["ok"] = True
    elif mode == "http.client":
        import http.client
        c = http.client.HTTPConnection(host, port, timeout=timeout)
        c.connect()
        out["connect_ms"] = (time.monotonic() - t0) * 1000
        out["peer"] = fmt(c.sock.getpeername())
        out["local"] = fmt(c.sock.getsockname())
        c.request("GET", path)
        r = c.getresponse()
        out["status"] = r.status
        out["body"] = r.read().decode()
        out["ok"] = True
    else:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(timeout)
        if req.get("bind_port"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", int(req["bind_port"])))
        s.connect((host, port))
        out["connect_ms"] = (time.monotonic() - t0) * 1000
        out["peer"] = fmt(s.getpeername())
        out["local"] = fmt(s.getsockname())
        if req.get("send", True):
            s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, hosthdr)).encode())
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            finally:
                out["received"] = len(data)
            head, _, body = data.partition(b"\r\n\r\n")
            parts = head.split(b" ", 2)
            if len(parts) >= 2 and parts[0].startswith(b"HTTP/"):
                out["status"] = int(parts[1])
                out["body"] = body.decode(errors="replace")
                out["ok"] = True
            else:
                out["error"] = "no HTTP response (%d bytes)" % len(data)
        else:
            out["ok"] = True
        s.close()
except Exception as e:  # noqa: BLE001 - report every failure as data
    fail(e)
out["elapsed_ms"] = (time.monotonic() - t0) * 1000
print(json.dumps(out))
