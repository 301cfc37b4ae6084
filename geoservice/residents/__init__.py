"""Residents' own pages: password-less sign-in, subscriptions, the feed, Atom feeds, mail digests.

- ``signin``: e-mail + one-time code, sessions (bearer token and cookie), the resident dependency.
- ``delivery``: the one interface codes and digests go through (mail now; SMS could follow).
- ``subscriptions``: what a resident follows: matters, domains, facilities, areas.
- ``feed``: events (recorded by triggers, migration 0008) fanned out set-based to feeds.
- ``atom``: the private and public Atom feeds.
- ``account``: the resident's data: profile, export, erasure, cases and ratings.
- ``notify``: the digest run (``servicemap notify``; periodically under ``servicemap serve``).
- ``routes``: every route in one router.
"""
