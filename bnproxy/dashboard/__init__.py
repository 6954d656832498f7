"""The live dashboard: the page (static files, vendored uPlot) and its state feed."""
