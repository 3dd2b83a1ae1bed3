"""Logins checked by Salt's eauth (PAM, LDAP, ...), with roles from ``fleet:ui:eauth:roles``.

Salt's own ``LoadAuth`` checks the password (``time_auth``: failures take the same time) and
names the user's groups; :func:`saltext_fleet.core.webauth.eauth_role` maps the user or a
group to a role. A user let in this way is kept in the store as an ``eauth`` user (no
password hash), so sessions, the second factor and the audit chain work as for local users;
the role is the mapping's at each login.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from saltext_fleet.core import webauth

log = logging.getLogger(__name__)


def pam_python(opts: dict) -> str:
    """An interpreter for Salt's PAM check that can import Salt.

    Salt runs the PAM conversation in a child Python (``auth.pam.python``, else
    ``/usr/bin/python3``) and resolves symlinks first; a Salt installed with pip in a
    virtualenv is then out of reach (the venv's ``python`` is a symlink to the base
    interpreter). A small script that starts this very interpreter keeps it in reach."""
    path = os.path.join(opts.get("cachedir") or "/var/cache/salt/master", "fleet", "pam-python")
    body = f'#!/bin/sh\nexec "{sys.executable}" "$@"\n'
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == body:
                return path
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(body)
    os.replace(tmp, path)
    return path


def make_checker(
    opts: dict, backend: str, roles: dict[str, str]
) -> Callable[[str, str], str | None]:
    """``check(username, password) -> role or None``."""
    import salt.auth  # heavy (Salt's loader): only when eauth is configured

    if backend == "pam" and not opts.get("auth.pam.python"):
        opts = dict(opts)
        opts["auth.pam.python"] = pam_python(opts)
    loader = salt.auth.LoadAuth(opts)

    def check(username: str, password: str) -> str | None:
        load = {"eauth": backend, "username": username, "password": password}
        if not loader.time_auth(load):
            return None
        groups = loader.get_groups(load) or []
        role = webauth.eauth_role(username, list(groups), roles)
        if role is None:
            log.warning(
                "fleet ui: %s passed %s eauth but fleet:ui:eauth:roles gives it no role",
                username,
                backend,
            )
        return role

    return check
