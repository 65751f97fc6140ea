"""HuMo inference engine: transformer, audio features, guidance, pipeline, media, registry, CLI."""
