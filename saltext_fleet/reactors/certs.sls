{#- saltext-fleet: check a node's signing certificates when its grains report other
    identities than before (the returner stored them and announced fleet/certs/changed), so a
    certificate that is already close to expiry alerts at once, not at the engine's next
    hourly check. Runs the fleet.cert_check runner for that node only. The id is passed as
    data, never as a target. Minions can fire this tag too: fleet_gate.signed (in the
    reactor's own process, no job) lets through only an event this master signed, and the
    runner checks it again. #}
{%- set minion = data.get('id') if data is mapping else None %}
{%- if minion is string and minion and salt['fleet_gate.signed'](tag, data) %}
fleet_cert_check:
  runner.fleet.cert_check:
    - args:
      - node: {{ minion | json }}
      - event: {{ {'tag': tag, 'data': data} | json }}
{%- endif %}
