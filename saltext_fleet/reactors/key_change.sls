{#- saltext-fleet: Salt changed a key (salt/key: accepted, rejected, denied or deleted with
    salt-key or the wheel). fleet_gate.key_changed hands the change to a recorder thread of
    the reactor's own process, which confirms it against Salt's key store and records what
    the gate has not recorded yet (as done by salt-key) in the keys table and the audit
    chain. Nothing is rendered here: no job runs. #}
{%- if data is mapping and salt['fleet_gate.key_changed'](data) %}
fleet_key_change:
  test.nop: []
{%- endif %}
