// The bearer token for the executor's pages. It comes from the URL fragment (#token=..., which the
// browser never sends to the server) or from a small form the page shows after a 401 (not a
// window.prompt, which blocks the page and hangs a headless browser), and is kept in sessionStorage
// for this tab only. Every data request sends it as an Authorization header.
"use strict";
const ExecutorAuth = (() => {
  const KEY = "executor-token";

  function token() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (fragment.get("token")) {
      sessionStorage.setItem(KEY, fragment.get("token"));
      fragment.delete("token");
      const rest = fragment.toString();
      history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    }
    return sessionStorage.getItem(KEY) || "";
  }

  function headers(extra) {
    const result = Object.assign({}, extra || {});
    const value = token();
    if (value) result.Authorization = "Bearer " + value;
    return result;
  }

  // One form for every request that met a 401 meanwhile: each waits for the same token.
  let asking = null;

  function askForToken() {
    if (asking) return asking;
    asking = new Promise((resolve) => {
      const form = document.createElement("form");
      form.id = "token-form";
      const label = document.createElement("label");
      label.textContent = "This executor needs its API token (EXECUTOR_API_TOKEN) ";
      const input = document.createElement("input");
      input.type = "password";
      input.name = "token";
      input.autocomplete = "off";
      input.required = true;
      label.appendChild(input);
      const button = document.createElement("button");
      button.type = "submit";
      button.textContent = "Use token";
      form.append(label, button);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        sessionStorage.setItem(KEY, input.value.trim());
        form.remove();
        asking = null;
        resolve();
      });
      (document.querySelector("main") || document.body).prepend(form);
      input.focus();
    });
    return asking;
  }

  // fetch() with the token; on 401 ask for a token on the page and try again.
  async function fetchWithToken(url, options) {
    options = options || {};
    let response = await fetch(url, Object.assign({}, options, {headers: headers(options.headers)}));
    while (response.status === 401) {
      await askForToken();
      response = await fetch(url, Object.assign({}, options, {headers: headers(options.headers)}));
    }
    return response;
  }

  async function json(url, options) {
    const response = await fetchWithToken(url, options);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
    return body;
  }

  return {token, headers, fetch: fetchWithToken, json};
})();
