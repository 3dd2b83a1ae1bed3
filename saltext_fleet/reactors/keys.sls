{#- saltext-fleet key gate: a minion presented a key that is not accepted (salt/auth with
    act: pend). fleet_gate.wanted (rendered here, in the reactor's own process, no job) hands
    the key to that process's recorder thread, at most once a minute for a key without a
    token and once every few seconds for a key with one, so a thousand pending minions never
    flood the reactor's worker threads. The thread accepts a key only when it presents a live
    enrolment (what salt-run fleet.key_seen does for one key), and records the others (first
    and last seen; fleet/key/pending the first time). act: denied (another key than the
    accepted one, as a re-bootstrapped minion presents) goes to the key-change recorder,
    which deletes the old key if the fleet deleted it through another master. This SLS
    renders nothing. #}
{%- if data is mapping and data.get('act') in ['pend', 'denied'] and salt['fleet_gate.wanted'](data) %}
fleet_key_gate:
  test.nop: []
{%- endif %}
