/* saltext-fleet web UI: the alert routes form shows only the chosen destination's fields.
 *
 * Plain ES2017, nothing from a CDN. Without it every destination's fields show, and the
 * server reads only those of the destination chosen.
 */
'use strict';

(function () {
  function start() {
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
