"""The one-way data flow holds at run time too: ETL and the layer catalogue load no web stack."""

import subprocess
import sys

PROBE = """
import importlib, pkgutil, sys
import ingest, layers
for package in (ingest, layers):
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(" ".join(n for n in loaded if n in ("fastapi", "starlette", "uvicorn", "geoservice", "web")))
"""


def test_importing_every_ingest_and_layers_module_loads_no_http_stack() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
