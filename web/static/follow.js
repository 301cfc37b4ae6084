// "Follow" buttons (facility, matter and map pages): one click subscribes the signed-in resident
// through POST /api/v1/me/subscriptions (same origin, the session cookie); signed out, the click
// goes to /me to sign in and comes back. A button carries data-follow-kind and data-follow-id
// (or, for an area, data-follow-layer/-lat/-lon/-radius) and its "following" words.
(function () {
  "use strict";
  function follow(button) {
    var d = button.dataset;
    var body = d.followKind === "area"
      ? {kind: "area", layer: d.followLayer, lat: Number(d.followLat), lon: Number(d.followLon),
         radius_m: Number(d.followRadius || 500)}
      : {kind: d.followKind, id: d.followId};
    fetch("/api/v1/me/subscriptions", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)
    }).then(function (r) {
      if (r.status === 401) {
        window.location.assign("/me?next=" + encodeURIComponent(window.location.pathname +
                                                               window.location.search));
      } else if (r.ok) {
        button.textContent = d.following || "✓";
        button.disabled = true;
      }
    });
  }
  document.addEventListener("click", function (e) {
    var button = e.target.closest ? e.target.closest("[data-follow-kind]") : null;
    if (button) { e.preventDefault(); follow(button); }
  });
})();
