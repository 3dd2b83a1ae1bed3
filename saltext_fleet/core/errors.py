"""The root of the errors saltext-fleet raises on purpose.

Every exception class of the package derives from :class:`FleetError`, so a caller (a Salt
adapter, the CLI, the web UI) can tell "saltext-fleet refused this and said why" from a bug
with one ``except FleetError``. Most also keep the builtin base they had (``ValueError`` for bad
input, ``RuntimeError`` for a state that does not allow the action), so code that caught those
still does. The Salt adapters translate a :class:`FleetError` into Salt's own error
(``CommandExecutionError``, ``SaltRunnerError``) with ``raise ... from exc``, so the cause stays
in the traceback. ``core/`` imports nothing of Salt, so this root is not a ``SaltException``.
"""


class FleetError(Exception):
    """An error saltext-fleet raised on purpose; the message says what was wrong."""
