"""Network namespaces in a line, each joined to the next by a veth pair, for tests that need
real (non-loopback) addresses: aiortc gathers no ICE candidates on loopback.

``veth_chain(3)`` makes namespaces ``<prefix><pid>a``, ``...b``, ``...c``; link ``i`` joins
namespace ``i`` (``10.251.<i>.1/30``) and ``i + 1`` (``10.251.<i>.2/30``), loopback is up in
every one, nothing is routed between links (a namespace starts with forwarding off). Every
namespace (and so every pair) is removed when the block ends, failed or not. Needs root.
``veth_pair()`` is the chain of two.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess


@dataclasses.dataclass(frozen=True)
class NetnsChain:
    names: tuple[str, ...]

    @property
    def a(self) -> str:
        return self.names[0]

    @property
    def b(self) -> str:
        return self.names[1]

    @staticmethod
    def address(link: int, end: int) -> str:
        """The address of ``end`` (1: the namespace before the link, 2: after) of ``link``."""
        return f"10.251.{link}.{end}"

    @property
    def address_a(self) -> str:
        return self.address(0, 1)

    @property
    def address_b(self) -> str:
        return self.address(0, 2)

    def command(self, side: str | int, argv: list[str]) -> list[str]:
        """``argv`` run inside namespace ``side`` ("a", "b", ... or its index)."""
        index = side if isinstance(side, int) else "abcdefgh".index(side)
        return ["ip", "netns", "exec", self.names[index], *argv]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


def namespaces() -> set[str]:
    out = _ip("netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@contextlib.contextmanager
def veth_chain(count: int = 2, prefix: str = "fwrtc"):
    pid = os.getpid()
    chain = NetnsChain(names=tuple(f"{prefix}{pid}{'abcdefgh'[i]}" for i in range(count)))
    # at most 15 characters; the root namespace sees them only until they are moved
    veths = [(f"v{pid}l{i}x", f"v{pid}l{i}y") for i in range(count - 1)]
    for ns in chain.names:
        _ip("netns", "del", ns, check=False)  # left by an earlier process with this pid
    try:
        for ns in chain.names:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for link, (left, right) in enumerate(veths):
            _ip("link", "add", left, "type", "veth", "peer", "name", right)
            for end, (dev, ns) in enumerate(
                ((left, chain.names[link]), (right, chain.names[link + 1])), 1
            ):
                _ip("link", "set", dev, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{chain.address(link, end)}/30", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
        yield chain
    finally:
        for ns in chain.names:
            _ip("netns", "del", ns, check=False)
        for left, _right in veths:
            _ip("link", "del", left, check=False)  # still here if moving it failed


def veth_pair(prefix: str = "fwrtc"):
    """Two namespaces and one veth pair: ``a`` at 10.251.0.1, ``b`` at 10.251.0.2."""
    return veth_chain(2, prefix)
