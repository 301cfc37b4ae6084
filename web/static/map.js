/* servicemap: the district map in the browser.
 *
 * Markers are never written into the page: each layer loads per viewport from the API
 * (H3 counts at low zoom when a layer has many facilities there, OGC API - Features items by
 * bbox otherwise; at zoom 15-16 a layer with more than cfg.tile_budget facilities in view comes
 * as vector tiles drawn on a canvas, its popups fetched on click) and popups are built here
 * from feature properties. The standalone file
 * carries a compact facility table in its config instead (cfg.data) and works offline.
 *
 * Every text that comes from data is put in the DOM with textContent or setAttribute, never
 * as HTML.
 */
(function () {
  "use strict";

  var LIVE_COLOURS = { free: "#1a7f37", full: "#b42318", offline: "#4b5563" };
  var HEX_RAMP = ["#eff3ff", "#bdd7e7", "#6baed6", "#3182bd", "#08519c"];
  var SVG_NS = "http://www.w3.org/2000/svg";

  var cfg = null;
  var map = null;
  var lang = "en";
  var layerState = {};
  var layerOrder = [];
  var disclosureCache = {};
  var pending = 0;
  var nearGroup = null;
  var lastNear = null;
  var hex = { enabled: false, group: null, ctrl: null, gen: 0 };
  var refreshTimer = null;

  // ---- small helpers -------------------------------------------------------------------

  function t(key) {
    var table = cfg.strings[lang] || {};
    if (Object.prototype.hasOwnProperty.call(table, key)) return table[key];
    return cfg.strings.en[key] || key;
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        if (attrs[name] !== null && attrs[name] !== undefined) node.setAttribute(name, attrs[name]);
      });
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function layerName(key) {
    var st = layerState[key];
    if (!st) return key;
    return st.def.names[lang] || st.def.names.en || key;
  }

  function categoryName(key) {
    var names = cfg.categories[key] || {};
    return names[lang] || names.en || key;
  }

  function svgIcon(icon) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", icon.viewBox);
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", icon.d);
    path.setAttribute("fill", "currentColor");
    svg.appendChild(path);
    return svg;
  }

  /* A link target from data: only http(s) or same-site paths, never javascript: and co. */
  function safeUrl(value) {
    if (typeof value !== "string" || !value) return null;
    try {
      var url = new URL(value, window.location.href);
      if (url.protocol === "http:" || url.protocol === "https:") return url.href;
    } catch (e) {
      return null;
    }
    return null;
  }

  function setPending(delta) {
    pending = Math.max(0, pending + delta);
    document.body.setAttribute("data-pending", String(pending));
  }

  function getJSON(url, signal) {
    setPending(1);
    return fetch(url, { signal: signal, headers: { Accept: "application/geo+json, application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status + " for " + url);
        return response.json();
      })
      .finally(function () {
        setPending(-1);
      });
  }

  function isAbort(err) {
    return err && err.name === "AbortError";
  }

  function report(err) {
    if (isAbort(err)) return;
    // a warning, not an error: the map stays usable with what it has
    if (window.console) console.warn("servicemap:", err && err.message ? err.message : err);
  }

  function formatDistance(metres) {
    if (metres === null || metres === undefined) return "";
    if (metres < 1000) return Math.round(metres) + " m";
    return (metres / 1000).toFixed(metres < 10000 ? 1 : 0) + " km";
  }

  function liveState(props) {
    var live = props.live;
    if (!live) return "nosensor";
    if (live.online === false) return "offline";
    if (live.stalls_free === 0) return "full";
    return "free";
  }

  // ---- markers and popups ---------------------------------------------------------------

  var FacilityIcon = L.DivIcon.extend({
    createIcon: function (oldIcon) {
      var div = L.DivIcon.prototype.createIcon.call(this, oldIcon);
      div.setAttribute("data-facility-id", this.options.facilityId);
      div.setAttribute("aria-label", this.options.label);
      return div;
    }
  });

  function facilityIcon(def, feature) {
    var props = feature.properties;
    var pin = el("span", { class: "sm-pin" });
    var colour = def.colour;
    var classes = "sm-marker sm-layer-" + def.key;
    var label = props.name + " (" + layerName(def.key) + ")";
    if (def.key === "toilet") {
      var state = liveState(props);
      if (LIVE_COLOURS[state]) colour = LIVE_COLOURS[state];
      classes += " sm-live-" + state;
      label += ", " + t("live_" + state);
    }
    pin.style.background = colour;
    if (def.icon) pin.appendChild(svgIcon(def.icon));
    return new FacilityIcon({
      html: pin,
      className: classes,
      iconSize: [30, 30],
      iconAnchor: [15, 15],
      popupAnchor: [0, -14],
      facilityId: String(feature.id),
      label: label
    });
  }

  function addRow(dl, label, value) {
    if (value === null || value === undefined || value === "") return;
    dl.appendChild(el("dt", null, label));
    var dd = el("dd");
    if (value instanceof Node) dd.appendChild(value);
    else dd.textContent = String(value);
    dl.appendChild(dd);
  }

  function triState(value) {
    if (value === true) return t("yes");
    if (value === false) return t("no");
    return t("unknown");
  }

  function navigationLinks(lat, lon, name) {
    var p = el("p", { class: "sm-nav" });
    p.appendChild(el("span", null, t("navigate") + ": "));
    var geo = el("a", { href: "geo:" + lat + "," + lon + "?q=" + lat + "," + lon + "(" + encodeURIComponent(name) + ")" }, "geo");
    var osm = el("a", {
      href: "https://www.openstreetmap.org/directions?route=%3B" + lat + "%2C" + lon + "#map=18/" + lat + "/" + lon,
      target: "_blank",
      rel: "noopener noreferrer"
    }, "OpenStreetMap");
    p.appendChild(geo);
    p.appendChild(document.createTextNode(" · "));
    p.appendChild(osm);
    return p;
  }

  function byNewest(a, b) {
    return String(b.published_at || "").localeCompare(String(a.published_at || ""));
  }

  function renderDisclosures(box, disclosures, facilityId) {
    box.textContent = "";
    Object.keys(cfg.categories).forEach(function (category) {
      var docs = ((disclosures && disclosures[category]) || []).slice().sort(byNewest);
      var stage = el("div", { class: "sm-stage", "data-category": category });
      stage.appendChild(el("h4", null, categoryName(category)));
      if (!docs.length) {
        stage.appendChild(el("p", { class: "sm-muted" }, t("none")));
      } else {
        var list = el("ul");
        docs.slice(0, cfg.per_stage).forEach(function (doc) {
          var item = el("li");
          var href = safeUrl(doc.url);
          var link = el(href ? "a" : "span", {
            href: href,
            target: href ? "_blank" : null,
            rel: href ? "noopener noreferrer" : null,
            "data-disclosure": doc.id,
            "data-category": category
          }, doc.title);
          item.appendChild(link);
          if (!cfg.data) {
            // the document's own page (its matters, facilities, QR code) beside the original
            item.appendChild(document.createTextNode(" "));
            item.appendChild(el("a", { class: "sm-doc-page", href: "/documents/" + encodeURIComponent(doc.id) + "?lang=" + lang }, "›"));
          }
          if (doc.published_at) item.appendChild(el("small", null, " " + String(doc.published_at).slice(0, 10)));
          list.appendChild(item);
        });
        stage.appendChild(list);
        if (docs.length > cfg.per_stage) {
          stage.appendChild(el("a", {
            class: "sm-more",
            href: cfg.facility_url + encodeURIComponent(facilityId) + "#" + category
          }, t("more") + " (" + docs.length + ")"));
        }
      }
      box.appendChild(stage);
    });
  }

  function loadDisclosures(box, feature) {
    var id = String(feature.id);
    if (feature.properties.disclosures) {
      renderDisclosures(box, feature.properties.disclosures, id);
      return;
    }
    if (cfg.data) {
      renderDisclosures(box, null, id);
      return;
    }
    box.textContent = "";
    box.appendChild(el("p", { class: "sm-muted" }, t("loading")));
    if (!disclosureCache[id]) {
      disclosureCache[id] = getJSON("/api/v1/facilities/" + encodeURIComponent(id)).then(function (f) {
        return (f.properties && f.properties.disclosures) || {};
      });
      disclosureCache[id].catch(function () {
        delete disclosureCache[id];
      });
    }
    disclosureCache[id].then(
      function (disclosures) {
        renderDisclosures(box, disclosures, id);
      },
      function (err) {
        report(err);
        box.textContent = "";
        box.appendChild(el("p", { class: "sm-muted" }, t("disclosures_unavailable")));
      }
    );
  }

  // a service hall's live queue and its page (booking, queue numbers), when it has a set-up
  function hallLoad(root, dl, id) {
    getJSON("/api/v1/halls/" + encodeURIComponent(id) + "/queue").then(function (q) {
      var row = el("span", { class: "sm-hall-load" },
        q.waiting + " · ~" + q.estimated_wait_min + " min");
      addRow(dl, t("hall_queue"), row);
      root.insertBefore(el("a", { class: "sm-hall-page", href: "/halls/" + encodeURIComponent(id) + "?lang=" + lang }, t("hall_page")), dl.nextSibling);
    }).catch(function () {});
  }

  function buildPopup(feature) {
    var props = feature.properties;
    var coords = feature.geometry.coordinates;
    var lat = coords[1];
    var lon = coords[0];
    var root = el("div", { class: "sm-popup", "data-facility-id": String(feature.id) });
    root.appendChild(el("h2", { class: "sm-popup-title" }, props.name));
    if (lang === "en" && props.name_en && props.name_en !== props.name) {
      root.appendChild(el("p", { class: "sm-muted", lang: "en" }, props.name_en));
    }
    var kind = layerName(props.layer);
    if (props.status === "temporarily_closed") kind += " · " + t("temporarily_closed");
    root.appendChild(el("p", { class: "sm-kind" }, kind));
    var dl = el("dl", { class: "sm-facts" });
    addRow(dl, t("address"), props.address);
    if (props.opening_hours || props.open_now !== null) {
      var hours = el("span");
      if (props.opening_hours) hours.appendChild(el("span", null, props.opening_hours + " "));
      if (!cfg.data) {
        var open = props.open_now === true ? "open_now" : props.open_now === false ? "closed_now" : "hours_unknown";
        hours.appendChild(el("span", { class: "sm-open sm-" + open }, t(open)));
      }
      addRow(dl, t("hours"), hours);
    }
    if (props.phone) {
      addRow(dl, t("phone"), el("a", { href: "tel:" + String(props.phone).replace(/[^0-9+]/g, "") }, props.phone));
    }
    addRow(dl, t("accessible"), triState(props.accessible));
    if (props.rating) {
      var rating = props.rating.count
        ? "★ " + Number(props.rating.average).toFixed(1) + " (" + props.rating.count + " " + t("ratings") + ")"
        : t("no_ratings");
      addRow(dl, t("rating"), rating);
    }
    if (props.layer === "toilet") {
      var state = liveState(props);
      var live = el("span", { class: "sm-live sm-live-" + state }, t("live_" + state));
      if (props.live && props.live.stalls_total !== null && props.live.stalls_total !== undefined && state !== "offline") {
        live.appendChild(document.createTextNode(
          " · " + t("stalls_free") + " " + props.live.stalls_free + "/" + props.live.stalls_total));
      }
      if (props.live && props.live.last_seen) {
        live.appendChild(el("small", null, " · " + t("last_seen") + " " + String(props.live.last_seen).slice(0, 16).replace("T", " ")));
      }
      addRow(dl, t("toilet_status"), live);
    }
    root.appendChild(dl);
    if (props.layer === "service_hall" && !cfg.data) hallLoad(root, dl, String(feature.id));
    root.appendChild(navigationLinks(lat, lon, props.name));
    var section = el("section", { class: "sm-disclosures" });
    section.appendChild(el("h3", null, t("disclosures")));
    var box = el("div", { class: "sm-disclosure-groups" });
    section.appendChild(box);
    root.appendChild(section);
    root.appendChild(el("a", {
      class: "sm-details",
      href: cfg.facility_url + encodeURIComponent(String(feature.id))
    }, t("details")));
    if (!cfg.data) root.appendChild(followButton({ "data-follow-kind": "facility", "data-follow-id": String(feature.id) }, t("follow")));
    loadDisclosures(box, feature);
    return root;
  }

  /* A one-click follow button: follow.js (loaded with this script) subscribes the resident (or
   * leads to /me to sign in). The standalone file has no server to follow through. */
  function followButton(data, label) {
    var attrs = { type: "button", class: "sm-follow", "data-following": t("following") };
    Object.keys(data).forEach(function (name) { attrs[name] = data[name]; });
    return el("button", attrs, label);
  }

  function popupOptions() {
    return {
      maxWidth: Math.min(340, window.innerWidth - 48),
      minWidth: Math.min(240, window.innerWidth - 64),
      maxHeight: Math.max(220, Math.round(window.innerHeight * 0.6)),
      autoPanPadding: [16, 16]
    };
  }

  function makeMarker(def, feature) {
    var coords = feature.geometry.coordinates;
    var marker = L.marker([coords[1], coords[0]], {
      icon: facilityIcon(def, feature),
      title: feature.properties.name,
      keyboard: true,
      riseOnHover: true
    });
    marker.feature = feature;
    marker.bindPopup(function (layer) {
      return buildPopup(layer.feature);
    }, popupOptions());
    return marker;
  }

  // ---- per-layer loading ----------------------------------------------------------------

  function clusterIcon(def) {
    return function (cluster) {
      var n = cluster.getChildCount();
      var span = el("span", { class: "sm-bubble" }, n);
      span.style.background = def.colour;
      return new FacilityIcon({
        html: span,
        className: "sm-cluster sm-layer-" + def.key,
        iconSize: [36, 36],
        facilityId: "",
        label: layerName(def.key) + ": " + n + " " + t("facilities")
      });
    };
  }

  function makeState(def, index) {
    var st = {
      def: def,
      index: index,
      enabled: true,
      markers: {},
      cluster: L.markerClusterGroup({
        showCoverageOnHover: false,
        maxClusterRadius: 40,
        disableClusteringAtZoom: 17,
        chunkedLoading: true,
        iconCreateFunction: clusterIcon(def)
      }),
      aggregates: L.layerGroup(),
      tiles: null,
      tilesLoading: false,
      gen: 0,
      ctrl: null
    };
    return st;
  }

  // ---- dense layers at street level: vector tiles on a canvas -----------------------------

  /* A facility as the tile has it (id, name, layer, open_now, stalls), as a Feature. */
  function tileProperties(props) {
    var live = null;
    if (props.stalls_total !== undefined && props.stalls_total !== null) {
      var free = props.stalls_free === undefined ? null : props.stalls_free;
      live = { stalls_total: props.stalls_total, stalls_free: free, online: free !== null };
    }
    return { layer: props.layer, name: props.name, live: live };
  }

  function tileStyle(def) {
    return function (props) {
      var colour = def.colour;
      if (def.key === "toilet") {
        var state = liveState(tileProperties(props));
        if (LIVE_COLOURS[state]) colour = LIVE_COLOURS[state];
      }
      // over 10 px: Leaflet 1.9 takes a smaller circle for a marker and asks for its latlng,
      // which a tile's point does not have (and a marker icon is 30 px across anyway)
      return { radius: 11, weight: 2, color: "#ffffff", fill: true, fillColor: colour, fillOpacity: 1 };
    };
  }

  /* A click on a drawn facility: its popup, built from the facility itself (the tile holds
   * only what drawing needs), with its disclosures and follow button like a marker's. */
  function openTileFacility(id) {
    getJSON("/api/v1/facilities/" + encodeURIComponent(id)).then(function (feature) {
      var coords = feature.geometry.coordinates;
      L.popup(popupOptions()).setLatLng([coords[1], coords[0]]).setContent(buildPopup(feature)).openOn(map);
    }).catch(report);
  }

  function tilesLoading(st, loading) {
    if (st.tilesLoading === loading) return;
    st.tilesLoading = loading;
    setPending(loading ? 1 : -1);
  }

  function tileLayer(st) {
    if (st.tiles) return st.tiles;
    // VectorGrid 1.3 stops a canvas click with L.DomEvent.fakeStop, which Leaflet 1.8 dropped;
    // Leaflet 1.9 already keeps a canvas' clicks from the map, so there is nothing left to do
    if (!L.DomEvent.fakeStop) L.DomEvent.fakeStop = function () { return L.DomEvent; };
    var styles = {};
    styles[st.def.key] = tileStyle(st.def);
    st.tiles = L.vectorGrid.protobuf(
      "/ogc/collections/" + encodeURIComponent(st.def.key) + "/tiles/WebMercatorQuad/{z}/{y}/{x}", {
        rendererFactory: L.canvas.tile,
        interactive: true,
        minZoom: cfg.detail_zoom,
        vectorTileLayerStyles: styles,
        getFeatureId: function (f) { return f.properties.id; }
      });
    st.tiles.on("click", function (e) {
      if (e.layer && e.layer.properties) openTileFacility(String(e.layer.properties.id));
    });
    st.tiles.on("loading", function () { tilesLoading(st, true); });
    st.tiles.on("load", function () { tilesLoading(st, false); });
    return st.tiles;
  }

  function showTiles(st) {
    clearMarkers(st);
    st.aggregates.clearLayers();
    var layer = tileLayer(st);
    if (!map.hasLayer(layer)) map.addLayer(layer);
  }

  function hideTiles(st) {
    if (st.tiles && map.hasLayer(st.tiles)) map.removeLayer(st.tiles);
    tilesLoading(st, false);
  }

  function requestBbox() {
    var b = map.getBounds();
    var d = cfg.district.bbox;
    // the API bounds a bbox's area: stay within ~30 km of the district
    var pad = 0.3;
    var minLon = Math.max(b.getWest(), d[0] - pad, -180);
    var minLat = Math.max(b.getSouth(), d[1] - pad, -90);
    var maxLon = Math.min(b.getEast(), d[2] + pad, 180);
    var maxLat = Math.min(b.getNorth(), d[3] + pad, 90);
    if (!(minLon < maxLon && minLat < maxLat)) return null;
    return [minLon, minLat, maxLon, maxLat].map(function (v) { return v.toFixed(6); }).join(",");
  }

  function aggregateResolution(zoom) {
    return Math.max(5, Math.min(9, Math.round(zoom) - 6));
  }

  function clearMarkers(st) {
    st.cluster.clearLayers();
    st.markers = {};
  }

  function addFeatures(st, features, seen) {
    var fresh = [];
    features.forEach(function (feature) {
      if (!feature || !feature.geometry || feature.geometry.type !== "Point") return;
      var id = String(feature.id);
      seen[id] = true;
      var existing = st.markers[id];
      if (existing) {
        var before = st.def.key === "toilet" ? liveState(existing.feature.properties) : null;
        existing.feature = feature;
        if (before !== null && before !== liveState(feature.properties) && !existing.isPopupOpen()) {
          existing.setIcon(facilityIcon(st.def, feature));
        }
        return;
      }
      var marker = makeMarker(st.def, feature);
      st.markers[id] = marker;
      fresh.push(marker);
    });
    if (fresh.length) st.cluster.addLayers(fresh);
  }

  function pruneMarkers(st, seen) {
    var stale = [];
    Object.keys(st.markers).forEach(function (id) {
      if (!seen[id] && !st.markers[id].isPopupOpen()) {
        stale.push(st.markers[id]);
        delete st.markers[id];
      }
    });
    if (stale.length) st.cluster.removeLayers(stale);
  }

  // API links carry SERVICEMAP_PUBLIC_URL; the page asks the server it came from (CSP
  // connect-src 'self'), whatever host name the reader used to reach it
  function ownOrigin(href) {
    var url = new URL(href, window.location.href);
    return url.pathname + url.search;
  }

  function loadItems(st, bbox, gen, ctrl, maxPages) {
    var seen = {};
    var pages = 0;
    var url = "/ogc/collections/" + encodeURIComponent(st.def.key) + "/items?bbox=" + bbox + "&limit=" + cfg.page_limit;
    function page(href) {
      return getJSON(href, ctrl.signal).then(function (fc) {
        if (gen !== st.gen) return null;
        pages += 1;
        if (pages === 1) {
          st.aggregates.clearLayers();
          hideTiles(st);
        }
        addFeatures(st, fc.features || [], seen);
        var next = (fc.links || []).filter(function (link) { return link.rel === "next"; })[0];
        if (next && pages < maxPages) return page(ownOrigin(next.href));
        pruneMarkers(st, seen);
        return null;
      });
    }
    return page(url);
  }

  function ringCentre(geometry) {
    var ring = geometry.type === "Polygon" ? geometry.coordinates[0] : geometry.coordinates[0][0];
    var lat = 0;
    var lon = 0;
    var n = ring.length > 1 ? ring.length - 1 : ring.length;
    for (var i = 0; i < n; i++) {
      lon += ring[i][0];
      lat += ring[i][1];
    }
    return L.latLng(lat / n, lon / n);
  }

  function drawAggregates(st, fc) {
    clearMarkers(st);
    hideTiles(st);
    st.aggregates.clearLayers();
    // each layer's bubble sits at its own angle around the cell centre so they do not overlap
    var angle = (2 * Math.PI * st.index) / Math.max(1, layerOrder.length);
    var dx = Math.round(Math.cos(angle) * 14);
    var dy = Math.round(Math.sin(angle) * 14);
    (fc.features || []).forEach(function (cell) {
      var n = cell.properties && (cell.properties.count || cell.properties.value);
      if (!n || !cell.geometry) return;
      var centre = ringCentre(cell.geometry);
      var size = Math.round(22 + Math.min(18, Math.log(n + 1) * 3));
      var span = el("span", { class: "sm-bubble" }, n);
      span.style.background = st.def.colour;
      var label = layerName(st.def.key) + ": " + n + " " + t("facilities") + ", " + t("zoom_in");
      var marker = L.marker(centre, {
        icon: new FacilityIcon({
          html: span,
          className: "sm-agg sm-layer-" + st.def.key,
          iconSize: [size, size],
          iconAnchor: [size / 2 - dx, size / 2 - dy],
          facilityId: "",
          label: label
        }),
        title: label,
        keyboard: true
      });
      marker.on("click", function () {
        map.setView(centre, Math.min(map.getZoom() + 2, cfg.detail_zoom));
      });
      st.aggregates.addLayer(marker);
    });
  }

  function refreshLayer(st) {
    st.gen += 1;
    if (st.ctrl) st.ctrl.abort();
    st.ctrl = null;
    if (!st.enabled) return;
    var bbox = requestBbox();
    if (!bbox) {
      clearMarkers(st);
      st.aggregates.clearLayers();
      return;
    }
    var gen = st.gen;
    var ctrl = new AbortController();
    st.ctrl = ctrl;
    var zoom = map.getZoom();
    var work;
    var few = st.def.count !== null && st.def.count !== undefined && st.def.count <= cfg.max_markers;
    // from detail_zoom to marker_zoom a dense layer may come as vector tiles (below: aggregates)
    var street = zoom >= cfg.detail_zoom;
    if (few || zoom >= cfg.marker_zoom || (street && !L.vectorGrid)) {
      // close in, or a layer small enough in the whole district: the facilities themselves
      work = loadItems(st, bbox, gen, ctrl, cfg.max_pages);
    } else {
      var url = "/api/v1/h3?resolution=" + aggregateResolution(zoom) + "&bbox=" + bbox +
        "&layer=" + encodeURIComponent(st.def.key) + "&metric=count";
      work = getJSON(url, ctrl.signal).then(
        function (fc) {
          if (gen !== st.gen) return null;
          var total = 0;
          (fc.features || []).forEach(function (cell) {
            total += (cell.properties && cell.properties.count) || 0;
          });
          if (total <= (street ? cfg.tile_budget : cfg.max_markers)) {
            return loadItems(st, bbox, gen, ctrl, cfg.max_pages);
          }
          if (street) showTiles(st);
          else drawAggregates(st, fc);
          return null;
        },
        function (err) {
          if (isAbort(err) || gen !== st.gen) return null;
          report(err);
          // without aggregates, one page of facilities is still better than nothing
          return loadItems(st, bbox, gen, ctrl, 1);
        }
      );
    }
    work.catch(report);
  }

  function refreshAll() {
    if (cfg.data) return;
    layerOrder.forEach(function (key) {
      refreshLayer(layerState[key]);
    });
    refreshHexagons();
  }

  function scheduleRefresh() {
    if (refreshTimer) window.clearTimeout(refreshTimer);
    refreshTimer = window.setTimeout(refreshAll, 120);
  }

  function setLayerEnabled(key, enabled) {
    var st = layerState[key];
    if (!st) return;
    st.enabled = enabled;
    if (enabled) {
      map.addLayer(st.cluster);
      map.addLayer(st.aggregates);
      if (!cfg.data) refreshLayer(st);
    } else {
      st.gen += 1;
      if (st.ctrl) st.ctrl.abort();
      map.removeLayer(st.cluster);
      map.removeLayer(st.aggregates);
      hideTiles(st);
    }
  }

  // ---- H3 hexagon statistics ------------------------------------------------------------

  function hexColour(value, min, max) {
    if (value === null || value === undefined) return "#d1d5db";
    var share = max > min ? (value - min) / (max - min) : 1;
    return HEX_RAMP[Math.min(HEX_RAMP.length - 1, Math.floor(share * HEX_RAMP.length))];
  }

  function hexLegend(metric, min, max) {
    var box = document.getElementById("sm-hex-legend");
    if (!box) return;
    box.textContent = "";
    if (min === null) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.appendChild(el("span", null, t("metric_" + metric) + ": "));
    var ramp = el("span", { class: "sm-ramp", "aria-hidden": "true" });
    HEX_RAMP.forEach(function (colour) {
      var swatch = el("span");
      swatch.style.background = colour;
      ramp.appendChild(swatch);
    });
    box.appendChild(el("span", null, formatValue(min) + " "));
    box.appendChild(ramp);
    box.appendChild(el("span", null, " " + formatValue(max)));
  }

  function formatValue(v) {
    return Math.round(v) === v ? String(v) : Number(v).toFixed(1);
  }

  function refreshHexagons() {
    hex.gen += 1;
    if (hex.ctrl) hex.ctrl.abort();
    hex.ctrl = null;
    if (!hex.enabled || cfg.data) return;
    var bbox = requestBbox();
    if (!bbox) return;
    var metric = document.getElementById("sm-hex-metric").value;
    var resolution = Math.max(5, Math.min(10, Math.round(map.getZoom()) - 5));
    var url = "/api/v1/h3?resolution=" + resolution + "&bbox=" + bbox + "&metric=" + encodeURIComponent(metric);
    if (metric !== "count") url += "&layer=toilet";
    var gen = hex.gen;
    var ctrl = new AbortController();
    hex.ctrl = ctrl;
    getJSON(url, ctrl.signal).then(function (fc) {
      if (gen !== hex.gen) return;
      var values = (fc.features || [])
        .map(function (f) { return f.properties && f.properties.value; })
        .filter(function (v) { return v !== null && v !== undefined; });
      var min = values.length ? Math.min.apply(null, values) : null;
      var max = values.length ? Math.max.apply(null, values) : null;
      hex.group.clearLayers();
      hex.group.addData(fc);
      hex.group.eachLayer(function (layer) {
        var p = layer.feature.properties || {};
        layer.setStyle({
          color: "#08306b",
          weight: 1,
          fillOpacity: 0.55,
          fillColor: hexColour(p.value, min, max)
        });
        layer.bindTooltip(t("metric_" + metric) + ": " + (p.value === null || p.value === undefined ? t("unknown") : formatValue(p.value)) +
          " (" + (p.count || 0) + " " + t("facilities") + ")");
      });
      hexLegend(metric, min, max);
    }).catch(report);
  }

  // ---- near me ----------------------------------------------------------------------------

  function nearStatus(text) {
    var status = document.getElementById("sm-near-status");
    if (status) status.textContent = text;
  }

  function haversine(lat1, lon1, lat2, lon2) {
    var r = 6371008.8;
    var p1 = (lat1 * Math.PI) / 180;
    var p2 = (lat2 * Math.PI) / 180;
    var dp = p2 - p1;
    var dl = ((lon2 - lon1) * Math.PI) / 180;
    var a = Math.sin(dp / 2) * Math.sin(dp / 2) + Math.cos(p1) * Math.cos(p2) * Math.sin(dl / 2) * Math.sin(dl / 2);
    return 2 * r * Math.asin(Math.sqrt(a));
  }

  function embeddedNearest(lat, lon, layer, k) {
    var found = [];
    layerOrder.forEach(function (key) {
      if (layer && key !== layer) return;
      (layerState[key].features || []).forEach(function (f) {
        var c = f.geometry.coordinates;
        found.push({ f: f, d: haversine(lat, lon, c[1], c[0]) });
      });
    });
    found.sort(function (a, b) { return a.d - b.d; });
    return found.slice(0, k).map(function (item) {
      var props = Object.assign({}, item.f.properties, { distance_m: Math.round(item.d * 100) / 100 });
      return { type: "Feature", id: item.f.id, geometry: item.f.geometry, properties: props };
    });
  }

  function openFeaturePopup(feature) {
    var coords = feature.geometry.coordinates;
    var latlng = L.latLng(coords[1], coords[0]);
    // no animation: the popup pans itself into view only once the map stands still
    map.setView(latlng, Math.max(map.getZoom(), 17), { animate: false });
    L.popup(popupOptions()).setLatLng(latlng).setContent(buildPopup(feature)).openOn(map);
  }

  function renderNear() {
    var list = document.getElementById("sm-near-list");
    if (!list || !lastNear) return;
    list.textContent = "";
    var oldFollow = document.getElementById("sm-near-follow");
    if (oldFollow) oldFollow.parentNode.removeChild(oldFollow);
    nearGroup.clearLayers();
    var origin = L.latLng(lastNear.lat, lastNear.lon);
    L.circleMarker(origin, { radius: 8, color: "#111827", weight: 3, fillColor: "#fbbf24", fillOpacity: 1 })
      .bindTooltip(t("you_are_here"))
      .addTo(nearGroup);
    if (lastNear.layer && !cfg.data) {
      // the searched kind around the searched point, as an area subscription
      var follow = followButton({
        id: "sm-near-follow",
        "data-follow-kind": "area",
        "data-follow-layer": lastNear.layer,
        "data-follow-lat": lastNear.lat.toFixed(6),
        "data-follow-lon": lastNear.lon.toFixed(6),
        "data-follow-radius": String(cfg.follow_radius_m)
      }, t("follow_area").replace("{layer}", layerName(lastNear.layer)).replace("{radius}", cfg.follow_radius_m));
      list.parentNode.insertBefore(follow, list.nextSibling);
    }
    if (!lastNear.features.length) {
      nearStatus(t("no_results"));
      return;
    }
    nearStatus(t("results") + " (" + lastNear.features.length + ")");
    var bounds = L.latLngBounds([origin]);
    lastNear.features.forEach(function (feature, i) {
      var props = feature.properties;
      var coords = feature.geometry.coordinates;
      var latlng = L.latLng(coords[1], coords[0]);
      bounds.extend(latlng);
      var item = el("li", { "data-id": String(feature.id) });
      var button = el("button", { type: "button", class: "sm-near-item" });
      button.appendChild(el("span", { class: "sm-near-name" }, props.name));
      button.appendChild(el("span", { class: "sm-near-kind" }, layerName(props.layer)));
      button.appendChild(el("span", { class: "sm-near-distance" }, formatDistance(props.distance_m)));
      button.addEventListener("click", function () {
        openFeaturePopup(feature);
      });
      item.appendChild(button);
      list.appendChild(item);
      var number = el("span", { class: "sm-number" }, i + 1);
      L.marker(latlng, {
        icon: L.divIcon({ html: number, className: "sm-number-icon", iconSize: [22, 22], iconAnchor: [11, 30] }),
        title: (i + 1) + ". " + props.name,
        keyboard: false,
        interactive: false
      }).addTo(nearGroup);
    });
    map.fitBounds(bounds, { padding: [24, 24], maxZoom: 17 });
  }

  function searchNear(lat, lon) {
    var select = document.getElementById("sm-near-layer");
    var layer = select ? select.value : "";
    nearStatus(t("searching"));
    var k = 10;
    if (cfg.data) {
      lastNear = { lat: lat, lon: lon, layer: layer, features: embeddedNearest(lat, lon, layer, k) };
      renderNear();
      return;
    }
    var url = "/api/v1/nearest?lat=" + lat.toFixed(6) + "&lon=" + lon.toFixed(6) + "&k=" + k;
    if (layer) url += "&layer=" + encodeURIComponent(layer);
    getJSON(url).then(function (fc) {
      lastNear = { lat: lat, lon: lon, layer: layer, features: fc.features || [] };
      renderNear();
    }).catch(function (err) {
      report(err);
      nearStatus(t("error"));
    });
  }

  function bindNearControls() {
    var locate = document.getElementById("sm-near-locate");
    var centre = document.getElementById("sm-near-centre");
    var pick = document.getElementById("sm-near-pick");
    if (locate) {
      locate.addEventListener("click", function () {
        if (!navigator.geolocation) {
          nearStatus(t("geo_denied"));
          return;
        }
        nearStatus(t("searching"));
        navigator.geolocation.getCurrentPosition(
          function (pos) { searchNear(pos.coords.latitude, pos.coords.longitude); },
          function () { nearStatus(t("geo_denied")); },
          { enableHighAccuracy: true, timeout: 10000, maximumAge: 60000 }
        );
      });
    }
    if (centre) {
      centre.addEventListener("click", function () {
        var c = map.getCenter();
        searchNear(c.lat, c.lng);
      });
    }
    if (pick) {
      pick.addEventListener("click", function () {
        nearStatus(t("pick_prompt"));
        map.getContainer().classList.add("sm-picking");
        map.once("click", function (e) {
          map.getContainer().classList.remove("sm-picking");
          searchNear(e.latlng.lat, e.latlng.lng);
        });
      });
    }
  }

  // ---- language ---------------------------------------------------------------------------

  function setLanguage(code, updateUrl) {
    if (!cfg.strings[code]) return;
    lang = code;
    document.documentElement.lang = code;
    document.querySelectorAll("[data-i18n]").forEach(function (node) {
      node.textContent = t(node.getAttribute("data-i18n"));
    });
    document.querySelectorAll("[data-i18n-label]").forEach(function (node) {
      node.setAttribute("aria-label", t(node.getAttribute("data-i18n-label")));
    });
    document.querySelectorAll("[data-layer-name]").forEach(function (node) {
      node.textContent = layerName(node.getAttribute("data-layer-name"));
    });
    document.querySelectorAll("[data-district]").forEach(function (node) {
      node.textContent = code === "en" ? cfg.district.name_en : cfg.district.name;
    });
    document.querySelectorAll("[data-lang]").forEach(function (node) {
      if (node.getAttribute("data-lang") === code) node.setAttribute("aria-current", "true");
      else node.removeAttribute("aria-current");
    });
    document.title = t("title") + " · " + cfg.district.name;
    map.closePopup();
    if (lastNear) renderNear();
    if (updateUrl) {
      try {
        var url = new URL(window.location.href);
        url.searchParams.set("lang", code);
        window.history.replaceState(null, "", url.href);
      } catch (e) {
        // file:// pages may refuse history changes; the switch itself already happened
      }
    }
    if (!cfg.data) refreshAll();
  }

  function bindLanguage() {
    document.querySelectorAll("[data-lang]").forEach(function (node) {
      node.addEventListener("click", function (event) {
        event.preventDefault();
        setLanguage(node.getAttribute("data-lang"), true);
      });
    });
  }

  // ---- embedded (standalone file) ---------------------------------------------------------

  function embeddedFeatures() {
    var data = cfg.data;
    var cols = {};
    data.columns.forEach(function (name, i) { cols[name] = i; });
    var docs = data.documents || {};
    data.rows.forEach(function (row) {
      var key = data.layers[row[cols.layer]];
      var st = layerState[key];
      if (!st) return;
      var disclosures = {};
      (row[cols.docs] || []).forEach(function (docId) {
        var doc = docs[docId];
        if (!doc) return;
        (disclosures[doc[3]] = disclosures[doc[3]] || []).push({ id: docId, title: doc[0], url: doc[1], published_at: doc[2] });
      });
      var live = null;
      if (row[cols.live_online] !== null) {
        live = { stalls_total: row[cols.live_total], stalls_free: row[cols.live_free], online: row[cols.live_online], last_seen: row[cols.live_last_seen] };
      }
      var feature = {
        type: "Feature",
        id: row[cols.id],
        geometry: { type: "Point", coordinates: [row[cols.lon], row[cols.lat]] },
        properties: {
          layer: key,
          name: row[cols.name],
          name_en: row[cols.name_en],
          address: row[cols.address],
          phone: row[cols.phone],
          opening_hours: row[cols.opening_hours],
          open_now: null,
          accessible: row[cols.accessible],
          status: row[cols.status],
          rating: key === "toilet" || row[cols.rating_count] ? { average: row[cols.rating_avg], count: row[cols.rating_count] || 0 } : null,
          live: live,
          disclosures: disclosures
        }
      };
      st.features.push(feature);
    });
    layerOrder.forEach(function (key) {
      var st = layerState[key];
      st.cluster.addLayers(st.features.map(function (f) {
        var marker = makeMarker(st.def, f);
        st.markers[String(f.id)] = marker;
        return marker;
      }));
    });
  }

  // ---- start ------------------------------------------------------------------------------

  function viewFromUrl() {
    var params = new URLSearchParams(window.location.search);
    var at = (params.get("at") || "").split(",").map(Number);
    if (at.length === 3 && at.every(function (v) { return isFinite(v); })) {
      return { centre: [at[0], at[1]], zoom: Math.max(3, Math.min(19, at[2])) };
    }
    return null;
  }

  function start(leafletMap, config) {
    cfg = config;
    map = leafletMap;
    lang = cfg.lang;
    document.body.setAttribute("data-pending", "0");
    if (cfg.tile_url) {
      L.tileLayer(cfg.tile_url, { attribution: cfg.attribution, maxZoom: 19, crossOrigin: false }).addTo(map);
    } else {
      map.attributionControl.addAttribution(cfg.attribution);
    }
    cfg.layers.forEach(function (def, index) {
      var st = makeState(def, index);
      st.features = [];
      layerState[def.key] = st;
      layerOrder.push(def.key);
      map.addLayer(st.cluster);
      map.addLayer(st.aggregates);
    });
    nearGroup = L.layerGroup().addTo(map);
    hex.group = L.geoJSON(null);

    document.querySelectorAll(".sm-layer-toggle").forEach(function (box) {
      box.addEventListener("change", function () {
        setLayerEnabled(box.getAttribute("data-layer"), box.checked);
      });
    });
    var hexToggle = document.getElementById("sm-hex-toggle");
    var hexMetric = document.getElementById("sm-hex-metric");
    if (hexToggle) {
      hexToggle.addEventListener("change", function () {
        hex.enabled = hexToggle.checked;
        if (hex.enabled) {
          hex.group.addTo(map);
          hex.group.bringToBack();
          refreshHexagons();
        } else {
          hex.gen += 1;
          map.removeLayer(hex.group);
          hexLegend(null, null, null);
        }
      });
    }
    if (hexMetric) hexMetric.addEventListener("change", refreshHexagons);
    bindNearControls();
    bindLanguage();

    var view = viewFromUrl();
    // no animation: the first requests go out for the final view, not a passing one
    if (view) {
      map.setView(view.centre, view.zoom, { animate: false });
    } else {
      var d = cfg.district.bbox;
      map.fitBounds([[d[1], d[0]], [d[3], d[2]]], { animate: false });
    }
    if (cfg.data) {
      embeddedFeatures();
    } else {
      map.on("moveend", scheduleRefresh);
      refreshAll();
    }
    var near = (new URLSearchParams(window.location.search).get("near") || "").split(",").map(Number);
    if (near.length === 2 && near.every(function (v) { return isFinite(v); })) searchNear(near[0], near[1]);
    document.body.classList.add("sm-ready");
  }

  window.ServiceMap = { start: start };
})();
