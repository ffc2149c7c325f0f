"""SVG-LP / SVG-FP for vpkit."""
