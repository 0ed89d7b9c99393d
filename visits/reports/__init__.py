"""What managers read: the scope and filters of a request, counts and rates, CSV exports, charts
and maps (the only place that imports folium).
"""
