// chart.js -- a small line chart on <canvas> for the antenna dashboard.
//
//   const c = new LineChart(canvasElement, [{label: 'in', color: '#2a6df4'}, ...]);
//   const c = new LineChart(canvas, series, {capacity: 900, windowMs: 900000});
//   c.push(timestampMs, [v0, v1, ...]);   // one value per series
//   c.gap(timestampMs);                   // no data here: the lines break
//   c.draw();
//
// Keeps the last `capacity` points (bounded memory: a few arrays of at most
// that length, the oldest point dropped for each new one), spans the x axis
// over what was seen (30 s at first, growing to `windowMs`), scales the y
// axis to a "nice" maximum (1, 2, 5 x 10^n) over what is visible, draws a
// light grid, the y labels, a time axis (seconds or minutes ago) and a
// legend.  Sized in CSS pixels and scaled by devicePixelRatio so it stays
// sharp.  No dependency.
'use strict';

(function (global) {
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function fmt(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + 'M';
    if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + 'k';
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }

  // 90 -> "1m30s", 120 -> "2m", 45 -> "45s"
  function fmtAgo(s) {
    if (s < 60) return s + 's';
    return Math.floor(s / 60) + 'm' + (s % 60 ? (s % 60) + 's' : '');
  }

  class LineChart {
    constructor(canvas, series, opts) {
      this.canvas = canvas;
      this.series = series;
      this.capacity = (opts && opts.capacity) || 120;
      this.windowMs = (opts && opts.windowMs) || 120000;
      this.times = [];
      this.values = series.map(() => []);
    }

    // A break in the lines at t (the source was unreachable).
    gap(t) {
      this.push(t, this.series.map(() => null));
    }

    push(t, vals) {
      this.times.push(t);
      vals.forEach((v, i) => this.values[i].push(v));
      while (this.times.length > this.capacity) {
        this.times.shift();
        this.values.forEach((a) => a.shift());
      }
    }

    draw() {
      const cv = this.canvas, dpr = global.devicePixelRatio || 1;
      const w = cv.clientWidth || 400, h = cv.clientHeight || 180;
      if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
        cv.width = Math.round(w * dpr);
        cv.height = Math.round(h * dpr);
      }
      const g = cv.getContext('2d');
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, h);
      const left = 44, right = 10, top = 22, bottom = 22;
      const pw = w - left - right, ph = h - top - bottom;
      const now = this.times.length ? this.times[this.times.length - 1] : Date.now();
      // the x axis spans what has been seen: at least 30 s, at most windowMs
      const seen = this.times.length ? now - this.times[0] : 0;
      const span = Math.min(this.windowMs, Math.max(30000, Math.ceil(seen / 10000) * 10000));
      const t0 = now - span;
      let max = 0;
      this.values.forEach((a) => a.forEach((v) => { if (v !== null && v > max) max = v; }));
      const ymax = niceMax(max);

      g.font = '11px system-ui, sans-serif';
      g.lineWidth = 1;
      // grid and y labels
      g.strokeStyle = '#e8ebf1';
      g.fillStyle = '#6b7385';
      g.textAlign = 'right';
      g.textBaseline = 'middle';
      for (let i = 0; i <= 4; i++) {
        const y = top + ph - (ph * i) / 4;
        g.beginPath();
        g.moveTo(left, Math.round(y) + 0.5);
        g.lineTo(left + pw, Math.round(y) + 0.5);
        g.stroke();
        g.fillText(fmt((ymax * i) / 4), left - 6, y);
      }
      // time labels: seconds ago
      g.textAlign = 'center';
      g.textBaseline = 'top';
      // a round step (5 s .. 5 min) giving at most 6 intervals, from now back
      const stepS = [5, 10, 15, 20, 30, 60, 120, 180, 300].find((st) => span / 1000 / st <= 6) || 300;
      for (let ago = 0; ago * 1000 <= span; ago += stepS) {
        const x = left + pw - (pw * ago * 1000) / span;
        g.textAlign = ago * 1000 === span ? 'left' : ago === 0 ? 'right' : 'center';
        g.fillText(ago ? '-' + fmtAgo(ago) : 'now', x, top + ph + 6);
      }
      // lines: one segment per run of points between gaps
      this.series.forEach((s, si) => {
        const a = this.values[si];
        const segments = [];
        let seg = null;
        for (let i = 0; i < a.length; i++) {
          if (this.times[i] < t0 || a[i] === null) { seg = null; continue; }
          if (!seg) segments.push(seg = []);
          seg.push([left + (pw * (this.times[i] - t0)) / span,
                    top + ph - (ph * Math.min(a[i], ymax)) / ymax]);
        }
        g.strokeStyle = s.color;
        g.lineWidth = 2;
        g.lineJoin = 'round';
        segments.forEach((pts) => {
          g.beginPath();
          pts.forEach(([x, y], i) => { if (i) g.lineTo(x, y); else g.moveTo(x, y); });
          g.stroke();
          if (s.fill) {
            g.lineTo(pts[pts.length - 1][0], top + ph);
            g.lineTo(pts[0][0], top + ph);
            g.closePath();
            g.globalAlpha = 0.08;
            g.fillStyle = s.color;
            g.fill();
            g.globalAlpha = 1;
          }
        });
      });
      // legend with the latest values
      g.textAlign = 'left';
      g.textBaseline = 'middle';
      let x = left;
      this.series.forEach((s, si) => {
        const a = this.values[si];
        const last = a.length ? a[a.length - 1] : null;
        const label = s.label + (last !== null ? ' ' + fmt(last) : '');
        g.fillStyle = s.color;
        g.fillRect(x, 7, 10, 3);
        g.fillStyle = '#1d2330';
        g.fillText(label, x + 14, 9);
        x += g.measureText(label).width + 34;
      });
    }
  }

  global.LineChart = LineChart;
})(window);
