"""Questions asked of a whole run: Table 1 (`experiment`), every locator compared (`compare`), accuracy levers
(`levers`), all three cross-validated by one engine (`crossval`), and views of a partition (`signatures`, `stability`,
`coverage`).
"""
