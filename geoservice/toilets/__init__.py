"""Smart toilets: sensor ingestion (routes, group-commit writer), live status, ratings, staff."""
