/*
 * Pulse operations page: polls the admin listener (same origin) with the admin token and
 * draws what it answers. No build step, no dependency but the vendored uPlot (window.uPlot).
 *
 *   GET /metrics every 1 s      Prometheus text; rates and latency percentiles are computed
 *                               here from successive scrapes (counter resets handled)
 *   GET /admin/shadow 2 s, GET /admin/dead_letters?limit=20 10 s, GET /admin/bundle 10 s,
 *   GET /admin/limits 5 s (the form is not overwritten while it is being edited),
 *   PUT /admin/limits on "Apply".
 *
 * Every call sends `Authorization: Bearer <token>`; the token lives in sessionStorage. A 401
 * returns to the sign-in form with a message.
 */
(function () {
  'use strict';

  var TOKEN_KEY = 'pulse.ops.token';
  var SCRAPE_MS = 1000;
  var KEEP_POINTS = 300; // 5 minutes at 1 s
  var TRAFFIC_HANDLERS = { collect: 1, decide: 1, segment: 1 };
  var LIMIT_NAMES = ['ip_requests', 'site_events', 'site_bytes', 'global_requests'];
  var U32_MAX = 4294967295;

  // The histograms the page reads (gateway/src/metrics).
  var NAMES = {
    decision: ['pulse_gateway_decision_duration_seconds'],
    sink: ['pulse_gateway_sink_duration_seconds'],
    request: ['pulse_gateway_request_duration_seconds']
  };

  var $ = function (id) { return document.getElementById(id); };

  // ---------------------------------------------------------------- Prometheus text parser

  /** Parses the text exposition (0.0.4 or OpenMetrics) into Map name -> [{labels, value}]. */
  function parseProm(text) {
    var out = new Map();
    var lines = text.split('\n');
    for (var n = 0; n < lines.length; n++) {
      var line = lines[n].trim();
      if (!line || line.charCodeAt(0) === 35 /* # */) continue;
      var s = parseSample(line);
      if (!s) continue;
      var list = out.get(s.name);
      if (!list) out.set(s.name, (list = []));
      list.push({ labels: s.labels, value: s.value });
    }
    return out;
  }

  function parseSample(line) {
    var i = 0;
    var len = line.length;
    while (i < len && line[i] !== '{' && line[i] !== ' ' && line[i] !== '\t') i++;
    var name = line.slice(0, i);
    if (!name) return null;
    var labels = {};
    if (line[i] === '{') {
      i++;
      for (;;) {
        while (i < len && (line[i] === ' ' || line[i] === ',')) i++;
        if (i >= len) return null;
        if (line[i] === '}') { i++; break; }
        var eq = line.indexOf('=', i);
        if (eq < 0) return null;
        var key = line.slice(i, eq).trim();
        i = eq + 1;
        while (line[i] === ' ') i++;
        if (line[i] !== '"') return null;
        i++;
        var v = '';
        while (i < len && line[i] !== '"') {
          if (line[i] === '\\' && i + 1 < len) {
            var c = line[i + 1];
            v += c === 'n' ? '\n' : c; // \\ -> \, \" -> ", \n -> newline
            i += 2;
          } else {
            v += line[i++];
          }
        }
        if (i >= len) return null;
        i++; // the closing quote
        labels[key] = v;
      }
    }
    var rest = line.slice(i).trim().split(/\s+/);
    var value = parseNumber(rest[0]);
    if (value === undefined) return null;
    return { name: name, labels: labels, value: value };
  }

  function parseNumber(t) {
    if (t === undefined || t === '') return undefined;
    if (t === '+Inf' || t === 'Inf') return Infinity;
    if (t === '-Inf') return -Infinity;
    if (t === 'NaN') return NaN;
    var v = Number(t);
    return isNaN(v) ? undefined : v;
  }

  function seriesKey(name, labels) {
    var keys = Object.keys(labels).sort();
    var k = name + '{';
    for (var i = 0; i < keys.length; i++) k += keys[i] + '=' + JSON.stringify(labels[keys[i]]) + ',';
    return k + '}';
  }

  // ---------------------------------------------------------------- scrapes, rates, quantiles

  /** One scrape: the parsed families and every series' value by key. */
  function Scrape(parsed, t) {
    this.m = parsed;
    this.t = t;
    this.values = new Map();
    var self = this;
    parsed.forEach(function (list, name) {
      list.forEach(function (s) { self.values.set(seriesKey(name, s.labels), s.value); });
    });
  }
  Scrape.prototype.series = function (name) { return this.m.get(name) || []; };
  Scrape.prototype.has = function (name) { return this.m.has(name); };
  Scrape.prototype.first = function (names, suffix) {
    for (var i = 0; i < names.length; i++) if (this.m.has(names[i] + (suffix || ''))) return names[i];
    return names[0];
  };
  Scrape.prototype.gauge = function (name, filter) {
    var list = this.series(name);
    if (!list.length) return null;
    var sum = 0;
    for (var i = 0; i < list.length; i++) if (!filter || filter(list[i].labels)) sum += list[i].value;
    return sum;
  };

  /** Counter increase of one series since `prev`: a drop is a reset (the whole value counts);
   *  a series new since the previous scrape counts from 0. */
  function increase(prev, name, s) {
    var before = prev.values.get(seriesKey(name, s.labels));
    if (before === undefined || !isFinite(before)) before = 0;
    if (!isFinite(s.value)) return 0;
    return s.value >= before ? s.value - before : s.value;
  }

  /** Per-second rates of counter `name` summed by group(labels) (null skips a series). */
  function ratesBy(cur, prev, name, group) {
    var out = new Map();
    var dt = (cur.t - prev.t) / 1000;
    if (dt <= 0) return out;
    cur.series(name).forEach(function (s) {
      var g = group ? group(s.labels) : 'total';
      if (g === null || g === undefined) return;
      out.set(g, (out.get(g) || 0) + increase(prev, name, s) / dt);
    });
    return out;
  }

  function rate(cur, prev, name, filter) {
    var m = ratesBy(cur, prev, name, function (l) { return !filter || filter(l) ? 'total' : null; });
    return cur.has(name) ? (m.get('total') || 0) : null;
  }

  /** Quantiles `qs` of histogram `name` over the interval since `prev`, from bucket increases,
   *  interpolated within a bucket as Prometheus' histogram_quantile does. Null when nothing
   *  was observed. */
  function quantiles(cur, prev, name, qs, filter) {
    var byLe = new Map();
    cur.series(name + '_bucket').forEach(function (s) {
      if (filter && !filter(s.labels)) return;
      var le = parseNumber(s.labels.le);
      if (le === undefined || isNaN(le)) return;
      byLe.set(le, (byLe.get(le) || 0) + increase(prev, name + '_bucket', s));
    });
    var buckets = Array.from(byLe.entries()).sort(function (a, b) { return a[0] - b[0]; });
    return qs.map(function (q) { return histogramQuantile(q, buckets); });
  }

  function histogramQuantile(q, buckets) {
    var n = buckets.length;
    if (n < 2 || buckets[n - 1][0] !== Infinity) return null;
    var b = buckets.map(function (x) { return [x[0], x[1]]; });
    for (var i = 1; i < n; i++) if (b[i][1] < b[i - 1][1]) b[i][1] = b[i - 1][1];
    var total = b[n - 1][1];
    if (!(total > 0)) return null;
    var rank = q * total;
    var k = 0;
    while (k < n && b[k][1] < rank) k++;
    if (k >= n - 1) return b[n - 2][0]; // in the +Inf bucket: the highest finite bound
    var start = 0;
    var below = 0;
    if (k > 0) {
      start = b[k - 1][0];
      below = b[k - 1][1];
    } else if (b[0][0] <= 0) {
      return b[0][0];
    }
    var inBucket = b[k][1] - below;
    if (inBucket <= 0) return b[k][0];
    return start + (b[k][0] - start) * ((rank - below) / inBucket);
  }

  // ---------------------------------------------------------------- formatting

  function fmtNum(v) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    var a = Math.abs(v);
    if (a >= 100) return String(Math.round(v));
    if (a >= 10) return v.toFixed(1);
    if (a === 0) return '0';
    return v.toFixed(2);
  }

  function fmtMs(secs) {
    if (secs === null || secs === undefined || !isFinite(secs)) return '–';
    var ms = secs * 1000;
    if (ms >= 100) return String(Math.round(ms));
    if (ms >= 10) return ms.toFixed(1);
    if (ms >= 1) return ms.toFixed(2);
    return ms.toFixed(3);
  }

  function fmtMsShort(secs) {
    if (secs === null || secs === undefined || !isFinite(secs)) return '–';
    return String(+(secs * 1000).toPrecision(2));
  }

  function fmtShort(v) {
    if (v === null || v === undefined || !isFinite(v)) return '';
    var a = Math.abs(v);
    if (a >= 1e9) return +(v / 1e9).toFixed(1) + 'G';
    if (a >= 1e6) return +(v / 1e6).toFixed(1) + 'M';
    if (a >= 1e3) return +(v / 1e3).toFixed(1) + 'k';
    if (a >= 10 || a === 0) return String(+v.toFixed(0));
    return String(+v.toPrecision(2));
  }

  function fmtCount(v) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    return Math.round(v).toLocaleString('en-US');
  }

  function pad2(n) { return n < 10 ? '0' + n : String(n); }
  function clock(ms) {
    var d = new Date(ms);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }
  function dateTime(ms) {
    var d = new Date(ms);
    return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + clock(ms);
  }

  function setText(id, text) {
    var el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function truncate(s, n) { return s.length > n ? s.slice(0, n - 1) + '…' : s; }

  // ---------------------------------------------------------------- colours

  var FIXED = {
    http1: '#2563eb', http2: '#0891b2', http3: '#7c3aed',
    '2xx': '#16a34a', '3xx': '#64748b', '4xx': '#d97706', '5xx': '#dc2626', other: '#a3a3a3',
    accepted: '#16a34a', rejected: '#dc2626',
    p50: '#2563eb', p90: '#d97706', p99: '#dc2626',
    allow: '#16a34a', meter: '#2563eb', paywall: '#dc2626', register_wall: '#d97706',
    offer: '#7c3aed', prompt: '#0891b2', fallback: '#111827',
    compared: '#64748b', differing: '#dc2626',
    queue: '#7c3aed', in_flight: '#0891b2',
    total: '#9ca3af',
    ip_requests: '#2563eb', site_events: '#d97706', site_bytes: '#7c3aed', global_requests: '#dc2626',
    rate_limited: '#d97706', store_unavailable: '#dc2626', internal: '#991b1b', origin_not_allowed: '#7c3aed'
  };
  var PALETTE = ['#2563eb', '#d97706', '#16a34a', '#dc2626', '#7c3aed', '#0891b2', '#db2777',
    '#65a30d', '#ea580c', '#4f46e5', '#0d9488', '#a16207'];
  function colorOf(key, index) { return FIXED[key] || PALETTE[index % PALETTE.length]; }
  function withAlpha(hex, a) {
    var n = parseInt(hex.slice(1), 16);
    return 'rgba(' + (n >> 16) + ',' + ((n >> 8) & 255) + ',' + (n & 255) + ',' + a + ')';
  }

  // ---------------------------------------------------------------- charts

  /**
   * A time chart of named series. `keys` fixed ones always drawn; `dynamic` adds a series the
   * first time its value is non-zero (so that 22 error codes at 0 do not crowd the legend).
   */
  function Chart(id, opts) {
    this.id = id;
    this.el = $(id);
    this.keys = (opts.keys || []).slice();
    this.dynamic = !!opts.dynamic;
    this.fmt = opts.fmt || fmtNum;
    this.axis = opts.axis || fmtShort;
    this.fill = !!opts.fill;
    this.labels = opts.labels || {};
    this.xs = [];
    this.ys = {};
    for (var i = 0; i < this.keys.length; i++) this.ys[this.keys[i]] = [];
    this.plot = null;
    this.hover = false;
  }

  Chart.prototype.push = function (tSec, values) {
    var self = this;
    var changed = false;
    if (this.dynamic) {
      values.forEach(function (v, k) {
        if (!(k in self.ys) && v !== null && v > 0) {
          self.keys.push(k);
          self.ys[k] = self.xs.map(function () { return null; });
          changed = true;
        }
      });
    }
    this.xs.push(tSec);
    this.keys.forEach(function (k) {
      var v = values.has(k) ? values.get(k) : null;
      self.ys[k].push(v === undefined ? null : v);
    });
    var extra = this.xs.length - KEEP_POINTS;
    if (extra > 0) {
      this.xs.splice(0, extra);
      this.keys.forEach(function (k) { self.ys[k].splice(0, extra); });
    }
    if (!this.plot || changed) this.build();
    else this.plot.setData(this.data());
    this.showLatest();
    this.el.setAttribute('data-points', String(this.xs.length));
  };

  Chart.prototype.data = function () {
    var self = this;
    return [this.xs].concat(this.keys.map(function (k) { return self.ys[k]; }));
  };

  Chart.prototype.size = function () {
    return { width: Math.max(240, Math.floor(this.el.clientWidth)), height: 150 };
  };

  Chart.prototype.build = function () {
    var self = this;
    if (this.plot) { this.plot.destroy(); this.plot = null; }
    var size = this.size();
    var axisStyle = {
      stroke: '#6b7280',
      font: '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
      grid: { stroke: '#eef0f3', width: 1 },
      ticks: { stroke: '#e5e7eb', width: 1, size: 3 }
    };
    var series = [{ label: 'time', value: function (u, v) { return v == null ? '' : clock(v * 1000); } }];
    this.keys.forEach(function (k, i) {
      var c = colorOf(k, i);
      series.push({
        label: self.labels[k] || k,
        stroke: c,
        width: k === 'total' ? 1 : 1.5,
        dash: k === 'total' ? [4, 3] : undefined,
        fill: self.fill && i === 0 ? withAlpha(c, 0.08) : undefined,
        points: { show: false },
        value: function (u, v) { return v == null ? '–' : self.fmt(v); }
      });
    });
    var opts = {
      width: size.width,
      height: size.height,
      padding: [6, 30, 0, 0],
      cursor: { drag: { x: false, y: false, setScale: false }, points: { size: 5 } },
      legend: { show: true, live: true },
      scales: {
        x: { time: true },
        y: { range: function (u, min, max) { return [0, max > 0 ? niceCeil(max * 1.08) : 1]; } }
      },
      axes: [
        Object.assign({
          space: 70,
          incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600],
          // HH:MM once the ticks are whole minutes apart, HH:MM:SS before.
          values: function (u, vals, axis, space, incr) {
            return vals.map(function (v) { return clock(v * 1000).slice(0, incr >= 60 ? 5 : 8); });
          }
        }, axisStyle),
        Object.assign({ size: 42, space: 28, values: function (u, vals) { return vals.map(self.axis); } }, axisStyle)
      ],
      series: series
    };
    this.plot = new window.uPlot(opts, this.data(), this.el);
    this.plot.over.addEventListener('mouseenter', function () { self.hover = true; });
    this.plot.over.addEventListener('mouseleave', function () {
      self.hover = false;
      setTimeout(function () { self.showLatest(); }, 0);
    });
  };

  /** Outside a hover, the legend shows the latest values. */
  Chart.prototype.showLatest = function () {
    if (!this.plot || this.hover || !this.xs.length) return;
    this.plot.setLegend({ idx: this.xs.length - 1 });
  };

  Chart.prototype.resize = function () {
    if (this.plot) {
      var s = this.size();
      if (s.width !== this.plot.width) this.plot.setSize(s);
    }
  };

  Chart.prototype.destroy = function () {
    if (this.plot) this.plot.destroy();
    this.plot = null;
  };

  function niceCeil(v) {
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var m = v / p;
    var step = m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10;
    return step * p;
  }

  // ---------------------------------------------------------------- the dashboard

  var state = null; // {gen, charts, prev, limits, dirty, timers}

  function traffic(l) { return l.handler === undefined || l.handler in TRAFFIC_HANDLERS; }
  function statusClass(s) { return /^[1-5]\d\d$/.test(s) ? s[0] + 'xx' : 'other'; }

  function makeCharts() {
    var ms = function (v) { return fmtMs(v); };
    var msAxis = function (v) { return fmtShort(v * 1000); };
    return {
      protocol: new Chart('chart-requests-protocol', { keys: ['http1', 'http2', 'http3'], labels: { http1: 'HTTP/1.1', http2: 'HTTP/2', http3: 'HTTP/3' } }),
      status: new Chart('chart-requests-status', { keys: ['2xx', '4xx', '5xx'], dynamic: true }),
      events: new Chart('chart-events', { keys: ['accepted', 'rejected'], fill: true }),
      refused: new Chart('chart-refused', { keys: ['total'], dynamic: true }),
      rejected: new Chart('chart-rejected', { keys: ['total'], dynamic: true }),
      limited: new Chart('chart-rate-limited', { keys: ['total'], dynamic: true }),
      decisionLatency: new Chart('chart-decision-latency', { keys: ['p50', 'p90', 'p99'], fmt: ms, axis: msAxis }),
      decisions: new Chart('chart-decisions', { keys: ['fallback'], dynamic: true }),
      shadow: new Chart('chart-shadow', { keys: ['compared', 'differing'], fill: true }),
      sinkLatency: new Chart('chart-sink-latency', { keys: ['p50', 'p99', 'collect_p99'], fmt: ms, axis: msAxis, labels: { collect_p99: 'collect request p99' } }),
      queue: new Chart('chart-queue', { keys: ['queue', 'in_flight'], labels: { queue: 'sink queue', in_flight: 'in flight' } }),
      connections: new Chart('chart-connections', { keys: ['tcp', 'quic', 'admin'], labels: { tcp: 'TCP (HTTP/1.1, HTTP/2)', quic: 'QUIC (HTTP/3)', admin: 'admin' } })
    };
  }

  function sumMap(m) { var s = 0; m.forEach(function (v) { s += v; }); return s; }

  function onScrape(cur) {
    var prev = state.prev;
    state.prev = cur;
    renderStatic(cur);
    if (!prev || cur.t - prev.t < 200) return;
    var c = state.charts;
    var t = cur.t / 1000;

    // Requests.
    var byProto = ratesBy(cur, prev, 'pulse_gateway_requests_total', function (l) { return traffic(l) ? l.protocol : null; });
    ['http1', 'http2', 'http3'].forEach(function (p) { if (!byProto.has(p)) byProto.set(p, 0); });
    c.protocol.push(t, byProto);
    var byStatus = ratesBy(cur, prev, 'pulse_gateway_requests_total', function (l) { return traffic(l) ? statusClass(l.status) : null; });
    ['2xx', '4xx', '5xx'].forEach(function (k) { if (!byStatus.has(k)) byStatus.set(k, 0); });
    c.status.push(t, byStatus);
    var requests = sumMap(byProto);

    // Events.
    var accepted = rate(cur, prev, 'pulse_gateway_events_accepted_total');
    var rejectedBy = ratesBy(cur, prev, 'pulse_gateway_events_rejected_total', function (l) { return l.reason || 'unknown'; });
    var rejected = sumMap(rejectedBy);
    c.events.push(t, new Map([['accepted', accepted], ['rejected', rejected]]));
    rejectedBy.set('total', rejected);
    c.rejected.push(t, rejectedBy);

    // Refusals.
    var refusedBy = ratesBy(cur, prev, 'pulse_gateway_errors_total', function (l) { return l.reason || 'unknown'; });
    var refused = sumMap(refusedBy);
    refusedBy.set('total', refused);
    c.refused.push(t, refusedBy);
    var limitedBy = ratesBy(cur, prev, 'pulse_gateway_rate_limited_total', function (l) { return l.limit || 'unknown'; });
    var limited = sumMap(limitedBy);
    limitedBy.set('total', limited);
    c.limited.push(t, limitedBy);

    // Decisions.
    var dName = cur.first(NAMES.decision, '_bucket');
    var dq = quantiles(cur, prev, dName, [0.5, 0.9, 0.99]);
    c.decisionLatency.push(t, new Map([['p50', dq[0]], ['p90', dq[1]], ['p99', dq[2]]]));
    var byAction = ratesBy(cur, prev, 'pulse_scorer_decisions_total', function (l) { return l.action || 'unknown'; });
    var fallback = rate(cur, prev, 'pulse_gateway_fallback_decisions_total');
    byAction.set('fallback', fallback);
    c.decisions.push(t, byAction);
    renderRules(cur, prev);

    // Shadow.
    var shadowPairs = ratesBy(cur, prev, 'pulse_scorer_shadow_decisions_total', function (l) { return l.active === l.shadow ? 'same' : 'differing'; });
    var compared = (shadowPairs.get('same') || 0) + (shadowPairs.get('differing') || 0);
    c.shadow.push(t, new Map([['compared', compared], ['differing', shadowPairs.get('differing') || 0]]));

    // Store / sink.
    var sq = quantiles(cur, prev, cur.first(NAMES.sink, '_bucket'), [0.5, 0.99]);
    var rq = quantiles(cur, prev, cur.first(NAMES.request, '_bucket'), [0.99], function (l) { return l.handler === undefined || l.handler === 'collect'; });
    c.sinkLatency.push(t, new Map([['p50', sq[0]], ['p99', sq[1]], ['collect_p99', rq[0]]]));
    var queue = cur.gauge('pulse_gateway_sink_queue_depth');
    var inFlight = cur.gauge('pulse_gateway_in_flight_requests');
    c.queue.push(t, new Map([['queue', queue], ['in_flight', inFlight]]));
    var conns = new Map();
    cur.series('pulse_gateway_open_connections').forEach(function (s) {
      var p = s.labels.listener || 'all';
      conns.set(p, (conns.get(p) || 0) + s.value);
    });
    c.connections.push(t, conns);

    // Tiles.
    setKpi('requests-rate', requests, fmtNum);
    setKpi('events-rate', accepted, fmtNum);
    setText('events-rejected-note', fmtNum(rejected) + '/s rejected');
    setKpi('refused-rate', refused, fmtNum);
    setText('refused-share', requests > 0 ? (100 * refused / requests).toFixed(1) + '% of requests' : '–');
    setKpi('ratelimited-rate', limited, fmtNum);
    setKpi('decision-p99', dq[2], fmtMs);
    setText('decision-p50-note', 'p50 ' + fmtMsShort(dq[0]) + ' · p90 ' + fmtMsShort(dq[1]));
    setKpi('fallback-rate', fallback, fmtNum);
    setKpi('sink-p99', sq[1], fmtMs);
    setKpi('queue-depth', queue, fmtCount);
    setKpi('open-connections', cur.has('pulse_gateway_open_connections') ? sumMap(conns) : null, fmtCount);
    setKpi('in-flight', inFlight, fmtCount);
    setText('dead-letters-rate', fmtNum(rate(cur, prev, 'pulse_gateway_dead_letters_total')));
    var tile = $('decision-p99').closest('.kpi');
    tile.classList.toggle('warn', dq[2] !== null && dq[2] > 0.01);
    $('refused-rate').closest('.kpi').classList.toggle('warn', requests > 0 && refused / requests > 0.05);
    $('ratelimited-rate').closest('.kpi').classList.toggle('warn', limited > 0);
    $('fallback-rate').closest('.kpi').classList.toggle('warn', fallback > 0);
  }

  function setKpi(id, v, fmt) {
    var e = $(id);
    if (!e) return;
    var text = fmt(v);
    if (e.textContent !== text) e.textContent = text;
    e.setAttribute('data-value', v === null || v === undefined || !isFinite(v) ? '' : String(v));
  }

  /** What needs one scrape only: version, totals, bundle name. */
  function renderStatic(cur) {
    var build = cur.series('pulse_build_info')[0];
    if (build && build.labels.version) setText('build-version', build.labels.version);
    setKpi('dead-letters-total', cur.gauge('pulse_gateway_dead_letters_total'), fmtCount);
    var info = cur.series('pulse_scorer_bundle_info')[0];
    if (info) {
      var id = info.labels.id || '';
      if (state.bundleId && id && id !== state.bundleId) pollSoon('bundle');
      if (!state.bundleId) setText('bundle-name-top', info.labels.name || id || '–');
    }
  }

  function renderRules(cur, prev) {
    var dt = (cur.t - prev.t) / 1000;
    var rows = cur.series('pulse_scorer_decisions_total').map(function (s) {
      return {
        rule: s.labels.rule === undefined ? '—' : (s.labels.rule || '(none)'),
        action: s.labels.action || '',
        total: s.value,
        rate: dt > 0 ? increase(prev, 'pulse_scorer_decisions_total', s) / dt : 0
      };
    }).filter(function (r) { return r.total > 0; });
    rows.sort(function (a, b) { return b.total - a.total || a.rule.localeCompare(b.rule); });
    var body = document.createElement('tbody');
    if (!rows.length) {
      var tr = el('tr');
      var td = el('td', 'empty', 'No decisions yet');
      td.colSpan = 4;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    rows.forEach(function (r) {
      var tr = el('tr');
      tr.setAttribute('data-rule', r.rule);
      tr.setAttribute('data-action', r.action);
      tr.appendChild(el('td', 'mono', r.rule));
      var a = el('td');
      a.appendChild(el('span', 'chip chip-' + r.action.replace(/[^a-z_]/g, ''), r.action));
      tr.appendChild(a);
      tr.appendChild(el('td', 'num', fmtNum(r.rate)));
      tr.appendChild(el('td', 'num', fmtCount(r.total)));
      body.appendChild(tr);
    });
    var table = $('decisions-by-rule');
    table.replaceChild(body, table.tBodies[0]);
  }

  // ---------------------------------------------------------------- API

  function Unauthorized() {}

  function api(path, init) {
    var token = sessionStorage.getItem(TOKEN_KEY) || '';
    init = init || {};
    var headers = Object.assign({ Authorization: 'Bearer ' + token, Accept: 'application/json' }, init.headers || {});
    return fetch(path, Object.assign({}, init, { headers: headers, cache: 'no-store', credentials: 'omit' }))
      .then(function (resp) {
        if (resp.status === 401) {
          signOut('The gateway refused the token (401 unauthorized). Sign in again with the admin token.');
          throw new Unauthorized();
        }
        return resp;
      });
  }

  /** The `{"error":{"code","message"}}` body of a refusal, or a line about the status. */
  function errorOf(resp) {
    return resp.text().then(function (text) {
      try {
        var e = JSON.parse(text).error;
        if (e && e.message) return { code: e.code || String(resp.status), message: e.message };
      } catch (ignored) { /* not JSON */ }
      return { code: String(resp.status), message: 'HTTP ' + resp.status + (text ? ': ' + truncate(text, 200) : '') };
    });
  }

  function setConn(ok, detail) {
    var s = $('conn-status');
    s.className = 'status ' + (ok ? 'status-ok' : 'status-bad');
    s.textContent = ok ? 'live' : 'stale';
    s.title = detail || '';
  }

  // ---------------------------------------------------------------- pollers

  var POLLERS = {
    metrics: { every: SCRAPE_MS, run: pollMetrics },
    shadow: { every: 2000, run: pollShadow },
    // The newest dead letters are read from the log files: not more often than this.
    dead: { every: 10000, run: pollDeadLetters },
    bundle: { every: 10000, run: pollBundle },
    limits: { every: 5000, run: pollLimits }
  };

  function startPollers() {
    var gen = state.gen;
    Object.keys(POLLERS).forEach(function (name) {
      var p = POLLERS[name];
      var loop = function () {
        if (!state || state.gen !== gen) return;
        var started = Date.now();
        state.timers[name] = null;
        Promise.resolve()
          .then(p.run)
          .catch(function (e) { if (!(e instanceof Unauthorized)) console.warn('pulse ops: ' + name + ': ' + (e && e.message || e)); })
          .then(function () {
            if (!state || state.gen !== gen) return;
            var wait = Math.max(50, p.every - (Date.now() - started));
            state.timers[name] = setTimeout(loop, wait);
          });
      };
      state.loops[name] = loop;
      loop();
    });
  }

  /** Runs poller `name` now, unless it is running. */
  function pollSoon(name) {
    if (!state || !state.timers[name]) return;
    clearTimeout(state.timers[name]);
    state.timers[name] = setTimeout(state.loops[name], 0);
  }

  function pollMetrics() {
    return api('/metrics', { headers: { Accept: 'text/plain' } }).then(function (resp) {
      if (!resp.ok) {
        return errorOf(resp).then(function (e) { throw new Error('/metrics: ' + e.message); });
      }
      return resp.text().then(function (text) {
        var now = Date.now();
        onScrape(new Scrape(parseProm(text), now));
        var lu = $('last-update');
        lu.textContent = clock(now);
        lu.setAttribute('datetime', new Date(now).toISOString());
        lu.setAttribute('data-ts', String(now));
        setConn(true, 'last scrape ' + new Date(now).toISOString());
      });
    }).catch(function (e) {
      if (!(e instanceof Unauthorized)) setConn(false, String(e && e.message || e));
      throw e;
    });
  }

  function pollBundle() {
    return api('/admin/bundle').then(function (resp) {
      if (!resp.ok) return errorOf(resp).then(function (e) { renderPanelError('bundle', e); });
      return resp.json().then(renderBundle);
    });
  }

  function pollShadow() {
    return api('/admin/shadow').then(function (resp) {
      if (!resp.ok) return errorOf(resp).then(function (e) { renderPanelError('shadow', e); });
      return resp.json().then(renderShadow);
    });
  }

  function pollDeadLetters() {
    return api('/admin/dead_letters?limit=20').then(function (resp) {
      if (!resp.ok) return errorOf(resp).then(renderDeadLettersError);
      return resp.json().then(renderDeadLetters);
    });
  }

  function pollLimits() {
    return api('/admin/limits').then(function (resp) {
      if (!resp.ok) {
        return errorOf(resp).then(function (e) {
          if (!state.limits) showLimitsStatus('error', 'The limits could not be read: ' + e.message);
        });
      }
      return resp.json().then(function (limits) {
        state.limits = limits;
        if (!state.dirty && !state.saving && !editing()) fillLimits(limits);
        markChanged();
      });
    });
  }

  // ---------------------------------------------------------------- panels

  function renderPanelError(id, e) {
    var box = $(id);
    box.textContent = '';
    box.appendChild(el('p', 'empty error', e.code + ': ' + e.message));
  }

  function kv(dl, key, value, cls) {
    var row = el('div');
    row.appendChild(el('dt', null, key));
    var dd = el('dd', cls || null);
    if (value instanceof Node) dd.appendChild(value); else dd.textContent = value;
    row.appendChild(dd);
    dl.appendChild(row);
    return dd;
  }

  function chips(list, cls) {
    var span = el('span', 'chips');
    list.forEach(function (x) { span.appendChild(el('span', 'chip ' + (cls || ''), x)); });
    if (!list.length) span.textContent = 'none';
    return span;
  }

  function renderBundle(b) {
    state.bundleId = b.id || null;
    setText('bundle-name-top', (b.name || '(unnamed)'));
    $('bundle-name-top').title = 'id ' + (b.id || '');
    setText('bundle-state', b.rebuilding ? 'rebuilding reader state' : 'in force');
    $('bundle-state').classList.toggle('badge-warn', !!b.rebuilding);
    var box = $('bundle');
    box.textContent = '';
    var dl = el('dl', 'kv');
    var name = kv(dl, 'Name', b.name || '(unnamed)', 'strong');
    name.id = 'bundle-name';
    name.setAttribute('data-testid', 'bundle-name');
    var id = kv(dl, 'Id', b.id || '–', 'mono');
    id.id = 'bundle-id';
    id.setAttribute('data-testid', 'bundle-id');
    var features = b.features || [];
    kv(dl, 'Features', chips(features.map(function (f) {
      return f.name + (f.window ? ' · ' + f.window : '');
    })));
    if (b.model) {
      kv(dl, 'Model', b.model.file + ' · ' + b.model.format + ' · ' + b.model.trees + ' trees · ' + (b.model.inputs || []).length + ' inputs');
    } else {
      kv(dl, 'Model', 'none (rules only)');
    }
    var rules = b.rules || [];
    var r = kv(dl, 'Rules (' + rules.length + ')', chips(rules, 'chip-rule'));
    r.id = 'bundle-rules';
    kv(dl, 'Feature set', b.feature_set || '–', 'mono');
    var history = b.history || [];
    kv(dl, 'Before', history.length ? history.length + ' bundle' + (history.length > 1 ? 's' : '') + ' (newest ' + history[0].id + ')' : 'none', history.length ? 'mono' : null);
    box.appendChild(dl);
  }

  function renderShadow(s) {
    var box = $('shadow');
    box.textContent = '';
    var top = $('shadow-name-top');
    var compared = s.compared || 0;
    var differing = s.differing || 0;
    var share = compared > 0 ? (100 * differing / compared) : null;
    if (!s.shadow) {
      top.textContent = s.pending ? 'pending (rebuild)' : 'none';
      setText('shadow-summary', s.pending ? 'waiting for a rebuild' : 'no shadow bundle');
      var p = el('p', 'empty', s.pending
        ? 'A shadow bundle waits for a rebuild of reader state: ' + (typeof s.pending === 'string' ? s.pending : JSON.stringify(s.pending))
        : 'No shadow bundle. Set [scorer] shadow to compare a candidate with the active bundle.');
      box.appendChild(p);
      if (!compared) return;
    } else {
      top.textContent = s.shadow.name || s.shadow.id;
      setText('shadow-summary', share === null ? 'nothing compared yet'
        : fmtCount(differing) + ' of ' + fmtCount(compared) + ' differ (' + share.toFixed(2) + '%)');
      var dl = el('dl', 'kv');
      var n = kv(dl, 'Shadow', (s.shadow.name || '(unnamed)') + ' ', 'strong');
      n.appendChild(el('span', 'mono muted', s.shadow.id || ''));
      kv(dl, 'Rules', chips(s.shadow.rules || [], 'chip-rule'));
      var d = kv(dl, 'Differing', share === null ? '–' : share.toFixed(2) + '% of ' + fmtCount(compared), share ? 'strong diff' : null);
      d.id = 'shadow-differing';
      d.setAttribute('data-value', String(differing));
      box.appendChild(dl);
    }
    var pairs = (s.pairs || []).filter(function (p) { return p.decisions > 0; });
    pairs.sort(function (a, b) {
      var da = a.active !== a.shadow;
      var db = b.active !== b.shadow;
      return (db - da) || (b.decisions - a.decisions);
    });
    if (!pairs.length) return;
    var table = el('table', 'grid compact');
    var head = el('thead');
    var hr = el('tr');
    ['Active', '', 'Shadow', 'Decisions', 'Share'].forEach(function (h, i) {
      var th = el('th', i >= 3 ? 'num' : null, h);
      th.scope = 'col';
      hr.appendChild(th);
    });
    head.appendChild(hr);
    table.appendChild(head);
    var body = el('tbody');
    pairs.forEach(function (p) {
      var tr = el('tr', p.active !== p.shadow ? 'differs' : null);
      var a = el('td'); a.appendChild(el('span', 'chip chip-' + p.active, p.active)); tr.appendChild(a);
      tr.appendChild(el('td', 'arrow', p.active !== p.shadow ? '→' : '='));
      var sh = el('td'); sh.appendChild(el('span', 'chip chip-' + p.shadow, p.shadow)); tr.appendChild(sh);
      tr.appendChild(el('td', 'num', fmtCount(p.decisions)));
      tr.appendChild(el('td', 'num', compared > 0 ? (100 * p.decisions / compared).toFixed(1) + '%' : '–'));
      body.appendChild(tr);
    });
    table.appendChild(body);
    box.appendChild(table);
  }

  function renderDeadLettersError(e) {
    setText('dead-letters-note', 'unavailable');
    var table = $('dead-letters');
    var body = el('tbody');
    var tr = el('tr');
    var td = el('td', 'empty error', e.code === 'not_found'
      ? 'This gateway does not serve GET /admin/dead_letters (' + e.message + ').'
      : e.code + ': ' + e.message);
    td.colSpan = 5;
    tr.appendChild(td);
    body.appendChild(tr);
    table.replaceChild(body, table.tBodies[0]);
  }

  /** Dead-letter fields with a column of their own (`position`, the log position, goes in the
   *  row's tooltip). */
  var SHOWN_DEAD_LETTER_FIELDS = { site: 1, reason: 1, received_at: 1, index: 1, raw: 1, position: 1 };

  function renderDeadLetters(list) {
    if (!Array.isArray(list)) list = (list && (list.dead_letters || list.records)) || [];
    setText('dead-letters-note', list.length ? 'newest ' + list.length + ', newest first' : 'none kept');
    var table = $('dead-letters');
    var body = el('tbody');
    if (!list.length) {
      var tr0 = el('tr');
      var td0 = el('td', 'empty', 'No dead letters.');
      td0.colSpan = 5;
      tr0.appendChild(td0);
      body.appendChild(tr0);
    }
    list.forEach(function (d) {
      var tr = el('tr');
      if (d === null || typeof d !== 'object') d = { raw: String(d) }; // a record not readable as JSON
      tr.setAttribute('data-reason', String(d.reason || ''));
      if (d.position !== undefined) tr.setAttribute('data-position', String(d.position));
      var when = typeof d.received_at === 'number' ? d.received_at : null;
      var t = el('td', 'mono nowrap', when ? dateTime(when) : '–');
      if (when) t.title = new Date(when).toISOString() + (d.position !== undefined ? ' · log position ' + d.position : '');
      tr.appendChild(t);
      tr.appendChild(el('td', 'mono', d.site === undefined ? '–' : String(d.site)));
      var r = el('td');
      r.appendChild(el('span', 'chip chip-reason', String(d.reason || 'unknown')));
      tr.appendChild(r);
      tr.appendChild(el('td', 'num', d.index === undefined || d.index === null ? '' : String(d.index)));
      var rest = {};
      Object.keys(d).forEach(function (k) {
        if (!(k in SHOWN_DEAD_LETTER_FIELDS)) rest[k] = d[k];
      });
      var text = typeof d.raw === 'string' ? d.raw : '';
      if (Object.keys(rest).length) text = JSON.stringify(rest) + (text ? ' ' + text : '');
      if (!text && d.raw !== undefined) text = JSON.stringify(d.raw);
      var c = el('td', 'mono raw', truncate(text.replace(/\s+/g, ' '), 180));
      c.title = truncate(text, 4096);
      tr.appendChild(c);
      body.appendChild(tr);
    });
    table.replaceChild(body, table.tBodies[0]);
  }

  // ---------------------------------------------------------------- limits form

  function limitInputs() { return Array.prototype.slice.call($('limits-form').querySelectorAll('input[name]')); }

  function valueAt(obj, path) {
    return path.split('.').reduce(function (o, k) { return o === null || o === undefined ? undefined : o[k]; }, obj);
  }

  /** Whether a field of the form has the focus (an edit may be starting: keep its text). */
  function editing() {
    var a = document.activeElement;
    return !!(a && a.form === $('limits-form') && a.tagName === 'INPUT');
  }

  function fillLimits(limits) {
    limitInputs().forEach(function (input) {
      var v = valueAt(limits, input.name);
      input.value = v === undefined || v === null ? '' : String(v);
      input.removeAttribute('aria-invalid');
    });
    state.dirty = false;
    markChanged();
  }

  function markChanged() {
    var any = false;
    limitInputs().forEach(function (input) {
      var inForce = state.limits ? valueAt(state.limits, input.name) : undefined;
      var changed = inForce !== undefined && input.value.trim() !== String(inForce);
      input.classList.toggle('changed', changed);
      input.title = inForce === undefined ? '' : 'in force: ' + inForce;
      any = any || changed;
    });
    $('limits-save').disabled = !state.limits || !!state.saving;
    $('limits-revert').disabled = !any;
    var off = {};
    LIMIT_NAMES.forEach(function (n) {
      var ps = $('limits-form').elements[n + '.per_second'];
      off[n] = ps && ps.value.trim() === '0';
      var row = ps && ps.closest('tr');
      if (row) row.classList.toggle('off', off[n]);
    });
  }

  function showLimitsStatus(kind, text) {
    var s = $('limits-status');
    s.className = 'form-status ' + (kind ? 'is-' + kind : '');
    s.setAttribute('data-state', kind || '');
    s.textContent = text;
  }

  /** The form as the `[rate_limits]` JSON object; local checks only that each is a whole number
   *  (everything else is the gateway's to check, with the same code as the CLI and SIGHUP). */
  function readLimits() {
    var out = {};
    var bad = [];
    limitInputs().forEach(function (input) {
      var t = input.value.trim();
      var ok = /^\d+$/.test(t) && Number(t) <= (input.name === 'max_keys' ? Number.MAX_SAFE_INTEGER : U32_MAX);
      input.toggleAttribute('aria-invalid', !ok);
      if (!ok) {
        bad.push(input.name + ' must be a whole number' + (input.name === 'max_keys' ? '' : ' from 0 to ' + U32_MAX) + (t ? ', not "' + truncate(t, 20) + '"' : ''));
        return;
      }
      var parts = input.name.split('.');
      if (parts.length === 2) {
        out[parts[0]] = out[parts[0]] || {};
        out[parts[0]][parts[1]] = Number(t);
      } else {
        out[parts[0]] = Number(t);
      }
    });
    return { limits: out, bad: bad };
  }

  function saveLimits(ev) {
    ev.preventDefault();
    if (state.saving) return;
    var read = readLimits();
    if (read.bad.length) {
      showLimitsStatus('error', 'Not sent: ' + read.bad.join('; '));
      return;
    }
    state.saving = true;
    markChanged();
    showLimitsStatus('pending', 'Applying…');
    var gen = state.gen;
    api('/admin/limits', {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(read.limits)
    }).then(function (resp) {
      if (!state || state.gen !== gen) return;
      if (!resp.ok) {
        return errorOf(resp).then(function (e) {
          showLimitsStatus('error', 'Refused (' + e.code + '): ' + e.message);
        });
      }
      return resp.json().then(function (answer) {
        var limits = answer.limits || answer;
        state.limits = limits;
        fillLimits(limits);
        var where = answer.persisted ? ' and written to ' + (answer.config || 'the config file')
          : ' (not written: the gateway runs without a config file)';
        var text = 'Applied at ' + clock(Date.now()) + where + '. In force: ' + summarize(limits) + '.';
        var kind = 'ok';
        if (answer.published && !answer.published.ok) {
          kind = 'warn';
          text += ' Not published to the other gateways: ' + (answer.published.error || 'unknown error') + '.';
        }
        showLimitsStatus(kind, text);
      });
    }).catch(function (e) {
      if (e instanceof Unauthorized) return;
      showLimitsStatus('error', 'The gateway did not answer: ' + (e && e.message || e));
    }).then(function () {
      if (state && state.gen === gen) {
        state.saving = false;
        markChanged();
      }
    });
  }

  function summarize(limits) {
    return LIMIT_NAMES.map(function (n) {
      var r = limits[n];
      if (!r) return null;
      return n + ' ' + (r.per_second ? r.per_second + '/s burst ' + r.burst : 'off');
    }).filter(Boolean).join(', ') + ', max_keys ' + limits.max_keys;
  }

  // ---------------------------------------------------------------- sign in / out

  function show(which) {
    $('login').hidden = which !== 'login';
    $('app').hidden = which !== 'app';
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (state) {
      Object.keys(state.timers).forEach(function (k) { if (state.timers[k]) clearTimeout(state.timers[k]); });
      Object.keys(state.charts).forEach(function (k) { state.charts[k].destroy(); });
      if (state.observer) state.observer.disconnect();
    }
    state = null;
    show('login');
    var err = $('login-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('login-token').value = '';
    $('login-submit').disabled = false;
    $('login-token').focus();
  }

  var generation = 0;

  function startApp() {
    show('app');
    generation += 1;
    state = { gen: generation, charts: makeCharts(), prev: null, limits: null, dirty: false, saving: false, timers: {}, loops: {}, bundleId: null };
    if (window.ResizeObserver) {
      var charts = state.charts;
      var frame = 0;
      state.observer = new ResizeObserver(function () {
        cancelAnimationFrame(frame);
        frame = requestAnimationFrame(function () {
          Object.keys(charts).forEach(function (k) { charts[k].resize(); });
        });
      });
      state.observer.observe($('app'));
    }
    startPollers();
  }

  function signIn(ev) {
    ev.preventDefault();
    var token = $('login-token').value.trim();
    var err = $('login-error');
    if (!token) {
      err.textContent = 'Type the admin token.';
      err.hidden = false;
      return;
    }
    $('login-submit').disabled = true;
    err.textContent = 'Checking…';
    err.hidden = false;
    fetch('/admin/limits', { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store', credentials: 'omit' })
      .then(function (resp) {
        if (resp.status === 401) {
          err.textContent = 'The gateway refused this token (401 unauthorized).';
          return;
        }
        // Any other answer (even 503 while the gateway starts) means the token was taken.
        sessionStorage.setItem(TOKEN_KEY, token);
        err.textContent = '';
        err.hidden = true;
        $('login-token').value = '';
        startApp();
      })
      .catch(function (e) { err.textContent = 'The gateway did not answer: ' + (e && e.message || e); })
      .then(function () { $('login-submit').disabled = false; });
  }

  function init() {
    if (!window.uPlot) {
      document.body.textContent = 'uplot.js did not load.';
      return;
    }
    $('login-form').addEventListener('submit', signIn);
    $('signout').addEventListener('click', function () { signOut('Signed out.'); });
    var form = $('limits-form');
    form.addEventListener('submit', saveLimits);
    var edited = function () {
      if (!state) return;
      state.dirty = true;
      markChanged();
    };
    form.addEventListener('input', edited);
    form.addEventListener('change', edited);
    $('limits-revert').addEventListener('click', function () {
      if (state && state.limits) {
        fillLimits(state.limits);
        showLimitsStatus('', '');
      }
    });
    if (sessionStorage.getItem(TOKEN_KEY)) {
      startApp();
    } else {
      show('login');
      $('login-error').hidden = true;
      $('login-token').focus();
    }
  }

  // For the tests and the console: the parser and the quantile, with no side effect.
  window.pulseOps = {
    parseProm: parseProm,
    histogramQuantile: histogramQuantile,
    rates: function (prevText, prevT, curText, curT, name, group) {
      return ratesBy(new Scrape(parseProm(curText), curT), new Scrape(parseProm(prevText), prevT), name, group);
    },
    quantiles: function (prevText, curText, name, qs) {
      return quantiles(new Scrape(parseProm(curText), 1), new Scrape(parseProm(prevText), 0), name, qs);
    }
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
