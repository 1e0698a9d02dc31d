// The jobs list: filters and sort order in the query string, a column per metric, runs selected for comparison.
"use strict";
(() => {
  const {el, duration, cost, badge, progressBar, showError} = Dashboard;
  const form = document.getElementById("filters");
  const head = document.querySelector("#jobs thead tr");
  const body = document.querySelector("#jobs tbody");
  const compareButton = document.getElementById("compare");
  const params = new URLSearchParams(location.search);
  const FILTERS = ["name", "status", "kind", "from", "to"];
  const selected = new Set((params.get("selected") || "").split(",").filter(Boolean));
  let sort = {key: params.get("sort") || "submitted", descending: params.get("order") !== "asc"};
  let jobs = [];
  let optionsFilled = false;

  // Fixed columns: [key, title, value used to sort].
  const COLUMNS = [
    ["name", "Name", (job) => (job.name || job.id).toLowerCase()],
    ["kind", "Kind", (job) => job.kind],
    ["status", "Status", (job) => job.status],
    ["percent", "Progress", (job) => job.percent],
    ["elapsed_seconds", "Elapsed", (job) => job.elapsed_seconds],
    ["cost_usd", "Cost", (job) => job.cost_usd],
    ["submitted", "Submitted", (job) => job.submitted],
  ];

  function fillOptions(select, values) {
    for (const value of values) select.appendChild(Object.assign(el("option", value), {value}));
    select.value = params.get(select.name) || "";
  }

  function metricNames() {
    return [...new Set(jobs.flatMap((job) => Object.keys(job.metrics || {})))].sort();
  }

  function sortValue(job) {
    if (sort.key.startsWith("metric:")) return (job.metrics || {})[sort.key.slice(7)];
    const column = COLUMNS.find(([key]) => key === sort.key);
    return column ? column[2](job) : null;
  }

  // Jobs without the value sort last whichever the direction.
  function ordered() {
    return [...jobs].sort((a, b) => {
      const x = sortValue(a), y = sortValue(b);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * (sort.descending ? -1 : 1);
    });
  }

  function header(metrics) {
    const cells = [el("th", "", "select")];
    for (const [key, title] of [...COLUMNS.map(([key, title]) => [key, title]),
                                ...metrics.map((name) => [`metric:${name}`, name])]) {
      const th = el("th", title, "sortable" + (key.startsWith("metric:") ? " metric" : ""));
      th.dataset.sort = key;
      if (key === sort.key) th.dataset.order = sort.descending ? "desc" : "asc";
      th.addEventListener("click", () => {
        sort = {key, descending: sort.key === key ? !sort.descending : key.startsWith("metric:") || key === "submitted"};
        saveQuery();
        render();
      });
      cells.push(th);
    }
    head.replaceChildren(...cells);
  }

  function row(job, metrics) {
    const tr = document.createElement("tr");
    tr.dataset.status = job.status;
    tr.dataset.id = job.id;
    const pick = el("td", null, "select");
    const box = Object.assign(document.createElement("input"), {type: "checkbox", checked: selected.has(job.id)});
    box.setAttribute("aria-label", `select ${job.name || job.id}`);
    box.addEventListener("change", () => {
      if (box.checked) selected.add(job.id); else selected.delete(job.id);
      saveQuery();
      updateCompare();
    });
    pick.appendChild(box);
    const name = el("td");
    const link = el("a", job.name || job.id);
    // A tuning has a page of its own: its trials and their objective.
    link.href = document.body.dataset.jobPage + encodeURIComponent(job.id) + (job.kind === "tuning" ? "/tuning" : "") +
      location.hash;
    name.appendChild(link);
    name.appendChild(el("div", job.id.slice(0, 8), "muted small mono"));
    if (job.failure_reason) name.appendChild(el("div", job.failure_reason.split("\n")[0], "muted small"));
    const statusCell = el("td");
    statusCell.appendChild(badge(job.status));
    const progressCell = el("td");
    progressCell.appendChild(progressBar(job.percent, job.epoch, job.epochs));
    const kindCell = el("td", job.kind);
    // With several executors sharing the store: the one that runs (or last ran) the job.
    if (job.executor) kindCell.appendChild(el("div", job.executor, "muted small mono"));
    tr.append(pick, name, kindCell, statusCell, progressCell, el("td", duration(job.elapsed_seconds)),
              el("td", cost(job.cost_usd)), el("td", (job.submitted || "").slice(0, 19)));
    for (const metric of metrics) {
      const value = (job.metrics || {})[metric];
      tr.appendChild(el("td", value === null || value === undefined ? "–" : Charts.format(value), "number"));
    }
    return tr;
  }

  function render() {
    const metrics = metricNames();
    header(metrics);
    body.replaceChildren(...ordered().map((job) => row(job, metrics)));
    document.getElementById("empty").hidden = jobs.length > 0;
    updateCompare();
  }

  function updateCompare() {
    compareButton.disabled = selected.size < 2;
    compareButton.textContent = `Compare selected (${selected.size})`;
  }

  function filterQuery() {
    const query = new URLSearchParams();
    for (const name of FILTERS) if (form.elements[name].value) query.set(name, form.elements[name].value);
    return query;
  }

  function saveQuery() {
    const query = filterQuery();
    if (sort.key !== "submitted" || !sort.descending) {
      query.set("sort", sort.key);
      query.set("order", sort.descending ? "desc" : "asc");
    }
    if (selected.size) query.set("selected", [...selected].join(","));
    history.replaceState(null, "", location.pathname + (query.toString() ? "?" + query : "") + location.hash);
  }

  async function refresh() {
    try {
      const data = await ExecutorAuth.json(document.body.dataset.api + "?" + filterQuery() + "&limit=500");
      if (!optionsFilled) {
        fillOptions(form.elements.status, data.statuses);
        fillOptions(form.elements.kind, data.kinds);
        optionsFilled = true;
        if (form.elements.status.value || form.elements.kind.value) return refresh();
      }
      jobs = data.jobs;
      render();
      const counts = Object.entries(data.counts).map(([status, count]) => `${status} ${count}`);
      if (data.data_folder_bytes !== null) counts.push(`data folder ${Dashboard.size(data.data_folder_bytes)}`);
      document.getElementById("counts").textContent = counts.join(" · ");
      document.body.dataset.loaded = "true";
      showError(null);
    } catch (error) {
      showError(error);
    }
  }

  for (const name of ["name", "from", "to"]) form.elements[name].value = params.get(name) || "";
  let typing = null;
  form.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { saveQuery(); refresh(); }, 250);
  });
  form.addEventListener("change", () => { saveQuery(); refresh(); });
  form.addEventListener("submit", (event) => event.preventDefault());
  compareButton.addEventListener("click", () => {
    location.href = document.body.dataset.comparePage + "?ids=" + [...selected].map(encodeURIComponent).join(",")
      + location.hash;
  });
  ExecutorAuth.token();
  refresh();
  setInterval(refresh, 3000);
})();
