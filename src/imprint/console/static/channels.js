// Live charts of a channel: polls the console's entries JSON and draws each field on
// its <canvas>. Plain JavaScript, no library.
"use strict";
(() => {
  const root = document.getElementById("charts");
  if (!root) {
    return;
  }
  const source = root.dataset.source;
  const status = document.getElementById("chart-status");
  const count = document.getElementById("entry-count");

  function draw(canvas, points) {
    const ctx = canvas.getContext("2d");
    const width = canvas.width;
    const height = canvas.height;
    const pad = 34;
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#5d6677";
    if (points.length === 0) {
      ctx.fillText("No numeric data yet", pad, height / 2);
      return;
    }
    let low = Math.min(...points.map((p) => p.y));
    let high = Math.max(...points.map((p) => p.y));
    if (low === high) {
      low -= 1;
      high += 1;
    }
    const first = points[0].x;
    const span = Math.max(1, points[points.length - 1].x - first);
    const x = (v) => pad + ((v - first) / span) * (width - pad - 8);
    const y = (v) => height - 18 - ((v - low) / (high - low)) * (height - 30);
    ctx.strokeStyle = "#dde1e8";
    ctx.beginPath();
    ctx.moveTo(pad, 8);
    ctx.lineTo(pad, height - 18);
    ctx.lineTo(width - 4, height - 18);
    ctx.stroke();
    ctx.fillText(String(high), 2, 14);
    ctx.fillText(String(low), 2, height - 20);
    ctx.strokeStyle = "#1f4fd1";
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.x), y(p.y)) : ctx.lineTo(x(p.x), y(p.y))));
    ctx.stroke();
    ctx.fillStyle = "#1f4fd1";
    points.forEach((p) => ctx.fillRect(x(p.x) - 2, y(p.y) - 2, 4, 4));
  }

  async function poll() {
    try {
      const answer = await fetch(source, { credentials: "same-origin", cache: "no-store" });
      if (!answer.ok) {
        status.textContent = `not updated (HTTP ${answer.status})`;
        return;
      }
      const data = await answer.json();
      for (const canvas of root.querySelectorAll("canvas[data-field]")) {
        const name = canvas.dataset.field;
        const points = data.entries
          .map((e) => ({ x: Date.parse(e.created_at), y: Number.parseFloat(e[name]) }))
          .filter((p) => Number.isFinite(p.y));
        draw(canvas, points);
        const latest = root.querySelector(`[data-latest="${name}"]`);
        if (latest && points.length > 0) {
          latest.textContent = `latest ${points[points.length - 1].y}`;
        }
      }
      if (count) {
        count.textContent = String(data.last_entry_id);
      }
      status.textContent = `${data.entries.length} entries, updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      status.textContent = "not updated (offline?)";
    }
  }

  poll();
  window.setInterval(poll, 5000);
})();
