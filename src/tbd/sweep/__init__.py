"""Sweeps: many isolated runs over workloads x frameworks x batch sizes x precisions x devices.

`tbd sweep --preset quick` exercises it. `spec` turns flags, a TOML file or a preset into a
`SweepSpec` and expands it into lines of points (a line is one configuration over batch sizes);
`engine` runs the points one by one, storing each as it finishes, skipping larger batches of a
line after an OOM, bisecting the largest batch that fits, and resuming a sweep run before.
"""
