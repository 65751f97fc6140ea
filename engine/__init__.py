"""HuMo inference engine: transformer, audio features, guidance, pipeline, media, registry, CLI."""


def load_pipeline(model_id: str = "tiny", device=None, torch_dtype=None, **kwargs):
    """A ready `HuMoPipeline` for a model id (see engine.registry). Imported lazily to keep `import engine` light."""
    from engine.registry import load_pipeline as _load

    return _load(model_id, device=device, torch_dtype=torch_dtype, **kwargs)


__all__ = ["load_pipeline"]
