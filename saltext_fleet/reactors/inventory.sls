#!py
"""saltext-fleet reactor: see saltext_fleet.reactors.reactions.inventory (rendered by Salt's py
renderer: a function call per event, not a jinja template compiled per event)."""

from saltext_fleet.reactors import reactions


def run():
    return reactions.inventory(tag, data, __salt__)  # noqa: F821 - set by Salt's py renderer
