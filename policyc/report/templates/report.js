// Filters and search: they read and toggle the page's own markup only.
(function () {
  "use strict";
  const byId = (id) => document.getElementById(id);
  const callers = byId("filter-callers"), kind = byId("filter-kind"), endpoints = byId("filter-endpoints");
  const search = byId("search"), count = byId("search-count");

  function filterMatrices() {
    const who = callers.value.trim().toLowerCase(), what = endpoints.value.trim().toLowerCase();
    const wanted = kind.value;
    document.querySelectorAll("table.matrix").forEach((table) => {
      const hidden = new Set();
      table.querySelectorAll("thead th[data-col]").forEach((th) => {
        if (what && !th.textContent.toLowerCase().includes(what)) hidden.add(th.dataset.col);
      });
      table.querySelectorAll("[data-col]").forEach((cell) => {
        cell.classList.toggle("hidden-col", hidden.has(cell.dataset.col));
      });
      table.querySelectorAll("tbody tr").forEach((tr) => {
        const show = (!wanted || tr.dataset.kind === wanted) && (!who || tr.dataset.caller.toLowerCase().includes(who));
        tr.classList.toggle("hidden-row", !show);
      });
    });
  }

  function searchItems() {
    const text = search.value.trim().toLowerCase();
    let shown = 0, total = 0;
    document.querySelectorAll(".searchable").forEach((item) => {
      const match = !text || item.textContent.toLowerCase().includes(text);
      item.classList.toggle("hidden-item", !match);
      total += 1;
      shown += match ? 1 : 0;
    });
    count.textContent = text ? shown + " of " + total + " rules, findings, diagnostics and changes match" : "";
  }

  [callers, endpoints].forEach((input) => input.addEventListener("input", filterMatrices));
  kind.addEventListener("change", filterMatrices);
  search.addEventListener("input", searchItems);
  // A followed rule link shows its rule even when the search hid it, and moves the focus there.
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a.rule-link");
    if (!link) return;
    const rule = document.getElementById(link.getAttribute("href").slice(1));
    if (rule) {
      rule.classList.remove("hidden-item");
      rule.focus({ preventScroll: true });
    }
  });
})();
