"""Data: fetching a collection into ``data.raw_dir`` (sources, stores, transfers) and building SERST from it
(scenes with strong labels, 2 s references, splits, the manifest format)."""
