"""The web UI's way into Salt: every action goes through Salt's own clients.

``RunnerClient`` for the ``fleet.*`` runners (keys, enrolment, bootstrap, baselines, audit),
``LocalClient`` for what runs on nodes (inventory refresh, states, the allow-listed commands),
``WheelClient`` is left to the runners that need it. The runners record the acting user from
Salt's ``__user__``: the UI passes ``ui:<username>``, so the audit chain names the person.

The clients are made per call: Salt's clients are not thread-safe, and the UI serves requests
from a thread pool.
"""

from __future__ import annotations

import logging
from typing import Any

from saltext_fleet.core.errors import FleetError

log = logging.getLogger(__name__)


class SaltError(FleetError, RuntimeError):
    """A Salt call failed; the message is what Salt or the runner said."""


class SaltGateway:
    def __init__(self, opts: dict):
        self.opts = opts

    def runner(self, fun: str, kwarg: dict | None = None, user: str = "ui:unknown") -> Any:
        """Run ``fleet.<fun>`` (or any runner) as ``user``; its answer, or :class:`SaltError`
        with the runner's message."""
        import salt.runner  # heavy (Salt's loader): imported at the first call, not with the app

        client = salt.runner.RunnerClient(self.opts)
        try:
            data = client.cmd(
                fun,
                kwarg=dict(kwarg or {}),
                pub_data={"user": user},
                print_event=False,
                full_return=True,
            )
        except Exception as exc:  # Salt's own errors before the runner ran
            raise SaltError(f"{fun}: {exc}") from exc
        finally:
            destroy = getattr(client, "destroy", None)
            if destroy:
                destroy()
        if not isinstance(data, dict) or not data.get("success", False):
            message = data.get("return") if isinstance(data, dict) else data
            raise SaltError(_last_line(message))
        return data.get("return")

    def local_async(
        self,
        targets: list[str],
        fun: str,
        arg: list | None = None,
        user: str = "ui:unknown",
        kwarg: dict | None = None,
    ) -> str:
        """Publish ``fun`` to the listed minions without waiting; the job id."""
        import salt.client  # heavy: imported at the first call, not with the app

        try:
            with salt.client.get_local_client(mopts=self.opts) as client:
                jid = client.cmd_async(
                    targets, fun, list(arg or []), tgt_type="list", kwarg=kwarg, user=user
                )
        except Exception as exc:  # the master away, refused, timed out
            raise SaltError(f"{fun}: the master did not take the job ({exc})") from exc
        if not jid or jid == "0":
            raise SaltError(f"{fun}: the master did not publish the job (no minion matched?)")
        return str(jid)


def _last_line(message: Any) -> str:
    """The useful part of a runner's failure: Salt returns the traceback text; its last line
    carries the exception's message."""
    text = str(message or "the runner failed").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else text
    for prefix in ("salt.exceptions.SaltRunnerError: ", "SaltRunnerError: "):
        if prefix in last:
            return last.split(prefix, 1)[1]
    return last[:2000]
