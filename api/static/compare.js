// Compare runs: one chart per metric with every run's curve, and a table of final metrics and settings.
"use strict";
(() => {
  const {el, badge, showError, requestRows, FINAL} = Dashboard;
  const ids = (new URLSearchParams(location.search).get("ids") || "").split(",").filter(Boolean);

  function label(job) {
    return `${job.name || ""} · ${job.job_id.slice(0, 8)}`;
  }

  function table(jobs) {
    const head = [el("th", "")];
    for (const job of jobs) {
      const th = el("th");
      const link = el("a", label(job));
      link.href = document.body.dataset.jobPage + encodeURIComponent(job.job_id) + location.hash;
      th.append(link, document.createElement("br"), badge(job.status));
      head.push(th);
    }
    document.querySelector("#comparison thead tr").replaceChildren(...head);
    const rows = [];
    const metricNames = [...new Set(jobs.flatMap((job) => Object.keys(job.metrics)))].sort();
    for (const name of metricNames) {
      rows.push([name, jobs.map((job) => job.metrics[name] === undefined || job.metrics[name] === null
        ? "–" : Charts.format(job.metrics[name])), "metric"]);
    }
    const settings = jobs.map((job) => new Map(requestRows(job.request)));
    const settingNames = [...new Set(settings.flatMap((map) => [...map.keys()]))].sort();
    for (const name of settingNames) rows.push([name, settings.map((map) => map.get(name) ?? "–"), "setting"]);
    document.querySelector("#comparison tbody").replaceChildren(...rows.map(([name, values, kind]) => {
      const tr = document.createElement("tr");
      tr.className = kind + (new Set(values).size > 1 ? " differs" : "");
      tr.dataset.row = name;
      tr.append(el("th", name), ...values.map((value) => el("td", value)));
      return tr;
    }));
  }

  function charts(jobs) {
    const perMetric = new Map();
    for (const job of jobs) {
      for (const [name, points] of Charts.byMetric(job.metric_history)) {
        if (!perMetric.has(name)) perMetric.set(name, []);
        perMetric.get(name).push({name: label(job), points});
      }
    }
    document.getElementById("charts").replaceChildren(...[...perMetric.entries()].map(([name, series]) => {
      const figure = Charts.figure(name, `${name} by epoch, one curve per run`);
      Charts.draw(figure, series);
      return figure;
    }));
    document.getElementById("charts-section").hidden = perMetric.size === 0;
  }

  async function refresh() {
    try {
      if (ids.length < 2) throw new Error("choose two or more runs on the jobs page to compare them");
      const jobs = await Promise.all(ids.map((id) => ExecutorAuth.json(document.body.dataset.api + encodeURIComponent(id))));
      table(jobs);
      charts(jobs);
      showError(null);
      document.body.dataset.loaded = jobs.every((job) => FINAL.has(job.status)) ? "final" : "running";
      return jobs.every((job) => FINAL.has(job.status));
    } catch (error) {
      showError(error);
      return true;
    }
  }

  ExecutorAuth.token();
  refresh().then((done) => {
    if (!done) {
      const timer = setInterval(async () => { if (await refresh()) clearInterval(timer); }, 3000);
    }
  });
})();
