/* saltext-fleet web UI: a PiKVM console over WebRTC, for the console page to call.
 *
 *   startWebRTC(videoElement, deviceName[, {timeoutMs}]) -> Promise
 *
 * Offers a receive-only video track and a DataChannel "hid" to the engine
 * (POST /kvm/<name>/console/webrtc with the page's session cookie), shows the device's video
 * in videoElement and resolves, once ICE has connected, to a console object:
 *
 *   {input, send(eventType, event), sendKey(code, pressed), close(), pc, channel}
 *
 * input is false for a user who may watch but not type (the engine refuses their events).
 * Events are kvmd's: send('key', {key: 'KeyA', state: true}), send('mouse_move',
 * {to: {x, y}}) with x and y from -32768 to 32767. The engine tells why it refused an event
 * on the channel ({"error": ...}); console.onerror(message) receives it.
 *
 * The promise rejects (and everything is closed) when the engine refuses the offer or ICE has
 * not connected within timeoutMs (default 5000): the page then falls back to the MJPEG stream.
 * WebRTC needs UDP between the browser and the master's host (see the PiKVM docs).
 * Plain ES2017, nothing from a CDN.
 */
'use strict';

(function () {
  var DEFAULT_TIMEOUT_MS = 5000;
  var GATHER_MS = 2000; /* the engine takes no trickled candidates: gather first, then offer */

  function waitForGathering(pc, ms) {
    if (pc.iceGatheringState === 'complete') {
      return Promise.resolve();
    }
    return new Promise(function (resolve) {
      var timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      }
      function check() {
        if (pc.iceGatheringState === 'complete') {
          done();
        }
      }
      pc.addEventListener('icegatheringstatechange', check);
    });
  }

  function waitForConnected(pc, ms) {
    return new Promise(function (resolve, reject) {
      var timer = setTimeout(function () {
        finish(new Error('WebRTC did not connect within ' + ms + ' ms'));
      }, ms);
      function finish(error) {
        clearTimeout(timer);
        pc.removeEventListener('connectionstatechange', check);
        if (error) {
          reject(error);
        } else {
          resolve();
        }
      }
      function check() {
        var state = pc.connectionState;
        if (state === 'connected') {
          finish(null);
        } else if (state === 'failed' || state === 'closed') {
          finish(new Error('WebRTC connection ' + state));
        }
      }
      pc.addEventListener('connectionstatechange', check);
      check();
    });
  }

  async function startWebRTC(video, name, options) {
    var timeoutMs = (options && options.timeoutMs) || DEFAULT_TIMEOUT_MS;
    if (typeof RTCPeerConnection === 'undefined') {
      throw new Error('this browser has no WebRTC');
    }
    var pc = new RTCPeerConnection({iceServers: []});
    var channel = pc.createDataChannel('hid', {ordered: true});
    var console_ = {
      pc: pc,
      channel: channel,
      input: false,
      onerror: null,
      send: function (eventType, event) {
        if (!console_.input || channel.readyState !== 'open') {
          return false;
        }
        channel.send(JSON.stringify({event_type: eventType, event: event}));
        return true;
      },
      sendKey: function (code, pressed) {
        return console_.send('key', {key: code, state: !!pressed});
      },
      close: function () {
        window.removeEventListener('pagehide', console_.close);
        try { channel.close(); } catch (e) { /* closed already */ }
        pc.close();
        if (video.srcObject) {
          video.srcObject = null;
        }
      }
    };
    channel.addEventListener('message', function (msg) {
      var doc = null;
      try { doc = JSON.parse(msg.data); } catch (e) { return; }
      if (doc && doc.error && typeof console_.onerror === 'function') {
        console_.onerror(String(doc.error));
      }
    });
    pc.addTransceiver('video', {direction: 'recvonly'});
    pc.addEventListener('track', function (ev) {
      video.srcObject = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
      video.muted = true;
      var played = video.play();
      if (played && played.catch) {
        played.catch(function () { /* autoplay refused: the user clicks play */ });
      }
    });
    window.addEventListener('pagehide', console_.close);
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitForGathering(pc, GATHER_MS);
      var resp = await fetch('/kvm/' + encodeURIComponent(name) + '/console/webrtc', {
        method: 'POST',
        credentials: 'same-origin',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type})
      });
      var answer = null;
      try { answer = await resp.json(); } catch (e) { answer = null; }
      if (!resp.ok) {
        throw new Error((answer && answer.error) || ('the engine answered HTTP ' + resp.status));
      }
      console_.input = !!answer.input;
      await pc.setRemoteDescription({sdp: answer.sdp, type: answer.type});
      await waitForConnected(pc, timeoutMs);
      return console_;
    } catch (error) {
      console_.close();
      throw error;
    }
  }

  window.startWebRTC = startWebRTC;
})();
