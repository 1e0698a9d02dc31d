// Line charts as inline SVG: epochs on x, a "nice" y axis fitted to the data, the legend beside the plot.
"use strict";
const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
  const W = 480, H = 220, PAD = {left: 56, right: 14, top: 10, bottom: 34};

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // Tick values that are round numbers (1, 2, 2.5 or 5 times a power of ten) from below low to above high.
  function niceTicks(low, high, count) {
    const raw = (high - low) / Math.max(1, count);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || 10 * power;
    const first = Math.floor(low / step + 1e-9) * step, last = Math.ceil(high / step - 1e-9) * step;
    const ticks = [];
    for (let index = 0; first + index * step <= last + step / 2; index += 1) {
      ticks.push(Number((first + index * step).toPrecision(12)));
    }
    return ticks;
  }

  // The y axis: padded around the data and widened to round ticks, never below 0 or above 1 when the
  // values are not (a ratio stays a ratio; one point gets a narrow axis around it, not ±0.5).
  function yDomain(values) {
    const low = Math.min(...values), high = Math.max(...values);
    const pad = high > low ? (high - low) * 0.08 : Math.max(Math.abs(high) * 0.05, 0.01);
    const ticks = niceTicks(low - pad, high + pad, 5)
      .filter((tick) => !(low >= 0 && tick < 0) && !(low >= 0 && high <= 1 && tick > 1));
    return {low: Math.min(low, ticks[0]), high: Math.max(high, ticks[ticks.length - 1]), ticks};
  }

  function xTicks(low, high) {
    if (high - low <= 10) return Array.from({length: high - low + 1}, (_, index) => low + index);
    return niceTicks(low, high, 6).filter((tick) => tick >= low && tick <= high && Number.isInteger(tick));
  }

  function format(value) {
    const magnitude = Math.abs(value);
    if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e5)) return value.toExponential(1);
    return String(Number(value.toPrecision(4)));
  }

  // series: [{name, points: [[x, y], ...]}]; draws into a <figure> holding an <svg> and a legend list.
  // lastEpoch, when known, keeps room on the x axis for the epochs still to come.
  function draw(figure, series, lastEpoch) {
    const target = figure.querySelector("svg");
    target.replaceChildren();
    const legend = figure.querySelector(".legend-list");
    legend.replaceChildren();
    const points = series.flatMap((item) => item.points);
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    let x0 = Math.min(...xs), x1 = Math.max(...xs, lastEpoch || 0);
    if (x0 === x1) { x0 = Math.max(0, x0 - 1); x1 += 1; }
    const {low: y0, high: y1, ticks} = yDomain(ys);
    const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
    const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
    target.appendChild(svg("rect", {x: PAD.left, y: PAD.top, width: W - PAD.left - PAD.right,
                                    height: H - PAD.top - PAD.bottom, class: "plot"}));
    for (const tick of ticks) {
      target.appendChild(svg("line", {x1: PAD.left, x2: W - PAD.right, y1: sy(tick), y2: sy(tick), class: "grid"}));
      target.appendChild(svg("text", {x: PAD.left - 6, y: sy(tick) + 4, "text-anchor": "end", class: "axis y-tick"},
                             format(tick)));
    }
    for (const tick of xTicks(Math.ceil(x0), Math.floor(x1))) {
      target.appendChild(svg("line", {x1: sx(tick), x2: sx(tick), y1: H - PAD.bottom, y2: H - PAD.bottom + 4,
                                      class: "tick"}));
      target.appendChild(svg("text", {x: sx(tick), y: H - PAD.bottom + 16, "text-anchor": "middle",
                                      class: "axis x-tick"}, tick));
    }
    target.appendChild(svg("text", {x: (PAD.left + W - PAD.right) / 2, y: H - 3, "text-anchor": "middle",
                                    class: "axis"}, "epoch"));
    series.forEach((item, index) => {
      const color = COLORS[index % COLORS.length];
      const path = item.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
      target.appendChild(svg("polyline", {points: path, fill: "none", stroke: color, "stroke-width": 2,
                                          "data-series": item.name}));
      for (const [x, y] of item.points) {
        const dot = svg("circle", {cx: sx(x), cy: sy(y), r: 3, fill: color});
        dot.appendChild(svg("title", {}, `${item.name} · epoch ${x}: ${format(y)}`));
        target.appendChild(dot);
      }
      const entry = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = color;
      entry.append(swatch, document.createTextNode(item.name));
      legend.appendChild(entry);
    });
  }

  // A <figure> with a caption, an SVG and a legend, ready for draw().
  function figure(caption, label) {
    const node = document.createElement("figure");
    node.dataset.chart = caption;
    const title = document.createElement("figcaption");
    title.textContent = caption;
    const plot = svg("svg", {class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label || caption});
    const legend = document.createElement("ul");
    legend.className = "legend-list";
    node.append(title, plot, legend);
    return node;
  }

  // Metric rows {name, value, step} of one job as {metric name: [[step, value], ...]}, in step order.
  function byMetric(history) {
    const result = new Map();
    for (const point of history) {
      if (point.value === null || point.step === null) continue;
      if (!result.has(point.name)) result.set(point.name, new Map());
      result.get(point.name).set(point.step, point.value);  // a resumed epoch replaces its earlier value
    }
    return new Map([...result.entries()].sort().map(([name, steps]) =>
      [name, [...steps.entries()].sort((a, b) => a[0] - b[0])]));
  }

  // train_loss and val_loss share the chart "loss": the same quantity on the same axis.
  function family(name) {
    return name.replace(/^(train|training|val|validation|test|eval)[_.-]/i, "") || name;
  }

  return {draw, figure, byMetric, family, format};
})();
