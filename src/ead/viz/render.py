"""Pictures of one denoising trajectory: an animated GIF of the molecule forming, and a heat map
of every atom's diffusion time against the iterate.

The GIF is drawn with Pillow as a ball-and-stick orthographic projection (with a touch of
perspective), not with matplotlib's 3D axes: it is several times faster per frame and needs no
display. Atoms keep their final element colour throughout; an atom still in the noise is drawn
pale (blended toward grey in proportion to t_i / T) and without an outline, so the moment each
atom leaves the noise is visible. Bonds are those of the decoded molecule (distance rule of the
evaluation protocol), faded in as both of their atoms approach t = 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..data.bonds import bond_list
from ..data.elements import symbol
from ..errors import EADError
from ..pipeline import write_atomic
from ..progress import tracked
from .style import ball_radius, color_rgb, formula
from .trajectory import MoleculeTrajectory, save_trajectories

BACKGROUND = (255, 255, 255)
NOISE_GREY = (205, 205, 205)
BOND_GREY = (90, 90, 90)
OUTLINE = (40, 40, 40)


def principal_rotation(points: np.ndarray) -> np.ndarray:
    """Proper rotation [3, 3] whose rows are the principal axes of `points` (largest spread
    first): the largest extent lies across the picture and the flattest direction points at the
    viewer, which shows planar molecules face on. det = +1, so chirality is never mirrored."""
    c = np.asarray(points, dtype=np.float64)
    c = c - c.mean(0)
    if len(c) < 2:
        return np.eye(3)
    _, _, vt = np.linalg.svd(c, full_matrices=True)
    if np.linalg.det(vt) < 0:
        vt[2] = -vt[2]
    return vt


def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _mix(a, b, f: float) -> tuple[int, int, int]:
    """(1 − f)·a + f·b per channel."""
    return tuple(int(round((1 - f) * x + f * y)) for x, y in zip(a, b))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable built-in font (Pillow ≥ 10.1)
    except TypeError:
        return ImageFont.load_default()


class _Painter:
    """Draws ball-and-stick frames at a fixed scale, so that the frames of one animation line up."""

    def __init__(self, atomic_numbers, bonds, timesteps: int, radius_angstrom: float,
                 size: int = 320, supersample: int = 2):
        self.z = np.asarray(atomic_numbers)
        self.bonds = bonds
        self.T = timesteps
        self.size = size
        self.ss = supersample                      # drawn larger, then downsampled: antialiasing
        self.px = size * supersample
        self.caption_h = int(0.09 * self.px)
        self.scale = (self.px - self.caption_h) / (2.0 * radius_angstrom)   # pixels per Å
        self.perspective = 6.0 * radius_angstrom   # camera distance: a mild depth cue only
        self.font = _font(max(10, int(0.045 * self.px)))

    def frame(self, xyz: np.ndarray, times: np.ndarray, caption: str):
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (self.px, self.px), BACKGROUND)
        draw = ImageDraw.Draw(img)
        cx, cy = self.px / 2, (self.px - self.caption_h) / 2
        depth = xyz[:, 2]
        f = self.perspective / np.maximum(self.perspective - depth, 1e-3)
        sx = cx + xyz[:, 0] * self.scale * f
        sy = cy - xyz[:, 1] * self.scale * f
        noisy = np.clip(times / self.T, 0.0, 1.0)
        # painter's algorithm: far things first; a bond sorts just behind the nearer of its atoms'
        # backs, so both atoms are drawn over its ends
        items = [(float(depth[i]), 1, i) for i in range(len(xyz))]
        items += [(float(min(depth[i], depth[j])) - 1e-3, 0, (i, j, o)) for i, j, o in self.bonds]
        for _, kind, what in sorted(items, key=lambda it: (it[0], it[1])):
            if kind == 0:
                i, j, order = what
                # a bond fades in as its atoms settle: drawn fully only when both are at t = 0
                a = (1.0 - max(noisy[i], noisy[j])) ** 2
                if a < 0.02:
                    continue
                width = max(1, int(round((0.09 + 0.05 * (order - 1)) * self.scale)))
                draw.line([(sx[i], sy[i]), (sx[j], sy[j])], fill=_mix(BACKGROUND, BOND_GREY, a), width=width)
            else:
                i = what
                r = ball_radius(self.z[i]) * self.scale * f[i]
                base = _mix(color_rgb(self.z[i]), NOISE_GREY, 0.75 * noisy[i])
                settled = times[i] == 0
                outline = OUTLINE if settled else _mix(base, OUTLINE, 0.35)
                draw.ellipse([sx[i] - r, sy[i] - r, sx[i] + r, sy[i] + r], fill=base, outline=outline,
                             width=max(1, self.ss * (2 if settled else 1)))
                hr = 0.38 * r  # a highlight up-left: reads as a sphere lit from the top left
                hx, hy = sx[i] - 0.33 * r, sy[i] - 0.33 * r
                draw.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=_mix(base, (255, 255, 255), 0.55))
        draw.text((self.px / 2, self.px - self.caption_h / 2), caption, fill=(30, 30, 30),
                  font=self.font, anchor="mm")
        return img.resize((self.size, self.size), Image.LANCZOS)


def render_gif(traj: MoleculeTrajectory, path, frames: int = 48, size: int = 320, spin_frames: int = 24,
               frame_ms: int = 90) -> Path:
    """Animate `traj` (which must hold positions): `frames` iterates evenly spread over the run
    (the first and last always included), then the decoded molecule turning once about the
    vertical axis (`spin_frames`, 0 for none), which shows its 3D shape."""
    if traj.positions is None:
        raise EADError("this trajectory was recorded without positions: no animation possible")
    S = len(traj.iterations)
    pick = np.unique(np.round(np.linspace(0, S - 1, max(2, min(frames, S)))).astype(int))
    rot = principal_rotation(traj.final_positions)
    shown = [traj.positions[k] @ rot.T for k in pick] + [traj.final_positions @ rot.T]
    radius = max(float(np.linalg.norm(p[:, :2], axis=1).max(initial=0.0)) for p in shown)
    radius += 2 * ball_radius(6) + 0.3  # room for the spheres and a margin
    if spin_frames:
        # turning about y sweeps x into z: leave room for the full 3D extent of the final molecule
        radius = max(radius, float(np.linalg.norm(shown[-1], axis=1).max(initial=0.0)) + 2 * ball_radius(6) + 0.3)
    painter = _Painter(traj.atomic_numbers, bond_list(traj.final_positions, traj.atomic_numbers),
                       traj.timesteps, radius, size)
    m, total = traj.num_atoms, int(traj.iterations[-1])
    images, durations = [], []
    for k, xyz in zip(pick, shown[:-1]):
        t = traj.times[k].astype(np.int64)
        caption = (f"step {int(traj.iterations[k])}/{total}   mean t {t.mean():.0f}   "
                   f"at t=0: {int((t == 0).sum())}/{m}")
        images.append(painter.frame(xyz, t, caption))
        durations.append(frame_ms)
    zeros = np.zeros(m, dtype=np.int64)
    final_caption = f"decoded: {formula(traj.atomic_numbers)}"
    images.append(painter.frame(shown[-1], zeros, final_caption))
    durations.append(1200)  # let the eye rest on the result before it turns
    for k in range(1, spin_frames):
        xyz = shown[-1] @ _rot_y(2 * math.pi * k / spin_frames).T
        images.append(painter.frame(xyz, zeros, final_caption))
        durations.append(frame_ms)
    if spin_frames:
        durations[-1] = 800

    def write(tmp):
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations,
                       loop=0)

    write_atomic(Path(path), write)
    return Path(path)


def plot_times(traj: MoleculeTrajectory, path, title: str | None = None) -> Path:
    """Heat map of each atom's time t_i against the iterate, atoms ordered by when they reach
    t = 0 (first at the top), labelled by their final element. EAD keeps atoms within 2C ≪ T of
    each other, so t_i itself on the scale of T is one gradient shared by all rows; the upper
    panel shows instead each atom's lead or lag on the molecule's mean time, t_i − mean_j t_j,
    over the whole run (blue: ahead, red: behind; the mean time is on the top axis). The lower
    panel zooms into the asynchronous phase and shows the lag t_i − min_j t_j behind the leading
    atom, where the order in which atoms leave the noise is visible."""
    from matplotlib.figure import Figure

    order = traj.finish_order()
    m = traj.num_atoms
    labels = [f"{symbol(int(traj.atomic_numbers[i]))}{i}" for i in order]
    it = traj.iterations.astype(np.int64)
    times = traj.times[:, order].T.astype(np.int64)   # [m, S]
    lag = traj.lag()[:, order].T
    finish = traj.finish_index()[order]

    row_h = 0.17
    panel_h = max(1.4, row_h * m)
    fig = Figure(figsize=(9.0, 1.3 + 2 * panel_h + 0.6), layout="constrained")
    ax_t, ax_l = fig.subplots(2, 1, height_ratios=[1, 1])
    extent = [it[0] - 0.5, it[-1] + 0.5, m - 0.5, -0.5]
    mean_t = times.mean(axis=0)
    dev = times - mean_t
    span = max(1.0, float(np.abs(dev).max()))
    im = ax_t.imshow(dev, aspect="auto", interpolation="nearest", cmap="RdBu_r", vmin=-span,
                     vmax=span, extent=extent)
    fig.colorbar(im, ax=ax_t, label=r"$t_i - \mathrm{mean}_j\, t_j$", pad=0.01)
    ax_t.set_title("lead (blue) and lag (red) on the molecule's mean time, whole run", fontsize=10)
    top = ax_t.secondary_xaxis("top")   # the shared schedule: mean time at the iterate below
    ticks = [k for k in ax_t.get_xticks() if it[0] <= k <= it[-1]]
    top.set_xticks(ticks, [f"{np.interp(k, it, mean_t):.0f}" for k in ticks], fontsize=7)
    top.set_xlabel("mean time $t$", fontsize=8)

    async_cols = np.nonzero(lag.max(axis=0) > 0)[0]
    if len(async_cols):
        a = max(0, int(async_cols[0]) - 2)
        sub = lag[:, a:]
        ext = [it[a] - 0.5, it[-1] + 0.5, m - 0.5, -0.5]
        im2 = ax_l.imshow(sub, aspect="auto", interpolation="nearest", cmap="magma", vmin=0,
                          vmax=max(1, int(sub.max())), extent=ext)
        fig.colorbar(im2, ax=ax_l, label=r"lag $t_i - \min_j t_j$", pad=0.01)
        ax_l.scatter(it[finish], np.arange(m), marker="|", s=40, color="#00e5ff", linewidths=1.5,
                     label="reaches t = 0")
        ax_l.legend(loc="lower left", fontsize=7, framealpha=0.8)
        ax_l.set_title("asynchronous phase: lag behind the molecule's leading atom", fontsize=10)
    else:
        ax_l.text(0.5, 0.5, "no asynchrony: every atom shared one time at every iterate",
                  ha="center", va="center", transform=ax_l.transAxes)
        ax_l.set_xticks([])
        ax_l.set_ylim(m - 0.5, -0.5)  # the same top-to-bottom order as the panel above
    for ax in (ax_t, ax_l):
        ax.set_yticks(np.arange(m))
        ax.set_yticklabels(labels, fontsize=7 if m <= 30 else 5)
        ax.set_ylabel("atom (first to t = 0 on top)", fontsize=8)
    ax_l.set_xlabel("iterate (network calls so far)")
    s = traj.settings
    default_title = f"{formula(traj.atomic_numbers)}, {s.get('sampler', '?')} sampler, {s.get('steps', '?')} steps"
    fig.suptitle(title or default_title, fontsize=11)
    write_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return Path(path)


def write_trajectory_outputs(trajectories: list[MoleculeTrajectory], folder, metadata: dict | None = None,
                             frames: int = 48, progress=False) -> list[Path]:
    """Everything `ead sample --trajectory DIR` leaves in DIR: trajectory.npz (all recorded
    data), and per recorded molecule k an animation molecule_k.gif and a heat map
    molecule_k_times.png. `progress`: as ead.progress.Progress's `show` (per molecule drawn)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [save_trajectories(folder / "trajectory.npz", trajectories, metadata)]
    width = max(2, len(str(len(trajectories) - 1)))
    for k, tr in enumerate(tracked(trajectories, len(trajectories), "trajectory pictures", "mol", progress)):
        stem = f"molecule_{k:0{width}d}"
        written.append(render_gif(tr, folder / f"{stem}.gif", frames=frames))
        written.append(plot_times(tr, folder / f"{stem}_times.png"))
    return written
