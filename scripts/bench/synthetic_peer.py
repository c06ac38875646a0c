#!/usr/bin/env python3
"""A synthetic FTFW peer: sends N new flows to a sync daemon over UDP, as conntrackd's wire
format carries them (docs/protocol.md), without a kernel behind it, so an external cache can be
filled past what one kernel table holds (nf_conntrack_max).

    synthetic_peer.py --bind ADDR:PORT --to ADDR:PORT --flows N [--first K] [--window W]

Flow i is ctsync kernel insert --generate's flow i (198.18.A.B:1024+i%60000 -> 198.19.0.1:443,
ESTABLISHED, ASSURED). Messages go 21 to a datagram (1428 bytes); at most W (default 50000)
wait for the daemon's acknowledgement at once, so none is lost to a full socket buffer.
The first message carries HELLO (a peer that just started). Exits 0 once the daemon has
acknowledged every message; prints the time it took and the rate."""
import argparse, select, socket, struct, sys, time


def flow_message(index, sequence, hello):
    address, port = divmod(index, 60000)
    third, fourth = divmod(address, 250)
    src = bytes([198, 18, third, fourth + 1])
    dst = bytes([198, 19, 0, 1])
    body = struct.pack(">HH", 12, 0) + src + dst                      # IPV4
    body += struct.pack(">HHI", 8, 5, 0x0E)                           # STATUS: SEEN_REPLY|ASSURED|CONFIRMED
    body += struct.pack(">HHB3x", 5, 2, 6)                            # L4PROTO tcp
    body += struct.pack(">HHHH", 8, 3, 1024 + port, 443)              # PORT
    body += struct.pack(">HHB3x", 5, 4, 3)                            # TCP_STATE ESTABLISHED
    body += struct.pack(">HHI", 8, 6, 600)                            # TIMEOUT
    flags = 0x20 if hello else 0
    return struct.pack(">BBHI", 0x10, flags, 8 + len(body), sequence) + body


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bind", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--flows", type=int, required=True)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--window", type=int, default=50000)
    p.add_argument("--timeout", type=float, default=300)
    a = p.parse_args()
    host, port = a.bind.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((host, int(port)))
    to_host, to_port = a.to.rsplit(":", 1)
    target = (to_host, int(to_port))
    first_sequence = sequence = int(time.time()) & 0xFFFFFFFF
    acked = (first_sequence - 1) & 0xFFFFFFFF  # highest acknowledged

    def unacked():
        return (sequence - acked - 1) & 0xFFFFFFFF

    def read_acks(wait):
        nonlocal acked
        while True:
            ready, _, _ = select.select([s], [], [], wait)
            if not ready:
                return
            wait = 0
            data = s.recv(65536)
            offset = 0
            while offset + 8 <= len(data):
                byte0, flags, length, _ = struct.unpack_from(">BBHI", data, offset)
                if length < 8:
                    break
                if byte0 == 0x1A and flags & 0x08 and length >= 16:
                    _, to = struct.unpack_from(">II", data, offset + 8)
                    if ((to - acked) & 0xFFFFFFFF) < 0x80000000:
                        acked = to
                offset += length

    start = time.time()
    index = 0
    while index < a.flows:
        if time.time() - start > a.timeout:
            sys.exit("synthetic_peer: timed out sending")
        if unacked() >= a.window:
            read_acks(0.05)
            continue
        datagram = b""
        while index < a.flows and len(datagram) + 68 <= 1428:
            datagram += flow_message(a.first + index, sequence, sequence == first_sequence)
            sequence = (sequence + 1) & 0xFFFFFFFF
            index += 1
        s.sendto(datagram, target)
        read_acks(0)
    # The daemon acknowledges a window at a time and the rest on its keep-alive timer (a second).
    last_flow = (sequence - 1) & 0xFFFFFFFF
    while ((last_flow - acked) & 0xFFFFFFFF) < 0x80000000 and last_flow != acked:
        if time.time() - start > a.timeout:
            sys.exit("synthetic_peer: %d messages never acknowledged" % ((last_flow - acked) & 0xFFFFFFFF))
        read_acks(0.2)
    seconds = time.time() - start
    print("%d flows in %.2f s (%.0f/s)" % (a.flows, seconds, a.flows / seconds))


main()
