"""Reactor SLS files shipped in the package.

``REACTORS`` maps an event tag to the SLS files (in this folder) that react to it;
``saltext-fleet config`` turns it into the master's ``reactor:`` list with absolute paths.
Later features add their reactions here.
"""

REACTORS: dict[str, list[str]] = {}
