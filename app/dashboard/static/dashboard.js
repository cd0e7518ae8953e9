// hybridq dashboard: auto-refresh of the live part of a page (pausable), and a
// confirmation before destructive forms. Served from /dashboard/static (no CDN, no
// inline script: the pages' Content-Security-Policy allows only this file).
"use strict";

(function () {
  const KEY = "hybridq.refresh.paused";

  function setupRefresh() {
    const box = document.querySelector("[data-refresh]");
    const live = document.querySelector("[data-live]");
    if (!box || !live) return;
    const seconds = Number(box.getAttribute("data-refresh")) || 5;
    const button = box.querySelector("[data-refresh-toggle]");
    const status = box.querySelector("[data-refresh-status]");
    let paused = sessionStorage.getItem(KEY) === "1";
    let timer = null;

    function show() {
      button.textContent = paused ? "Resume auto-refresh" : "Pause auto-refresh";
      button.setAttribute("aria-pressed", paused ? "true" : "false");
    }

    async function refresh() {
      try {
        const response = await fetch(window.location.href, {
          headers: { "X-Dashboard-Fragment": "1" },
          credentials: "same-origin",
          cache: "no-store",
        });
        if (response.redirected || !response.ok) {
          status.textContent = "Refresh failed (" + response.status + "): reload the page";
          return;
        }
        live.innerHTML = await response.text();
        status.textContent = "Updated " + new Date().toLocaleTimeString();
      } catch (err) {
        status.textContent = "Refresh failed: " + err.message;
      }
    }

    function schedule() {
      clearInterval(timer);
      timer = paused ? null : setInterval(refresh, seconds * 1000);
    }

    button.addEventListener("click", function () {
      paused = !paused;
      sessionStorage.setItem(KEY, paused ? "1" : "0");
      show();
      schedule();
      if (!paused) refresh();
    });
    show();
    schedule();
  }

  function setupConfirm() {
    document.addEventListener("submit", function (event) {
      const form = event.target;
      const message = form.getAttribute && form.getAttribute("data-confirm");
      if (message && !window.confirm(message)) event.preventDefault();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupRefresh();
    setupConfirm();
  });
})();
