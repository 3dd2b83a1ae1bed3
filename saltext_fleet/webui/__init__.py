"""saltext-fleet: the web UI (Flask app, templates, static files) the ``fleet`` engine serves.

Not a Salt loader directory: the engine (``engines/fleet.py``) imports it.
"""
