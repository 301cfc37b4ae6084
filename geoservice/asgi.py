"""ASGI entry for uvicorn workers: builds the app from the environment's settings."""

from fastapi import FastAPI

from geoservice.app import create_app
from geoservice.settings import load_settings


def create() -> FastAPI:
    """The app for ``uvicorn --factory geoservice.asgi:create``."""
    return create_app(load_settings())
