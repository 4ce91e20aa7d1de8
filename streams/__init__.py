"""Faust stream processors aggregating KPIs into Prometheus and sinks."""
