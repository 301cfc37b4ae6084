"""Read OGC API – Features collections the way QGIS does: its own OAPIF provider, headless.

Run by Debian's ``/usr/bin/python3`` (python3-qgis lives there, not in the project's venv):

    python3 tests/qgis_client.py BASE_URL LAYER [MINX MINY MAXX MAXY]

Prints one JSON object: the features QGIS read (``read``), how many distinct ids they carried
(``ids``), and what the provider reported as the layer's feature count (``reported``, -1 when
it does not know). With a box the request is filtered by it, as when a QGIS map pans there.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile


def main(argv: list[str]) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="qgis-runtime-"))
    from qgis.core import (  # Debian's python3-qgis
        QgsApplication,
        QgsFeatureRequest,
        QgsRectangle,
        QgsVectorLayer,
    )

    base, layer_name, *box = argv
    app = QgsApplication([], False)
    app.initQgis()
    uri = f"url='{base}' typename='{layer_name}' pageSize='1000'"
    layer = QgsVectorLayer(uri, layer_name, "OAPIF")
    if not layer.isValid():
        print(json.dumps({"error": f"QGIS could not open {layer_name} at {base}"}))
        return 1
    request = QgsFeatureRequest()
    if box:
        request.setFilterRect(QgsRectangle(*map(float, box)))
    ids = set()
    read = 0
    for feature in layer.getFeatures(request):
        read += 1
        ids.add(str(feature["id"]))
    print(json.dumps({"read": read, "ids": len(ids), "reported": layer.featureCount()}))
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    # QGIS 3.22's exitQgis() crashes headless after network use; the answer is already out
    os._exit(code)
