"""The query API: geodesic nearest, H3 aggregates, facility detail, OGC API - Features, meta."""
