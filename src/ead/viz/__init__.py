"""Pictures of EAD at work and of its molecules (issue 6).

- `trajectory`: record per-atom times and positions while sampling (`TrajectoryRecorder`,
  `record_trajectories`), save / load them as .npz.
- `render`: an animated GIF of a molecule forming, a heat map of per-atom times.
- `view`: a grid PNG of 2D depictions and an offline HTML page with 3D views (`ead view`).
- `analysis`: which atoms leave the noise first (heavy vs H, ring vs chain).

Nothing here is imported by `import ead`: matplotlib and Pillow load only when a picture is made.
"""
