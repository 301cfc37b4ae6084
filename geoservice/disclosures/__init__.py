"""The five disclosures: the catalogue API and facility ↔ matter ↔ document linking."""
