"""Photos -> vectors: the encoder registry (`encoders`), weights extraction (`weights`), the trainable tail of a
ViT (`towers`), cached batch embedding (`embed`), retrieval descriptors from patch tokens (`descriptors`, AnyLoc GeM /
VLAD) and embedding on Ray (`distributed`).
"""
