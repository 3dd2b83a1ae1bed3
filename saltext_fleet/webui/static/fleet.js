/* saltext-fleet web UI: live updates of the fleet overview and the alerts page.
 *
 * Plain ES2017, no framework, nothing from a CDN. The pages work without it: this only keeps
 * the overview's status, drift, last-seen, criticality and comment cells and the status
 * counts current, and tells
 * the alerts page when newer alerts arrived, from the engine's websocket (/ws/live).
 */
'use strict';

(function () {
  var MIN_DELAY = 1000;
  var MAX_DELAY = 30000;
  var SESSION_ENDED = 4401; /* the engine closed the socket: its session ended */

  /* An ISO time shown as the templates show it: "YYYY-MM-DD HH:MM:SS", the full value on hover. */
  function timeElement(iso) {
    if (iso === null || iso === undefined || iso === '') {
      var none = document.createElement('span');
      none.className = 'muted';
      none.textContent = '\u2014';
      return none;
    }
    var text = String(iso);
    var el = document.createElement('time');
    el.dateTime = text;
    el.title = text;
    el.textContent = text.slice(0, 19).replace('T', ' ');
    return el;
  }

  function driftClass(score) {
    if (score === null || score === undefined) return 'drift-none';
    if (score <= 0) return 'drift-ok';
    if (score < 50) return 'drift-warn';
    return 'drift-bad';
  }

  function findRow(id) {
    var rows = document.querySelectorAll('tr[data-node]');
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].dataset.node === id) return rows[i];
    }
    return null;
  }

  function flashRow(row) {
    row.classList.remove('updated');
    void row.offsetWidth; // restart the animation
    row.classList.add('updated');
  }

  function updateNode(msg) {
    if (typeof msg.id !== 'string') return;
    var row = findRow(msg.id);
    if (!row) return;
    if ('status' in msg) {
      var status = typeof msg.status === 'string' && msg.status ? msg.status : 'unknown';
      var cell = row.querySelector('[data-field="status"]');
      if (cell) {
        cell.textContent = status;
        cell.className = 'status status-' + status.replace(/[^a-z0-9_-]/gi, '');
      }
    }
    if ('drift' in msg) {
      var drift = row.querySelector('[data-field="drift"]');
      var score = typeof msg.drift === 'number' ? msg.drift : null;
      if (drift) {
        drift.textContent = score === null ? '\u2014' : score.toFixed(1);
        drift.classList.remove('drift-none', 'drift-ok', 'drift-warn', 'drift-bad');
        drift.classList.add(driftClass(score));
      }
    }
    if ('last_seen' in msg) {
      var seen = row.querySelector('[data-field="last_seen"]');
      if (seen) {
        seen.textContent = '';
        seen.appendChild(timeElement(msg.last_seen));
      }
    }
    if ('criticality' in msg) {
      var crit = row.querySelector('[data-field="criticality"]');
      if (crit) {
        var level = typeof msg.criticality === 'string' ? msg.criticality : '';
        crit.textContent = level;
        crit.className = 'crit crit-' + (level.replace(/[^a-z0-9_-]/gi, '') || 'none');
      }
    }
    if ('comment' in msg) {
      var comment = row.querySelector('[data-field="comment"]');
      if (comment) comment.textContent = typeof msg.comment === 'string' ? msg.comment : '';
    }
    flashRow(row);
  }

  function updateCounts(msg) {
    var statuses = msg.statuses;
    if (!statuses || typeof statuses !== 'object') return;
    var els = document.querySelectorAll('[data-status-count]');
    for (var i = 0; i < els.length; i++) {
      var name = els[i].dataset.statusCount;
      if (Object.prototype.hasOwnProperty.call(statuses, name)) {
        var n = Number(statuses[name]);
        if (Number.isFinite(n)) els[i].textContent = String(n);
      }
    }
  }

  /* Too many nodes changed at once for one message each: offer a reload (never forced, so a
   * half-typed filter is not lost). */
  function offerReload() {
    if (document.getElementById('live-reload')) return;
    var link = document.createElement('a');
    link.id = 'live-reload';
    link.className = 'live-reload';
    link.href = location.href;
    link.textContent = 'many nodes changed: reload';
    var indicator = document.getElementById('live-indicator');
    if (indicator && indicator.parentNode) {
      indicator.parentNode.insertBefore(link, indicator.nextSibling);
    } else {
      document.body.insertBefore(link, document.body.firstChild);
    }
  }

  /* The alerts page: alerts newer than the page's arrived; offer a reload (never forced). */
  function newAlerts(alerts) {
    if (document.body.dataset.live !== 'alerts' || !alerts) return;
    var latest = Number(alerts.latest);
    var mine = Number(document.body.dataset.latestAlert);
    if (!Number.isFinite(latest) || !Number.isFinite(mine) || latest <= mine) return;
    var link = document.getElementById('live-new-alerts');
    if (!link) {
      link = document.createElement('a');
      link.id = 'live-new-alerts';
      link.className = 'live-reload';
      link.href = location.href;
      var indicator = document.getElementById('live-indicator');
      if (indicator && indicator.parentNode) {
        indicator.parentNode.insertBefore(link, indicator.nextSibling);
      } else {
        document.body.insertBefore(link, document.body.firstChild);
      }
    }
    link.dataset.latest = String(latest);
    link.textContent = 'new alerts: reload';
  }

  function setState(state) {
    document.body.dataset.liveState = state;
    var indicator = document.getElementById('live-indicator');
    if (indicator) {
      indicator.hidden = false;
      indicator.dataset.state = state;
      indicator.textContent = state === 'open' ? 'live'
        : state === 'ended' ? 'session ended' : 'offline';
      indicator.title = state === 'open' ? 'updates arrive as they happen'
        : state === 'ended' ? 'log in again (reload the page)'
        : 'not receiving updates: reconnecting';
    }
  }

  function live() {
    var url = (location.protocol === 'https:' ? 'wss' : 'ws') + '://' + location.host + '/ws/live';
    var delay = MIN_DELAY;
    var socket = null;
    var timer = null;
    var leaving = false;

    function connect() {
      timer = null;
      if (leaving) return;
      setState('connecting');
      try {
        socket = new WebSocket(url);
      } catch (err) {
        retry();
        return;
      }
      socket.addEventListener('open', function () {
        delay = MIN_DELAY;
        setState('open');
      });
      socket.addEventListener('message', function (event) {
        var msg;
        try {
          msg = JSON.parse(event.data);
        } catch (err) {
          return;
        }
        if (!msg || typeof msg !== 'object') return;
        if (msg.type === 'node') updateNode(msg);
        else if (msg.type === 'counts') {
          updateCounts(msg);
          newAlerts(msg.alerts);
        }
        else if (msg.type === 'reload') offerReload();
      });
      socket.addEventListener('close', function (event) {
        socket = null;
        if (event.code === SESSION_ENDED) {
          setState('ended'); /* no retry: the cookie opens nothing any more */
          return;
        }
        if (!leaving) retry();
      });
      socket.addEventListener('error', function () {
        /* a close event follows */
      });
    }

    function retry() {
      setState('closed');
      if (timer !== null || leaving) return;
      var wait = delay + Math.floor(Math.random() * 250);
      delay = Math.min(delay * 2, MAX_DELAY);
      timer = setTimeout(connect, wait);
    }

    window.addEventListener('pagehide', function () {
      leaving = true;
      if (timer !== null) clearTimeout(timer);
      if (socket) socket.close();
    });
    window.addEventListener('pageshow', function (event) {
      if (event.persisted && leaving) {
        leaving = false;
        delay = MIN_DELAY;
        connect();
      }
    });
    connect();
  }

  function start() {
    var page = document.body ? document.body.dataset.live : '';
    if ((page === 'overview' || page === 'alerts') && 'WebSocket' in window) {
      live();
    }
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
