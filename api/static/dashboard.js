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

  return {FINAL, el, duration, cost, badge, progressBar, showError};
})();
