"""geofm_hf models inside other frameworks (TerraTorch). Each module imports its framework
lazily, so this package imports where none of them is installed."""
