"""Photo folders, spreadsheets, EXIF and GPX tracks -> a PhotoTable and what was rejected, and why.

`photos.load_photos` is the entry point; `manifests` reads spreadsheets, `exif` a photo's GPS and time, `tracks`
places photos on a GPX track, `orthophotos` cuts georeferenced images into tiles.
"""
