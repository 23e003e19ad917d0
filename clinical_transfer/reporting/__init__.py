"""Reporting: overlay reports for people (Markdown now; HTML and figures are the open overlay issue)."""
