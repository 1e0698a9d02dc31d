// One job: summary with times and ETA, its request, metrics charted by family, artifacts to download,
// the live log tail and events; Run again and Cancel.
"use strict";
(() => {
  const {el, duration, cost, badge, progressBar, showError, FINAL, size, download, requestRows} = Dashboard;
  const body = document.body.dataset;
  let timer = null;
  let drawnHistory = "";

  function drawCharts(history, epochs) {
    const key = JSON.stringify([history, epochs]);
    if (key === drawnHistory) return;  // redraw only when a new point arrived
    drawnHistory = key;
    const metrics = Charts.byMetric(history);
    const families = new Map();
    for (const [name, points] of metrics) {
      const family = Charts.family(name);
      if (!families.has(family)) families.set(family, []);
      families.get(family).push({name, points});
    }
    const target = document.getElementById("charts");
    target.replaceChildren(...[...families.entries()].map(([family, series]) => {
      const figure = Charts.figure(family, `${family} by epoch`);
      Charts.draw(figure, series, epochs);
      return figure;
    }));
    // A job that reports no metrics (most pipelines) has no charts rather than empty ones.
    document.getElementById("charts-section").hidden = families.size === 0;
  }

  function renderFiles(files, truncated) {
    document.querySelector("#files tbody").replaceChildren(...files.map((file) => {
      const tr = document.createElement("tr");
      const button = el("button", "Download", "link");
      button.type = "button";
      button.dataset.path = file.path;
      button.addEventListener("click", () => download(body.files + file.path.split("/").map(encodeURIComponent).join("/"),
                                                      file.path.split("/").pop()).catch(showError));
      const action = el("td");
      action.appendChild(button);
      tr.append(el("td", file.path), el("td", size(file.size)), action);
      return tr;
    }));
    document.getElementById("files").hidden = files.length === 0;
    document.getElementById("no-files").hidden = files.length > 0;
    // The executor lists a bounded number of files; the rest still download through the API by path.
    const cut = document.getElementById("files-truncated");
    cut.textContent = truncated ? `First ${files.length} files shown; the job wrote more.` : "";
    cut.hidden = !truncated;
    document.getElementById("download-model").hidden = !files.some((file) => file.path.startsWith("model/"));
  }

  function render(job) {
    document.title = `${job.name || job.job_id} · Essedum executor`;
    document.getElementById("name").textContent = job.name || job.job_id;
    document.getElementById("status").replaceWith(Object.assign(badge(job.status), {id: "status"}));
    document.getElementById("phase").textContent = job.phase;
    document.getElementById("progress").replaceChildren(progressBar(job.percent, job.epoch, job.epochs));
    for (const key of ["submitted", "started", "finished"]) {
      document.getElementById(key).textContent = (job[key] || "–").slice(0, 19);
    }
    const eta = job.eta_seconds === null || job.eta_seconds === undefined ? "" : ` · about ${duration(job.eta_seconds)} left`;
    document.getElementById("elapsed").textContent = duration(job.elapsed_seconds) + eta;
    document.getElementById("cost").textContent = cost(job.cost_usd);
    document.getElementById("kind").textContent =
      `${job.kind} on ${job.backend}` + (job.executor ? ` · executor ${job.executor}` : "");
    document.getElementById("job-id").textContent = job.job_id;
    document.getElementById("cancel").hidden = FINAL.has(job.status);
    const origin = job.details && job.details.rerun_of;
    document.getElementById("rerun-of").hidden = !origin;
    if (origin) {
      const link = document.getElementById("rerun-of-link");
      link.textContent = origin;
      link.href = body.jobPage + encodeURIComponent(origin);
    }
    const failure = document.getElementById("failure");
    failure.textContent = job.failure_reason || "";
    failure.hidden = !job.failure_reason;
    document.querySelector("#request tbody").replaceChildren(...requestRows(job.request).map(([name, value]) => {
      const tr = document.createElement("tr");
      tr.append(el("th", name), el("td", value));
      return tr;
    }));
    const metrics = Object.entries(job.metrics);
    document.querySelector("#metrics tbody").replaceChildren(...metrics.map(([name, value]) => {
      const tr = document.createElement("tr");
      tr.append(el("th", name), el("td", value === null ? "–" : Charts.format(value)));
      return tr;
    }));
    document.getElementById("no-metrics").hidden = metrics.length > 0;
    drawCharts(job.metric_history, job.epochs);
    renderFiles(job.files, job.files_truncated);
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
      const job = await ExecutorAuth.json(body.api);
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
      await ExecutorAuth.json(body.stop, {method: "POST"});
      refresh();
    } catch (error) {
      showError(error);
    }
  });
  document.getElementById("rerun").addEventListener("click", async () => {
    try {
      const answer = await ExecutorAuth.json(body.rerun, {method: "POST"});
      location.href = body.jobPage + encodeURIComponent(answer.job_id);
    } catch (error) {
      showError(error);
    }
  });
  document.getElementById("download-model").addEventListener("click",
    () => download(body.model, "model.tar.gz").catch(showError));
  ExecutorAuth.token();
  refresh();
  timer = setInterval(refresh, 2000);
})();
