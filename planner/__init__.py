"""fitplan's planner: probes hardware, scans datasets, measures dry runs and writes a plan.

It may import `trainer` (to measure what will really run); `trainer` never imports it.
"""
