/* saltext-fleet web UI: the alert routes page. Its form shows only the chosen destination's
 * fields, and a button with data-confirm asks before its form is sent (deleting a route).
 *
 * Plain ES2017, nothing from a CDN. Without it every destination's fields show (the server
 * reads only those of the destination chosen) and nothing asks.
 */
'use strict';

(function () {
  function confirmations() {
    var buttons = document.querySelectorAll('button[data-confirm]');
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].addEventListener('click', function (event) {
        if (!window.confirm(this.dataset.confirm)) event.preventDefault();
      });
    }
  }

  function start() {
    confirmations();
    var select = document.getElementById('route-destination');
    if (!select) return;
    function show() {
      var sets = document.querySelectorAll('fieldset.route-target');
      for (var i = 0; i < sets.length; i++) {
        var mine = sets[i].dataset.destination === select.value;
        sets[i].hidden = !mine;
        sets[i].disabled = !mine; /* a hidden destination's fields are not sent */
      }
    }
    select.addEventListener('change', show);
    show();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
