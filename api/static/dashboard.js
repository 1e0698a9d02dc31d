// Helpers shared by the dashboard pages. Data is only ever written with textContent.
"use strict";
const Dashboard = (() => {
  const FINAL = new Set(["COMPLETED", "ERROR", "CANCELLED"]);

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const total = Math.round(seconds);
    const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
    return h ? `${h}h ${m}m ${s}s` : m ? `${m}m ${s}s` : `${s}s`;
  }

  function cost(value) {
    return value === null || value === undefined ? "–" : "$" + Number(value).toFixed(2);
  }

  function badge(status) {
    return el("span", status, "badge status-" + String(status).toLowerCase());
  }

  // A progress bar with its percent (and epoch) as text.
  function progressBar(percent, epoch, epochs) {
    const wrap = el("div", null, "progress");
    const bar = el("div", null, "bar");
    const fill = el("div", null, "fill");
    const known = typeof percent === "number";
    fill.style.width = (known ? Math.max(0, Math.min(100, percent)) : 0) + "%";
    bar.appendChild(fill);
    wrap.appendChild(bar);
    let label = known ? percent.toFixed(0) + "%" : "–";
    if (epochs) label += ` · epoch ${epoch}/${epochs}`;
    wrap.appendChild(el("span", label, "progress-text"));
    wrap.setAttribute("role", "progressbar");
    wrap.setAttribute("aria-valuenow", known ? String(percent) : "");
    return wrap;
  }

  function showError(error) {
    const target = document.getElementById("error");
    target.textContent = error ? String(error.message || error) : "";
    target.hidden = !error;
  }

  function size(bytes) {
    const units = ["B", "KiB", "MiB", "GiB"];
    let value = bytes, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
  }

  // Fetch a file with the token (a plain link could not send it) and hand it to the browser as a download.
  async function download(url, name) {
    const response = await ExecutorAuth.fetch(url);
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error || `${response.status} ${response.statusText}`);
    }
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  }

  // A request as [name, text] rows, each hyperparameter on its own row.
  function requestRows(request) {
    const rows = [];
    for (const [key, value] of Object.entries(request || {})) {
      if (value && typeof value === "object" && !Array.isArray(value)) {
        for (const [name, inner] of Object.entries(value)) rows.push([`${key}.${name}`, String(inner)]);
      } else {
        rows.push([key, Array.isArray(value) ? value.join(", ") : String(value)]);
      }
    }
    return rows;
  }

  return {FINAL, el, duration, cost, badge, progressBar, showError, size, download, requestRows};
})();
