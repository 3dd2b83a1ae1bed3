{#- saltext-fleet: a minion started (salt/minion/<id>/start). Any minion may fire this tag
    for any id (alone, or in an events batch where nothing is authenticated), so it is a
    hint: fleet_gate.hint (in the reactor's own process, no job) lets one through per node
    every few seconds, and the fleet.node_started runner refuses it at once when the event's
    id (Salt's authenticated sender of a single event) is not the id in the tag, and
    otherwise asks the node itself when its salt-minion started: only a start after its
    last onboarding sets it up again (fleet.onboard). Refusals are logged and audited. #}
{%- set parts = tag.split('/') %}
{%- set claimed = parts[2] if parts | length == 4 and parts[3] == 'start' else None %}
{%- set sender = data.get('id') if data is mapping else None %}
{%- if claimed and salt['fleet_gate.hint']('onboard', claimed, sender) %}
fleet_onboard:
  runner.fleet.node_started:
    - args:
      - minion: {{ claimed | json }}
      - sender: {{ sender | json }}
{%- endif %}
