{#-
  Bootstrap of a salt-minion over salt-ssh (``salt-run fleet.bootstrap``), applied by
  saltext_fleet.master.bootstrap with ``state.apply fleet_bootstrap`` and this pillar:

    fleet_bootstrap:
      prefix: /opt/saltext-fleet          # everything of this minion lives here (root_dir)
      python: python3                      # the interpreter the virtualenv is made with
      wheels: salt://fleet_bootstrap/wheels
      requirements: [salt==3008.4, saltext-fleet==0.1.0]   # optional; default: unpinned
      minion_config: {id: ..., master: ...}                 # written as <prefix>/etc/salt/minion
      minion_pem: "-----BEGIN RSA PRIVATE KEY-----..."     # the pre-generated key pair
      minion_pub: "-----BEGIN PUBLIC KEY-----..."
      service: systemd                     # systemd | launchd | daemon

  Nothing is downloaded: pip installs from the wheelhouse only (--no-index).
  Every step is a state id of its own (fleet_bootstrap_*); the runner reports them by id,
  with the readable names in saltext_fleet.master.bootstrap.STEP_NAMES.
-#}
{%- set bs = salt['pillar.get']('fleet_bootstrap', {}) %}
{%- set prefix = bs.get('prefix', '/opt/saltext-fleet') | string %}
{%- set python = bs.get('python', 'python3') | string %}
{%- set service = bs.get('service', 'systemd') %}
{%- set venv = prefix ~ '/venv' %}
{%- set wheels = prefix ~ '/wheels' %}
{%- set conf_dir = prefix ~ '/etc/salt' %}
{%- set config = {} %}
{%- do config.update(bs.get('minion_config', {})) %}
{%- do config.update({'root_dir': prefix}) %}
{#- Salt prefixes root_dir to these paths unless they already start with it #}
{%- set pki_dir = config.get('pki_dir', '/etc/salt/pki/minion') %}
{%- set pki_dir = pki_dir if pki_dir.startswith(prefix) else prefix ~ pki_dir %}
{%- set pidfile = config.get('pidfile', '/var/run/salt-minion.pid') %}
{%- set pidfile = pidfile if pidfile.startswith(prefix) else prefix ~ pidfile %}
{%- set requirements = bs.get('requirements', ['salt', 'saltext-fleet']) %}
{%- set unit = '/etc/systemd/system/salt-minion-fleet.service' %}
{%- set label = 'com.saltext-fleet.minion' %}
{%- set plist = '/Library/LaunchDaemons/' ~ label ~ '.plist' %}
{%- set missing = [] %}
{%- for key in ('minion_config', 'minion_pem', 'minion_pub') %}
{%-   if not bs.get(key) %}{% do missing.append(key) %}{% endif %}
{%- endfor %}

{%- if missing or service not in ('daemon', 'systemd', 'launchd') or not prefix.startswith('/') %}
fleet_bootstrap_pillar:
  test.fail_without_changes:
    - name: pillar fleet_bootstrap
    - comment: >-
        pillar fleet_bootstrap is incomplete or wrong: missing {{ missing | join(', ') or 'nothing' }};
        service {{ service }} (daemon, systemd or launchd); prefix {{ prefix }} (absolute)
{%- else %}

{#- a pid in the pid file that is alive and is a salt-minion #}
{%- set alive -%}
pid=$(cat {{ pidfile | quote }} 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ps -p "$pid" -o command= | grep -q salt-minion
{%- endset %}

fleet_bootstrap_venv:
  cmd.run:
    - name: {{ (python | quote ~ ' -m venv ' ~ venv | quote) | json }}
    - creates: {{ (venv ~ '/bin/python') | json }}

fleet_bootstrap_wheels:
  file.recurse:
    - name: {{ wheels | json }}
    - source: {{ bs.get('wheels', 'salt://fleet_bootstrap/wheels') | json }}
    - clean: True
    - makedirs: True
    - dir_mode: '0755'
    - file_mode: '0644'
    - show_changes: False

fleet_bootstrap_install:
  pip.installed:
    - pkgs: {{ requirements | json }}
    - bin_env: {{ venv | json }}
    - no_index: True
    - find_links: {{ wheels | json }}
    - no_cache_dir: True
    - require:
      - cmd: fleet_bootstrap_venv
      - file: fleet_bootstrap_wheels

fleet_bootstrap_config:
  file.serialize:
    {#- the main file, not minion.d/: Salt reads static grains (the enrolment token, which
        the minion sends with its authentication) from the main file's includes only when
        that file exists #}
    - name: {{ (conf_dir ~ '/minion') | json }}
    - dataset: {{ config | json }}
    - serializer: yaml
    - mode: '0600'
    - makedirs: True
    - dir_mode: '0755'
    {#- the configuration may carry an enrolment token #}
    - show_changes: False

fleet_bootstrap_key:
  file.managed:
    - name: {{ (pki_dir ~ '/minion.pem') | json }}
    - contents_pillar: fleet_bootstrap:minion_pem
    - mode: '0400'
    - makedirs: True
    - dir_mode: '0700'
    - show_changes: False

fleet_bootstrap_pub:
  file.managed:
    - name: {{ (pki_dir ~ '/minion.pub') | json }}
    - contents_pillar: fleet_bootstrap:minion_pub
    - mode: '0644'
    - makedirs: True
    - dir_mode: '0700'
    - require:
      - file: fleet_bootstrap_key

{%- if service == 'daemon' %}

{#- a minion of an earlier bootstrap must not keep running with the old config or code #}
fleet_bootstrap_stop:
  cmd.run:
    - name: {{ (alive ~ ' || exit 0; kill "$pid"; i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.5; i=$((i+1)); done; ! kill -0 "$pid" 2>/dev/null') | json }}
    - onchanges:
      - pip: fleet_bootstrap_install
      - file: fleet_bootstrap_config
      - file: fleet_bootstrap_key
      - file: fleet_bootstrap_pub

fleet_bootstrap_start:
  cmd.run:
    - name: {{ ((venv ~ '/bin/salt-minion') | quote ~ ' -c ' ~ conf_dir | quote ~ ' -d') | json }}
    - unless: {{ alive | json }}
    - require:
      - pip: fleet_bootstrap_install
      - file: fleet_bootstrap_config
      - file: fleet_bootstrap_key
      - file: fleet_bootstrap_pub
      - cmd: fleet_bootstrap_stop

fleet_bootstrap_running:
  cmd.run:
    - name: {{ ('i=0; until ' ~ alive ~ '; do [ $i -ge 30 ] && { echo "salt-minion is not running; see ' ~ prefix ~ '/var/log/salt/minion" >&2; exit 1; }; sleep 0.5; i=$((i+1)); done; echo "salt-minion runs as pid $pid"') | json }}
    - require:
      - cmd: fleet_bootstrap_start

{%- elif service == 'systemd' %}

fleet_bootstrap_service_file:
  file.managed:
    - name: {{ unit }}
    - mode: '0644'
    - contents: |
        # written by saltext-fleet's bootstrap; the minion lives under {{ prefix }}
        [Unit]
        Description=Salt minion (saltext-fleet)
        Documentation=man:salt-minion(1)
        After=network-online.target
        Wants=network-online.target

        [Service]
        Type=simple
        ExecStart={{ venv }}/bin/salt-minion -c {{ conf_dir }}
        KillMode=process
        Restart=on-failure
        RestartSec=10
        LimitNOFILE=8192

        [Install]
        WantedBy=multi-user.target

fleet_bootstrap_start:
  service.running:
    - name: salt-minion-fleet
    - enable: True
    - require:
      - pip: fleet_bootstrap_install
      - file: fleet_bootstrap_config
      - file: fleet_bootstrap_key
      - file: fleet_bootstrap_pub
    - watch:
      - file: fleet_bootstrap_service_file
      - pip: fleet_bootstrap_install
      - file: fleet_bootstrap_config
      - file: fleet_bootstrap_key
      - file: fleet_bootstrap_pub

{%- elif service == 'launchd' %}

{#- launchd opens StandardErrorPath before the minion runs; it makes no directories #}
fleet_bootstrap_log_dir:
  file.directory:
    - name: {{ (prefix ~ '/var/log/salt') | json }}
    - makedirs: True
    - mode: '0755'

{#- A LaunchDaemon per launchd.plist(5): Label, ProgramArguments, RunAtLoad, KeepAlive #}
fleet_bootstrap_service_file:
  file.managed:
    - name: {{ plist }}
    - user: root
    - group: wheel
    - mode: '0644'
    - require:
      - file: fleet_bootstrap_log_dir
    - contents: |
        <?xml version="1.0" encoding="UTF-8"?>
        <!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
        <plist version="1.0">
        <dict>
          <key>Label</key>
          <string>{{ label }}</string>
          <key>ProgramArguments</key>
          <array>
            <string>{{ venv | e }}/bin/salt-minion</string>
            <string>-c</string>
            <string>{{ conf_dir | e }}</string>
          </array>
          <key>RunAtLoad</key>
          <true/>
          <key>KeepAlive</key>
          <true/>
          <key>SoftResourceLimits</key>
          <dict>
            <key>NumberOfFiles</key>
            <integer>8192</integer>
          </dict>
          <key>StandardOutPath</key>
          <string>{{ prefix | e }}/var/log/salt/minion-launchd.log</string>
          <key>StandardErrorPath</key>
          <string>{{ prefix | e }}/var/log/salt/minion-launchd.log</string>
        </dict>
        </plist>

{#- a changed plist, config, key or code: unload and load again (launchctl(1)) #}
fleet_bootstrap_stop:
  cmd.run:
    - name: launchctl bootout system/{{ label }} 2>/dev/null; launchctl bootstrap system {{ plist }}
    - onchanges:
      - file: fleet_bootstrap_service_file
      - pip: fleet_bootstrap_install
      - file: fleet_bootstrap_config
      - file: fleet_bootstrap_key
      - file: fleet_bootstrap_pub

fleet_bootstrap_start:
  cmd.run:
    - name: launchctl bootstrap system {{ plist }}
    - unless: launchctl print system/{{ label }}
    - require:
      - file: fleet_bootstrap_service_file
      - pip: fleet_bootstrap_install
      - file: fleet_bootstrap_config
      - file: fleet_bootstrap_key
      - file: fleet_bootstrap_pub
      - cmd: fleet_bootstrap_stop

{%- endif %}
{%- endif %}
