"""Run records, environment capture, the results store and exports."""
