{#- saltext-fleet key gate: a minion presented a key that is not accepted (salt/auth with
    act: pend). Nothing is accepted here: the fleet.key_seen runner records the key (and
    fires fleet/key/pending the first time), and accepts it only when it presents a live
    enrolment. fleet_gate.wanted (rendered here, in the reactor's own process) lets a retrying
    key through once a minute at most, so a thousand pending minions never flood the
    reactor's worker threads. act: denied (another key than the accepted one, as a
    re-bootstrapped minion presents) is handed to the recorder too, which deletes the old key
    if the fleet deleted it through another master; it renders nothing either. #}
{%- if data is mapping and data.get('act') in ['pend', 'denied'] and salt['fleet_gate.wanted'](data) %}
fleet_key_gate:
  runner.fleet.key_seen:
    - args:
      - minion: {{ data['id'] | json }}
      - pub: {{ data['pub'] | json }}
      - autosign_grains: {{ (data.get('autosign_grains') or {}) | json }}
{%- endif %}
