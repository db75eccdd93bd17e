"""Image codecs: pure numpy/torch and the entropy coder; no Ray, no I/O."""

from models.codec import Codec, CodecError, Decoded
from models.registry import DEFAULT_CODEC, get_codec, list_codecs

__all__ = ["Codec", "CodecError", "Decoded", "DEFAULT_CODEC", "get_codec", "list_codecs"]
