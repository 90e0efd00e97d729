"""geoloc on a shared machine: data roots and modes (`access`), the durable job queue (`jobqueue`) and the
jobs the app starts (`jobs`).
"""
