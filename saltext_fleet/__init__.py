"""saltext-fleet: a Salt extension that turns a Salt master into a fleet control plane.

Salt finds the loader modules through the ``salt.loader`` entry point, which points at this
package: every ``saltext_fleet/<loader type>/`` folder (grains, modules, beacons, returners,
runners, states, engines, proxy) is added to that loader's search path, so no
``extension_modules`` setting is needed.
"""

__version__ = "0.1.0"
