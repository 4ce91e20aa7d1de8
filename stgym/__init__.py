"""spin-torque-gym: an RL gym for spintronic devices with an observability pipeline."""

__version__ = "0.1.0"
