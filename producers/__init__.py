"""Gymnasium environments and trainers that publish episode events."""
