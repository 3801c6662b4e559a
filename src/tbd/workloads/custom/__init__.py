"""`custom:NAME`: the records of `tbd.measure(step)`, a user's own training step."""
