"""What every capability's HTTP routes share: domain errors and their statuses, validated
request parameters, bearer-token auth, and GeoJSON responses."""
