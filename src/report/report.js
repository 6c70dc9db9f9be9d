/*
 * faultline report: draws the data island (#fl-data, written by
 * src/report/html.c) into the page. Hand-written canvas and DOM, no library:
 * the page must open anywhere without a network and stay small. Every text
 * that comes from the recording goes in through textContent, never as HTML.
 */
(function () {
  'use strict';
  var t_start = performance.now();
  var errBox = document.getElementById('errors');

  function fail(msg) {
    errBox.hidden = false;
    errBox.textContent += msg + '\n';
    document.body.setAttribute('data-rendered', 'error');
  }
  window.addEventListener('error', function (e) { fail('script error: ' + e.message + ' (line ' + e.lineno + ')'); });
  window.addEventListener('unhandledrejection', function (e) { fail('script error: ' + e.reason); });

  var RES_COLOR = {
    unresolved: '#9c755f', copy: '#4e79a7', zeropage: '#76b7b2', 'continue': '#59a14f',
    poison: '#e15759', move: '#edc948', wake: '#b07aa1', writeprotect: '#ff9da7', other: '#bab0ac'
  };
  var PART_COLOR = { notify: '#f28e2b', resolve: '#4e79a7', wake: '#59a14f', run: '#bab0ac', unseen: '#e6e6e6' };
  var MM_POISON = 1, MM_RACE = 2, MM_STUCK = 4;
  /* #selftest: each view hovers one spot of its own and the tooltips are kept in the page,
     so a headless browser can check what a user would see (tests/e2e/test_report.py) */
  var selftests = [];

  /* --- helpers ----------------------------------------------------------- */

  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === 'text') e.textContent = attrs[k];
        else if (k === 'class') e.className = attrs[k];
        else e.setAttribute(k, attrs[k]);
      });
    }
    (kids || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function txt(s) { return document.createTextNode(String(s)); }
  function fmtInt(n) {
    if (n === null || n === undefined) return '-';
    return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  }
  function fmtNs(ns) {
    if (ns === null || ns === undefined) return '-';
    var a = Math.abs(ns);
    if (a < 1e3) return ns.toFixed(0) + ' ns';
    if (a < 1e6) return (ns / 1e3).toFixed(a < 1e4 ? 2 : 1) + ' \u00b5s';
    if (a < 1e9) return (ns / 1e6).toFixed(a < 1e7 ? 3 : 2) + ' ms';
    return (ns / 1e9).toFixed(3) + ' s';
  }
  function fmtBytes(b) {
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (b % 1 ? b.toFixed(1) : b) + ' ' + u[i];
  }
  function fmtT(rel) {
    if (rel === null || rel === undefined) return '-';
    return (rel < 0 ? '-' : '+') + fmtNs(Math.abs(rel));
  }
  function resName(r) { return r >= 0 && r < D.res.length ? D.res[r] : '?'; }
  function resColor(r) { return RES_COLOR[resName(r)] || '#999'; }
  function section(title, note) {
    var s = el('section', {});
    s.appendChild(el('h2', { text: title }));
    if (note) s.appendChild(el('p', { 'class': 'note', text: note }));
    app.appendChild(s);
    return s;
  }
  function table(head, rows, cls) {
    var t = el('table', cls ? { 'class': cls } : {});
    var tr = el('tr');
    head.forEach(function (h, i) { tr.appendChild(el('th', { 'class': i ? '' : 'l', text: h })); });
    t.appendChild(tr);
    rows.forEach(function (r) {
      var row = el('tr');
      r.forEach(function (c, i) {
        var td = el('td', { 'class': i ? '' : 'l' });
        if (c instanceof Node) td.appendChild(c); else td.textContent = c;
        row.appendChild(td);
      });
      t.appendChild(row);
    });
    return t;
  }
  /* a figure the tests read back: data-stat names it, data-value is exact */
  function stat(tr, name, value) {
    tr.setAttribute('data-stat', name);
    tr.setAttribute('data-value', String(value));
    return tr;
  }
  function legend(items) {
    var l = el('div', { 'class': 'legend' });
    items.forEach(function (it) {
      var s = el('span', {}, [el('span', { 'class': 'sw', style: 'background:' + it[1] + (it[2] ? ';' + it[2] : '') }), txt(it[0])]);
      l.appendChild(s);
    });
    return l;
  }
  function setupCanvas(c, w, h) {
    var dpr = window.devicePixelRatio || 1;
    c.width = Math.max(1, Math.round(w * dpr));
    c.height = Math.max(1, Math.round(h * dpr));
    c.style.width = w + 'px';
    c.style.height = h + 'px';
    var g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    return g;
  }
  function lowerBound(arr, v, lo, hi) {
    while (lo < hi) { var m = (lo + hi) >> 1; if (arr[m] < v) lo = m + 1; else hi = m; }
    return lo;
  }
  /* a time ramp (viridis-like): 0 = start of the recording, 1 = its end */
  var RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function ramp(x) {
    x = Math.max(0, Math.min(1, x)) * (RAMP.length - 1);
    var i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i, a = RAMP[i], b = RAMP[i + 1];
    return 'rgb(' + Math.round(a[0] + (b[0] - a[0]) * f) + ',' + Math.round(a[1] + (b[1] - a[1]) * f) + ',' +
      Math.round(a[2] + (b[2] - a[2]) * f) + ')';
  }
  function heatColor(x) { /* white to dark red */
    x = Math.max(0, Math.min(1, x));
    var r = Math.round(255 - 60 * x), g = Math.round(245 - 225 * x), b = Math.round(235 - 215 * x);
    return 'rgb(' + r + ',' + g + ',' + b + ')';
  }
  function niceStep(span, target) {
    var raw = span / target, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
  }
  var tip = el('div', { id: 'tip' });
  document.body.appendChild(tip);
  function showTip(ev, text) {
    tip.textContent = text;
    tip.style.display = 'block';
    var x = ev.clientX + 14, y = ev.clientY + 14, r = tip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 4) x = ev.clientX - r.width - 14;
    if (y + r.height > window.innerHeight - 4) y = ev.clientY - r.height - 14;
    tip.style.left = Math.max(0, x) + 'px';
    tip.style.top = Math.max(0, y) + 'px';
  }
  function hideTip() { tip.style.display = 'none'; }
  function laneName(l) {
    if (l.threads) return 'other ' + fmtInt(l.threads) + ' threads';
    return (l.vcpu !== null ? 'vCPU ' + l.vcpu + ' \u00b7 ' : '') + 'tid ' + l.tid + ' ' + l.comm;
  }

  /* --- the data ---------------------------------------------------------- */

  var D = JSON.parse(document.getElementById('fl-data').textContent);
  var app = document.getElementById('app');
  var T = D.totals;

  /* --- header, warnings, totals ------------------------------------------ */

  function header() {
    app.appendChild(el('h1', { text: D.title }));
    app.appendChild(el('p', { 'class': 'sub', text: D.source + ' \u00b7 ' + fmtInt(T.faults) + ' faults over ' +
      fmtNs(D.span_ns) + ' \u00b7 ' + T.lanes + ' lane(s) \u00b7 made by ' + D.tool }));
    var w = [];
    if (T.lost_records) w.push(fmtInt(T.lost_records) + ' record(s) were lost by the tracer (' +
      Object.keys(T.lost_where).join(', ') + '): counts and times below are lower bounds.');
    if (D.input.malformed) {
      var s = fmtInt(D.input.malformed) + ' malformed line(s) of the recording were skipped:';
      w.push([s, D.input.skips.map(function (k) { return 'line ' + k.line + ': ' + k.why; })]);
    }
    if (D.summary && D.summary.faults !== T.faults)
      w.push('The recording has ' + fmtInt(T.faults) + ' fault records but the trace\'s own summary counted ' +
        fmtInt(D.summary.faults) + ' (a cut or concatenated recording?).');
    if (D.summaries > 1) w.push('The recording holds ' + D.summaries + ' trace summaries (concatenated runs?): the last one is shown.');
    if (T.late) w.push(fmtInt(T.late) + ' process(es) were tracked late: their earlier faults were not seen.');
    if (T.faults && !D.lanes.length) w.push('No lanes.');
    D.lanes.forEach(function (l) {
      if (l.threads) w.push(fmtInt(l.threads) + ' threads beyond the first ' + (D.lanes.length - 1) +
        ' share the last lane ("other threads").');
    });
    if (!T.faults) w.push('The recording has no fault records.');
    if (D.mem.dropped_pids) w.push(D.mem.dropped_pids + ' process(es) with the fewest faults are left out of the memory map.');
    if (D.vms_dropped) w.push(D.vms_dropped + ' vm_stats record(s) beyond 64 VMs were not kept.');
    if (w.length) {
      var box = el('div', { 'class': 'warn', id: 'warnings' });
      w.forEach(function (x) {
        if (typeof x === 'string') { box.appendChild(el('div', { text: x })); return; }
        box.appendChild(el('div', { text: x[0] }));
        var ul = el('ul');
        x[1].forEach(function (li) { ul.appendChild(el('li', { 'class': 'mono', text: li })); });
        box.appendChild(ul);
      });
      app.appendChild(box);
    }
  }

  function totals() {
    var s = section('Totals');
    var cards = el('div', { 'class': 'cards' });
    [['faults', T.faults], ['time blocked', fmtNs(T.blocked_ns)], ['lanes (threads)', T.lanes],
     ['vCPU lanes', T.vcpu_lanes], ['races', T.races], ['poison events', T.poison],
     ['still waiting at the end', T.waiting], ['lost records', T.lost_records]].forEach(function (c) {
      cards.appendChild(el('div', { 'class': 'card' }, [el('div', { 'class': 'k', text: c[0] }),
        el('div', { 'class': 'v', text: typeof c[1] === 'number' ? fmtInt(c[1]) : c[1] })]));
    });
    s.appendChild(cards);
    var t = el('table', { id: 'totals' });
    t.appendChild(el('tr', {}, [el('th', { 'class': 'l', text: 'what' }), el('th', { text: 'count' }),
      el('th', { text: 'trace summary' })]));
    function row(name, label, v, sv) {
      var tr = el('tr', {}, [el('td', { 'class': 'l', text: label }), el('td', { text: fmtInt(v) }),
        el('td', { text: sv === undefined ? '' : fmtInt(sv) })]);
      t.appendChild(stat(tr, name, v));
    }
    var S = D.summary;
    row('faults', 'faults', T.faults, S ? S.faults : undefined);
    row('blocked_ns', 'time blocked (ns, sum of latencies)', T.blocked_ns);
    row('waiting', 'faults still waiting when the trace stopped', T.waiting);
    row('threads', 'faulting threads', T.threads);
    row('lanes', 'timeline lanes', T.lanes);
    row('vcpu_lanes', 'vCPU lanes', T.vcpu_lanes);
    D.res.forEach(function (r, i) {
      if (T.by_res[i] || (S && S.by_res[i])) row('res:' + r, 'resolved by ' + r, T.by_res[i], S ? S.by_res[i] : undefined);
    });
    D.modes.forEach(function (m, i) { if (T.by_mode[i]) row('mode:' + m, 'mode ' + m, T.by_mode[i]); });
    row('races', 'races', T.races, S ? S.races : undefined);
    Object.keys(T.race_kinds).forEach(function (k) { row('race:' + k, '  race ' + k, T.race_kinds[k]); });
    row('poison', 'poison events', T.poison);
    Object.keys(T.poison_kinds).forEach(function (k) { row('poison:' + k, '  poison ' + k, T.poison_kinds[k]); });
    row('lost', 'lost records', T.lost_records, S ? S.lost : undefined);
    row('late', 'processes tracked late', T.late);
    row('signals', 'signals', T.signals);
    row('kvm_memory_faults', 'KVM memory-fault exits', T.kvm_memory_faults);
    s.appendChild(t);
  }

  /* --- timeline ------------------------------------------------------------ */

  function timeline() {
    var s = section('Timeline: who waited when',
      'One lane per vCPU and per other faulting thread. Each bar is a wait (a fault from its start until the thread ran again), ' +
      'coloured by what resolved it; the shaded band beneath is every wait of the lane, binned (darker = more of the bin blocked). ' +
      'Wheel to zoom, drag to pan, double-click to reset; hover for details.');
    var L = D.lanes, IV = D.iv, A = D.axis;
    var items = Object.keys(RES_COLOR).filter(function (r) { return T.by_res[D.res.indexOf(r)]; })
      .map(function (r) { return [r, RES_COLOR[r]]; });
    items.push(['still waiting (outline)', '#fff', 'border:2px solid #c62828']);
    items.push(['race', '#d000d0']);
    items.push(['stranded waiter', '#c62828']);
    items.push(['poison', '#000']);
    items.push(['signal', '#f28e2b']);
    s.appendChild(legend(items));
    var reset = el('button', { text: 'reset zoom' });
    s.appendChild(el('div', { 'class': 'toolbar' }, [reset, txt(IV.sampled ?
      fmtInt(IV.n) + ' of ' + fmtInt(T.faults) + ' waits drawn one by one (the ' + fmtInt(IV.slowest) +
      ' slowest and a uniform sample); every wait is in the shaded bands.' :
      'every wait drawn one by one (' + fmtInt(IV.n) + ').')]));
    if (!L.length) { s.appendChild(el('p', { 'class': 'note', text: 'No faults to draw.' })); return; }

    var laneH = L.length <= 40 ? 22 : L.length <= 120 ? 12 : 6, axisH = 24;
    var wrap = el('div', { 'class': 'tl-wrap' });
    var labels = el('div', { 'class': 'tl-labels' });
    labels.appendChild(el('div', { 'class': 'tl-axis-spacer', style: 'height:' + axisH + 'px' }));
    L.forEach(function (l, i) {
      var d = el('div', { 'class': l.vcpu !== null && !l.threads ? 'lane vcpu' : 'lane', text: laneName(l),
        title: laneName(l) + ' (pid ' + l.pid + '): ' + fmtInt(l.faults) + ' faults, blocked ' + fmtNs(l.blocked_ns),
        style: 'height:' + laneH + 'px;line-height:' + laneH + 'px;font-size:' + Math.min(11.5, laneH - 1) + 'px' });
      d.setAttribute('data-lane', i);
      d.setAttribute('data-pid', l.pid);
      d.setAttribute('data-tid', l.tid);
      d.setAttribute('data-vcpu', l.vcpu === null ? '' : l.vcpu);
      d.setAttribute('data-faults', l.faults);
      d.setAttribute('data-threads', l.threads);
      labels.appendChild(d);
    });
    var cwrap = el('div', { 'class': 'tl-canvas-wrap' });
    var canvas = el('canvas', { 'class': 'interactive', id: 'timeline' });
    cwrap.appendChild(canvas);
    wrap.appendChild(labels);
    wrap.appendChild(cwrap);
    s.appendChild(wrap);

    /* intervals of a lane are contiguous (sorted by lane, then start) */
    var from = new Array(L.length).fill(0), to = new Array(L.length).fill(0);
    for (var i = IV.n - 1; i >= 0; i--) from[IV.lane[i]] = i;
    for (i = 0; i < IV.n; i++) to[IV.lane[i]] = i + 1;
    var maxLat = new Array(L.length).fill(0);
    for (i = 0; i < IV.n; i++) maxLat[IV.lane[i]] = Math.max(maxLat[IV.lane[i]], IV.lat[i]);
    var marks = [];
    D.events.races.forEach(function (r) {
      marks.push({ t: r.t, lane: r.lane, kind: r.kind === 'waiter_stranded' ? 'stranded' : 'race', ev: r, what: 'race' });
    });
    D.events.poison.forEach(function (p) { marks.push({ t: p.t, lane: p.lane, kind: 'poison', ev: p, what: 'poison' }); });
    D.events.signals.forEach(function (p) { marks.push({ t: p.t, lane: p.lane, kind: 'signal', ev: p, what: 'signal' }); });
    var lost = D.events.lost.filter(function (x) { return x.t !== null; });

    var full0 = Math.min(0, A.first_rel), full1 = Math.max(D.span_ns, 1000);
    var v0 = full0, v1 = full1, W = 0, H = axisH + L.length * laneH, g = null;

    function X(t) { return (t - v0) / (v1 - v0) * W; }
    function draw() {
      W = Math.max(200, cwrap.clientWidth);
      g = setupCanvas(canvas, W, H);
      g.clearRect(0, 0, W, H);
      /* axis */
      var step = niceStep(v1 - v0, Math.max(2, W / 110));
      g.fillStyle = '#5f6878';
      g.font = '11px system-ui, sans-serif';
      g.strokeStyle = '#e3e6ec';
      g.beginPath();
      for (var t = Math.ceil(v0 / step) * step; t <= v1; t += step) {
        var x = Math.round(X(t)) + 0.5;
        g.moveTo(x, axisH - 6);
        g.lineTo(x, H);
        g.fillText(fmtT(t), x + 3, axisH - 10);
      }
      g.stroke();
      for (var li = 0; li < L.length; li++) {
        var y = axisH + li * laneH;
        if (li % 2) { g.fillStyle = 'rgba(0,0,0,0.025)'; g.fillRect(0, y, W, laneH); }
        /* every wait, binned */
        var C = D.cells[li];
        for (var k = 0; k < C.b.length; k++) {
          var t0 = A.first_rel + C.b[k] * A.bin_ns, x0 = X(t0), x1 = X(t0 + A.bin_ns);
          if (x1 < 0 || x0 > W) continue;
          var frac = Math.min(1, C.blk[k] / A.bin_ns);
          g.globalAlpha = 0.12 + 0.5 * frac;
          g.fillStyle = C.r[k] >= 0 ? resColor(C.r[k]) : '#999';
          g.fillRect(x0, y + laneH * 0.62, Math.max(1, x1 - x0), laneH * 0.3);
        }
        g.globalAlpha = 1;
        /* the waits kept whole */
        for (var j = from[li]; j < to[li]; j++) {
          var a = X(IV.t[j]), b = X(IV.t[j] + IV.lat[j]);
          if (b < 0 || a > W) continue;
          g.fillStyle = resColor(IV.res[j]);
          g.fillRect(a, y + laneH * 0.12, Math.max(1, b - a), laneH * 0.46);
          if (IV.w[j]) {
            g.strokeStyle = '#c62828';
            g.lineWidth = 2;
            g.strokeRect(a, y + laneH * 0.12, Math.max(1, b - a), laneH * 0.46);
            g.lineWidth = 1;
          }
        }
      }
      /* lost records: a dashed line across every lane */
      g.strokeStyle = '#888';
      g.setLineDash([3, 3]);
      lost.forEach(function (x) {
        var px = Math.round(X(x.t)) + 0.5;
        if (px < 0 || px > W) return;
        g.beginPath(); g.moveTo(px, axisH); g.lineTo(px, H); g.stroke();
      });
      g.setLineDash([]);
      marks.forEach(function (m) {
        var px = X(m.t);
        if (px < -5 || px > W + 5) return;
        var y = m.lane === null ? axisH + 2 : axisH + m.lane * laneH, h = Math.min(laneH, 10);
        g.fillStyle = m.kind === 'race' ? '#d000d0' : m.kind === 'stranded' ? '#c62828' :
          m.kind === 'poison' ? '#000' : '#f28e2b';
        g.beginPath();
        if (m.kind === 'poison') { g.moveTo(px, y); g.lineTo(px + h / 2, y + h / 2); g.lineTo(px, y + h); g.lineTo(px - h / 2, y + h / 2); }
        else { g.moveTo(px - h / 2, y); g.lineTo(px + h / 2, y); g.lineTo(px, y + h); }
        g.closePath();
        g.fill();
      });
    }

    function hit(ev) {
      var r = canvas.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
      var li = Math.floor((y - axisH) / laneH);
      if (li < 0 || li >= L.length) return null;
      var t = v0 + x / W * (v1 - v0), tol = 4 / W * (v1 - v0);
      for (var m = 0; m < marks.length; m++) {
        if ((marks[m].lane === li || (marks[m].lane === null && li === 0)) && Math.abs(marks[m].t - t) <= tol * 1.5)
          return { mark: marks[m] };
      }
      /* the last wait starting before t+tol, then back while one could still cover t */
      var hi = lowerBound(IV.t, t + tol + 1, from[li], to[li]) - 1, best = -1;
      for (var j = hi; j >= from[li] && IV.t[j] >= t - tol - maxLat[li]; j--) {
        if (IV.t[j] - tol <= t && t <= IV.t[j] + IV.lat[j] + tol) { best = j; break; }
      }
      if (best >= 0) return { iv: best, lane: li };
      var C = D.cells[li], bin = Math.floor((t - A.first_rel) / A.bin_ns), k = lowerBound(C.b, bin, 0, C.b.length);
      if (k < C.b.length && C.b[k] === bin) return { cell: k, lane: li, bin: bin };
      return { lane: li, t: t };
    }
    function describe(h) {
      if (h.mark) {
        var e = h.mark.ev;
        if (h.mark.what === 'race')
          return 'race ' + e.kind + ' at ' + fmtT(e.t) + '\n' + e.what + ' on ' + e.start + ' +' + fmtBytes(e.len) +
            '\nby ' + e.actor_comm + ' [' + e.actor_tid + ']\nwaiter tid ' + e.waiter_tid + ' at ' + e.waiter_addr +
            (e.errno ? '\nerrno ' + e.errno : '') + (e.waited_ns ? '\nblocked ' + fmtNs(e.waited_ns) : '');
        if (h.mark.what === 'poison')
          return 'poison ' + e.kind + ' at ' + fmtT(e.t) + '\n' + e.comm + ' [' + e.pid + '/' + e.tid + ']\naddr ' + e.addr +
            (e.len ? ' +' + fmtBytes(e.len) : '') + (e.detail ? '\n' + e.detail : '');
        return 'signal ' + e.signo + ' at ' + fmtT(e.t) + '\n' + e.comm + ' [' + e.pid + '/' + e.tid + '] addr ' + e.addr + ' code ' + e.code;
      }
      var l = L[h.lane];
      if (h.iv !== undefined) {
        var j = h.iv;
        return laneName(l) + '\n' +
          'addr      ' + IV.addr[j] + (IV.ps[j] ? ' (' + fmtBytes(IV.ps[j]) + ' page)' : '') + '\n' +
          'mode      ' + D.modes[IV.mode[j]] + ', resolved by ' + resName(IV.res[j]) + (IV.w[j] ? ' (still waiting at the end)' : '') + '\n' +
          'start     ' + fmtT(IV.t[j]) + '\n' +
          'latency   ' + fmtNs(IV.lat[j]) + '\n' +
          '  notify  ' + fmtNs(IV.nt[j]) + '  (until the handler read it)\n' +
          '  resolve ' + fmtNs(IV.rs[j]) + '  (read to resolving ioctl)\n' +
          '  wake    ' + fmtNs(IV.wk[j]) + '  (ioctl to wakeup)\n' +
          '  run     ' + fmtNs(IV.run[j]) + '  (wakeup to running)' + (IV.rt[j] ? '\nretries   ' + IV.rt[j] : '');
      }
      if (h.cell !== undefined) {
        var C = D.cells[h.lane], t0 = A.first_rel + h.bin * A.bin_ns;
        return laneName(l) + '\n' + fmtT(t0) + ' .. ' + fmtT(t0 + A.bin_ns) + '\n' + fmtInt(C.n[h.cell]) +
          ' fault(s) started, blocked ' + fmtNs(C.blk[h.cell]) + ' (' + (100 * C.blk[h.cell] / A.bin_ns).toFixed(1) +
          '% of the bin)' + (C.r[h.cell] >= 0 ? '\nmostly ' + resName(C.r[h.cell]) : '');
      }
      return laneName(l) + ' (pid ' + l.pid + ')\n' + fmtInt(l.faults) + ' faults, blocked ' + fmtNs(l.blocked_ns) +
        ', longest ' + fmtNs(l.max_ns) + '\nat ' + fmtT(h.t);
    }

    var drag = null, raf = 0;
    function redraw() { if (!raf) raf = requestAnimationFrame(function () { raf = 0; draw(); }); }
    canvas.addEventListener('wheel', function (ev) {
      ev.preventDefault();
      var r = canvas.getBoundingClientRect(), tm = v0 + (ev.clientX - r.left) / W * (v1 - v0);
      var f = Math.exp(ev.deltaY * 0.0015), span = Math.max(1000, (v1 - v0) * f);
      v0 = tm - (tm - v0) / (v1 - v0) * span;
      v1 = v0 + span;
      redraw();
    }, { passive: false });
    canvas.addEventListener('mousedown', function (ev) { drag = { x: ev.clientX, v0: v0, v1: v1 }; hideTip(); });
    window.addEventListener('mouseup', function () { drag = null; });
    window.addEventListener('mousemove', function (ev) {
      if (!drag) return;
      var dt = (ev.clientX - drag.x) / W * (drag.v1 - drag.v0);
      v0 = drag.v0 - dt;
      v1 = drag.v1 - dt;
      redraw();
    });
    canvas.addEventListener('mousemove', function (ev) {
      if (drag) return;
      var h = hit(ev);
      if (h) showTip(ev, describe(h)); else hideTip();
    });
    canvas.addEventListener('mouseleave', hideTip);
    function resetView() { v0 = full0; v1 = full1; redraw(); }
    canvas.addEventListener('dblclick', resetView);
    reset.addEventListener('click', resetView);
    window.addEventListener('resize', redraw);
    draw();
    selftests.push(function () {
      var j = 0;
      for (var i = 1; i < IV.n; i++) if (IV.lat[i] > IV.lat[j]) j = i;
      if (!IV.n) return null;
      var r = canvas.getBoundingClientRect(), x0 = X(IV.t[j]), x1 = X(IV.t[j] + IV.lat[j]);
      canvas.dispatchEvent(new MouseEvent('mousemove', { bubbles: true, clientX: r.left + (x0 + x1) / 2,
        clientY: r.top + axisH + IV.lane[j] * laneH + laneH * 0.3 }));
      return { view: 'timeline', want: IV.addr[j], tip: tip.textContent };
    });
  }

  /* --- heatmap --------------------------------------------------------------- */

  function heatmap() {
    var s = section('Latency over time',
      'Faults by start time (columns) and latency (rows: log2 \u00b5s buckets, bucket i holds [2^i, 2^(i+1)) \u00b5s). Darker = more faults.');
    var H = { n: D.heat.n, first_rel: D.heat.first_rel, bin_ns: D.heat.bin_ns, b: [], k: [], c: [] };
    for (var q = 0; q + 2 < D.heat.cells.length; q += 3) {
      H.b.push(D.heat.cells[q]); H.k.push(D.heat.cells[q + 1]); H.c.push(D.heat.cells[q + 2]);
    }
    if (!H.b.length) { s.appendChild(el('p', { 'class': 'note', text: 'No faults.' })); return; }
    var kmin = H.k[0], kmax = H.k[0], cmax = 0;
    for (q = 0; q < H.b.length; q++) {
      kmin = Math.min(kmin, H.k[q]); kmax = Math.max(kmax, H.k[q]); cmax = Math.max(cmax, H.c[q]);
    }
    kmin = Math.max(0, Math.min(kmin, kmax - 5));
    var rows = kmax - kmin + 1, rowH = 16, left = 70, bottom = 22;
    var wrap = el('div', { style: 'position:relative' });
    var canvas = el('canvas', { 'class': 'interactive', id: 'heatmap' });
    wrap.appendChild(canvas);
    s.appendChild(wrap);
    var grid = {};
    for (var i = 0; i < H.b.length; i++) grid[H.b[i] * 64 + H.k[i]] = H.c[i];
    var W = 0, h = rows * rowH + bottom + 4;
    function bucketLabel(k) {
      var us = Math.pow(2, k);
      return us < 1000 ? us + ' \u00b5s' : us < 1e6 ? (us / 1000).toFixed(us < 1e4 ? 1 : 0) + ' ms' : (us / 1e6).toFixed(1) + ' s';
    }
    function draw() {
      W = Math.max(300, s.clientWidth);
      var g = setupCanvas(canvas, W, h), cw = (W - left) / H.n;
      g.clearRect(0, 0, W, h);
      for (var i = 0; i < H.b.length; i++) {
        var x = left + H.b[i] * cw, y = (kmax - H.k[i]) * rowH;
        g.fillStyle = heatColor(Math.log(1 + H.c[i]) / Math.log(1 + cmax));
        g.fillRect(x, y, Math.max(1, cw), rowH - 1);
      }
      g.fillStyle = '#5f6878';
      g.font = '11px system-ui, sans-serif';
      for (var k = kmin; k <= kmax; k++) g.fillText(bucketLabel(k), 4, (kmax - k) * rowH + 12);
      var span = H.n * H.bin_ns, step = niceStep(span, Math.max(2, (W - left) / 110));
      g.strokeStyle = '#c9ced8';
      g.beginPath();
      for (var t = Math.ceil(H.first_rel / step) * step; t <= H.first_rel + span; t += step) {
        var px = Math.round(left + (t - H.first_rel) / span * (W - left)) + 0.5;
        g.moveTo(px, rows * rowH);
        g.lineTo(px, rows * rowH + 5);
        g.fillText(fmtT(t), px + 2, rows * rowH + 16);
      }
      g.stroke();
    }
    canvas.addEventListener('mousemove', function (ev) {
      var r = canvas.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
      var col = Math.floor((x - left) / ((W - left) / H.n)), k = kmax - Math.floor(y / rowH);
      if (col < 0 || col >= H.n || k < kmin || k > kmax) { hideTip(); return; }
      var t0 = H.first_rel + col * H.bin_ns;
      showTip(ev, fmtT(t0) + ' .. ' + fmtT(t0 + H.bin_ns) + '\nlatency ' + bucketLabel(k) + ' .. ' + bucketLabel(k + 1) +
        '\n' + fmtInt(grid[col * 64 + k] || 0) + ' fault(s)');
    });
    canvas.addEventListener('mouseleave', hideTip);
    window.addEventListener('resize', draw);
    draw();
    selftests.push(function () {
      var m = 0;
      for (var i = 1; i < H.c.length; i++) if (H.c[i] > H.c[m]) m = i;
      var r = canvas.getBoundingClientRect(), cw = (W - left) / H.n;
      canvas.dispatchEvent(new MouseEvent('mousemove', { bubbles: true, clientX: r.left + left + (H.b[m] + 0.5) * cw,
        clientY: r.top + (kmax - H.k[m] + 0.5) * rowH }));
      return { view: 'heatmap', want: fmtInt(H.c[m]) + ' fault(s)', tip: tip.textContent };
    });
  }

  /* --- breakdown -------------------------------------------------------------- */

  function breakdown() {
    var s = section('Where the wait went: notify / resolve / wake',
      'notify: until the handler read the fault (a starved handler); resolve: from that read to the resolving ioctl (fetching the page: the network); ' +
      'wake: from the ioctl to the wakeup; run: from the wakeup until the thread ran. Percentiles are within 1.6%.');
    var P = D.parts, names = ['latency', 'notify', 'resolve', 'wake', 'run'];
    var t = table(['part', 'faults', 'not seen', 'total', 'mean', 'p50', 'p90', 'p99', 'p99.9', 'max'],
      names.map(function (n) {
        var p = P[n];
        return [n, fmtInt(p.n), fmtInt(p.nulls), fmtNs(p.sum), fmtNs(p.mean), fmtNs(p.p50), fmtNs(p.p90),
          fmtNs(p.p99), fmtNs(p.p999), fmtNs(p.max)];
      }));
    t.id = 'breakdown';
    Array.prototype.forEach.call(t.querySelectorAll('tr'), function (tr, i) {
      if (i) { stat(tr, 'part:' + names[i - 1], P[names[i - 1]].sum); tr.setAttribute('data-n', P[names[i - 1]].n); }
    });
    s.appendChild(t);
    /* the mean wait of each resolution, split into its parts */
    s.appendChild(el('h3', { text: 'Mean wait by resolution, split' }));
    s.appendChild(legend(['notify', 'resolve', 'wake', 'run', 'unseen'].map(function (p) {
      return [p === 'unseen' ? 'not attributed (a part not seen)' : p, PART_COLOR[p]];
    })));
    var bars = el('div', { 'class': 'bars' }), maxMean = 0;
    D.by_res.forEach(function (r) { maxMean = Math.max(maxMean, r.lat.mean); });
    D.by_res.forEach(function (r) {
      var n = r.lat.n, tot = r.sums[0], bar = el('div', { 'class': 'bar', style: 'width:' + Math.max(2, 100 * r.lat.mean / (maxMean || 1)) + '%' });
      var parts = ['notify', 'resolve', 'wake', 'run'], seen = 0;
      parts.forEach(function (p, i) {
        var v = r.sums[i + 1];
        seen += v;
        bar.appendChild(el('div', { style: 'width:' + (tot ? 100 * v / tot : 0) + '%;background:' + PART_COLOR[p],
          title: p + ': ' + fmtNs(v / n) + ' mean' }));
      });
      bar.appendChild(el('div', { style: 'width:' + (tot ? Math.max(0, 100 * (tot - seen) / tot) : 0) + '%;background:' + PART_COLOR.unseen }));
      bars.appendChild(el('div', { 'class': 'barrow' }, [el('span', { 'class': 'name', text: resName(r.res) }),
        el('div', { style: 'flex:1' }, [bar]), el('span', { text: fmtNs(r.lat.mean) })]));
    });
    s.appendChild(bars);
    var rt = table(['resolved by', 'faults', 'total blocked', 'mean', 'p50', 'p99', 'max', 'mean notify', 'mean resolve', 'mean wake'],
      D.by_res.map(function (r) {
        function m(i) { return r.seen[i] ? fmtNs(r.sums[i] / r.seen[i]) : '-'; }
        return [resName(r.res), fmtInt(r.lat.n), fmtNs(r.lat.sum), fmtNs(r.lat.mean), fmtNs(r.lat.p50), fmtNs(r.lat.p99),
          fmtNs(r.lat.max), m(1), m(2), m(3)];
      }));
    rt.id = 'by-resolution';
    s.appendChild(rt);
  }

  /* --- memory map ------------------------------------------------------------- */

  function memmap() {
    var M = D.mem;
    var s = section('Memory map',
      'Faulting memory by process and region (regions are cut where faulted pages lie more than 16 MiB apart). ' +
      'A cell is coloured by when its first fault started; hover for its address range and counts.');
    var mode = el('select', {}, [el('option', { value: 'first', text: 'when the first fault started' }),
      el('option', { value: 'last', text: 'when the last fault started' }), el('option', { value: 'count', text: 'how many faults' })]);
    s.appendChild(el('div', { 'class': 'toolbar' }, [txt('colour cells by'), mode]));
    var items = [['early / few', ramp(0)], ['late / many', ramp(1)], ['poisoned', '#000'],
      ['race (outline)', '#fff', 'border:2px solid #d000d0'], ['stuck waiter (outline)', '#fff', 'border:2px solid #c62828']];
    s.appendChild(legend(items));
    if (!M.regions.length) { s.appendChild(el('p', { 'class': 'note', text: 'No faulting memory.' })); return; }
    var canvas = el('canvas', { 'class': 'interactive', id: 'memmap' });
    s.appendChild(canvas);
    var maxN = 1;
    M.regions.forEach(function (r) { for (var i = 0; i < r.n.length; i++) maxN = Math.max(maxN, r.n[i]); });
    function shade(r, i, span) {
      if (mode.value === 'count') return ramp(Math.log(1 + r.n[i]) / Math.log(1 + maxN));
      return ramp((mode.value === 'last' ? r.tl[i] : r.t[i]) / span);
    }
    var layout = [], H = 0, W = 0;
    function plan() {
      W = Math.max(300, s.clientWidth);
      layout = [];
      H = 0;
      M.regions.forEach(function (r) {
        var cols = Math.max(1, Math.min(256, r.ncells)), px = Math.max(3, Math.min(16, Math.floor((W - 8) / cols)));
        cols = Math.max(1, Math.min(r.ncells, Math.floor((W - 8) / px)));
        var rows = Math.ceil(r.ncells / cols);
        layout.push({ r: r, y: H + 20, cols: cols, px: px, rows: rows });
        H += 20 + rows * px + 12;
      });
    }
    function draw() {
      plan();
      var g = setupCanvas(canvas, W, H), span = Math.max(1, D.span_ns);
      g.clearRect(0, 0, W, H);
      layout.forEach(function (b) {
        var r = b.r;
        g.fillStyle = '#1d2330';
        g.font = '12px system-ui, sans-serif';
        g.fillText('pid ' + r.pid + '  ' + r.start + ' .. ' + r.end + '  (' + fmtBytes(Number(BigInt(r.end) - BigInt(r.start))) +
          ', ' + fmtBytes(r.cell) + ' cells, ' + fmtInt(r.faults) + ' faults)', 2, b.y - 6);
        g.fillStyle = '#eef0f4';
        var full = Math.floor(r.ncells / b.cols);
        g.fillRect(2, b.y, b.cols * b.px, full * b.px);
        if (r.ncells % b.cols) g.fillRect(2, b.y + full * b.px, (r.ncells % b.cols) * b.px, b.px);
        for (var i = 0; i < r.c.length; i++) {
          var x = 2 + (r.c[i] % b.cols) * b.px, y = b.y + Math.floor(r.c[i] / b.cols) * b.px, q = b.px > 4 ? 1 : 0;
          g.fillStyle = r.f[i] & MM_POISON ? '#000' : r.n[i] ? shade(r, i, span) : '#c8ccd4';
          g.fillRect(x, y, b.px - q, b.px - q);
          if (r.f[i] & (MM_RACE | MM_STUCK)) {
            g.strokeStyle = r.f[i] & MM_STUCK ? '#c62828' : '#d000d0';
            g.lineWidth = b.px > 6 ? 2 : 1;
            g.strokeRect(x + 0.5, y + 0.5, b.px - 1 - q, b.px - 1 - q);
            g.lineWidth = 1;
          }
        }
      });
    }
    canvas.addEventListener('mousemove', function (ev) {
      var rc = canvas.getBoundingClientRect(), x = ev.clientX - rc.left, y = ev.clientY - rc.top;
      for (var i = 0; i < layout.length; i++) {
        var b = layout[i], col = Math.floor((x - 2) / b.px), row = Math.floor((y - b.y) / b.px);
        if (col < 0 || col >= b.cols || row < 0 || row >= b.rows) continue;
        var idx = row * b.cols + col;
        if (idx >= b.r.ncells) break;
        var k = lowerBound(b.r.c, idx, 0, b.r.c.length), has = k < b.r.c.length && b.r.c[k] === idx;
        var a = BigInt(b.r.start) + BigInt(idx) * BigInt(b.r.cell);
        var fl = has ? b.r.f[k] : 0, what = [];
        if (fl & MM_POISON) what.push('poisoned');
        if (fl & MM_RACE) what.push('race');
        if (fl & MM_STUCK) what.push('stuck waiter');
        showTip(ev, 'pid ' + b.r.pid + '\n0x' + a.toString(16) + ' .. 0x' + (a + BigInt(b.r.cell)).toString(16) + '\n' +
          (has && b.r.n[k] ? fmtInt(b.r.n[k]) + ' fault(s), first at ' + fmtT(b.r.t[k]) + ', last at ' + fmtT(b.r.tl[k]) : 'no faults') +
          (what.length ? '\n' + what.join(', ') : ''));
        return;
      }
      hideTip();
    });
    canvas.addEventListener('mouseleave', hideTip);
    window.addEventListener('resize', draw);
    mode.addEventListener('change', draw);
    draw();
    selftests.push(function () {
      var b = layout[0], c = b.r.c[0], r = canvas.getBoundingClientRect();
      canvas.dispatchEvent(new MouseEvent('mousemove', { bubbles: true,
        clientX: r.left + 2 + (c % b.cols + 0.5) * b.px, clientY: r.top + b.y + (Math.floor(c / b.cols) + 0.5) * b.px }));
      var a = BigInt(b.r.start) + BigInt(c) * BigInt(b.r.cell);
      return { view: 'memmap', want: '0x' + a.toString(16) + ' .. ', tip: tip.textContent };
    });
  }

  /* --- per-VM summary ---------------------------------------------------------- */

  function distBars(dist) {
    var max = Math.max.apply(null, dist.concat([1])), d = el('div', { style: 'display:flex;align-items:flex-end;height:28px;gap:1px' });
    dist.forEach(function (n, i) {
      d.appendChild(el('div', { title: '[' + Math.pow(2, i) + ', ' + Math.pow(2, i + 1) + ') \u00b5s: ' + fmtInt(n),
        style: 'width:7px;background:' + (n ? '#4e79a7' : '#eef0f4') + ';height:' + (n ? Math.max(2, 28 * n / max) : 2) + 'px' }));
    });
    return d;
  }

  function vms() {
    var s = section('Per-VM summary',
      'What `faultline trace` prints at exit (QEMU 10.1\'s postcopy figures, for any VMM): per-vCPU blocktime, all-vCPU blocktime ' +
      '(every vCPU blocked at once), average latency, the log2 \u00b5s latency distribution and KVM exits.');
    if (!D.vms.length) { s.appendChild(el('p', { 'class': 'note', text: 'No processes.' })); return; }
    D.vms.forEach(function (v) {
      var h = el('h3', { text: 'pid ' + v.pid + (v.comm ? ' (' + v.comm + ')' : '') + ': ' + (v.vcpus.length + v.vcpus_omitted) + ' vCPU(s), all-vCPU blocktime ' +
        fmtNs(v.all_vcpu_blocked_ns) + (v.lower_bound ? ' (lower bound)' : '') });
      h.setAttribute('data-vm', v.pid);
      s.appendChild(h);
      s.appendChild(el('p', { 'class': 'note', text: v.computed ? 'Computed from the recording\'s faults (it has no vm_stats record for this process).' :
        'From the recording\'s vm_stats record.' }));
      var rows = v.vcpus.map(function (c) {
        var ex = c.exits.map(function (e) { return e[0] + '=' + fmtInt(e[1]); }).join(' ');
        return [String(c.vcpu), String(c.tid), fmtInt(c.faults), (c.blocked_ns / 1e6).toFixed(3),
          c.faults ? (c.blocked_ns / 1e3 / c.faults).toFixed(1) : '0.0', distBars(c.dist), ex || '-'];
      });
      var n = v.non_vcpu;
      rows.push(['other', '-', fmtInt(n.faults), (n.blocked_ns / 1e6).toFixed(3), n.faults ? (n.blocked_ns / 1e3 / n.faults).toFixed(1) : '0.0',
        distBars(n.dist), '']);
      var t = table(['vCPU', 'TID', 'faults', 'blocked (ms)', 'avg (\u00b5s)', 'latency (log2 \u00b5s)', 'KVM exits'], rows);
      t.setAttribute('data-vm', v.pid);
      Array.prototype.forEach.call(t.querySelectorAll('tr'), function (tr, i) {
        if (!i) return;
        var f = i <= v.vcpus.length ? v.vcpus[i - 1].faults : n.faults;
        tr.setAttribute('data-faults', f);
      });
      s.appendChild(t);
      s.appendChild(el('p', { 'class': 'note', text: 'Total blocked ' + fmtNs(v.total_blocked_ns) + '.' +
        (v.vcpus_omitted ? ' ' + fmtInt(v.vcpus_omitted) + ' more vCPU(s) not listed (the report lists 512 in all).' : '') }));
    });
  }

  /* --- lanes and events ---------------------------------------------------------- */

  function lanesTable() {
    var s = section('Threads');
    var d = el('div', { 'class': 'scroll' });
    d.appendChild(table(['lane', 'pid', 'tid', 'vCPU', 'faults', 'blocked', 'longest'], D.lanes.map(function (l) {
      return [laneName(l), String(l.pid), l.threads ? '-' : String(l.tid), l.vcpu === null ? '-' : String(l.vcpu),
        fmtInt(l.faults), fmtNs(l.blocked_ns), fmtNs(l.max_ns)];
    })));
    s.appendChild(d);
  }

  function events() {
    var E = D.events, any = false;
    function list(title, total, rows, head) {
      if (!total) return;
      if (!any) section('Events');
      any = true;
      var s = app.lastChild;
      s.appendChild(el('h3', { text: title + ' (' + fmtInt(total) + (rows.length < total ? ', the first ' + rows.length + ' listed' : '') + ')' }));
      var d = el('div', { 'class': 'scroll' });
      d.appendChild(table(head, rows));
      s.appendChild(d);
    }
    list('Races', T.races, E.races.map(function (r) {
      return [fmtT(r.t), r.kind, String(r.pid), r.what, r.start + ' +' + fmtBytes(r.len), r.actor_comm + ' [' + r.actor_tid + ']',
        String(r.waiters), String(r.waiter_tid), r.waiter_addr, r.errno || '-', r.waited_ns ? fmtNs(r.waited_ns) : '-'];
    }), ['time', 'kind', 'pid', 'what', 'range', 'by', 'waiters', 'waiter tid', 'waiter addr', 'errno', 'blocked']);
    list('Poison', T.poison, E.poison.map(function (p) {
      return [fmtT(p.t), p.kind, p.comm + ' [' + p.pid + '/' + p.tid + ']', p.vcpu >= 0 ? String(p.vcpu) : '-',
        p.addr + (p.len ? ' +' + fmtBytes(p.len) : ''), p.detail || '-'];
    }), ['time', 'kind', 'thread', 'vCPU', 'address', 'detail']);
    list('Lost records', T.lost_events, E.lost.map(function (x) {
      return [fmtT(x.t), x.where, fmtInt(x.count)];
    }), ['time', 'where', 'records']);
    list('Processes tracked late', T.late, E.late.map(function (x) {
      return [fmtT(x.t), String(x.pid), x.comm, x.reason];
    }), ['time', 'pid', 'comm', 'why']);
    list('Signals', T.signals, E.signals.map(function (x) {
      return [fmtT(x.t), String(x.signo), x.comm + ' [' + x.pid + '/' + x.tid + ']', x.addr, String(x.code)];
    }), ['time', 'signal', 'thread', 'address', 'si_code']);
    list('KVM memory-fault exits', T.kvm_memory_faults, E.kvm.map(function (x) {
      return [fmtT(x.t), String(x.pid), String(x.tid), String(x.vcpu), x.gpa, fmtBytes(x.size)];
    }), ['time', 'pid', 'tid', 'vCPU', 'gpa', 'size']);
  }

  function footer() {
    var I = D.input;
    app.appendChild(el('footer', { text: 'Made by ' + D.tool + ' from ' + D.source + ': ' + fmtInt(I.lines) + ' lines (' +
      fmtBytes(I.bytes) + '), ' + fmtInt(I.foreign) + ' not JSON (a traced command\'s own output), ' + fmtInt(I.malformed) +
      ' malformed. Times are relative to the first event of the recording (CLOCK_MONOTONIC ' + D.t0 + ' ns).' }));
  }

  try {
    header();
    totals();
    timeline();
    heatmap();
    breakdown();
    memmap();
    vms();
    lanesTable();
    events();
    footer();
    if (location.hash === '#selftest') {
      var out = selftests.map(function (f) { return f(); }).filter(function (x) { return x; });
      hideTip();
      app.appendChild(el('pre', { id: 'selftest', hidden: '', text: JSON.stringify(out) }));
    }
    if (document.body.getAttribute('data-rendered') !== 'error') document.body.setAttribute('data-rendered', 'ok');
  } catch (e) {
    fail('script error: ' + (e && e.stack ? e.stack : e));
  }
  document.body.setAttribute('data-render-ms', String(Math.round(performance.now() - t_start)));
})();
