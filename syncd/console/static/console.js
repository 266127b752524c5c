// The overview refreshes its figures in place every few seconds while the box is ticked;
// the reader can untick it (WCAG 2.2.1, timing adjustable). Without JavaScript the page reads
// the same and is refreshed by hand, with the "Refresh now" link.
(function () {
  "use strict";
  var box = document.getElementById("auto-refresh");
  var live = document.getElementById("live");
  if (!box || !live) {
    return;
  }
  box.closest(".auto").hidden = false;
  var seconds = parseInt(box.getAttribute("data-seconds"), 10) || 30;
  window.setInterval(function () {
    if (!box.checked || document.hidden) {
      return;
    }
    window.fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (html) {
        if (!html) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (fresh) {
          live.innerHTML = fresh.innerHTML;
        }
      })
      .catch(function () { /* the next tick tries again */ });
  }, seconds * 1000);
})();
