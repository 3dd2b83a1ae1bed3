{#- saltext-fleet: vulnerability findings. fleet/inventory/changed (the returner stored a
    changed inventory): recompute that node's findings (fleet.cve_node), which fires
    fleet/alert/cve for new findings at or above fleet:vulns:alert_severity. fleet/cve/imported
    (an advisory import ended): recompute the whole fleet (fleet.cve_recompute). Minions can
    fire these tags too: fleet_gate.signed (in the reactor's own process, no job) lets through
    only an event this master signed, and the runners check it again (cve_node also that the
    event is about the node it names). The id is passed as data, never as a target. #}
{%- if data is mapping and salt['fleet_gate.signed'](tag, data) %}
{%- if tag == 'fleet/cve/imported' %}
fleet_cve_recompute:
  runner.fleet.cve_recompute:
    - args:
      - event: {{ {'tag': tag, 'data': data} | json }}
{%- else %}
{%- set minion = data.get('id') %}
{%- if minion is string and minion %}
fleet_cve_node:
  runner.fleet.cve_node:
    - args:
      - minion: {{ minion | json }}
      - event: {{ {'tag': tag, 'data': data} | json }}
{%- endif %}
{%- endif %}
{%- endif %}
