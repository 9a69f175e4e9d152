"""The traffic of scripts/soak: mixed mail through two gateway nodes, checked end to end.

Every legitimate message carries its own Message-ID. A 250 makes the gateway
responsible for it: it must turn up at a next hop (the sinks' maildirs, scanned and
emptied as the run goes). A 4xx or a lost connection is retried, on the other node, as
a sender's MTA would; a 5xx for legitimate mail is an error. Hostile input must never
be delivered. Prints the figures and exits 1 when something was lost or refused.
"""

import argparse
import collections
import os
import random
import re
import socket
import threading
import time

MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^>]+)>", re.I | re.M)
LINE = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopqrst\r\n"


class Node:
    def __init__(self, spec):
        name, inbound, submission, pid = spec.split(",")
        self.name, self.inbound, self.submission, self.pid = name, int(inbound), int(submission), int(pid)

    def rss(self, field="VmRSS"):
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0


class Smtp:
    """A minimal SMTP client that reports instead of raising."""

    def __init__(self, port, source):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120, source_address=(source, 0))
        self.file = self.sock.makefile("rb")

    def reply(self):
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("connection closed")
            lines.append(line.decode("latin-1").rstrip())
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def command(self, line):
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.sock.close()


def dot_stuff(message):
    out = re.sub(rb"(^|\r\n)\.", rb"\1..", message)
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out + b".\r\n"


def send(port, source, sender, recipient, message, vanish=False):
    """One transaction: ('250'|'4xx'|'5xx'|'none', code, text, stage)."""
    try:
        s = Smtp(port, source)
    except OSError as e:
        return "none", 0, str(e), "connect"
    try:
        for stage, line, expect in (
            ("greeting", None, 220),
            ("ehlo", "EHLO soak.test", 250),
            ("mail", f"MAIL FROM:<{sender}>", 250),
            ("rcpt", f"RCPT TO:<{recipient}>", 250),
            ("data", "DATA", 354),
        ):
            code, text = s.reply() if line is None else s.command(line)
            if code != expect:
                return classify(code), code, text, stage
        body = dot_stuff(message)
        if vanish:
            s.sock.sendall(body[: len(body) // 2])
            s.sock.close()
            return "none", 0, "vanished mid-DATA", "data"
        s.sock.sendall(body)
        code, text = s.reply()
        return ("250" if code == 250 else classify(code)), code, text, "end of data"
    except (OSError, ConnectionError, ValueError) as e:
        return "none", 0, str(e), "protocol"
    finally:
        try:
            s.close()
        except OSError:
            pass


def classify(code):
    return "4xx" if 400 <= code < 500 else "5xx" if code >= 500 else "other"


def text_body(size):
    return LINE * max(1, size // len(LINE))


class Run:
    def __init__(self, args):
        self.args = args
        self.nodes = [Node(spec) for spec in args.node]
        self.lock = threading.Lock()
        self.accepted = {}  # message id -> kind
        self.delivered = collections.Counter()
        self.hostile_ids = set()
        self.counts = collections.Counter()
        self.replies = collections.Counter()
        self.refused_legit = []
        self.given_up = []
        self.stop = threading.Event()
        self.serial = 0
        inbound = {}
        for size in (1024, 102400, 1048576, 10485760):
            with open(os.path.join(args.work, f"inbound-{size}.eml"), "rb") as f:
                inbound[size] = f.read()
        self.inbound = inbound

    def next_id(self, kind):
        with self.lock:
            self.serial += 1
            return f"soak-{self.serial}-{kind}@soak.test"

    def pick_size(self, rng):
        r = rng.random()
        if r < 0.01:
            return 10485760
        if r < 0.05:
            return 1048576
        if r < 0.25:
            return 102400
        return 1024

    def legit(self, rng):
        """(kind, listener, sender, recipient, message, size)."""
        size = self.pick_size(rng)
        kind = rng.choice(["sign", "sign+encrypt", "relay-only", "decrypt+verify"])
        mid = self.next_id(kind)
        if kind == "decrypt+verify":
            head = (f"From: bob@partner.example\r\nTo: alice@corp.example\r\nSubject: soak {kind}\r\n"
                    f"Message-ID: <{mid}>\r\n").encode()
            return mid, kind, "inbound", "bob@partner.example", "alice@corp.example", head + self.inbound[size], size
        sender = "relay@corp.example" if kind == "relay-only" else "alice@corp.example"
        recipient = "bob@partner.example" if kind == "sign+encrypt" else "carol@other.example"
        head = (f"From: {sender}\r\nTo: {recipient}\r\nSubject: soak {kind}\r\nMessage-ID: <{mid}>\r\n"
                "Content-Type: text/plain\r\n\r\n").encode()
        return mid, kind, "submission", sender, recipient, head + text_body(size), size

    def hostile(self, rng):
        """(kind, listener, sender, recipient, message, vanish)."""
        kind = rng.choice(["garbage-smime", "relay-attempt", "vanish-mid-data", "unknown-mailbox"])
        mid = self.next_id(kind)
        head = f"From: mallory@evil.example\r\nTo: alice@corp.example\r\nMessage-ID: <{mid}>\r\n".encode()
        # Never to be delivered: mail for nobody, for elsewhere, or not finished. (What
        # the gateway cannot decrypt it may pass on undecrypted, stamped: not counted.)
        if kind != "garbage-smime":
            with self.lock:
                self.hostile_ids.add(mid)
        if kind == "garbage-smime":
            body = (b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
                    b"Content-Transfer-Encoding: base64\r\n\r\n" + b"MIIBogYJKoZIhvcNAQcDoIIBkzCCAY8CAQAx\r\n" * 40)
            return kind, "inbound", "mallory@evil.example", "alice@corp.example", head + body, False
        if kind == "relay-attempt":
            return kind, "inbound", "mallory@evil.example", "victim@elsewhere.example", head + b"\r\nspam\r\n", False
        if kind == "unknown-mailbox":
            return kind, "inbound", "mallory@evil.example", "nobody@corp.example", head + b"\r\nhello\r\n", False
        return kind, "inbound", "mallory@evil.example", "alice@corp.example", head + b"\r\n" + text_body(65536), True

    def port(self, node, listener):
        return node.inbound if listener == "inbound" else node.submission

    def source(self, listener):
        # Internet mail comes from 127.0.0.2; only 127.0.0.1/32 is internal.
        return "127.0.0.2" if listener == "inbound" else "127.0.0.1"

    def worker(self, index):
        rng = random.Random(index)
        while not self.stop.is_set():
            if rng.random() < 0.05:
                kind, listener, sender, recipient, message, vanish = self.hostile(rng)
                node = rng.choice(self.nodes)
                outcome, code, text, stage = send(self.port(node, listener), self.source(listener),
                                                  sender, recipient, message, vanish)
                with self.lock:
                    self.counts[f"hostile {kind}: {outcome}"] += 1
                    self.replies[outcome] += 1
                continue
            mid, kind, listener, sender, recipient, message, size = self.legit(rng)
            node = self.nodes[index % len(self.nodes)]
            for attempt in range(8):
                outcome, code, text, stage = send(self.port(node, listener), self.source(listener),
                                                  sender, recipient, message)
                with self.lock:
                    self.replies[outcome] += 1
                    if outcome == "4xx":
                        self.counts[f"4xx {code} at {stage}"] += 1
                if outcome == "250":
                    with self.lock:
                        self.accepted[mid] = (kind, size)
                        self.counts[f"relayed {kind} {size // 1024} KB"] += 1
                    break
                if outcome == "5xx":
                    with self.lock:
                        self.refused_legit.append((mid, code, text, stage))
                    break
                # 4xx or no reply: the sender's MTA tries again, on the other node.
                node = self.nodes[(self.nodes.index(node) + 1) % len(self.nodes)]
                time.sleep(min(0.2 * 2 ** attempt, 5))
            else:
                with self.lock:
                    self.given_up.append(mid)

    def scan(self):
        """Records and removes what reached the next hops."""
        for maildir in self.args.maildir:
            new = os.path.join(maildir, "new")
            try:
                names = os.listdir(new)
            except FileNotFoundError:
                continue
            for name in names:
                path = os.path.join(new, name)
                try:
                    with open(path, "rb") as f:
                        head = f.read(65536)
                    os.unlink(path)
                except OSError:
                    continue
                found = MESSAGE_ID.search(head)
                if found:
                    with self.lock:
                        self.delivered[found.group(1).decode()] += 1

    def scanner(self):
        while not self.stop.is_set():
            self.scan()
            time.sleep(1)

    def go(self):
        time.sleep(1)
        start_rss = {n.name: n.rss() for n in self.nodes}
        workers = [threading.Thread(target=self.worker, args=(i,)) for i in range(self.args.concurrency)]
        scanner = threading.Thread(target=self.scanner)
        begun = time.monotonic()
        for t in workers + [scanner]:
            t.start()
        # RSS once the load runs (the first minute warms caches and pools).
        warm_rss = {}
        end = begun + self.args.minutes * 60
        while time.monotonic() < end:
            time.sleep(5)
            if not warm_rss and time.monotonic() - begun > min(60, self.args.minutes * 30):
                warm_rss = {n.name: n.rss() for n in self.nodes}
        end_rss = {n.name: n.rss() for n in self.nodes}
        peak = {n.name: n.rss("VmHWM") for n in self.nodes}
        self.stop.set()
        for t in workers:
            t.join()
        scanner.join()
        time.sleep(2)
        self.scan()
        elapsed = time.monotonic() - begun
        return start_rss, warm_rss, end_rss, peak, elapsed

    def report(self, start_rss, warm_rss, end_rss, peak, elapsed):
        lost = sorted(mid for mid in self.accepted if self.delivered[mid] == 0)
        hostile_delivered = sorted(mid for mid in self.hostile_ids if self.delivered[mid])
        duplicates = sum(1 for mid in self.accepted if self.delivered[mid] > 1)
        relayed_bytes = sum(size for _, size in self.accepted.values())
        mb = lambda v: f"{v / 1e6:.1f} MB"
        print(f"soak: {elapsed / 60:.1f} min, {len(self.nodes)} nodes, {self.args.concurrency} senders")
        print(f"messages relayed (answered 250): {len(self.accepted)} ({relayed_bytes / 1e6:.0f} MB), "
              f"{len(self.accepted) / elapsed:.1f}/s")
        for key in sorted(k for k in self.counts if k.startswith("relayed")):
            print(f"  {key}: {self.counts[key]}")
        print(f"lost (answered 250, never at a next hop): {len(lost)}")
        print(f"delivered more than once (a 250 lost on the way back, retried): {duplicates}")
        print(f"legitimate mail refused with 5xx: {len(self.refused_legit)}")
        print(f"legitimate mail given up after 8 tries: {len(self.given_up)}")
        print(f"hostile input delivered: {len(hostile_delivered)}")
        print(f"replies: " + ", ".join(f"{k} {v}" for k, v in sorted(self.replies.items())))
        for key in sorted(k for k in self.counts if k.startswith("4xx")):
            print(f"  {key}: {self.counts[key]}")
        for key in sorted(k for k in self.counts if k.startswith("hostile")):
            print(f"  {key}: {self.counts[key]}")
        for n in self.nodes:
            print(f"node {n.name} RSS: start {mb(start_rss[n.name])}, after warm-up "
                  f"{mb(warm_rss.get(n.name, 0))}, end {mb(end_rss[n.name])}, peak {mb(peak[n.name])}")
        for mid, code, text, stage in self.refused_legit[:10]:
            print(f"  refused {mid} at {stage}: {code} {text}")
        for mid in lost[:10]:
            print(f"  lost {mid}")
        for mid in hostile_delivered[:10]:
            print(f"  hostile delivered {mid}")
        return 0 if not lost and not self.refused_legit and not self.given_up and not hostile_delivered else 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--node", action="append", required=True, help="NAME,INBOUND,SUBMISSION,PID")
    parser.add_argument("--maildir", action="append", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    run = Run(args)
    raise SystemExit(run.report(*run.go()))


if __name__ == "__main__":
    main()
