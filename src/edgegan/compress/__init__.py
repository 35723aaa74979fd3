"""Model compression recipes: once-for-all supernet training, search and sub-network extraction."""
