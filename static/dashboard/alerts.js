/* Alerts page: a new alert that matches the filters in force is fetched as a
 * server-rendered row and put at the top; the list keeps a fixed number of
 * rows. Filters, acknowledge and resolve are plain HTMX (see the templates). */
(function () {
  "use strict";
  if (!window.FinStream) return;
  var fs = window.FinStream;

  function matches(alert, filters) {
    if (filters.none) return false; // a filter value there is none of: the list stays empty
    if (filters.symbol && filters.symbol !== alert.symbol) return false;
    if (filters.severity && filters.severity !== alert.severity) return false;
    if (filters.type && filters.type !== alert.type) return false;
    return !filters.state || filters.state === "open"; // a new alert is open
  }

  fs.subscribe(["alerts"], function (alert, info) {
    if (info.snapshot) return; // the server-rendered list already holds it
    // Read at event time: an HTMX filter swap replaces the list and its filters.
    var list = document.getElementById("alert-list");
    var tbody = document.getElementById("alert-rows");
    if (!list || !tbody || !matches(alert, list.dataset)) return;
    fs.prependAlertRow(tbody, alert.id);
  });

  // Alerts raised while the stream was away: the server's list, as the filters are now.
  fs.onReconnect(function () {
    if (window.htmx && document.getElementById("alert-list")) {
      window.htmx.ajax("GET", location.pathname + location.search, { target: "#alert-list", swap: "outerHTML" });
    }
  });
})();
