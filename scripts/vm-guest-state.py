#!/usr/bin/env python3
"""Where a wedged VM's CPUs are: asks QEMU's monitor (a unix socket) for each vCPU's registers and
the words on its kernel stack, and names every kernel text address with the guest's own kernel
symbols, which vm-test's guest writes (/proc/kallsyms text lines, NUL after) into its disk image.

Usage: vm-guest-state.py MONITOR_SOCKET DISK_IMAGE OFFSET
"""
import bisect
import re
import socket
import sys
import time


def read_for(sock, seconds, done=lambda out: False):
    out = b""
    end = time.time() + seconds
    while time.time() < end:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        out += chunk
        if done(out):
            break
    return out


def ask(sock, cmd):
    """One monitor command's output. Whatever is still unread (an earlier prompt) is drained
    first, so an answer is never read as the next command's."""
    sock.settimeout(0.3)
    read_for(sock, 1)
    sock.settimeout(2)
    sock.sendall(cmd.encode() + b"\n")
    # The monitor echoes the command, then its output, then a new prompt.
    out = read_for(sock, 5, lambda o: b"\n" in o and o.rstrip().endswith(b"(qemu)"))
    return out.decode(errors="replace")


def main():
    sock_path, disk, offset = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(disk, "rb") as f:
        f.seek(offset)
        raw = f.read(64 << 20).split(b"\0", 1)[0].decode(errors="replace")
    syms = []
    for line in raw.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.append((int(parts[0], 16), parts[2]))
    syms.sort()
    if not syms:
        print("no kernel symbols in the disk image: addresses only")
        syms = [(0, "?")]
    addrs = [a for a, _ in syms]
    lo = next((a for a, n in syms if n == "_stext"), 0xFFFFFFFF80000000)
    hi = next((a for a, n in syms if n == "_etext"), 0xFFFFFFFFFFFFFFFF)

    def name(a):
        i = bisect.bisect_right(addrs, a) - 1
        return f"{syms[i][1]}+{a - syms[i][0]:#x}" if i >= 0 else hex(a)

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(sock_path)
    ask(s, "stop")
    listed = ask(s, "info cpus")
    cpus = re.findall(r"CPU #(\d+)", listed)
    if not cpus:
        print(f"the monitor listed no vCPUs: {listed[-300:]!r}")
    for c in cpus:
        ask(s, f"cpu {c}")
        regs = ask(s, "info registers")
        rip = re.search(r"RIP=([0-9a-f]+)", regs)
        rsp = re.search(r"RSP=([0-9a-f]+)", regs)
        fl = re.search(r"RFL=([0-9a-f]+)", regs)
        if not rip:
            print(f"vCPU {c}: no registers")
            continue
        r = int(rip.group(1), 16)
        irq = "on" if fl and int(fl.group(1), 16) & 0x200 else "off"
        print(f"vCPU {c}: RIP {name(r) if lo <= r <= hi else hex(r)} (interrupts {irq})")
        if rsp:
            words = re.findall(r"0x([0-9a-f]{16})", ask(s, f"x/256gx 0x{rsp.group(1)}").split(":", 1)[-1])
            seen = [int(w, 16) for w in words if lo <= int(w, 16) <= hi]
            for a in seen[:40]:
                print(f"    {name(a)}")
    # Running again, for whoever stops it next (a wedged guest stays wedged).
    ask(s, "cont")
    s.close()


if __name__ == "__main__":
    main()
