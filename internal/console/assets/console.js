// Herald console: draws the overview charts (uPlot) from /overview.json
// and refreshes the counters. Every page works without it; it only ever
// writes text (textContent), never markup.
(function () {
  "use strict";
  var root = document.getElementById("overview");
  if (!root) { return; }
  var src = root.getAttribute("data-src");
  var refresh = parseInt(root.getAttribute("data-refresh"), 10) || 10;
  var colors = { accepted: "#2757c9", delivered: "#067647", deferred: "#b54708", bounced: "#b42318", complained: "#7a2e8e" };
  var plots = {};

  function set(sel, text) {
    var els = document.querySelectorAll(sel);
    for (var i = 0; i < els.length; i++) { els[i].textContent = text; }
  }

  function draw(s, types) {
    var fig = document.querySelector('figure.chart[data-range="' + s.range + '"]');
    if (!fig || typeof uPlot === "undefined") { return; }
    var data = [s.t];
    for (var i = 0; i < types.length; i++) { data.push(s.counts[types[i]] || []); }
    if (plots[s.range]) { plots[s.range].setData(data); return; }
    var series = [{}];
    for (var j = 0; j < types.length; j++) {
      series.push({ label: types[j], stroke: colors[types[j]] || "#555", width: 2 });
    }
    var width = Math.max(300, fig.clientWidth - 24);
    plots[s.range] = new uPlot({ width: width, height: 220, series: series, axes: [{}, { label: "events" }] }, data, fig);
    fig.classList.add("drawn");
  }

  function load() {
    fetch(src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (d) {
        for (var k in d.totals) { if (Object.prototype.hasOwnProperty.call(d.totals, k)) { set('[data-count="' + k.replace(/[^a-z]/g, "") + '"]', String(d.totals[k])); } }
        for (var t = 0; t < d.types.length; t++) { if (!(d.types[t] in d.totals)) { set('[data-count="' + d.types[t] + '"]', "0"); } }
        ["delivery_rate", "latency_p50", "latency_p99", "queue_messages", "queue_recipients", "oldest", "updated"].forEach(function (f) {
          set('[data-field="' + f + '"]', String(d[f]));
        });
        (d.series || []).forEach(function (s) { draw(s, d.types); });
      })
      .catch(function () { /* keep the last figures */ });
  }
  load();
  setInterval(load, refresh * 1000);
})();
