"""Features: item and user features for training and serving. Text embeddings come first."""

from recplane.features.text import (
    MiniLMEncoder,
    TextEmbeddingResult,
    TextEncoder,
    embed_item_text,
    render_texts,
)

__all__ = ["MiniLMEncoder", "TextEmbeddingResult", "TextEncoder", "embed_item_text", "render_texts"]
