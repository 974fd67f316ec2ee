"""Reporting: figures and the HTML page of one analysis (the last floor of the analysis)."""
