{#- saltext-fleet: the master's presence check saw nodes connect or go away
    (salt/presence/change, with presence_events: True). The fleet.presence runner marks the
    new ones online and the lost ones offline. #}
{%- if data is mapping and (data.get('new') or data.get('lost')) %}
fleet_presence:
  runner.fleet.presence:
    - args:
      - new: {{ (data.get('new') or []) | json }}
      - lost: {{ (data.get('lost') or []) | json }}
{%- endif %}
