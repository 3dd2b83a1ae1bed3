{#- saltext-fleet: recompute one node's drift when its inventory changed or a state run
    (a highstate test run, say) reported what is left to do. Runs the fleet.drift_node runner, which appends to the
    node's drift history and fires fleet/alert/drift when the score crosses
    fleet:drift:alert_score. The id is passed as data, never as a target. Minions can fire
    these tags too: fleet_gate.signed (in the reactor's own process, no job) lets through only
    an event this master signed, and the runner checks it again. #}
{%- set minion = data.get('id') if data is mapping else None %}
{%- if minion is string and minion and salt['fleet_gate.signed'](tag, data) %}
fleet_drift_recompute:
  runner.fleet.drift_node:
    - args:
      - minion: {{ minion | json }}
      - trigger: {{ 'states' if tag == 'fleet/states/ran' else 'inventory' }}
      - event: {{ {'tag': tag, 'data': data} | json }}
{%- endif %}
