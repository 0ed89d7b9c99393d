"""Talking to Zendesk Sell: the Firehose client, parsing its items, the fetch process.

Nothing here imports Django: the fetch process (`python -m visits.sell.fetcher`) runs it bare.
"""
