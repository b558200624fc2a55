#!/usr/bin/env python3
"""Network probes run *inside* an enforced workload by the end-to-end tests.

Each subcommand prints one JSON object per line on stdout describing what it saw, and exits 0
when it could run its probe (the test decides whether the outcome is the expected one).

  echo HOST PORT [SIZE]    connect, read the server's greeting, send SIZE random bytes,
                           read them back, check they are intact
  denied HOST PORT         connect to a destination the policy denies; report how it failed
                           and how long that took
  tree HOST PORT           the same echo from a child, a grandchild, a daemonized process
                           (double fork + setsid) and 4 threads of the main process
  udp HOST PORT            UDP connect() and sendto() to a non-DNS port
  raw                      try raw and ICMP sockets
  tfo HOST PORT            TCP Fast Open: sendto(MSG_FASTOPEN) without connect()
  dns RESOLVER NAME        send a DNS query for NAME to RESOLVER:53 by hand, print the answer
  dns-ipopts RESOLVER NAME the same with an IPv4 record-route option set on the socket (options
                           are how source routing would steer a packet past the redirect)
"""
import json
import os
import socket
import sys
import threading
import time


OUT_LOCK = threading.Lock()


def out(**fields):
    fields.setdefault("pid", os.getpid())
    fields.setdefault("comm", open("/proc/self/comm").read().strip())
    line = json.dumps(fields) + "\n"
    # One write per line under a lock: threads must not interleave their lines.
    with OUT_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def echo_once(host, port, size, label="main"):
    payload = os.urandom(size)
    with socket.socket(family(host), socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((host, port))
        peer = s.getpeername()
        greeting = read_line(s)
        received = bytearray()

        def reader():
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join()
        out(probe="echo", label=label, tid=threading.get_native_id(), peer=[peer[0], peer[1]],
            greeting=greeting, intact=bytes(received) == payload, size=size)


def denied(host, port):
    start = time.monotonic()
    try:
        with socket.socket(family(host), socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect((host, port))
            data = s.recv(100)
            outcome = "eof" if not data else "data"
    except OSError as e:
        outcome = type(e).__name__
    out(probe="denied", outcome=outcome, seconds=time.monotonic() - start)


def tree(host, port):
    # child
    pid = os.fork()
    if pid == 0:
        echo_once(host, port, 1000, "child")
        # grandchild
        gpid = os.fork()
        if gpid == 0:
            echo_once(host, port, 1000, "grandchild")
            os._exit(0)
        os.waitpid(gpid, 0)
        os._exit(0)
    os.waitpid(pid, 0)
    # daemonized: double fork + setsid, reports through a pipe
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        os.close(r)
        os.dup2(w, 1)
        echo_once(host, port, 1000, "daemon")
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        sys.stdout.write(f.read())
        sys.stdout.flush()
    threads = [threading.Thread(target=echo_once, args=(host, port, 1000, "thread")) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def udp(host, port):
    with socket.socket(family(host), socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))
            s.send(b"x")
            out(probe="udp_connect", outcome="sent")
        except OSError as e:
            out(probe="udp_connect", outcome=type(e).__name__)
    with socket.socket(family(host), socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"x", (host, port))
            out(probe="udp_sendto", outcome="sent")
        except OSError as e:
            out(probe="udp_sendto", outcome=type(e).__name__)


def raw():
    for name, fam, kind, proto in [
        ("raw_icmp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        ("raw_tcp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
        ("raw6", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
        ("ping", socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP),
        ("sctp", socket.AF_INET, socket.SOCK_STREAM, 132),
    ]:
        try:
            socket.socket(fam, kind, proto).close()
            out(probe=name, outcome="created")
        except OSError as e:
            out(probe=name, outcome=type(e).__name__)


def tfo(host, port):
    payload = b"fast open payload"
    with socket.socket(family(host), socket.SOCK_STREAM) as s:
        # Blocking: a timeout would make the socket non-blocking, and a fast-open sendto
        # without a cookie then answers EINPROGRESS instead of waiting for the handshake.
        s.settimeout(None)
        try:
            s.sendto(payload, socket.MSG_FASTOPEN, (host, port))
            s.settimeout(10)
        except OSError as e:
            out(probe="tfo", outcome=type(e).__name__)
            return
        greeting = read_line(s)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        out(probe="tfo", outcome="connected", greeting=greeting, intact=received == payload)


def dns(resolver, name, ip_options=None):
    query = os.urandom(2) + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for label in name.split("."):
        query += bytes([len(label)]) + label.encode()
    query += b"\x00\x00\x01\x00\x01"
    with socket.socket(family(resolver), socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        if ip_options is not None:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, ip_options)
        try:
            s.sendto(query, (resolver, 53))
            reply, source = s.recvfrom(512)
        except OSError as e:
            out(probe="dns", outcome=type(e).__name__)
            return
    # the last 4 bytes of a single-A answer are the address
    address = socket.inet_ntoa(reply[-4:]) if len(reply) >= 4 else None
    out(probe="dns", outcome="answered", source=[source[0], source[1]], address=address,
        id_matches=reply[:2] == query[:2])


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "echo":
        echo_once(args[0], int(args[1]), int(args[2]) if len(args) > 2 else 100_000)
    elif cmd == "denied":
        denied(args[0], int(args[1]))
    elif cmd == "tree":
        tree(args[0], int(args[1]))
    elif cmd == "udp":
        udp(args[0], int(args[1]))
    elif cmd == "raw":
        raw()
    elif cmd == "tfo":
        tfo(args[0], int(args[1]))
    elif cmd == "dns":
        dns(args[0], args[1])
    elif cmd == "dns-ipopts":
        # record route (type 7, length 7, pointer 4, one empty slot) + NOP: harmless on its
        # own, but any IP option must make the packet undeliverable from the workload.
        dns(args[0], args[1], b"\x07\x07\x04\x00\x00\x00\x00\x01")
    else:
        sys.exit(f"unknown probe {cmd}")


if __name__ == "__main__":
    main(sys.argv)
