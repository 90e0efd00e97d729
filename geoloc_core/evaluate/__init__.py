"""How good an answer is: region and distance metrics (`metrics`), the place-level bootstrap and paired verdicts
(`stats`), the w/o linear probe (`linear_probe`) and splits by location (`splits`).
"""
