"""Data manifests: one JSON file per data set or weight file family (see ``neurocnn.datasets``)."""
