"""Pixel-based dataset-condensation baselines on gencond's engine: DM (dm.py), DC/DSA
(gradient_matching.py), MTT and TESLA (mtt.py), their presets (presets.py) and the
`gencond bench throughput|scaling|accuracy` command-line sections (commands.py).

Every baseline learns a tensor of synthetic pixels (classes x IPC images) and shares one small
interface (`base.PixelCondenser`): `.images`, `.labels`, `.params`, `.bytes`, `.step(...)`.
Nothing is imported here, so that building the command-line parser stays cheap.
"""
