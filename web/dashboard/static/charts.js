// Charts of the overview and reports pages, drawn by uPlot (served by calltrack: no CDN).
// Each chart reads the JSON block named by its data-source; when drawn it records how many
// points it shows in data-points (x values times series), which the browser tests read.
(function () {
  "use strict";
  var COLORS = ["#0b5cad", "#e07b00", "#1b7a3a", "#b00020", "#6a3fa0", "#00838f", "#8d6e63", "#c2185b", "#546e7a", "#9e9d24"];

  function data(el) {
    var block = document.getElementById(el.getAttribute("data-source"));
    return JSON.parse(block.textContent);
  }

  function width(el) {
    return Math.max(280, el.clientWidth || 600);
  }

  function bars(count) {
    return uPlot.paths.bars({ size: [0.8, 60], gap: 1 });
  }

  function categoryAxis(labels) {
    return {
      values: function (u, splits) {
        return splits.map(function (i) { return labels[i] !== undefined ? labels[i] : ""; });
      },
      splits: function () { return labels.map(function (_, i) { return i; }); },
      rotate: 0,
    };
  }

  function done(el, plot, points) {
    el.setAttribute("data-points", String(points));
    el.setAttribute("data-drawn", "yes");
    window.addEventListener("resize", function () { plot.setSize({ width: width(el), height: 260 }); });
  }

  function stacked(el) {
    var d = data(el);
    var x = d.days.map(function (_, i) { return i; });
    var sums = x.map(function () { return 0; });
    var cumulative = d.series.map(function (s) {
      return s.calls.map(function (n, i) { sums[i] += n; return sums[i]; });
    });
    // draw the tallest (all sources) first, so each lower stack paints over it
    var order = cumulative.map(function (_, i) { return i; }).reverse();
    var series = [{ label: "Day" }];
    var values = [x];
    order.forEach(function (i) {
      var color = COLORS[i % COLORS.length];
      series.push({ label: d.series[i].source, fill: color, stroke: color, paths: bars(x.length), points: { show: false },
        value: function (u, v, si, di) { return di == null ? "" : d.series[i].calls[di]; } });
      values.push(cumulative[i]);
    });
    var labels = d.days.map(function (day) { return day.slice(5); });
    var plot = new uPlot({
      width: width(el), height: 260, series: series,
      scales: { x: { time: false, range: [-0.5, Math.max(0.5, x.length - 0.5)] } },
      axes: [categoryAxis(labels), {}],
    }, values, el);
    done(el, plot, x.length * d.series.length);
  }

  function categories(el, labels, sets) {
    var x = labels.map(function (_, i) { return i; });
    var series = [{ label: "" }];
    var values = [x];
    sets.forEach(function (set, i) {
      var color = COLORS[i % COLORS.length];
      series.push({ label: set.label, fill: color, stroke: color, paths: bars(x.length), points: { show: false } });
      values.push(set.values);
    });
    var plot = new uPlot({
      width: width(el), height: 260, series: series,
      scales: { x: { time: false, range: [-0.5, Math.max(0.5, x.length - 0.5)] } },
      axes: [categoryAxis(labels), {}],
    }, values, el);
    done(el, plot, x.length * sets.length);
  }

  function outcomes(el) {
    var d = data(el);
    categories(el, d.dispositions.map(function (p) { return p[0]; }), [
      { label: "Calls", values: d.dispositions.map(function (p) { return p[1]; }) },
    ]);
  }

  function sources(el) {
    var d = data(el);
    // answered drawn over calls: the difference is what was not answered
    categories(el, d.sources, [{ label: "Calls", values: d.calls }, { label: "Answered", values: d.answered }]);
  }

  var KINDS = { stacked: stacked, outcomes: outcomes, sources: sources };

  function init() {
    var charts = document.querySelectorAll("[data-chart]");
    for (var i = 0; i < charts.length; i++) {
      var kind = KINDS[charts[i].getAttribute("data-chart")];
      if (kind) {
        var t0 = performance.now();
        kind(charts[i]);
        charts[i].setAttribute("data-ms", (performance.now() - t0).toFixed(1));
      }
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
