"""Real virtualenvs and real (tiny, locally built) wheels for inventory tests.

Nothing is downloaded: the wheels are written here, in the wheel format pip installs, so a
test can change a virtualenv's package set with ``pip install --no-index``.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path


def make_venv(path: Path, with_pip: bool = True) -> Path:
    """Create a virtualenv at ``path``; returns its python executable."""
    argv = [sys.executable, "-m", "venv", str(path)]
    if not with_pip:
        argv.append("--without-pip")
    subprocess.run(argv, check=True, capture_output=True)
    return path / "bin" / "python"


def make_wheel(dest: Path, name: str, version: str) -> Path:
    """Write a pure-Python wheel ``name==version`` holding one module; returns its path."""
    dist = name.replace("-", "_")
    files = {
        f"{dist}/__init__.py": f'__version__ = "{version}"\n',
        f"{dist}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ),
        f"{dist}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: saltext-fleet-tests\n"
            "Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = f"{dist}-{version}.dist-info/RECORD"
    lines = []
    for arcname, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        lines.append(f"{arcname},sha256={digest.decode()},{len(text.encode())}")
    lines.append(f"{record},,")
    files[record] = "\n".join(lines) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for arcname, text in files.items():
            zf.writestr(arcname, text)
    return wheel


def pip_install(python: Path, *wheels: Path) -> None:
    """Install local wheels into the virtualenv of ``python``, with no index at all."""
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            *map(str, wheels),
        ],
        check=True,
        capture_output=True,
    )
