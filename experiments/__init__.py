"""Scripts that run the toolkit end to end and measure it: the demo, the PPM ablation, the GPU acceptance
check, and the reports behind docs/results.md (`python -m experiments.results`)."""
