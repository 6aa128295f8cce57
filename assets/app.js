// posthorn's one script: local times, the live delivery log, the portal's sign-in.
// Pages work without it, except the portal link (its token is in the URL fragment).
"use strict";

function localTimes(root) {
  root.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) {
      t.textContent = d.toLocaleString();
    }
  });
}

function liveLog() {
  var body = document.querySelector("tbody[data-stream]");
  if (!body || !window.EventSource) {
    return;
  }
  var status = document.getElementById("live-status");
  var source = new EventSource(body.getAttribute("data-stream"));
  source.addEventListener("rows", function (e) {
    body.innerHTML = e.data;
    localTimes(body);
    var empty = document.getElementById("log-empty");
    if (empty) {
      empty.hidden = body.children.length > 0;
    }
  });
  source.addEventListener("ended", function () {
    source.close();
    if (status) {
      status.textContent = "Your session has ended: reload the page to sign in again.";
    }
  });
}

function portalStart() {
  var start = document.getElementById("portal-start");
  if (!start) {
    return;
  }
  var status = document.getElementById("portal-status");
  var fail = function (message) {
    document.getElementById("portal-heading").textContent = "The portal could not be opened";
    status.textContent = message;
  };
  var match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!match) {
    location.replace("/portal/endpoints");
    return;
  }
  history.replaceState(null, "", location.pathname);
  var token;
  try {
    token = decodeURIComponent(match[1]);
  } catch (e) {
    fail("This portal link is not valid. Open the portal again from the page that linked you here.");
    return;
  }
  fetch("/portal/session", {
    method: "POST",
    credentials: "same-origin",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      "X-Posthorn-Portal": "1",
    },
    body: "token=" + encodeURIComponent(token),
  }).then(function (r) {
    if (r.ok) {
      location.replace("/portal/endpoints");
    } else {
      fail("This portal link has expired or is not valid. Open the portal again from the page that linked you here.");
    }
  }, function () {
    fail("The portal could not be reached. Try again in a moment.");
  });
}

document.addEventListener("DOMContentLoaded", function () {
  localTimes(document);
  liveLog();
  portalStart();
});
