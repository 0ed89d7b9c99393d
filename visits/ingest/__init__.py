"""Getting visits in: the sync loop and its lease, applying pages with their position, the
tallies the database keeps, and the figures of the status page.
"""
