"""Two network namespaces joined by a veth pair, for tests that need real (non-loopback)
addresses: aiortc gathers no ICE candidates on loopback.

``veth_pair()`` makes ``<prefix><pid>a`` and ``<prefix><pid>b``, a veth pair between them
with ``10.251.0.1/30`` (side a) and ``10.251.0.2/30`` (side b), loopback up in both, and
removes both namespaces (and so the pair) when the block ends, failed or not. Needs root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess

ADDRESS_A = "10.251.0.1"
ADDRESS_B = "10.251.0.2"


@dataclasses.dataclass(frozen=True)
class NetnsPair:
    a: str
    b: str
    address_a: str = ADDRESS_A
    address_b: str = ADDRESS_B

    def command(self, side: str, argv: list[str]) -> list[str]:
        """``argv`` run inside namespace ``side`` ("a" or "b")."""
        return ["ip", "netns", "exec", self.a if side == "a" else self.b, *argv]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


def namespaces() -> set[str]:
    out = _ip("netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@contextlib.contextmanager
def veth_pair(prefix: str = "fwrtc"):
    tag = f"{prefix}{os.getpid()}"
    pair = NetnsPair(a=f"{tag}a", b=f"{tag}b")
    veth_a, veth_b = f"v{os.getpid()}a", f"v{os.getpid()}b"  # at most 15 characters
    for ns in (pair.a, pair.b):
        _ip("netns", "del", ns, check=False)  # left by an earlier process with this pid
    try:
        _ip("netns", "add", pair.a)
        _ip("netns", "add", pair.b)
        _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        _ip("link", "set", veth_a, "netns", pair.a)
        _ip("link", "set", veth_b, "netns", pair.b)
        for ns, dev, address in ((pair.a, veth_a, ADDRESS_A), (pair.b, veth_b, ADDRESS_B)):
            _ip("-n", ns, "addr", "add", f"{address}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        for ns in (pair.a, pair.b):
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", veth_a, check=False)  # still here if moving it failed
