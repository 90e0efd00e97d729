"""The run folder: `folders` names every artefact and reads it back; `stages` runs ingest -> embed -> graph ->
regions -> evaluate over it (`geoloc run`).
"""
