{#- saltext-fleet: the master's presence check saw nodes connect or go away
    (salt/presence/change, with presence_events: True). Any minion could fire this tag, so
    the fleet.presence runner marks a node online only if the master sees it connected, and
    offline only if it does not (CkMinions.connected_ids); fleet_gate.hint runs it at most
    every 2 seconds (the claims in between are merged and checked once). #}
{%- if data is mapping and (data.get('new') or data.get('lost')) and salt['fleet_gate.hint']('presence', data=data) %}
fleet_presence:
  runner.fleet.presence:
    - args:
      - new: {{ (data.get('new') or [])[:10000] | json }}
      - lost: {{ (data.get('lost') or [])[:10000] | json }}
{%- endif %}
