"""Sites -> regions: proximity graphs DT / GG / RNG (`graphs`), feature-weighted Louvain cuts and their polygons
(`partition`), the area regions are clipped to (`boundaries`), and the Mesh and CPlaNet baselines (`baselines`).
"""
