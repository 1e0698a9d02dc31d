// A tuning: its trials (sortable by objective, selectable for the compare view), the objective by trial
// with the best so far, and the objective against each tuned hyperparameter (a log axis for log ranges).
"use strict";
(() => {
  const {el, badge, showError, FINAL} = Dashboard;
  const SVG = "http://www.w3.org/2000/svg";
  const W = 480, H = 220, PAD = {left: 56, right: 14, top: 10, bottom: 34};
  const selected = new Set();
  let order = null;  // null: by trial number; "desc" or "asc": by objective

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // Points [{x, y, label}] on a linear or log x axis (categorical: x is the value's index, ticks its text).
  function scatter(caption, xLabel, points, {log = false, categories = null, line = null, integer = false} = {}) {
    const figure = el("figure");
    figure.dataset.chart = caption;
    figure.appendChild(el("figcaption", caption));
    const plot = svg("svg", {class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": caption});
    figure.appendChild(plot);
    if (log) figure.dataset.scale = "log";
    const fx = (x) => (log ? Math.log10(x) : x);
    const xs = points.map((p) => fx(p.x)), ys = points.map((p) => p.y).concat((line || []).map((p) => p.y));
    let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (x0 === x1) { x0 -= 0.5; x1 += 0.5; }
    const xPad = (x1 - x0) * 0.05;
    const [first, last] = [x0, x1];
    x0 -= xPad; x1 += xPad;
    const pad = y1 > y0 ? (y1 - y0) * 0.1 : 0.01;
    y0 -= pad; y1 += pad;
    const sx = (x) => PAD.left + ((fx(x) - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
    const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
    plot.appendChild(svg("rect", {x: PAD.left, y: PAD.top, width: W - PAD.left - PAD.right,
                                  height: H - PAD.top - PAD.bottom, class: "plot"}));
    for (let index = 0; index <= 4; index += 1) {
      const y = y0 + ((y1 - y0) * index) / 4;
      plot.appendChild(svg("line", {x1: PAD.left, x2: W - PAD.right, y1: sy(y), y2: sy(y), class: "grid"}));
      plot.appendChild(svg("text", {x: PAD.left - 6, y: sy(y) + 4, "text-anchor": "end", class: "axis y-tick"},
                           Charts.format(y)));
    }
    // Ticks in the axis's own terms: each category, each whole trial, powers of ten (or five steps in log space
    // when the range is within a decade), else five even steps.
    const decades = Array.from({length: Math.max(0, Math.floor(last) - Math.ceil(first) + 1)},
                               (_, i) => Math.pow(10, Math.ceil(first) + i));
    const even = Array.from({length: 5}, (_, i) => first + ((last - first) * i) / 4);
    const ticks = categories ? categories.map((_, index) => index)
      : integer ? Array.from({length: last - first + 1}, (_, i) => first + i).filter((n) => last - first <= 12 ||
        n % Math.ceil((last - first) / 10) === 0)
        : log ? (decades.length >= 2 ? decades : even.map((t) => Math.pow(10, t))) : even;
    for (const tick of ticks) {
      plot.appendChild(svg("text", {x: sx(tick), y: H - PAD.bottom + 16, "text-anchor": "middle",
                                    class: "axis x-tick"}, categories ? categories[tick] : Charts.format(tick)));
    }
    plot.appendChild(svg("text", {x: (PAD.left + W - PAD.right) / 2, y: H - 3, "text-anchor": "middle",
                                  class: "axis"}, xLabel + (log ? " (log)" : "")));
    if (line && line.length) {
      const path = line.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
      plot.appendChild(svg("polyline", {points: path, fill: "none", stroke: "#dc2626", "stroke-width": 2,
                                        "data-series": "best so far"}));
    }
    for (const point of points) {
      const dot = svg("circle", {cx: sx(point.x), cy: sy(point.y), r: 4, fill: "#2563eb", class: "trial"});
      dot.appendChild(svg("title", {}, point.label));
      plot.appendChild(dot);
    }
    return figure;
  }

  function charts(tuning) {
    const goal = tuning.tuning.objective.goal, metric = tuning.tuning.objective.metric;
    const scored = tuning.trials.filter((trial) => typeof trial.objective === "number");
    const figures = [];
    if (scored.length) {
      let best = null;
      const line = scored.map((trial) => {
        if (best === null || (goal === "maximize" ? trial.objective > best : trial.objective < best)) {
          best = trial.objective;
        }
        return {x: trial.number, y: best};
      });
      figures.push(scatter(`${metric} by trial`, "trial", scored.map((trial) => (
        {x: trial.number, y: trial.objective, label: `trial ${trial.number}: ${Charts.format(trial.objective)}`})),
      {line, integer: true}));
      for (const [name, range] of Object.entries(tuning.tuning.ranges)) {
        const categories = range.values ? range.values.map(String) : null;
        const points = scored.filter((trial) => trial.hyperparameters[name] !== undefined).map((trial) => {
          const value = trial.hyperparameters[name];
          return {x: categories ? categories.indexOf(String(value)) : Number(value), y: trial.objective,
                  label: `trial ${trial.number}: ${name}=${value}, ${metric}=${Charts.format(trial.objective)}`};
        });
        figures.push(scatter(`${metric} by ${name}`, name, points,
                             {log: range.scaling === "log", categories}));
      }
    }
    document.getElementById("charts").replaceChildren(...figures);
    document.getElementById("charts-section").hidden = figures.length === 0;
  }

  function table(tuning) {
    const names = Object.keys(tuning.tuning.ranges);
    const objective = el("th", tuning.tuning.objective.metric + (order === "desc" ? " ▼" : order === "asc" ? " ▲" : ""),
                         "sortable");
    objective.dataset.sort = "objective";
    objective.addEventListener("click", () => {
      order = order === "desc" ? "asc" : "desc";
      table(tuning);
    });
    document.querySelector("#trials thead tr").replaceChildren(
      el("th", ""), el("th", "trial"), el("th", "status"), objective, el("th", "epoch"),
      ...names.map((name) => el("th", name)));
    const rows = [...tuning.trials];
    if (order) {
      const sign = order === "desc" ? -1 : 1;
      rows.sort((a, b) => (a.objective === null) - (b.objective === null) || sign * (a.objective - b.objective));
    }
    document.querySelector("#trials tbody").replaceChildren(...rows.map((trial) => {
      const tr = document.createElement("tr");
      tr.dataset.id = trial.job_id;
      tr.dataset.status = trial.status;
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = selected.has(trial.job_id);
      box.addEventListener("change", () => {
        if (box.checked) selected.add(trial.job_id); else selected.delete(trial.job_id);
        updateCompare();
      });
      const pick = el("td");
      pick.appendChild(box);
      const number = el("td");
      const link = el("a", trial.number);
      link.href = document.body.dataset.jobPage + encodeURIComponent(trial.job_id) + location.hash;
      number.appendChild(link);
      const status = el("td");
      status.appendChild(badge(trial.status));
      tr.append(pick, number, status,
                el("td", trial.objective === null || trial.objective === undefined ? "–" : Charts.format(trial.objective),
                   "objective"),
                el("td", trial.epoch ?? "–"), ...names.map((name) => el("td", shown(trial.hyperparameters[name]))));
      return tr;
    }));
  }

  function shown(value) {
    if (value === undefined || value === null) return "–";
    return typeof value === "number" ? Charts.format(value) : String(value);
  }

  function updateCompare() {
    const button = document.getElementById("compare");
    button.disabled = selected.size < 2;
    button.textContent = `Compare selected (${selected.size})`;
  }

  function summary(tuning) {
    document.getElementById("name").textContent = tuning.name || "";
    document.getElementById("status").replaceChildren(badge(tuning.status));
    const progress = tuning.progress || {};
    document.getElementById("summary").textContent =
      `${tuning.tuning.strategy} · trials ${progress.done || 0}/${progress.total} done, ${progress.running || 0} running`;
    const best = tuning.best;
    document.getElementById("best").textContent = best
      ? `best: trial ${best.number}, ${tuning.tuning.objective.metric} ${Charts.format(best.objective)} with ` +
        Object.entries(best.hyperparameters).map(([name, value]) => `${name}=${shown(value)}`).join(", ")
      : "no trial has completed yet";
  }

  async function refresh() {
    try {
      const tuning = await ExecutorAuth.json(document.body.dataset.api);
      summary(tuning);
      table(tuning);
      charts(tuning);
      showError(null);
      document.body.dataset.loaded = tuning.status;
      return FINAL.has(tuning.status);
    } catch (error) {
      showError(error);
      return true;
    }
  }

  document.getElementById("compare").addEventListener("click", () => {
    location.href = document.body.dataset.comparePage + "?ids=" + [...selected].map(encodeURIComponent).join(",") +
      location.hash;
  });
  ExecutorAuth.token();
  refresh().then((done) => {
    if (!done) {
      const timer = setInterval(async () => { if (await refresh()) clearInterval(timer); }, 3000);
    }
  });
})();
