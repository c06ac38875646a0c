#!/usr/bin/env python3
"""Prints every flow of this network namespace's conntrack table with the kernel's own creation
time: one line per flow, "SRC SPORT DST DPORT START_NS" (original tuple, IPv4 TCP/UDP only).
Needs nf_conntrack_timestamp=1 (flows created before it was set have no timestamp: skipped).

A plain ctnetlink dump read here, not through ctsync or libnetfilter_conntrack, so the lag
benchmark measures both daemons with a yardstick of its own."""
import socket, struct, sys

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
CTA_TUPLE_ORIG, CTA_TIMESTAMP = 1, 20
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 2, 3
CTA_TIMESTAMP_START = 1


def attributes(data):
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > len(data):
            return
        yield kind & 0x3FFF, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def main():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    request = struct.pack("=IHHII", 20, (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    request += struct.pack("=BBH", socket.AF_INET, 0, 0)
    s.send(request)
    out = sys.stdout
    lines = []
    while True:
        data = s.recv(1 << 20)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _, _, _ = struct.unpack_from("=IHHII", data, offset)
            if kind == NLMSG_DONE:
                out.write("".join(lines))
                return
            if kind == NLMSG_ERROR:
                sys.exit("ct_timestamps: the dump failed")
            body = data[offset + 20:offset + length]
            src = dst = sport = dport = start = None
            for a, value in attributes(body):
                if a == CTA_TUPLE_ORIG:
                    for t, tv in attributes(value):
                        if t == CTA_TUPLE_IP:
                            for i, iv in attributes(tv):
                                if i == CTA_IP_V4_SRC: src = socket.inet_ntoa(iv[:4])
                                if i == CTA_IP_V4_DST: dst = socket.inet_ntoa(iv[:4])
                        elif t == CTA_TUPLE_PROTO:
                            for p, pv in attributes(tv):
                                if p == CTA_PROTO_SRC_PORT: sport = struct.unpack(">H", pv[:2])[0]
                                if p == CTA_PROTO_DST_PORT: dport = struct.unpack(">H", pv[:2])[0]
                elif a == CTA_TIMESTAMP:
                    for t, tv in attributes(value):
                        if t == CTA_TIMESTAMP_START: start = struct.unpack(">Q", tv[:8])[0]
            if src and start:
                lines.append("%s %s %s %s %d\n" % (src, sport, dst, dport, start))
            offset += (length + 3) & ~3


main()
