// One job: summary, loss and accuracy charts (inline SVG), latest metrics, live log tail, events.
"use strict";
(() => {
  const {el, duration, cost, badge, progressBar, showError, FINAL} = Dashboard;
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];
  const W = 480, H = 240, PAD = {left: 48, right: 12, top: 12, bottom: 28};
  let timer = null;

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // Group metric rows {name, value, step} into series {name: [[x, y], ...]} for the names that match.
  function seriesOf(history, pattern) {
    const series = new Map();
    history.forEach((point, index) => {
      if (!pattern.test(point.name) || point.value === null) return;
      if (!series.has(point.name)) series.set(point.name, []);
      series.get(point.name).push([point.step ?? index, point.value]);
    });
    return series;
  }

  function drawChart(target, series) {
    target.replaceChildren();
    const points = [...series.values()].flat();
    if (!points.length) {
      target.appendChild(svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "muted"}, "no data yet"));
      return;
    }
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (x0 === x1) x1 = x0 + 1;
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
    const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
    target.appendChild(svg("rect", {x: PAD.left, y: PAD.top, width: W - PAD.left - PAD.right,
                                    height: H - PAD.top - PAD.bottom, class: "plot"}));
    for (const y of [y0, (y0 + y1) / 2, y1]) {
      target.appendChild(svg("line", {x1: PAD.left, x2: W - PAD.right, y1: sy(y), y2: sy(y), class: "grid"}));
      target.appendChild(svg("text", {x: PAD.left - 4, y: sy(y) + 4, "text-anchor": "end", class: "axis"},
                             y.toPrecision(3)));
    }
    target.appendChild(svg("text", {x: PAD.left, y: H - 8, class: "axis"}, `epoch ${x0}`));
    target.appendChild(svg("text", {x: W - PAD.right, y: H - 8, "text-anchor": "end", class: "axis"}, `epoch ${x1}`));
    [...series.entries()].forEach(([name, values], index) => {
      const color = COLORS[index % COLORS.length];
      target.appendChild(svg("polyline", {points: values.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" "),
                                          fill: "none", stroke: color, "stroke-width": 2, "data-series": name}));
      for (const [x, y] of values) target.appendChild(svg("circle", {cx: sx(x), cy: sy(y), r: 3, fill: color}));
      const legendY = PAD.top + 14 + index * 16;
      target.appendChild(svg("rect", {x: W - PAD.right - 134, y: legendY - 12, width: 130, height: 16, class: "legend-bg"}));
      target.appendChild(svg("rect", {x: W - PAD.right - 130, y: legendY - 9, width: 10, height: 10, fill: color}));
      target.appendChild(svg("text", {x: W - PAD.right - 115, y: legendY, class: "legend"}, name));
    });
  }

  function render(job) {
    document.title = `${job.name || job.job_id} · Essedum executor`;
    document.getElementById("name").textContent = job.name || job.job_id;
    document.getElementById("status").replaceWith(Object.assign(badge(job.status), {id: "status"}));
    document.getElementById("phase").textContent = job.phase;
    document.getElementById("progress").replaceChildren(progressBar(job.percent, job.epoch, job.epochs));
    document.getElementById("elapsed").textContent = duration(job.elapsed_seconds);
    document.getElementById("cost").textContent = cost(job.cost_usd);
    document.getElementById("kind").textContent = `${job.kind} on ${job.backend}`;
    document.getElementById("job-id").textContent = job.job_id;
    document.getElementById("cancel").hidden = FINAL.has(job.status);
    const failure = document.getElementById("failure");
    failure.textContent = job.failure_reason || "";
    failure.hidden = !job.failure_reason;
    drawChart(document.getElementById("loss-chart"), seriesOf(job.metric_history, /loss/i));
    drawChart(document.getElementById("accuracy-chart"), seriesOf(job.metric_history, /acc/i));
    document.querySelector("#metrics tbody").replaceChildren(...Object.entries(job.metrics).map(([name, value]) => {
      const tr = document.createElement("tr");
      tr.append(el("th", name), el("td", value === null ? "–" : Number(value).toPrecision(4)));
      return tr;
    }));
    const log = document.getElementById("log");
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = job.log_tail;
    if (atBottom) log.scrollTop = log.scrollHeight;
    document.querySelector("#events tbody").replaceChildren(...job.events.map((event) => {
      const tr = document.createElement("tr");
      tr.append(el("td", (event.time || "").slice(0, 23)), el("td", event.status), el("td", event.phase),
                el("td", event.message || ""));
      return tr;
    }));
  }

  async function refresh() {
    try {
      const job = await ExecutorAuth.json(document.body.dataset.api);
      render(job);
      showError(null);
      if (FINAL.has(job.status) && timer !== null) {
        clearInterval(timer);
        timer = null;
      }
      document.body.dataset.loaded = job.status;
    } catch (error) {
      showError(error);
    }
  }

  document.getElementById("cancel").addEventListener("click", async () => {
    if (!window.confirm("Cancel this job?")) return;
    try {
      await ExecutorAuth.json(document.body.dataset.stop, {method: "POST"});
      refresh();
    } catch (error) {
      showError(error);
    }
  });
  ExecutorAuth.token();
  refresh();
  timer = setInterval(refresh, 2000);
})();
