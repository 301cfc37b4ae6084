"""Service halls: set-up as data, slots and bookings, queue tickets, case progress, evaluation.

- ``domain``: the slot grid from opening hours, phone numbers, codes, states, estimates (no I/O).
- ``setup``: ``servicemap halls load`` and the retention purge (synchronous connections).
- ``booking``: appointments (book, look up, cancel, reschedule, ``.ics``).
- ``queue``: halls with their live load, tickets (walk-in and check-in), the staff window.
- ``cases``: progress, evaluation, the staff's evaluation figures and alerts.
- ``pages``: what the hall, appointment, matter and document pages read.
"""
