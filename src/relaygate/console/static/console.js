// relaygate console: the CSRF header on htmx requests, copy buttons, the language switcher
// and the charts. No inline script anywhere (the Content-Security-Policy forbids it).
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Every htmx request carries the session's CSRF token (forms also carry it as a field).
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) { event.detail.headers["X-CSRF-Token"] = token; }
  });
  document.addEventListener("DOMContentLoaded", function () {
    var token = csrfToken();
    if (token) { document.body.setAttribute("hx-headers", JSON.stringify({"X-CSRF-Token": token})); }
  });

  function copy(button) {
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) { return; }
    var text = source.textContent.trim();
    var done = function () { button.textContent = "✓"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else {
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      done();
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (button) { event.preventDefault(); copy(button); }
  });
  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-autosubmit]")) { event.target.form.submit(); }
  });

  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#6b7280"];

  function draw(box) {
    if (box.dataset.drawn || typeof uPlot === "undefined") { return; }
    var source = box.querySelector('script[type="application/json"]');
    if (!source) { return; }
    var chart = JSON.parse(source.textContent);
    box.dataset.drawn = "1";
    var data = [chart.x].concat(chart.series.map(function (s) { return s.values; }));
    var series = [{}].concat(chart.series.map(function (s, i) {
      return {label: s.label, stroke: COLORS[i % COLORS.length], width: 2, points: {size: 4}};
    }));
    if (chart.series.length === 0) {
      var empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = "—";
      box.appendChild(empty);
      return;
    }
    var unit = box.getAttribute("data-unit") || "";
    var options = {
      width: Math.max(280, box.clientWidth),
      height: 260,
      series: series,
      axes: [{}, {size: function (u, values) {
        var longest = (values || []).reduce(function (n, v) { return Math.max(n, String(v).length); }, 4);
        return 24 + longest * 8;
      }, values: function (u, values) {
        var top = Math.max.apply(null, values.map(Math.abs));
        var places = top >= 1 ? 2 : top >= 0.01 ? 4 : 6;
        return values.map(function (v) { return unit === "USD" ? "$" + v.toFixed(places) : v.toLocaleString(); });
      }}],
      scales: {x: {time: true}},
    };
    box.uplot = new uPlot(options, data, box);
  }

  function drawAll(root) {
    (root || document).querySelectorAll(".chart[data-chart]").forEach(draw);
  }
  document.addEventListener("htmx:load", function (event) { drawAll(event.target); });
  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  window.addEventListener("resize", function () {
    document.querySelectorAll(".chart[data-chart]").forEach(function (box) {
      if (box.uplot) { box.uplot.setSize({width: Math.max(280, box.clientWidth), height: 260}); }
    });
  });
})();
