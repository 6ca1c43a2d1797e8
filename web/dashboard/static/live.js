// The Live page: server-sent events from /dashboard/live/events replace the table's rows.
// Every value is set as text (never as HTML): caller names come from strangers.
(function () {
  "use strict";
  var body = document.getElementById("live-body");
  var status = document.getElementById("live-status");
  var calls = [];
  var received = 0;

  function cell(row, text, cls) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
    td.textContent = text == null ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function draw() {
    var elapsed = Math.floor((Date.now() - received) / 1000);
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (!calls.length) {
      var empty = document.createElement("tr");
      empty.className = "empty";
      var td = cell(empty, "No call in progress.");
      td.colSpan = 6;
      body.appendChild(empty);
      return;
    }
    calls.forEach(function (c) {
      var row = document.createElement("tr");
      row.setAttribute("data-call", String(c.id));
      cell(row, c.state);
      var who = cell(row, "");
      var name = document.createElement("span");
      name.className = "caller-name";
      name.textContent = c.caller_name || "";
      who.appendChild(name);
      who.appendChild(document.createTextNode(" " + (c.caller_display || "withheld")));
      cell(row, c.tracking_number);
      cell(row, c.source);
      cell(row, c.answered_by);
      cell(row, (c.seconds + elapsed) + " s", "num");
      body.appendChild(row);
    });
  }

  var source = new EventSource(body.closest("main").ownerDocument.location.pathname.replace(/\/live$/, "/live/events"));
  source.addEventListener("calls", function (e) {
    calls = JSON.parse(e.data).calls;
    received = Date.now();
    status.textContent = "Updated " + new Date().toLocaleTimeString() + ": " + calls.length + " call(s) in progress.";
    draw();
  });
  source.addEventListener("signed-out", function () {
    source.close();
    status.textContent = "You were signed out. Reload to sign in again.";
  });
  setInterval(function () { if (calls.length) { draw(); } }, 1000);
})();
