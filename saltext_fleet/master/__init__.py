"""Master-side operations shared by the runners and the engine: Salt's key store, Salt's
clients. Thin: the rules are in :mod:`saltext_fleet.core`, the records in
:mod:`saltext_fleet.store`; what is here is the part that needs a Salt master's options."""
