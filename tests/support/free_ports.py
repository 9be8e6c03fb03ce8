#!/usr/bin/env python3
"""Prints a base port B whose offsets (the arguments, e.g. 0 1 2 3 100) are
all free on 127.0.0.1, then one more free port, for the launcher's
LABSHARE_BASE_PORT and LABSHARE_REDIS_PORT.

B is drawn below the kernel's ephemeral range (ip_local_port_range): a port
in that range can be taken between this check and the service's bind by any
outgoing connection (redis-cli, the services' own Redis and gRPC clients), and
the service then fails to listen. The extra port is an ephemeral one, bound
and released here, used at once by the caller's Redis."""
import random
import socket
import sys


def free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def main():
    offsets = [int(a) for a in sys.argv[1:]] or [0]
    lo, hi = 10000, 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph_lo, eph_hi = (int(x) for x in f.read().split())
        if eph_lo > lo + 2000:
            hi = eph_lo
        else:  # an unusual range: draw above it if there is room, else anywhere
            lo, hi = (eph_hi + 1, 65535) if eph_hi < 60000 else (10000, 65535)
    except (OSError, ValueError):
        pass
    top = max(offsets)
    for _ in range(10000):
        b = random.randint(lo, hi - 1 - top)
        if all(free(b + o) for o in offsets):
            break
    else:
        sys.exit("free_ports.py: no free base port found")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    extra = s.getsockname()[1]
    s.close()
    print(b, extra)


if __name__ == "__main__":
    main()
