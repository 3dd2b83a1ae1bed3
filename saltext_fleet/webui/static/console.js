/* saltext-fleet web UI: a PiKVM's console, through the engine.
 *
 * Plain ES2017, no framework, nothing from a CDN. The page (kvm_console.html) names in
 * #console's data attributes where the video and the websocket are:
 *
 * - video: WebRTC first when the page has a data-webrtc URL and kvm_webrtc.js defined
 *   window.startWebRTC(video, device, {timeoutMs}) -> Promise<console> (the engine's aiortc
 *   peer; the promise rejects when it does not connect in time); otherwise, or when it fails,
 *   the engine's MJPEG stream (data-stream), read with fetch() and drawn frame by frame on
 *   #console-canvas (its data-frames counts the frames drawn). #console data-video says which.
 * - keyboard and mouse: the websocket bridge (data-ws), which takes kvmd's JSON events
 *   ({"event_type": "key", "event": {"key": "KeyA", "state": true}}) and answers
 *   {"type": "ready" | "state" | "error" | "refused" | "pong", ...}. Only pages with
 *   data-input="1" listen to the keyboard and mouse; the engine refuses input from anyone
 *   else whatever the page does.
 *
 * With WebRTC connected, input goes over its DataChannel; otherwise over the websocket, which
 * stays open either way for the device's state and the engine's messages.
 * window.fleetConsole.send(event) sends one event the way input goes (tests use it);
 * window.fleetConsole.frames() is the number of MJPEG frames drawn.
 */
'use strict';

(function () {
  var SESSION_ENDED = 4401;
  var MIN_DELAY = 1000;
  var MAX_DELAY = 30000;
  var WEBRTC_WAIT = 5000;
  var MOUSE_MIN = -32768;
  var MOUSE_MAX = 32767;
  var BUTTONS = { 0: 'left', 1: 'middle', 2: 'right' };

  function byId(id) { return document.getElementById(id); }

  function showError(text) {
    var el = byId('console-error');
    if (!el) return;
    el.textContent = text || '';
    el.hidden = !text;
  }

  function setStatus(state, text) {
    var el = byId('console-status');
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
  }

  /* ---- video: MJPEG ---------------------------------------------------------------------- */

  function indexOfCrlfCrlf(buf, from, end) {
    for (var i = from; i + 3 < end; i++) {
      if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
    }
    return -1;
  }

  function mjpeg(root, canvas, leaving) {
    var url = root.dataset.stream;
    var drawn = 0;
    var pending = null; /* the newest frame not yet drawn: older ones are skipped */
    var drawing = false;
    var controller = null;
    var delay = MIN_DELAY;
    var ctx2d = canvas.getContext('2d');

    function draw() {
      if (drawing || pending === null) return;
      var blob = pending;
      pending = null;
      drawing = true;
      createImageBitmap(blob).then(function (bitmap) {
        if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
          canvas.width = bitmap.width;
          canvas.height = bitmap.height;
        }
        ctx2d.drawImage(bitmap, 0, 0);
        if (bitmap.close) bitmap.close();
        drawn += 1;
        canvas.dataset.frames = String(drawn);
      }).catch(function () { /* a frame that does not decode is skipped */ })
        .then(function () { drawing = false; draw(); });
    }

    function run() {
      if (leaving()) return;
      controller = new AbortController();
      fetch(url, { credentials: 'same-origin', signal: controller.signal, cache: 'no-store' })
        .then(function (resp) {
          if (!resp.ok || !resp.body) {
            return resp.text().then(function (text) {
              var err = new Error(text || ('video: HTTP ' + resp.status));
              err.status = resp.status;
              throw err;
            });
          }
          delay = MIN_DELAY;
          var reader = resp.body.getReader();
          var buf = new Uint8Array(1 << 20);
          var start = 0;
          var end = 0;
          var need = -1; /* body bytes of the current part once its headers are read */

          function append(chunk) {
            if (end + chunk.length > buf.length) {
              var size = end - start + chunk.length;
              var bigger = size > buf.length ? new Uint8Array(Math.max(size, buf.length * 2)) : buf;
              bigger.set(buf.subarray(start, end), 0);
              buf = bigger;
              end -= start;
              start = 0;
            }
            buf.set(chunk, end);
            end += chunk.length;
          }

          function parse() {
            for (;;) {
              if (need < 0) {
                var at = indexOfCrlfCrlf(buf, start, end);
                if (at < 0) return;
                var head = new TextDecoder('latin1').decode(buf.subarray(start, at));
                var m = /content-length:\s*(\d+)/i.exec(head);
                if (!m) throw new Error('video: a part without Content-Length');
                need = parseInt(m[1], 10);
                start = at + 4;
              }
              if (end - start < need) return;
              pending = new Blob([buf.slice(start, start + need)], { type: 'image/jpeg' });
              start += need;
              need = -1;
              draw();
            }
          }

          function pump() {
            return reader.read().then(function (r) {
              if (r.done) return;
              append(r.value);
              parse();
              return pump();
            });
          }
          return pump();
        })
        .then(function () { retry('video ended'); })
        .catch(function (err) {
          if (leaving() || (err && err.name === 'AbortError')) return;
          if (err && (err.status === 401 || err.status === 403 || err.status === 404)) {
            showError(err.message);
            return;
          }
          retry(err && err.message ? err.message : 'video lost');
        });
    }

    function retry(why) {
      if (leaving()) return;
      showError(why + ': reconnecting');
      setTimeout(run, delay);
      delay = Math.min(delay * 2, MAX_DELAY);
    }

    run();
    return {
      frames: function () { return drawn; },
      stop: function () { if (controller) controller.abort(); }
    };
  }

  /* Resolves to {rtc, stream}: the WebRTC console object, or the MJPEG reader. */
  function video(root, leaving) {
    var canvas = byId('console-canvas');
    var videoEl = byId('console-video');
    var fallback = function () {
      root.dataset.video = 'mjpeg';
      return { rtc: null, stream: mjpeg(root, canvas, leaving) };
    };
    if (!root.dataset.webrtc || typeof window.startWebRTC !== 'function') {
      return Promise.resolve(fallback());
    }
    root.dataset.video = 'trying-webrtc';
    return Promise.resolve()
      .then(function () {
        return window.startWebRTC(videoEl, root.dataset.device, { timeoutMs: WEBRTC_WAIT });
      })
      .then(function (rtc) {
        videoEl.hidden = false;
        canvas.hidden = true;
        root.dataset.video = 'webrtc';
        rtc.onerror = showError;
        return { rtc: rtc, stream: null };
      })
      .catch(fallback);
  }

  /* ---- keyboard and mouse: the websocket bridge ------------------------------------------ */

  function bridge(root, leaving) {
    var url = (location.protocol === 'https:' ? 'wss' : 'ws') + '://' + location.host + root.dataset.ws;
    var socket = null;
    var ready = false;
    var ended = false;
    var delay = MIN_DELAY;

    function send(event) {
      if (!socket || socket.readyState !== 1) return false;
      socket.send(JSON.stringify(event));
      return true;
    }

    function showState(msg) {
      var el = byId('console-device-state');
      if (!el) return;
      var parts = [];
      if ('power' in msg) el.dataset.power = msg.power ? 'on' : 'off';
      if ('signal' in msg) el.dataset.signal = msg.signal ? 'yes' : 'no';
      if ('hid_online' in msg) el.dataset.hid = msg.hid_online ? 'online' : 'offline';
      if (el.dataset.power) parts.push('power ' + el.dataset.power);
      if (el.dataset.signal) parts.push(el.dataset.signal === 'yes' ? 'video signal' : 'no video signal');
      if (el.dataset.hid) parts.push('keyboard ' + el.dataset.hid);
      el.textContent = parts.join(' \u00b7 ');
    }

    function connect() {
      if (leaving() || ended) return;
      setStatus('connecting', 'connecting\u2026');
      try {
        socket = new WebSocket(url);
      } catch (err) {
        retry();
        return;
      }
      socket.addEventListener('message', function (event) {
        var msg;
        try { msg = JSON.parse(event.data); } catch (err) { return; }
        if (!msg || typeof msg !== 'object') return;
        if (msg.type === 'ready') {
          ready = true;
          delay = MIN_DELAY;
          root.dataset.ready = '1';
          root.dataset.inputAllowed = msg.input ? '1' : '0';
          setStatus('open', msg.input ? 'connected' : 'connected (view only)');
          showError('');
        } else if (msg.type === 'state') {
          showState(msg);
        } else if (msg.type === 'error' || msg.type === 'refused') {
          root.dataset.lastError = msg.type;
          showError(String(msg.error || msg.type));
        }
      });
      socket.addEventListener('close', function (event) {
        ready = false;
        root.dataset.ready = '0';
        if (event.code === SESSION_ENDED) {
          ended = true;
          setStatus('ended', 'session ended: log in again');
          return;
        }
        retry();
      });
    }

    function retry() {
      if (leaving() || ended) return;
      setStatus('error', 'disconnected: reconnecting');
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, MAX_DELAY);
    }

    connect();
    return {
      send: send,
      isReady: function () { return ready; },
      close: function () { if (socket) socket.close(); }
    };
  }

  function listen(root, link) {
    var screen = byId('console-screen');
    var canvas = byId('console-canvas');
    var held = {};
    var move = null;
    var moveScheduled = false;
    screen.dataset.input = '1';

    function key(code, state) {
      if (!code) return;
      if (state) held[code] = true; else delete held[code];
      link.send({ event_type: 'key', event: { key: code, state: state } });
    }

    function releaseAll() {
      Object.keys(held).forEach(function (code) { key(code, false); });
    }

    screen.addEventListener('keydown', function (e) {
      e.preventDefault();
      if (e.repeat) return; /* the host repeats a held key itself */
      key(e.code, true);
    });
    screen.addEventListener('keyup', function (e) {
      e.preventDefault();
      key(e.code, false);
    });
    screen.addEventListener('blur', releaseAll);

    function position(e) {
      var target = e.target.getBoundingClientRect ? e.target : canvas;
      var box = target.getBoundingClientRect();
      function scale(v, size) {
        var r = size > 0 ? Math.min(Math.max(v / size, 0), 1) : 0;
        return Math.round(MOUSE_MIN + r * (MOUSE_MAX - MOUSE_MIN));
      }
      return { x: scale(e.clientX - box.left, box.width), y: scale(e.clientY - box.top, box.height) };
    }

    screen.addEventListener('mousemove', function (e) {
      move = position(e);
      if (moveScheduled) return;
      moveScheduled = true;
      requestAnimationFrame(function () {
        moveScheduled = false;
        if (move) link.send({ event_type: 'mouse_move', event: { to: move } });
        move = null;
      });
    });
    screen.addEventListener('mousedown', function (e) {
      screen.focus();
      if (BUTTONS[e.button]) link.send({ event_type: 'mouse_button', event: { button: BUTTONS[e.button], state: true } });
      e.preventDefault();
    });
    screen.addEventListener('mouseup', function (e) {
      if (BUTTONS[e.button]) link.send({ event_type: 'mouse_button', event: { button: BUTTONS[e.button], state: false } });
      e.preventDefault();
    });
    screen.addEventListener('contextmenu', function (e) { e.preventDefault(); });
    screen.addEventListener('wheel', function (e) {
      e.preventDefault();
      var dy = e.deltaY < 0 ? 1 : e.deltaY > 0 ? -1 : 0;
      var dx = e.deltaX < 0 ? -1 : e.deltaX > 0 ? 1 : 0;
      if (dx || dy) link.send({ event_type: 'mouse_wheel', event: { delta: { x: dx, y: dy } } });
    }, { passive: false });
  }

  function start() {
    var root = byId('console');
    if (!root || !('WebSocket' in window) || !window.fetch) return;
    var leavingNow = false;
    function leaving() { return leavingNow; }
    var link = bridge(root, leaving);
    var media = { rtc: null, stream: null };
    video(root, leaving).then(function (m) { media = m; });
    /* input over WebRTC's DataChannel when it is up, else over the websocket */
    var input = {
      send: function (event) {
        if (media.rtc && media.rtc.channel && media.rtc.channel.readyState === 'open') {
          return media.rtc.send(event.event_type, event.event);
        }
        return link.send(event);
      }
    };
    if (root.dataset.input === '1') listen(root, input);
    window.fleetConsole = {
      send: input.send,
      ready: link.isReady,
      frames: function () { return media.stream ? media.stream.frames() : 0; }
    };
    window.addEventListener('pagehide', function () {
      leavingNow = true;
      link.close();
      if (media.stream) media.stream.stop();
      if (media.rtc) media.rtc.close();
    });
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
