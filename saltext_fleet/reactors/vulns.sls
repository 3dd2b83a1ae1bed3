{#- saltext-fleet: vulnerability findings. fleet/inventory/changed (the returner stored a
    changed inventory): recompute that node's findings (fleet.cve_node), which fires
    fleet/alert/cve for new findings at or above fleet:vulns:alert_severity. (After an
    advisory import, fleet.cve_import recomputes the whole fleet itself.) Minions can fire
    this tag too: fleet_gate.signed (in the reactor's own process, no job) lets through only
    an event this master signed, and fleet.cve_node checks it again, and that the event is
    about the node it names. The id is passed as data, never as a target. #}
{%- set minion = data.get('id') if data is mapping else None %}
{%- if minion is string and minion and salt['fleet_gate.signed'](tag, data) %}
fleet_cve_node:
  runner.fleet.cve_node:
    - args:
      - minion: {{ minion | json }}
      - event: {{ {'tag': tag, 'data': data} | json }}
{%- endif %}
