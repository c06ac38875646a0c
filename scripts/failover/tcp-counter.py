#!/usr/bin/env python3
"""A long-lived TCP connection that exchanges a counter, for failover tests.

  tcp-counter.py server --listen ADDR:PORT [--ready FILE]
      Echoes every line it receives on every connection it accepts. Writes FILE (or prints
      "listening") once it accepts connections. Runs until SIGTERM.

  tcp-counter.py client --connect ADDR:PORT --log FILE [--result FILE] [--interval 0.1]
                        [--max-seconds 110]
      Connects once, then sends "N\\n" and waits for the echo, N = 1, 2, 3, ..., one exchange
      every --interval seconds. Each echo appends "WALLTIME N" to --log (flushed at once, so a
      test can follow progress); the first line is "# local ADDR PORT". It never reconnects:
      a reset or close ends it. On SIGTERM/SIGINT, on reset/close, or after --max-seconds it
      writes one JSON object to --result (or stdout):
        {"counter": last N echoed, "reset": bool, "closed": bool, "error": str|null,
         "max_gap_ms": longest time between two successive echoes (from the first echo),
         "replies": echoes received, "local_port": N, "seconds": run time}

  tcp-counter.py server --listen ADDR:PORT --push INTERVAL [--ready FILE]
      Instead of echoing, sends "N\n" (N = 1, 2, 3, ... per connection) every INTERVAL seconds on
      every connection (a server pushing data). A connection that ends with a reset is logged
      as "reset PEER" on stdout (the failover tests look for it).

  tcp-counter.py client --connect ADDR:PORT --push --log FILE [--result FILE] [--max-seconds 110]
      Sends nothing: reads the server's pushed lines, each must be the previous one + 1, and
      logs and reports them as above ("counter" is the last line read).

  tcp-counter.py report LOG [--from T] [--to T]
      Reads a client log and prints one JSON object for the echoes in the window [T0, T1]
      (wall-clock seconds; the last echo before T0 is included so a gap that straddles T0
      counts): {"first": N, "last": N, "replies": n, "max_gap_ms": ms, "max_gap_end": T}.
      The gap is measured up to T1 too, so a stall at the end of the window counts.
"""
import argparse
import json
import os
import selectors
import signal
import socket
import sys
import time


def split_address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def run_server(args):
    host, port = split_address(args.listen)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(16)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    if args.ready:
        with open(args.ready + ".tmp", "w") as f:
            f.write("listening\n")
        os.rename(args.ready + ".tmp", args.ready)
    else:
        print("listening", flush=True)
    pushed = {}  # connection -> (next N, next send time)
    while not stop:
        if args.push:
            now = time.time()
            for conn, (n, due) in list(pushed.items()):
                if now < due:
                    continue
                try:
                    conn.send(b"%d\n" % n)
                    pushed[conn] = (n + 1, due + args.push if due + args.push > now - 1 else now + args.push)
                except BlockingIOError:
                    pushed[conn] = (n, now + args.push)
                except OSError as e:
                    print("%s %s" % ("reset" if isinstance(e, ConnectionResetError) else "error", e), flush=True)
                    pushed.pop(conn, None)
                    sel.unregister(conn)
                    conn.close()
        timeout = 0.5
        if pushed:
            timeout = max(0.0, min(due for _, due in pushed.values()) - time.time())
        for key, _ in sel.select(timeout=timeout):
            if key.data is None:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ, b"")
                if args.push:
                    pushed[conn] = (1, time.time())
                continue
            conn = key.fileobj
            try:
                data = conn.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError as e:
                print("reset %s" % e, flush=True)
                data = b""
            except OSError:
                data = b""
            if not data:
                pushed.pop(conn, None)
                sel.unregister(conn)
                conn.close()
                continue
            if args.push:
                continue
            try:
                conn.sendall(data)  # small lines: the send buffer always has room
            except OSError:
                sel.unregister(conn)
                conn.close()
    return 0


def run_client(args):
    host, port = split_address(args.connect)
    started = time.time()
    deadline = started + args.max_seconds
    result = {"counter": 0, "reset": False, "closed": False, "error": None, "max_gap_ms": 0.0,
              "replies": 0, "local_port": None, "seconds": 0.0}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("signal"))
    signal.signal(signal.SIGINT, lambda *_: stop.append("signal"))
    log = open(args.log, "a", buffering=1)

    def finish(code):
        result["seconds"] = round(time.time() - started, 3)
        result["max_gap_ms"] = round(result["max_gap_ms"], 1)
        text = json.dumps(result, sort_keys=True)
        if args.result:
            with open(args.result + ".tmp", "w") as f:
                f.write(text + "\n")
            os.rename(args.result + ".tmp", args.result)
        else:
            print(text, flush=True)
        return code

    try:
        sock = socket.create_connection((host, port), timeout=5)
    except OSError as e:
        result["error"] = "connect: %s" % e
        return finish(1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(0.2)  # short, so that signals and the deadline are noticed while stalled
    result["local_port"] = sock.getsockname()[1]
    log.write("# local %s %d\n" % sock.getsockname())
    last_reply = None
    n = 0
    buffer = b""
    if args.push:
        while not stop and time.time() < deadline:
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError as e:
                result["reset"], result["error"] = True, "recv: %s" % e
                break
            except OSError as e:
                result["error"] = "recv: %s" % e
                break
            if not data:
                result["closed"] = True
                break
            buffer += data
            now = time.time()
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                if line.strip() != b"%d" % (n + 1):
                    result["error"] = "expected %d, got %r" % (n + 1, line[:40])
                    break
                n += 1
                if last_reply is not None:
                    result["max_gap_ms"] = max(result["max_gap_ms"], (now - last_reply) * 1000)
                last_reply = now
                result["counter"] = n
                result["replies"] += 1
                log.write("%.6f %d\n" % (now, n))
            if result["error"]:
                break
    while not args.push and not stop and time.time() < deadline:
        n += 1
        try:
            sock.sendall(b"%d\n" % n)
        except ConnectionResetError as e:
            result["reset"], result["error"] = True, "send: %s" % e
            break
        except OSError as e:
            result["error"] = "send: %s" % e
            break
        line = None
        while not stop and time.time() < deadline:
            if b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                break
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError as e:
                result["reset"], result["error"] = True, "recv: %s" % e
                break
            except OSError as e:
                result["error"] = "recv: %s" % e
                break
            if not data:
                result["closed"] = True
                break
            buffer += data
        if line is None:
            break
        now = time.time()
        if line.strip() != b"%d" % n:
            result["error"] = "expected %d, got %r" % (n, line[:40])
            break
        if last_reply is not None:
            result["max_gap_ms"] = max(result["max_gap_ms"], (now - last_reply) * 1000)
        last_reply = now
        result["counter"] = n
        result["replies"] += 1
        log.write("%.6f %d\n" % (now, n))
        pause = args.interval - (time.time() - now)
        if pause > 0:
            time.sleep(pause)
    if stop and last_reply is not None:
        # A stall that is still going on when we are stopped counts as a gap.
        result["max_gap_ms"] = max(result["max_gap_ms"], (time.time() - last_reply) * 1000)
    sock.close()
    bad = result["reset"] or result["closed"] or result["error"]
    return finish(1 if bad else 0)


def run_report(args):
    points = []
    with open(args.log) as f:
        for text in f:
            if text.startswith("#") or not text.strip():
                continue
            t, n = text.split()
            points.append((float(t), int(n)))
    t0 = args.frm if args.frm is not None else float("-inf")
    t1 = args.to if args.to is not None else float("inf")
    window = [p for p in points if t0 <= p[0] <= t1]
    before = [p for p in points if p[0] < t0]
    if before:
        window.insert(0, before[-1])
    report = {"first": None, "last": None, "replies": 0, "max_gap_ms": None, "max_gap_end": None}
    if window:
        report["first"], report["last"] = window[0][1], window[-1][1]
        report["replies"] = len(window)
        best, end = 0.0, window[0][0]
        for a, b in zip(window, window[1:]):
            if b[0] - a[0] > best:
                best, end = b[0] - a[0], b[0]
        if t1 != float("inf") and t1 - window[-1][0] > best:
            best, end = t1 - window[-1][0], t1
        report["max_gap_ms"], report["max_gap_end"] = round(best * 1000, 1), round(end, 3)
    print(json.dumps(report, sort_keys=True))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", required=True)
    s.add_argument("--ready")
    s.add_argument("--push", type=float)
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--log", required=True)
    c.add_argument("--result")
    c.add_argument("--interval", type=float, default=0.1)
    c.add_argument("--push", action="store_true")
    c.add_argument("--max-seconds", type=float, default=110)
    r = sub.add_parser("report")
    r.add_argument("log")
    r.add_argument("--from", dest="frm", type=float)
    r.add_argument("--to", type=float)
    args = parser.parse_args()
    return {"server": run_server, "client": run_client, "report": run_report}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
