"""The 3D viewer of `ead view`'s HTML page: a small ball-and-stick renderer on a 2D canvas.

It is written here rather than taken from 3Dmol.js because the page must open offline with no
network fetch, py3Dmol only links 3Dmol.js from a CDN, and no installed package ships the
library. A 2D canvas (not WebGL) draws the same on every browser, including headless ones
without a GPU. The source is kept as a Python string (not a .js file) so that it is installed
with the package whatever the packaging configuration says about data files.

Interaction: drag to rotate (trackball-like: horizontal drag about the screen's vertical axis,
vertical drag about its horizontal axis), mouse wheel or pinch to zoom, double-click to reset.
Hovering an atom names it (element and index in the file).
"""

VIEWER_JS = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("ead-data").textContent);
  var ELEMENTS = DATA.elements;            // Z -> [colour, radius in Å, symbol]
  var BOND = "#6a6a6a";

  function element(z) { return ELEMENTS[z] || ["#ff1493", 0.42, "Z" + z]; }

  function matmul(a, b) {                  // 3x3 row-major
    var r = [];
    for (var i = 0; i < 3; i++) {
      for (var j = 0; j < 3; j++) {
        r[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
      }
    }
    return r;
  }
  function rotX(a) { var c = Math.cos(a), s = Math.sin(a); return [1, 0, 0, 0, c, -s, 0, s, c]; }
  function rotY(a) { var c = Math.cos(a), s = Math.sin(a); return [c, 0, s, 0, 1, 0, -s, 0, c]; }

  function shade(hex, f) {                 // f > 0 toward white, f < 0 toward black
    var n = parseInt(hex.slice(1), 16), rgb = [(n >> 16) & 255, (n >> 8) & 255, n & 255];
    var out = rgb.map(function (v) {
      return Math.round(f >= 0 ? v + (255 - v) * f : v * (1 + f));
    });
    return "rgb(" + out.join(",") + ")";
  }

  function Viewer(canvas, mol) {
    this.canvas = canvas;
    this.mol = mol;
    var ext = 0.5;
    mol.atoms.forEach(function (a) {
      ext = Math.max(ext, Math.hypot(a[1], a[2], a[3]) + element(a[0])[1]);
    });
    this.extent = ext;                     // radius of a sphere holding every atom
    this.hover = -1;
    this.reset();
    this.listen();
  }

  Viewer.prototype.reset = function () {
    this.rot = [1, 0, 0, 0, 1, 0, 0, 0, 1];
    this.zoom = 1;
  };

  Viewer.prototype.project = function () {
    var w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    var scale = this.zoom * Math.min(w, h) / (2.1 * this.extent);
    var cam = 5 * this.extent;             // camera distance: mild perspective as a depth cue
    var R = this.rot;
    return this.mol.atoms.map(function (a) {
      var x = R[0] * a[1] + R[1] * a[2] + R[2] * a[3];
      var y = R[3] * a[1] + R[4] * a[2] + R[5] * a[3];
      var z = R[6] * a[1] + R[7] * a[2] + R[8] * a[3];
      var f = cam / Math.max(cam - z, 1e-3);
      return { x: w / 2 + x * scale * f, y: h / 2 - y * scale * f, z: z,
               r: element(a[0])[1] * scale * f };
    });
  };

  Viewer.prototype.draw = function () {
    var c = this.canvas, dpr = window.devicePixelRatio || 1;
    var w = c.clientWidth, h = c.clientHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    var ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, w, h);
    var p = this.project(), atoms = this.mol.atoms;
    this.projected = p;
    // painter's algorithm, far to near; a bond sorts just behind the nearer of its two atoms,
    // so both spheres are drawn over its ends
    var items = [];
    for (var i = 0; i < p.length; i++) items.push({ z: p[i].z, atom: i });
    this.mol.bonds.forEach(function (b) {
      items.push({ z: Math.min(p[b[0]].z, p[b[1]].z) - 1e-3, bond: b });
    });
    items.sort(function (a, b) { return a.z - b.z; });
    var unit = Math.min(w, h) / (2.1 * this.extent) * this.zoom;
    items.forEach(function (it) {
      if (it.bond) {
        var a = p[it.bond[0]], b = p[it.bond[1]], order = it.bond[2];
        var dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
        var nx = -dy / len, ny = dx / len, gap = 0.11 * unit, lw = Math.max(1, 0.07 * unit);
        ctx.strokeStyle = BOND;
        ctx.lineCap = "round";
        ctx.lineWidth = order > 1 ? lw * 0.8 : lw * 1.3;
        for (var k = 0; k < order; k++) {
          var o = (k - (order - 1) / 2) * gap;
          ctx.beginPath();
          ctx.moveTo(a.x + nx * o, a.y + ny * o);
          ctx.lineTo(b.x + nx * o, b.y + ny * o);
          ctx.stroke();
        }
      } else {
        var q = p[it.atom], col = element(atoms[it.atom][0])[0];
        var g = ctx.createRadialGradient(q.x - 0.35 * q.r, q.y - 0.35 * q.r, 0.1 * q.r, q.x, q.y, q.r);
        g.addColorStop(0, shade(col, 0.7));
        g.addColorStop(0.45, col);
        g.addColorStop(1, shade(col, -0.45));
        ctx.beginPath();
        ctx.arc(q.x, q.y, Math.max(q.r, 0.5), 0, 2 * Math.PI);
        ctx.fillStyle = g;
        ctx.fill();
        ctx.lineWidth = 1;
        ctx.strokeStyle = "rgba(0,0,0,0.45)";
        ctx.stroke();
      }
    });
    if (this.hover >= 0 && this.hover < p.length) {
      var hq = p[this.hover], label = element(atoms[this.hover][0])[2] + this.hover;
      ctx.font = "12px sans-serif";
      ctx.fillStyle = "rgba(255,255,255,0.85)";
      ctx.fillRect(hq.x + hq.r, hq.y - hq.r - 14, ctx.measureText(label).width + 6, 16);
      ctx.fillStyle = "#111";
      ctx.fillText(label, hq.x + hq.r + 3, hq.y - hq.r - 2);
    }
  };

  Viewer.prototype.atomAt = function (x, y) {
    var best = -1, bestZ = -Infinity, p = this.projected || [];
    for (var i = 0; i < p.length; i++) {
      if (Math.hypot(p[i].x - x, p[i].y - y) <= p[i].r && p[i].z > bestZ) { best = i; bestZ = p[i].z; }
    }
    return best;
  };

  Viewer.prototype.listen = function () {
    var self = this, c = this.canvas, drag = null;
    c.addEventListener("pointerdown", function (e) {
      drag = { x: e.clientX, y: e.clientY };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", function (e) {
      if (drag) {
        var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
        drag = { x: e.clientX, y: e.clientY };
        // screen-space rotation applied on the left: the molecule turns the way the hand moves
        self.rot = matmul(rotX(dy * 0.01), matmul(rotY(dx * 0.01), self.rot));
        self.draw();
      } else {
        var rect = c.getBoundingClientRect();
        var hit = self.atomAt(e.clientX - rect.left, e.clientY - rect.top);
        if (hit !== self.hover) { self.hover = hit; self.draw(); }
      }
    });
    function end() { drag = null; }
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("pointerleave", function () { if (self.hover >= 0) { self.hover = -1; self.draw(); } });
    c.addEventListener("wheel", function (e) {
      e.preventDefault();                  // zoom the molecule, not scroll the page
      self.zoom = Math.min(8, Math.max(0.25, self.zoom * Math.exp(-e.deltaY * 0.0015)));
      self.draw();
    }, { passive: false });
    c.addEventListener("dblclick", function () { self.reset(); self.draw(); });
  };

  function text(tag, cls, value) {
    var el = document.createElement(tag);
    if (cls) el.className = cls;
    el.textContent = value;                // text, never markup: names come from user files
    return el;
  }

  var grid = document.getElementById("grid"), viewers = [];
  DATA.molecules.forEach(function (mol, k) {
    var card = document.createElement("figure");
    card.className = "card";
    var canvas = document.createElement("canvas");
    canvas.setAttribute("aria-label", "3D view of molecule " + k);
    card.appendChild(canvas);
    var cap = document.createElement("figcaption");
    var head = text("div", "head", "");
    head.appendChild(text("span", "idx", "#" + mol.index));
    head.appendChild(text("span", mol.valid ? "badge ok" : "badge bad", mol.valid ? "valid" : "invalid"));
    head.appendChild(text("span", "formula", mol.formula + " · " + mol.atoms.length + " atoms"));
    cap.appendChild(head);
    if (mol.name) cap.appendChild(text("div", "name", mol.name));
    cap.appendChild(text("div", "smiles", mol.smiles));
    card.appendChild(cap);
    grid.appendChild(card);
    var v = new Viewer(canvas, mol);
    viewers.push(v);
    v.draw();
  });
  window.addEventListener("resize", function () { viewers.forEach(function (v) { v.draw(); }); });
  document.body.setAttribute("data-rendered", String(viewers.length));
})();
"""
