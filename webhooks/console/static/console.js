// The console's own script (CSP: script-src 'self', no inline script anywhere).
(function () {
  "use strict";

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Every htmx request carries the session's CSRF token.
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrf();
  });

  // htmx swaps error answers too (a refused form shows its errors next to the fields).
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status >= 400 && status < 500) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // Forms that ask for a confirmation first: data-confirm="…".
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);

  function drawCharts(root) {
    if (!window.echarts) {
      return;
    }
    root.querySelectorAll("[data-chart]").forEach(function (node) {
      var data = JSON.parse(node.getAttribute("data-chart"));
      var chart = window.echarts.getInstanceByDom(node) || window.echarts.init(node);
      if (data.series) {  // an analysis: one line per numeric column over its periods
        chart.setOption({
          animation: false,
          tooltip: { trigger: "axis" },
          legend: { data: data.series.map(function (s) { return s.name; }) },
          grid: { left: 56, right: 24, top: 40, bottom: 32 },
          xAxis: { type: "category", data: data.days },
          yAxis: { type: "value" },
          series: data.series.map(function (s) { return { name: s.name, type: "line", data: s.data }; })
        });
        node.setAttribute("data-drawn", "1");
        return;
      }
      chart.setOption({
        animation: false,
        tooltip: { trigger: "axis" },
        legend: { data: ["营业额（元）", "新增会员"] },
        grid: { left: 48, right: 48, top: 40, bottom: 32 },
        xAxis: { type: "category", data: data.days },
        yAxis: [
          { type: "value", name: "元" },
          { type: "value", name: "人", minInterval: 1 }
        ],
        series: [
          { name: "营业额（元）", type: "bar", data: data.revenue },
          { name: "新增会员", type: "line", yAxisIndex: 1, data: data.members }
        ]
      });
      node.setAttribute("data-drawn", "1");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
    window.addEventListener("resize", function () {
      document.querySelectorAll("[data-chart]").forEach(function (node) {
        var chart = window.echarts && window.echarts.getInstanceByDom(node);
        if (chart) {
          chart.resize();
        }
      });
    });
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    drawCharts(event.target);
  });
})();

// The earn rules form: "模拟" asks the server for the simulation of what the form says now.
document.addEventListener("click", function (event) {
  var button = event.target.closest && event.target.closest("[data-simulate]");
  if (button && window.htmx) {
    window.htmx.trigger(button.form, "simulate");
  }
});
