// The bearer token for the executor's pages. It comes from the URL fragment (#token=..., which the
// browser never sends to the server) or from a prompt after a 401, and is kept in sessionStorage
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

  // fetch() with the token; on 401 ask once for a token and try again.
  async function fetchWithToken(url, options) {
    options = options || {};
    let response = await fetch(url, Object.assign({}, options, {headers: headers(options.headers)}));
    if (response.status === 401) {
      const entered = window.prompt("This executor needs its API token (EXECUTOR_API_TOKEN):");
      if (entered) {
        sessionStorage.setItem(KEY, entered.trim());
        response = await fetch(url, Object.assign({}, options, {headers: headers(options.headers)}));
      }
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
