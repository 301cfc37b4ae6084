"""Read what servicemap serves the way QGIS does: its own providers, headless.

Run by Debian's ``/usr/bin/python3`` (python3-qgis lives there, not in the project's venv):

    python3 tests/qgis_client.py features BASE_URL LAYER [MINX MINY MAXX MAXY]
    python3 tests/qgis_client.py tiles TILE_URL_TEMPLATE MINX MINY MAXX MAXY

Prints one JSON object. ``features`` reads a collection with QGIS's OAPIF provider: the
features read (``read``), the distinct ids they carried (``ids``) and the layer's feature count
as the provider reports it (``reported``); with a box the request is filtered by it, as when a
map pans there. ``tiles`` renders the box (lon/lat) as a 512-pixel map from an XYZ vector tile
layer of the template (``{z}/{y}/{x}``) with QGIS's default style: the pixels painted
(``painted``, sampled every other pixel) and the rendering errors (``errors``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any


def features(base: str, layer_name: str, box: list[str]) -> dict[str, Any]:
    from qgis.core import QgsFeatureRequest, QgsRectangle, QgsVectorLayer

    uri = f"url='{base}' typename='{layer_name}' pageSize='1000'"
    layer = QgsVectorLayer(uri, layer_name, "OAPIF")
    if not layer.isValid():
        return {"error": f"QGIS could not open {layer_name} at {base}"}
    request = QgsFeatureRequest()
    if box:
        request.setFilterRect(QgsRectangle(*map(float, box)))
    ids = set()
    read = 0
    for feature in layer.getFeatures(request):
        read += 1
        ids.add(str(feature["id"]))
    return {"read": read, "ids": len(ids), "reported": layer.featureCount()}


def tiles(template: str, box: list[str]) -> dict[str, Any]:
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsMapRendererSequentialJob,
        QgsMapSettings,
        QgsProject,
        QgsRectangle,
        QgsVectorTileLayer,
    )
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    layer = QgsVectorTileLayer(f"type=xyz&url={template}&zmin=0&zmax=16", "tiles")
    if not layer.isValid():
        return {"error": f"QGIS could not open the vector tiles {template}"}
    mercator = QgsCoordinateReferenceSystem("EPSG:3857")
    to_mercator = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem("EPSG:4326"), mercator, QgsProject.instance()
    )
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(mercator)
    settings.setExtent(to_mercator.transformBoundingBox(QgsRectangle(*map(float, box))))
    settings.setOutputSize(QSize(512, 512))
    white = QColor(255, 255, 255)
    settings.setBackgroundColor(white)
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    painted = sum(
        image.pixelColor(x, y) != white for x in range(0, 512, 2) for y in range(0, 512, 2)
    )
    return {"painted": painted, "errors": [error.message for error in job.errors()]}


def main(argv: list[str]) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="qgis-runtime-"))
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    mode, source, *rest = argv
    if mode == "features":
        result = features(source, rest[0], rest[1:])
    else:
        result = tiles(source, rest)
    print(json.dumps(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    # QGIS 3.22's exitQgis() crashes headless after network use; the answer is already out
    os._exit(code)
