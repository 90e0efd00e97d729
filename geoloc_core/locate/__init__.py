"""Locating a photo: the faiss index (`index`), GPS-aware verifiers (`locators`), retrieval spaces (`retrieval`),
the predictor built from a run (`predictor`), prediction (`predict`), photos of one place together (`together`),
why a photo was placed where it was (`explain`) and places that look alike (`similar`).
"""
