// Shared by the pages: calls to the management API with a short-lived access token that the
// signed-in page asks for (POST /ui/token with the page's CSRF token), and small helpers.
"use strict";
const aivonx = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const TOKEN_MAX_AGE_MS = 5 * 60 * 1000; // well inside the access token's lifetime
  let token = null;
  let tokenAt = 0;

  async function accessToken(renew) {
    if (token && !renew && Date.now() - tokenAt < TOKEN_MAX_AGE_MS) return token;
    const response = await fetch("/ui/token", { method: "POST", headers: { "X-CSRFToken": csrf }, credentials: "same-origin" });
    if (response.redirected || !response.ok) {
      window.location.href = "/ui/login?next=" + encodeURIComponent(window.location.pathname);
      throw new Error("signed out");
    }
    token = (await response.json()).access;
    tokenAt = Date.now();
    return token;
  }

  async function api(path, options = {}) {
    const call = async (renew) => fetch(path, { ...options, headers: { ...(options.headers || {}), Authorization: "Bearer " + (await accessToken(renew)) } });
    let response = await call(false);
    if (response.status === 401) response = await call(true);
    return response;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value >= 1000 ? (value / 1000).toFixed(2) + " s" : value.toFixed(1) + " ms";
  }

  function ago(iso) {
    if (!iso) return "never";
    const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    return new Date(iso).toLocaleString();
  }

  // Problem details name the offending fields in `errors`: show each next to its field.
  function showErrors(form, problem) {
    form.querySelectorAll(".error[data-for]").forEach((span) => { span.textContent = ""; });
    const errors = (problem && problem.errors) || {};
    let shown = false;
    for (const [field, messages] of Object.entries(errors)) {
      const span = form.querySelector(`.error[data-for="${field}"]`);
      if (span) { span.textContent = [].concat(messages).join(" "); shown = true; }
    }
    return shown;
  }

  return { api, el, ms, ago, showErrors };
})();
