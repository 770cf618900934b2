/* Pipeline page: HTMX refreshes the body every 2 s; the status pill tells
 * whether the last refresh reached the server. */
(function () {
  "use strict";
  var live = document.getElementById("pipeline-live");
  if (!live || !window.FinStream) return;
  var fs = window.FinStream;
  fs.setStatus("live", "live (every 2 s)");
  live.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) fs.setStatus("live", "live (every 2 s)");
    else fs.setStatus("reconnecting", "reconnecting…");
  });
  live.addEventListener("htmx:sendError", function () { fs.setStatus("reconnecting", "reconnecting…"); });
})();
