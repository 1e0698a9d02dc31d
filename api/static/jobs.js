// The jobs list: filters in the query string, refreshed every few seconds.
"use strict";
(() => {
  const {el, duration, cost, badge, progressBar, showError} = Dashboard;
  const form = document.getElementById("filters");
  const body = document.querySelector("#jobs tbody");
  const params = new URLSearchParams(location.search);
  let optionsFilled = false;

  function fillOptions(select, values) {
    for (const value of values) select.appendChild(Object.assign(el("option", value), {value}));
    select.value = params.get(select.name) || "";
  }

  function row(job) {
    const tr = document.createElement("tr");
    tr.dataset.status = job.status;
    const name = el("td");
    const link = el("a", job.name || job.id);
    link.href = document.body.dataset.jobPage + encodeURIComponent(job.id) + location.hash;
    name.appendChild(link);
    if (job.failure_reason) name.appendChild(el("div", job.failure_reason, "muted small"));
    const statusCell = el("td");
    statusCell.appendChild(badge(job.status));
    const progressCell = el("td");
    progressCell.appendChild(progressBar(job.percent, job.epoch, job.epochs));
    tr.append(name, el("td", job.kind), statusCell, el("td", job.phase), progressCell,
              el("td", duration(job.elapsed_seconds)), el("td", cost(job.cost_usd)),
              el("td", (job.submitted || "").slice(0, 19)));
    return tr;
  }

  async function refresh() {
    const query = new URLSearchParams();
    for (const name of ["status", "kind"]) if (form.elements[name].value) query.set(name, form.elements[name].value);
    try {
      const data = await ExecutorAuth.json(document.body.dataset.api + "?" + query);
      if (!optionsFilled) {
        fillOptions(form.elements.status, data.statuses);
        fillOptions(form.elements.kind, data.kinds);
        optionsFilled = true;
        if (form.elements.status.value || form.elements.kind.value) return refresh();
      }
      body.replaceChildren(...data.jobs.map(row));
      document.getElementById("empty").hidden = data.jobs.length > 0;
      document.getElementById("counts").textContent =
        Object.entries(data.counts).map(([status, count]) => `${status} ${count}`).join(" · ");
      showError(null);
    } catch (error) {
      showError(error);
    }
  }

  form.addEventListener("change", () => {
    const query = new URLSearchParams();
    for (const name of ["status", "kind"]) if (form.elements[name].value) query.set(name, form.elements[name].value);
    history.replaceState(null, "", location.pathname + (query.toString() ? "?" + query : "") + location.hash);
    refresh();
  });
  ExecutorAuth.token();
  refresh();
  setInterval(refresh, 3000);
})();
