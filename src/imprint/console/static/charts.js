// The console's charts, drawn with uPlot (static/vendor/uplot/, see its README.md).
//
// * The dashboard's provisioning attempts per UTC day: stacked bars, every day labelled.
// * A channel's fields over time: one chart per field on a UTC time axis, each entry a
//   point joined by steps (a burst of entries reads as a column of points), polled
//   every 5 seconds.
//
// Data comes from <script type="application/json"> blocks and the console's JSON
// endpoints (the CSP allows no inline script). The labels each axis drew are kept in
// the chart element's data-x-labels attribute, for tests and for the curious.
"use strict";
(() => {
  if (typeof uPlot === "undefined") {
    return; // the library did not load: the tables below the charts stay open
  }
  const INK = "#1d2330";
  const MUTED = "#5d6677";
  const GRID = "#e3e6ec";
  const BRAND = "#1f4fd1";
  const OK = "#1e8a4c";
  const BAD = "#c0282d";
  const FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
  const pad = (n) => String(n).padStart(2, "0");

  // "2026-12-03 14:05:09 UTC" for a Unix time in seconds.
  function stamp(ts) {
    return `${new Date(ts * 1e3).toISOString().slice(0, 19).replace("T", " ")} UTC`;
  }

  function readJson(id) {
    const block = document.getElementById(id);
    return block ? JSON.parse(block.textContent) : null;
  }

  function axis(extra) {
    return {
      font: FONT,
      labelFont: FONT,
      stroke: MUTED,
      grid: { stroke: GRID, width: 1 },
      ticks: { stroke: GRID, width: 1, size: 4 },
      ...extra,
    };
  }

  // Draw with the element's width, and follow it when the layout changes.
  function sized(element, height, make) {
    const width = () => Math.max(200, Math.floor(element.clientWidth));
    const chart = make(width(), height);
    new ResizeObserver(() => {
      if (Math.abs(chart.width - width()) >= 1) {
        chart.setSize({ width: width(), height });
      }
    }).observe(element);
    return chart;
  }

  // A table that was open for readers without JavaScript folds once its chart is drawn.
  function fold(root) {
    for (const details of root.querySelectorAll("details.chart-data")) {
      details.open = false;
    }
  }

  // --- Dashboard: attempts per UTC day --------------------------------------------------

  // Each day's label: "3" (with "Dec" below it on the first day and the 1st of a
  // month); where a day has too little room, "12-03" turned upright.
  function dailyLabels(element, splits, upright) {
    const labels = splits.map((ts, i) => {
      const day = new Date(ts * 1e3);
      const month = day.getUTCMonth();
      if (upright) {
        return `${pad(month + 1)}-${pad(day.getUTCDate())}`;
      }
      const first = i === 0 || new Date(splits[i - 1] * 1e3).getUTCMonth() !== month;
      return first ? `${day.getUTCDate()}\n${MONTHS[month]}` : String(day.getUTCDate());
    });
    element.dataset.xLabels = JSON.stringify(labels);
    return labels;
  }

  function drawDaily(element) {
    const data = readJson(element.dataset.source);
    if (!data || data.at.length === 0) {
      return;
    }
    const totals = data.ok.map((ok, i) => ok + data.failed[i]);
    const top = Math.max(4, ...totals);
    const bars = uPlot.paths.bars({ size: [0.7, 48], align: 0 });
    const half = 12 * 3600;
    const upright = (u) => (u.width - 60) / data.at.length < 34;
    sized(element, 220, (width, height) =>
      new uPlot(
        {
          width,
          height,
          tzDate: utc,
          legend: { show: true, live: true },
          cursor: { y: false, points: { show: false } },
          scales: {
            x: { time: true, range: () => [data.at[0] - half, data.at[data.at.length - 1] + half] },
            y: { range: () => [0, Math.ceil(top * 1.1)] },
          },
          series: [
            { label: "Day (UTC)", value: (u, ts) => (ts == null ? "–" : data.day[data.at.indexOf(ts)] ?? "–") },
            {
              // drawn first and as tall as the day's total: its visible top is the failures
              label: "failed",
              stroke: BAD,
              fill: BAD,
              width: 0,
              paths: bars,
              points: { show: false },
              value: (u, v, s, idx) => (idx == null ? "–" : String(data.failed[idx])),
            },
            {
              label: "succeeded",
              stroke: OK,
              fill: OK,
              width: 0,
              paths: bars,
              points: { show: false },
              value: (u, v, s, idx) => (idx == null ? "–" : String(data.ok[idx])),
            },
          ],
          axes: [
            axis({
              grid: { show: false },
              size: (u) => (upright(u) ? 50 : 48),
              rotate: (u) => (upright(u) ? 90 : 0),
              splits: () => data.at.slice(),
              values: (u, splits) => dailyLabels(element, splits, upright(u)),
            }),
            axis({
              size: 44,
              incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000],
              values: (u, splits) => splits.map((v) => String(v)),
            }),
          ],
        },
        [data.at, totals, data.ok],
        element,
      ),
    );
    fold(element.closest("section") || document);
  }

  // --- Channel: each field over time --------------------------------------------------

  // Tick labels for a UTC time axis, 24-hour: the date on the first tick and where the
  // day changes, seconds when the ticks are less than a minute apart.
  function timeLabels(element, splits, increment) {
    let previousDay = null;
    const labels = splits.map((ts) => {
      const at = new Date(ts * 1e3);
      const day = `${at.getUTCFullYear()}-${pad(at.getUTCMonth() + 1)}-${pad(at.getUTCDate())}`;
      let text;
      if (increment >= 86400) {
        text = day.slice(5);
      } else {
        text = `${pad(at.getUTCHours())}:${pad(at.getUTCMinutes())}`;
        if (increment < 60) {
          text += `:${pad(at.getUTCSeconds())}`;
        }
        if (day !== previousDay) {
          text += `\n${day.slice(5)}`;
        }
      }
      previousDay = day;
      return text;
    });
    element.dataset.xLabels = JSON.stringify(labels);
    return labels;
  }

  function seriesOf(data, name) {
    const xs = [];
    const ys = [];
    for (const entry of data.entries) {
      const value = Number.parseFloat(entry[name]);
      if (Number.isFinite(value)) {
        xs.push(Date.parse(entry.created_at) / 1e3);
        ys.push(value);
      }
    }
    return [xs, ys];
  }

  function fieldChart(element, points) {
    const label = element.dataset.label || element.dataset.field;
    return sized(element, 200, (width, height) =>
      new uPlot(
        {
          width,
          height,
          tzDate: utc,
          cursor: { sync: { key: "channel" } },
          scales: {
            x: {
              time: true,
              // at least a minute wide: a burst within a second is a column of points
              range: (u, min, max) => (max - min < 60 ? [(min + max) / 2 - 30, (min + max) / 2 + 30] : [min, max]),
            },
          },
          series: [
            { label: "Time (UTC)", value: (u, ts) => (ts == null ? "–" : stamp(ts)) },
            {
              label,
              stroke: BRAND,
              width: 1,
              paths: uPlot.paths.stepped({ align: 1 }),
              points: { show: true, size: 6, fill: BRAND, stroke: BRAND },
            },
          ],
          axes: [
            axis({
              space: 90,
              size: 52,
              values: (u, splits, i, space, increment) => timeLabels(element, splits, increment),
            }),
            axis({ size: 56 }),
          ],
        },
        points,
        element,
      ),
    );
  }

  function drawChannel(root) {
    const status = document.getElementById("chart-status");
    const count = document.getElementById("entry-count");
    const charts = new Map();

    function show(data) {
      for (const element of root.querySelectorAll('[data-chart="field"]')) {
        const name = element.dataset.field;
        const points = seriesOf(data, name);
        const latest = root.querySelector(`[data-latest="${name}"]`);
        if (points[0].length === 0) {
          element.dataset.empty = "true";
          element.textContent = charts.has(name) ? "" : "No numeric data yet.";
          charts.get(name)?.destroy();
          charts.delete(name);
          continue;
        }
        delete element.dataset.empty;
        if (charts.has(name)) {
          charts.get(name).setData(points);
        } else {
          element.textContent = "";
          charts.set(name, fieldChart(element, points));
        }
        if (latest) {
          latest.textContent = `latest ${points[1][points[1].length - 1]}`;
        }
      }
      if (count) {
        count.textContent = String(data.last_entry_id);
      }
      const now = new Date().toISOString().slice(11, 19);
      status.textContent = `${data.entries.length} entries, updated ${now} UTC`;
    }

    async function poll() {
      try {
        const answer = await fetch(root.dataset.source, { credentials: "same-origin", cache: "no-store" });
        if (!answer.ok) {
          status.textContent = `not updated (HTTP ${answer.status})`;
          return;
        }
        show(await answer.json());
      } catch (error) {
        status.textContent = "not updated (offline?)";
      }
    }

    const initial = readJson(root.dataset.initial);
    if (initial) {
      show(initial);
      fold(root);
    }
    window.setInterval(poll, 5000);
  }

  for (const element of document.querySelectorAll('[data-chart="daily"]')) {
    drawDaily(element);
  }
  const channel = document.getElementById("charts");
  if (channel && channel.querySelector('[data-chart="field"]')) {
    drawChannel(channel);
  }
})();
