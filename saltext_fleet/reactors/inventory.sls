{#- saltext-fleet: the fleet_pkgset beacon saw the package set of a node change; take a fresh
    inventory of that node (its return is stored by the fleet returner, which fires
    fleet/inventory/changed when the inventory really changed). The node is targeted by list,
    so an id can never widen into a glob. #}
{%- set minion = data.get('id') if data is mapping else None %}
{%- if minion is string and minion %}
fleet_inventory_refresh:
  local.fleet.inventory:
    - tgt: {{ [minion] | json }}
    - tgt_type: list
{%- endif %}
