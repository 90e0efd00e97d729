"""The ground floor: atomic file writes (storage), distances and projections (geo), image decoding and
thumbnails (images), place names (places). Imports nothing else of geoloc but `config`.
"""
