/* visitsdash pages: the few behaviours that need a script. Served from static/ because the
   Content-Security-Policy allows no inline script or event-handler attribute. */
(function () {
  "use strict";

  // The map frames are sandboxed (no same-origin): they ask this page, by postMessage, for a
  // visit's summary, for the offline basemap and for the visits in view, which this page fetches
  // (with the user's session) and hands back as plain data. Only from the URLs on the frame's
  // element: a frame names none. Each kind of question has its handler below, which checks the
  // question and answers with `reply(fields)`: the question's kind, its key (a summary's id, else
  // the seq that visit-map.js's parentAsk numbers questions with), ok and the answer.
  function json(response) { return response.ok ? response.json() : Promise.reject(response.status); }

  function answerer(data, reply) {
    return function (ok, body) { reply({seq: data.seq, ok: ok, body: body}); };
  }

  var basemap = null; // the basemap's TopoJSON, fetched once for every frame of the page

  function basemapAsked(data, frame, reply) {
    if (!Number.isSafeInteger(data.seq) || !frame.dataset.basemapUrl) { return; }
    var answer = answerer(data, reply);
    basemap = basemap || fetch(frame.dataset.basemapUrl).then(json);
    basemap.then(function (topology) { answer(true, topology); }).catch(function () {
      basemap = null; // asked again by the next frame
      answer(false, null);
    });
  }

  // The visits in view, for a map drawn from the server's clusters (static/js/visit-map.js): the
  // clusters or the points of the frame's box and zoom, with the frame's own filters (its query
  // string). The frame's previous request is aborted; the legend's "in view" line shows the totals.
  var inFlight = new Map(); // frame -> the AbortController of its request

  function inViewShow(body) {
    var note = document.querySelector("[data-in-view]");
    if (!note || typeof body.total !== "number") { return; }
    note.textContent = body.total.toLocaleString("en-US") + " visit" + (body.total === 1 ? "" : "s") + " in view";
    note.hidden = false;
  }

  function viewAsked(data, frame, reply) {
    var answer = answerer(data, reply);
    var url = data.kind === "points" ? frame.dataset.pointsUrl : data.kind === "clusters" ? frame.dataset.clustersUrl : null;
    var box = data.bbox;
    var boxed = Array.isArray(box) && box.length === 4 && box.every(Number.isFinite);
    if (!url || !Number.isSafeInteger(data.seq) || !boxed || !Number.isSafeInteger(data.zoom)) { return; }
    var target = new URL(url, window.location.href);
    new URL(frame.src, window.location.href).searchParams.forEach(function (value, key) {
      target.searchParams.append(key, value);
    });
    target.searchParams.set("bbox", box.map(function (x) { return x.toFixed(6); }).join(","));
    target.searchParams.set("zoom", String(data.zoom));
    if (inFlight.has(frame)) { inFlight.get(frame).abort(); }
    var controller = new AbortController();
    inFlight.set(frame, controller);
    fetch(target, {credentials: "same-origin", signal: controller.signal})
      .then(json)
      .then(function (body) {
        if (data.kind === "clusters") { inViewShow(body); }
        answer(true, body);
      })
      .catch(function (error) {
        if (!(error && error.name === "AbortError")) { answer(false, null); }
      });
  }

  function summaryAsked(data, frame, reply) {
    if (!Number.isSafeInteger(data.id) || data.id <= 0) { return; }
    function answer(ok, summary) { reply({id: data.id, ok: ok, summary: summary}); }
    fetch(frame.dataset.summaryUrl.replace("/0/", "/" + data.id + "/"), {credentials: "same-origin"})
      .then(json)
      .then(function (j) { answer(true, String(j.summary || "")); })
      .catch(function () { answer(false, ""); });
  }

  var asked = {basemap: basemapAsked, view: viewAsked, summary: summaryAsked};

  window.addEventListener("message", function (event) {
    var data = event.data;
    var handler = data && Object.prototype.hasOwnProperty.call(asked, data.visitsdash) ? asked[data.visitsdash] : null;
    if (!handler) { return; }
    var frame = Array.prototype.find.call(document.querySelectorAll("iframe.map[data-summary-url]"), function (f) {
      return f.contentWindow === event.source;
    });
    if (!frame) { return; }
    handler(data, frame, function (fields) {
      event.source.postMessage(Object.assign({visitsdash: data.visitsdash}, fields), "*");
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    // "Select all on this page" in the review queue.
    document.querySelectorAll("input.select-all").forEach(function (all) {
      all.addEventListener("change", function () {
        document.querySelectorAll("input[name=visit]").forEach(function (box) { box.checked = all.checked; });
      });
    });
    // The decide forms: an accept's reasons shown only when Accept is chosen (and then one is
    // required), the note required for "other". Without this script all are shown and the
    // server checks the same.
    document.querySelectorAll("[data-decide]").forEach(function (box) {
      var reasons = box.querySelector("[data-accept-reasons]");
      var note = box.querySelector("[name=note]");
      function update() {
        var kind = box.querySelector("input[name=kind]:checked");
        var accepting = !!kind && kind.value === "accept";
        var reason = box.querySelector("input[name=reason]:checked");
        if (reasons) {
          reasons.hidden = !accepting;
          reasons.querySelectorAll("input[name=reason]").forEach(function (r) {
            r.required = accepting;
            if (!accepting) { r.checked = false; }
          });
        }
        if (note) { note.required = !!reason && reason.value === "other" && (accepting || !reasons); }
      }
      box.addEventListener("change", update);
      update();
    });
    // A <select data-autosubmit> sends its form when changed.
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  });
})();
