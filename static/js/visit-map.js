/* visitsdash: the visits on a map document, built from the JSON data block the server wrote
   (<script type="application/json" id="visit-data">). Every text from Sell is set with
   textContent and never parsed as HTML; the server passes none of it through folium.

   The map document runs sandboxed (no same-origin), so it cannot read the parent page or make
   signed-in requests: a popup asks the page around it for the visit's summary (static/js/app.js)
   by postMessage. */
(function () {
  "use strict";

  var pending = {}; // visit id -> the summary nodes waiting for its text

  function line(box, tag, text, cls) {
    var node = document.createElement(tag);
    node.textContent = text;
    if (cls) { node.className = cls; }
    box.appendChild(node);
    return node;
  }

  /* Metres as the pages say them (geo/distance.py's distance_text): "250 m", "3.2 km", "120 km". */
  function distanceText(metres) {
    if (metres < 999.5) { return Math.round(metres) + " m"; }
    if (metres < 99950) { return (metres / 1000).toLocaleString("en-US", {minimumFractionDigits: 1, maximumFractionDigits: 1}) + " km"; }
    return Math.round(metres / 1000).toLocaleString("en-US") + " km";
  }

  function summaryShow(id, text) {
    (pending[id] || []).forEach(function (node) { node.textContent = text; });
    delete pending[id];
  }

  window.addEventListener("message", function (event) {
    var data = event.data;
    if (event.source !== window.parent || !data || data.visitsdash !== "summary" || typeof data.id !== "number") {
      return;
    }
    summaryShow(data.id, data.ok ? (String(data.summary || "") || "(no summary)") : "(summary unavailable)");
  });

  /* Questions to the page around the frame, answered by postMessage (static/js/app.js): the
     offline basemap, and with the server's clusters, the visits in view. Each has a sequence
     number; an answer to an older question than the last of its kind is dropped. */
  var asked = {}; // kind -> {seq: the last question's number, done: its callback}
  var seqNext = 1;
  function parentAsk(kind, fields, done) {
    var seq = seqNext++;
    asked[kind] = {seq: seq, done: done};
    var message = {visitsdash: kind, seq: seq};
    Object.keys(fields).forEach(function (key) { message[key] = fields[key]; });
    window.parent.postMessage(message, "*");
  }
  window.addEventListener("message", function (event) {
    var data = event.data;
    if (event.source !== window.parent || !data || typeof data.seq !== "number") { return; }
    var question = asked[data.visitsdash];
    if (!question || question.seq !== data.seq) { return; }
    delete asked[data.visitsdash];
    question.done(data.ok ? data.body : null);
  });

  /* The offline basemap: Natural Earth's countries (static/vendor/world-atlas) on a pane of their
     own beneath the visits, on a sea-coloured map. Drawn at once without tiles (tiles null), or
     when TILE_ERRORS_MAX of the tiles failed to load (an intranet without the tile server): the
     tile layer is then removed. window.visitsdashBasemapDrawn: the number of countries drawn. */
  var TILE_ERRORS_MAX = 3;
  window.visitsdashBasemap = function (map, options) {
    var drawn = false;
    function draw() {
      if (drawn) { return; }
      drawn = true;
      if (options.tiles) { map.removeLayer(options.tiles); }
      map.getContainer().style.background = "#dce9f2"; // the sea (CSSOM: allowed by the policy)
      var pane = map.createPane("basemap");
      pane.style.zIndex = 150; // beneath the tiles (200) and the visits (400)
      pane.style.pointerEvents = "none";
      function show(topology) {
        if (!topology || !topology.objects || !topology.objects.countries) { return; }
        var countries = topojson.feature(topology, topology.objects.countries);
        // On a canvas of its own: as SVG, the world's 160,000 points took seconds to redraw at each move.
        var renderer = L.canvas({pane: "basemap"});
        var drawnLayer = L.geoJSON(countries, {pane: "basemap", renderer: renderer, interactive: false,
          attribution: "Natural Earth", style: {color: "#9aa5ad", weight: 0.8, fillColor: "#f4f1ea", fillOpacity: 1}
        }).addTo(map);
        window.visitsdashBasemapDrawn = drawnLayer.getLayers().length; // the countries drawn
      }
      if (window.parent === window) { return; } // opened on its own: no page to fetch it
      parentAsk("basemap", {}, show);
    }
    if (!options.tiles) {
      draw();
      return;
    }
    var errors = 0;
    options.tiles.on("tileerror", function () {
      errors += 1;
      if (errors >= TILE_ERRORS_MAX) { draw(); }
    });
  };

  function summaryLoad(id, node) {
    (pending[id] = pending[id] || []).push(node);
    if (window.parent === window) { // opened on its own: there is no page to ask
      summaryShow(id, "(open the visit to read its summary)");
      return;
    }
    window.parent.postMessage({visitsdash: "summary", id: id}, "*");
  }

  /* A visit's popup: v = {id, rep, date, outcome (null: none), status (its label), metres (null:
     unknown)}, every text set as text. */
  function visitPopup(v, look, time) {
    var box = document.createElement("div");
    box.className = "visit-popup";
    line(box, "strong", v.rep);
    line(box, "div", time.format(v.date).replace(",", "") + " (" + look.zone + ")");
    line(box, "div", v.outcome === null ? "(no outcome)" : v.outcome);
    line(box, "div", v.status, "status");
    if (v.metres !== null) { line(box, "div", distanceText(v.metres) + " from the customer", "distance"); }
    summaryLoad(v.id, line(box, "div", "…", "summary"));
    var link = line(box, "a", "Open the visit");
    link.href = look.visitUrl.replace("/0/", "/" + v.id + "/");
    link.target = "_top";
    return box;
  }

  /* A row of a data block or of /map/points.json ([lat, lng, status, rep, outcome, minutes since
     1970, visit id, customer, metres from it], indexes into the lookups) as visitPopup's v. */
  function rowVisit(row, look) {
    return {id: row[6], rep: String(look.reps[row[3]]), date: new Date(row[5] * 60000),
      outcome: row[4] < 0 ? null : String(look.outcomes[row[4]]), status: look.statuses[row[2]],
      metres: row[8] >= 0 ? row[8] : null};
  }

  function customerDrawn(visit, point) {
    return L.layerGroup([
      L.polyline([visit, point], {className: "visit-customer-line", color: "#2b6cb0", weight: 2,
        dashArray: "6 4", interactive: false}),
      L.circleMarker(point, {className: "visit-customer", radius: 8, weight: 3, color: "#2b6cb0",
        fillColor: "#fff", fillOpacity: 1, interactive: false})
    ]);
  }

  /* The customer's point and the line to it while a visit's popup is open: a function that draws a
     layer from customerDrawn, removed when the popup closes. */
  function customerWhileOpen(map) {
    var shown = null;
    map.on("popupclose", function () {
      if (shown) { map.removeLayer(shown); shown = null; }
    });
    return function (drawn) {
      shown = drawn;
      if (drawn) { drawn.addTo(map); }
    };
  }

  /* Rows (a data block's, or /map/points.json's) as circle markers on `layer`, indexes into their
     lookups `look`: the rep's name as a tooltip, a click opening the visit's popup and handing the
     customer's point and line (or null) to `opened`. */
  function rowsDraw(map, layer, rows, look, opened) {
    var time = new Intl.DateTimeFormat("en-CA", {timeZone: look.zone, year: "numeric", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false});
    var customers = look.customers || [];
    rows.forEach(function (row) {
      var marker = L.circleMarker([row[0], row[1]], {radius: 7, weight: 1, color: "#fff",
        fillColor: look.colors[row[2]] || "#555", fillOpacity: 0.9});
      marker.on("click", function () {
        var popup = visitPopup(rowVisit(row, look), look, time);
        L.popup({maxWidth: 320}).setLatLng([row[0], row[1]]).setContent(popup).openOn(map);
        opened(row[7] >= 0 && customers[row[7]] ? customerDrawn([row[0], row[1]], customers[row[7]]) : null);
      });
      // A function giving a node: Leaflet would parse a string as HTML.
      marker.bindTooltip(function () {
        var node = document.createElement("span");
        node.textContent = String(look.reps[row[3]]);
        return node;
      });
      layer.addLayer(marker);
    });
  }

  /* The visits in view, from the server (the data block's "server"): on load and after each move
     or zoom (debounced), the page around the frame is asked for /map/clusters.json, or from
     pointsZoom on for /map/points.json, with the page's filters, the box and the zoom; an older
     answer is dropped (and its request aborted by the page). Clusters are circles sized by their
     count, in their most common status's colour, the count as text (those that would overlap drawn
     as one); a click zooms in. Points are the visits with their popups, the customer's point while
     one is open. options.heat (the too-far heat layer) is drawn from the clusters' too-far counts. */
  function serverVisits(map, options, block) {
    var look = block.lookups, server = block.server;
    var statusIndex = {};
    look.statusKeys.forEach(function (key, i) { statusIndex[key] = i; });
    var layer = L.featureGroup().addTo(map);
    var opened = customerWhileOpen(map);

    function clusterIcon(cluster) {
      var top = null;
      Object.keys(cluster.statuses || {}).forEach(function (key) {
        if (statusIndex[key] !== undefined && (top === null || cluster.statuses[key] > cluster.statuses[top])) { top = key; }
      });
      var size = clusterSize(cluster.count);
      var node = document.createElement("div");
      node.className = "visit-cluster";
      node.textContent = String(cluster.count);
      // CSSOM, not a style attribute: the policy allows no inline style.
      node.style.background = top === null ? "#555" : look.colors[statusIndex[top]];
      node.style.font = "bold 12px sans-serif"; // first: the shorthand resets the line height
      node.style.width = node.style.height = node.style.lineHeight = size + "px";
      node.style.borderRadius = "50%";
      node.style.border = "2px solid #fff";
      node.style.color = "#fff";
      node.style.textAlign = "center";
      node.style.opacity = "0.9";
      return L.divIcon({html: node, className: "visit-cluster-icon", iconSize: [size + 4, size + 4]});
    }

    function clusterSize(count) { return Math.round(22 + 8 * Math.log10(Math.max(1, count))); }

    /* The server's cells are squares: two cells' clusters can sit a few pixels apart across their
       edge. Clusters whose circles would overlap at this zoom are drawn as one, the biggest first,
       at their visits' mean, their counts summed (the total is unchanged). */
    function clustersMerged(clusters) {
      var merged = [];
      clusters.slice().sort(function (a, b) { return b.count - a.count; }).forEach(function (c) {
        var point = map.latLngToLayerPoint([c.lat, c.lon]), radius = clusterSize(c.count) / 2 + 2;
        for (var i = 0; i < merged.length; i++) {
          var m = merged[i];
          if (point.distanceTo(m.point) < radius + m.radius) {
            var count = m.count + c.count;
            m.lat = (m.lat * m.count + c.lat * c.count) / count;
            m.lon = (m.lon * m.count + c.lon * c.count) / count;
            m.count = count;
            Object.keys(c.statuses || {}).forEach(function (key) { m.statuses[key] = (m.statuses[key] || 0) + c.statuses[key]; });
            m.point = map.latLngToLayerPoint([m.lat, m.lon]);
            m.radius = clusterSize(count) / 2 + 2;
            return;
          }
        }
        var statuses = {};
        Object.keys(c.statuses || {}).forEach(function (key) { statuses[key] = c.statuses[key]; });
        merged.push({lat: c.lat, lon: c.lon, count: c.count, statuses: statuses, point: point, radius: radius});
      });
      return merged;
    }

    function clustersDraw(body) {
      var heat = [];
      clustersMerged(body.clusters || []).forEach(function (c) {
        var marker = L.marker([c.lat, c.lon], {icon: clusterIcon(c), keyboard: false});
        marker.on("click", function () { map.setView([c.lat, c.lon], Math.min(map.getZoom() + 2, map.getMaxZoom())); });
        layer.addLayer(marker);
        var far = (c.statuses || {})[server.tooFar];
        if (far > 0) { heat.push([c.lat, c.lon, far]); }
      });
      if (options.heat) { options.heat.setLatLngs(heat); }
    }

    /* Points: /map/points.json's rows and lookups, in the format of a data block (rowsDraw). */
    function pointsDraw(body) {
      var rows = body.rows || [], tooFar = statusIndex[server.tooFar];
      rowsDraw(map, layer, rows, body.lookups, opened);
      if (options.heat) {
        options.heat.setLatLngs(rows.filter(function (row) { return row[2] === tooFar; }).map(function (row) {
          return [row[0], row[1], 1];
        }));
      }
    }

    function ask() {
      var b = map.getBounds(), zoom = map.getZoom();
      function clamp(x, low, high) { return Math.max(low, Math.min(high, x)); }
      var bbox = [clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -90, 90),
        clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -90, 90)];
      var kind = zoom >= server.pointsZoom ? "points" : "clusters";
      parentAsk("view", {kind: kind, bbox: bbox, zoom: zoom}, function (body) {
        window.visitsdashPending = false;
        if (!body) { return; } // failed: what is drawn stays
        layer.clearLayers();
        if (kind === "points") { pointsDraw(body); } else { clustersDraw(body); }
        window.visitsdashLoaded = true;
        window.visitsdashDraws = (window.visitsdashDraws || 0) + 1; // for the tests and the bench
        window.visitsdashDrawn = kind;
      });
    }
    var timer = null;
    map.on("moveend zoomend", function () {
      window.visitsdashPending = true; // a view asked for and not yet drawn (for the tests and the bench)
      clearTimeout(timer);
      timer = setTimeout(ask, 250);
    });
    if (window.parent !== window) {
      window.visitsdashPending = true;
      ask();
    }
    return layer;
  }

  /* Adds the visits to `map` and returns their layer: from the server (the data block's "server":
     serverVisits), or the block's rows, one circle marker each (one visit's map). Rows are [lat,
     lng, status, rep, outcome, minutes since 1970, visit id, customer, metres from it], status, rep, outcome and customer indexes into the lookup lists
     (customer -1: no point; metres -1: unknown). The customer's point and a line to the visit are
     drawn while the visit's popup is open, or always (options.customerAlways: one visit's map). */
  window.visitsdashVisits = function (map, options) {
    var block = JSON.parse(document.getElementById("visit-data").textContent);
    if (block.server) { return serverVisits(map, options, block); }
    var look = block.lookups, customers = look.customers || [];
    var layer = L.featureGroup();
    rowsDraw(map, layer, block.rows, look, options.customerAlways ? function () {} : customerWhileOpen(map));
    layer.addTo(map);
    if (options.customerAlways) {
      block.rows.forEach(function (row) {
        if (row[7] >= 0) { customerDrawn([row[0], row[1]], customers[row[7]]).addTo(map); }
      });
    }
    window.visitsdashLoaded = true;
    return layer;
  };
})();
