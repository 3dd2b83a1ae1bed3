{#- saltext-fleet: the fleet_pkgset beacon saw the package set of a node change; take a fresh
    inventory of that node (its return is stored by the fleet returner, which fires
    fleet/inventory/changed when the inventory really changed). Any minion could fire this
    tag naming any node, so it is a hint: fleet_gate.hint lets at most one inventory run per
    node and minute through (a hint within the minute is acted on once when it ends). The
    node is targeted by list, so an id can never widen into a glob, and what it returns is
    filed under the id Salt authenticated. #}
{%- set minion = data.get('id') if data is mapping else None %}
{%- if minion is string and minion and salt['fleet_gate.hint']('pkgset', minion) %}
fleet_inventory_refresh:
  local.fleet.inventory:
    - tgt: {{ [minion] | json }}
    - tgt_type: list
{%- endif %}
