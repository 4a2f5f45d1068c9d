"""The container's HEALTHCHECK: is the `deploykit serve` of this container ready?

The port is read from the server process itself (its listening sockets, found through /proc), not from the
Dockerfile, so the check follows whatever the container was started with: `--port 18000`, `--port 0`, another
`--host`. The server is PID 1 of the container (the ENTRYPOINT's exec form) or a descendant of it (`--init`);
DEPLOYKIT_SERVER_PID names another root process (the tests point it at a server they started).

Exit 0 healthy (some listening socket of that process tree answers /v2/health/ready with 200), 1 unhealthy,
as Docker and podman expect. Standard library only: it runs every 30 s beside the server.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import urllib.request
from pathlib import Path

READY_PATH = "/v2/health/ready"
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


def process_tree(root: int, proc: Path = Path("/proc")) -> list[int]:
    """`root` and its descendants, from the parent ids in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # the command name may hold spaces and parentheses
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def socket_inodes(pid: int, proc: Path = Path("/proc")) -> set[str]:
    inodes = set()
    try:
        fds = list((proc / str(pid) / "fd").iterdir())
    except OSError:  # gone, or another user's process
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _address(hex_addr: str, v6: bool) -> str:
    raw = bytes.fromhex(hex_addr)
    if v6:  # four host-order 32-bit words
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return str(ipaddress.IPv6Address(raw))
    return str(ipaddress.IPv4Address(raw[::-1]))


def listening_urls(root: int, proc: Path = Path("/proc")) -> list[str]:
    """http://host:port for every TCP socket the process tree of `root` listens on (wildcards via loopback)."""
    pids = process_tree(root, proc)
    inodes = set().union(*(socket_inodes(pid, proc) for pid in pids))
    urls = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        try:
            lines = (proc / str(root) / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN or fields[9] not in inodes:
                continue
            hex_addr, hex_port = fields[1].split(":")
            host = _address(hex_addr, v6)
            if ipaddress.ip_address(host).is_unspecified:
                host = "::1" if v6 else "127.0.0.1"
            urls.append(f"http://[{host}]:{int(hex_port, 16)}" if v6 else f"http://{host}:{int(hex_port, 16)}")
    return urls


def ready(url: str, timeout: float = 4.0) -> bool:
    try:
        with urllib.request.urlopen(url + READY_PATH, timeout=timeout) as response:
            return response.status == 200
    except OSError:  # refused, 503 (HTTPError), timed out
        return False


def main() -> int:
    root = int(os.environ.get("DEPLOYKIT_SERVER_PID", "1"))
    urls = listening_urls(root)
    if not urls:
        print(f"unhealthy: process {root} and its children listen on no TCP port", file=sys.stderr)
        return 1
    if any(ready(url) for url in urls):
        return 0
    print(f"unhealthy: {READY_PATH} is not 200 on {', '.join(urls)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
