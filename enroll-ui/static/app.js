// imapgate help desk: the only script. It refreshes the token list and the
// enrollment progress, and prints the receipt. Every page works without it.
"use strict";
(function () {
  // data-every: the poll period in ms (default 1000).
  function poll(el) {
    var url = el.getAttribute("data-refresh");
    var every = parseInt(el.getAttribute("data-every") || "1000", 10);
    var last = el.innerHTML;
    function tick() {
      fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
        if (!r.ok) { return null; }
        var done = r.headers.get("X-Job-Done") === "1";
        return r.text().then(function (t) { return { text: t, done: done }; });
      }).then(function (res) {
        if (res === null) { setTimeout(tick, 2000); return; }
        if (res.text !== last) { el.innerHTML = res.text; last = res.text; }
        if (res.done) { window.location.reload(); return; }
        setTimeout(tick, every);
      }).catch(function () { setTimeout(tick, 2000); });
    }
    setTimeout(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var els = document.querySelectorAll("[data-refresh]");
    for (var i = 0; i < els.length; i++) {
      if (!els[i].hasAttribute("data-done")) { poll(els[i]); }
    }
    var p = document.getElementById("print");
    if (p) { p.addEventListener("click", function () { window.print(); }); }
  });
})();
