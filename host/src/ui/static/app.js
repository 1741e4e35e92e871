// Warden console: the only script besides htmx (the CSP forbids inline script).
// 1. Shows every <time datetime> in the viewer's time zone (UTC stays in its title).
// 2. On a run page, follows the run's event stream and appends each event as text.
"use strict";

function localTimes(root) {
  root.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d.getTime())) {
      t.textContent = d.toLocaleString();
    }
  });
}

function eventLine(ev) {
  var li = document.createElement("li");
  var level = String(ev.level || "info");
  li.className = "ev ev-" + level.replace(/[^a-z]/g, "");
  var at = document.createElement("span");
  at.className = "at";
  at.textContent = "+" + Number(ev.at_ms || 0) + " ms";
  var lv = document.createElement("span");
  lv.className = "level";
  lv.textContent = level;
  var msg = document.createElement("span");
  msg.className = "msg";
  msg.textContent = String(ev.message || "");
  li.append(at, " ", lv, " ", msg);
  return li;
}

function setText(id, text) {
  var el = document.getElementById(id);
  if (el) {
    el.textContent = text == null ? "" : String(text);
  }
}

function followRun(list) {
  var source = new EventSource(list.getAttribute("data-events-url"));
  source.addEventListener("log", function (e) {
    list.append(eventLine(JSON.parse(e.data)));
    list.setAttribute("data-live", "1");
  });
  source.addEventListener("state", function (e) {
    var run = JSON.parse(e.data);
    list.replaceChildren();
    (run.events || []).forEach(function (ev) {
      list.append(eventLine(ev));
    });
    var state = document.getElementById("run-state");
    if (state) {
      var badge = document.createElement("span");
      badge.className = "state state-" + String(run.state).replace(/[^a-z-]/g, "");
      badge.textContent = String(run.state);
      state.replaceChildren(badge);
    }
    setText("run-result", run.result);
    setText("run-stdout", run.stdout);
    setText("run-stderr", run.stderr);
    var cancel = document.getElementById("cancel-form");
    if (cancel && run.state !== "awaiting-approval") {
      cancel.remove();
    }
    list.setAttribute("data-ended", String(run.state));
    source.close();
  });
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED) {
      list.setAttribute("data-ended", "error");
    }
  };
}

document.addEventListener("DOMContentLoaded", function () {
  localTimes(document);
  document.body.addEventListener("htmx:afterSwap", function (e) {
    localTimes(e.target);
  });
  var list = document.querySelector("#events[data-events-url]");
  if (list) {
    followRun(list);
  }
});
