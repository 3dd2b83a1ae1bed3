{#- saltext-fleet: a minion started (salt/minion/<id>/start). The fleet.onboard runner syncs
    the extension's modules, schedules fleet.inventory and the highstate test run, takes a
    first inventory, applies the node group's states and marks the node online. The id is
    passed as data, never as a target. #}
{%- set minion = data.get('id') if data is mapping else None %}
{%- if minion is string and minion %}
fleet_onboard:
  runner.fleet.onboard:
    - args:
      - minion: {{ minion | json }}
{%- endif %}
