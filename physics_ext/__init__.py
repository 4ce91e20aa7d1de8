"""Compiled macrospin LLGS integrator for MTJ free layers (SI units)."""
