#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora into scripts/fuzz/seeds/<harness>/ (the files are committed;
run this again only to change them). Every seed is a valid input: run.sh checks each one with
CTSYNC_FUZZ_STRICT set before fuzzing (see docs/fuzzing.md).

    python3 scripts/fuzz/make-seeds.py
"""

import os
import shutil
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SEEDS = os.path.join(ROOT, "scripts", "fuzz", "seeds")

# Messages conntrackd 1.4.7 sent (docs/protocol.md), one flow message each.
CAPTURED = {
    "tcp-ipv4": "100000546b062f4a000c0000c6120001c6120002000800050000000c0005000206000000000800039c4000500005000403000000000800060000012c00080007000000070010001f000000000000000000000000",
    "tcp-ipv4-nat": "100000746b06deff000c0000c6120001c612000200080005000001b80005000206000000000800039c4a00150005000403000000000800060000012c00080007000000100008000cc61209090008000dc61207070006000ed00700000006000f490800000010001f000000000000000000000000",
    "tcp-ipv6-snat": "100000806b06df090024000120010db800000000000000000000000120010db80000000000000000000000020008000500000198000500020600000000080003138901bb0005000403000000000800060000006400080007000000000014001d20010db80000000000000000000000990010001f000000000000000000000000",
    "icmpv6-echo": "100000746b06df0a0024000120010db800000000000000000000000120010db80000000000000000000000020008000500000008000500023a000000000500168000000000050017000000000006001834120000000800060000001e00080007000000000010001f000000000000000000000000",
    "tcp-ftp-helper-seqadj": "100000786b06e1db000c0000c6120001c6120015000800050000204e0005000206000000000800039c45001500050004030000000008000600000bb80008000700000000001c0010000003e80000000000000004000007d000000000000000000008001b667470000010001f000000000000000000000000",
    "udp-labels": "100000606b06e1da000c0000c6120001c6120002000800050000000800050002110000000008000300010002000800060000006400080007000000030014001c000000210000000000000000800000100010001f000000000000000000000000",
    "sctp": "100000646b06defe000c0000c6120001c6120002000800050000000800050002840000000008000317701b58000500110400000000080012000000000008001300000000000800060000006400080007000000000010001f000000000000000000000000",
}

# An FTP expectation (Tests/SyncProtocolTests/GoldenTests.swift). run.sh's copy of it had a stray
# digit and was cut after 65 of its 116 bytes.
EXPECTATION = (
    "13000074 00000005"
    " 000c0000 c6120001 c6120002  00050002 06000000  00080003 9c400015"
    " 000c0004 c6120001 c6120002  00050006 06000000  00080007 00001388"
    " 000c0008 ffffffff ffffffff  0005000a ff000000  0008000b 0000ffff"
    " 0008000c 0000012c  0008000d 00000000  00080013 66747000"
)

# ACK [0x7d, 0x83], ALIVE, RESYNC with hello. run.sh's copy lost the last digit of the RESYNC's `to`.
CONTROLS = "1a080010 6b062f4b 0000007d 00000083  1a100008 6b06ddac  1a220010 0000ff00 00000000 00000000"

HELLO, HELLO_BACK = 0x20, 0x40
RESYNC, NACK, ACK, ALIVE = 0x02, 0x04, 0x08, 0x10


def unhex(text):
    return bytes.fromhex(text.replace(" ", ""))


def header(kind, flags, length, sequence):
    return struct.pack(">BBHI", 0x10 | kind, flags, length, sequence)


def with_header(message, kind=None, flags=0, sequence=0):
    """A captured message with its type (0 new, 1 update, 2 destroy), flags and number changed."""
    kind = message[0] & 0x0F if kind is None else kind
    return header(kind, flags, len(message), sequence) + message[8:]


def alive(sequence, flags=0):
    return header(10, ALIVE | flags, 8, sequence)


def ranged(control, sequence, first, last, flags=0):
    return header(10, control | flags, 16, sequence) + struct.pack(">II", first, last)


def write(harness, name, data):
    directory = os.path.join(SEEDS, harness)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def check_datagram(data):
    """The header rules of SyncWire.decodeHeader, and attribute framing to the message's end."""
    offset = 0
    while offset < len(data):
        assert len(data) - offset >= 8, "truncated header"
        first, flags, length, _ = struct.unpack_from(">BBHI", data, offset)
        assert first >> 4 == 1, "version"
        assert 8 <= length <= len(data) - offset, "length %d of %d" % (length, len(data) - offset)
        if first & 0x0F == 10:
            assert length == (16 if flags & (ACK | NACK | RESYNC) else 8), "control length"
        else:
            position = offset + 8
            while position + 4 <= offset + length:
                attribute = struct.unpack_from(">H", data, position)[0]
                assert attribute >= 4, "attribute length"
                position += (attribute + 3) & ~3
            assert position == offset + length, "attributes do not end with the message"
        offset += length


# Node records (scripts/fuzz/SyncNodeFuzz.swift): op & 3 is the kind, op >> 4 tenths of a second.
def datagram(data, link=0, step=0):
    check_datagram(data)
    return bytes([step << 4 | link << 2 | 0]) + struct.pack(">H", len(data)) + data


def time(milliseconds, step=0):
    return bytes([step << 4 | 1]) + struct.pack(">H", milliseconds)


def kernel(event, flow, variant=0x0D, step=0):
    kinds = {"new": 0, "update": 1, "destroy": 2, "unheard": 3}
    return bytes([step << 4 | kinds[event] << 2 | 2, flow, variant])


def command(number, step=0):
    return bytes([step << 4 | 3, number])


def main():
    for harness in ("wire", "frame", "stream", "node", "control", "config"):
        shutil.rmtree(os.path.join(SEEDS, harness), ignore_errors=True)

    # SyncWire: datagrams.
    captured = {name: unhex(text) for name, text in CAPTURED.items()}
    wire = dict(captured)
    wire["expectation-ftp"] = unhex(EXPECTATION)
    wire["controls-ack-alive-resync"] = unhex(CONTROLS)
    wire["update-destroy-nack"] = (
        with_header(captured["udp-labels"], kind=1, sequence=41)
        + with_header(captured["tcp-ipv4"], kind=2, sequence=42, flags=HELLO_BACK)
        + ranged(NACK, 43, 30, 39)
    )
    wire["packed-flows"] = b"".join(with_header(m, sequence=100 + i) for i, m in enumerate(captured.values()))
    for name, data in wire.items():
        check_datagram(data)
        write("wire", name + ".bin", data)

    # SyncNode: scripts. The node numbers its messages from 1; the peer here from 5000.
    flows = [with_header(m, sequence=5001 + i) for i, m in enumerate(captured.values())]
    node = {}
    node["peer-hello-flows-ack"] = (
        datagram(alive(5000, HELLO))
        + time(200)
        + datagram(b"".join(flows[:4]), step=1)
        + datagram(b"".join(flows[4:]), step=2)
        + time(1000, step=1)  # the owed ACK goes out
        + datagram(alive(5008, HELLO_BACK), step=10)
        + datagram(ranged(ACK, 5009, 1, 2))
        + time(1500)
    )
    announce = b"".join(kernel("new", i, variant=i * 7) for i in range(10))
    node["kernel-announce-ack-nack"] = (
        announce
        + datagram(alive(700, HELLO | HELLO_BACK))
        + datagram(ranged(ACK, 701, 1, 10), step=1)
        + kernel("update", 3, variant=0x0F)
        + kernel("destroy", 4)
        + datagram(ranged(NACK, 702, 11, 12), step=2)
        + time(1000)
        + datagram(ranged(ACK, 703, 1, 13))
    )
    node["peer-resync-request"] = (
        b"".join(kernel("new", i) for i in range(0, 40, 3))
        + datagram(ranged(RESYNC, 300, 0, 0, HELLO))
        + time(1100)
        + datagram(ranged(RESYNC, 301, 0, 0), link=1)  # another bulk, at most once a second
        + time(1000, step=5)
        + datagram(ranged(ACK, 302, 1, 20))
    )
    node["overrun-resync-commands"] = (
        b"".join(kernel("new", i) for i in range(8))
        + kernel("unheard", 200)
        + kernel("unheard", 3)
        + time(300)  # the owed resync runs once events are quiet
        + command(0)  # the link stops taking datagrams
        + b"".join(kernel("update", i, variant=0x20) for i in range(8))
        + command(0, step=3)
        + command(1)  # link 0 goes down: link 1 takes over
        + time(1000, step=2)
        + command(1)
        + command(3)  # kernel reads fail
        + command(8)
        + command(3)
        + command(8)  # resync with the kernel: the internal cache equals it
        + command(4)
        + command(5)
        + command(6)
        + command(7)
        + command(9)
        + command(10, step=3)
    )
    node["peer-restart"] = (
        datagram(alive(10, HELLO))
        + datagram(b"".join(with_header(m, sequence=11 + i) for i, m in enumerate(list(captured.values())[:3])))
        + time(1000)
        + datagram(alive(9000, HELLO))  # restarted: its flows are suspect until it answers our resync
        + datagram(with_header(captured["sctp"], sequence=9001))
        + time(500)
        + datagram(ranged(ACK, 9002, 2, 2))  # our RESYNC (number 2): the sweep may run
        + time(2500, step=1)
    )
    for name, data in wire.items():
        node["datagram-" + name] = datagram(data) + time(1000)
    for name, data in node.items():
        write("node", name + ".bin", data)

    # ControlRequest: JSON lines as `encoded()` writes them, and conntrackd's 4-byte codes.
    control = {
        "dump-internal": '{"command":"dump","cache":"internal","format":"text"}',
        "dump-external-xml": '{"command":"dump","cache":"external","format":"xml"}',
        "dump-filter": '{"command":"dump","cache":"external","format":"json","filter":{"family":2,"proto":6,'
        '"source":"198.18.0.0/15","destination":"2001:db8::1","destinationPort":80,"state":"ESTABLISHED",'
        '"mark":{"value":1,"mask":255},"zone":3,"status":4,"labels":[1,100]}}',
        "dump-filter-icmp": '{"command":"dump","cache":"internal","format":"text","filter":{"proto":1,"icmpType":8,'
        '"icmpCode":0,"icmpID":4660,"replySource":"198.19.0.2","replyDestinationPort":53}}',
        "stats-network-json": '{"command":"stats","section":"network","format":"json"}',
        "stats-text": '{"command":"stats","format":"text"}',
        "flush-cache": '{"command":"flush-cache"}',
        "flush-cache-external": '{"command":"flush-cache","cache":"external"}',
        "flush-kernel": '{"command":"flush-kernel"}',
        "resync": '{"command":"resync"}',
        "reset-timers": '{"command":"reset-timers"}',
        "commit": '{"command":"commit"}',
        "send-bulk": '{"command":"send-bulk"}',
        "request-resync": '{"command":"request-resync"}',
        "expectations": '{"command":"expectations","detail":"dump expectations"}',
    }
    for name, text in control.items():
        write("control", name + ".json", (text + "\n").encode())
    for name, code in {"legacy-dump-internal": 16, "legacy-stats": 21, "legacy-commit": 18, "legacy-flush": 19}.items():
        write("control", name + ".bin", struct.pack("<i", code))

    # DaemonConfig: the example configurations.
    conf = os.path.join(ROOT, "conf")
    os.makedirs(os.path.join(SEEDS, "config"), exist_ok=True)
    for name in sorted(os.listdir(conf)):
        if name.endswith(".conf"):
            shutil.copyfile(os.path.join(conf, name), os.path.join(SEEDS, "config", name))

    # SyncFrameFuzz: records [length][frame] of frames sealed as the harness's stand-in tag does
    # (FNV-1a over header and payload, keyed by the key id); algorithm 2 "encrypts" by XOR 0x5a.
    def frame(payload, algorithm=1, node=7, epoch=5, counter=1, key=1):
        body = bytes(b ^ 0x5A for b in payload) if algorithm == 2 else payload
        head = b"ctsA" + bytes([1, algorithm, key, 0]) + struct.pack(">IQQHH", node, epoch, counter, len(payload), 0)
        h = 2166136261 ^ key
        for b in head + body:
            h = ((h ^ b) * 16777619) & 0xFFFFFFFF
        return head + body + struct.pack(">I", h)

    def records(frames):
        return b"".join(struct.pack(">H", len(f)) + f for f in frames)

    flows = [unhex(CAPTURED[name]) for name in sorted(CAPTURED)]
    write("frame", "hmac-one-flow.bin", records([frame(flows[0])]))
    write("frame", "aead-one-flow.bin", records([frame(flows[1], algorithm=2)]))
    write("frame", "hmac-run-reordered.bin", records([frame(f, counter=c) for f, c in zip(flows, [3, 1, 2, 7, 5, 6, 4])]))
    write("frame", "hmac-two-senders-two-keys.bin", records([frame(flows[2], node=7), frame(flows[3], node=8, key=2), frame(flows[4], node=7, epoch=6)]))
    write("frame", "aead-controls.bin", records([frame(unhex(CONTROLS), algorithm=2)]))

    # StreamFramerFuzz: [mode][split seed][stream]: messages (mode 0) or frames (mode 1, any tag).
    stream_messages = b"".join(flows) + unhex(CONTROLS)
    write("stream", "messages.bin", bytes([0, 0x2B]) + stream_messages)
    write("stream", "messages-expectation.bin", bytes([0, 0x11]) + unhex(EXPECTATION) + flows[0])
    sealed = b"".join(frame(f, algorithm=2)[:-4] + bytes(16) for f in flows)
    write("stream", "frames.bin", bytes([1, 0x07]) + sealed)

    for harness in ("wire", "frame", "stream", "node", "control", "config"):
        print("%-8s %d seeds" % (harness, len(os.listdir(os.path.join(SEEDS, harness)))))


if __name__ == "__main__":
    sys.exit(main())
