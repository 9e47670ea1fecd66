"""The datasets: the catalog, what a caller may see of it, how a source is read, and the sources."""
