"""What leaves the machine: GIS files (`gis`), offline HTML maps (`maps`), the run report (`report`), charts as
plain plotly specs (`charts`), colours (`colors`) and match pictures (`pictures`).
"""
