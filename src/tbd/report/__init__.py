"""Human-readable output: terminal tables now; HTML reports and plots build on the same records."""
