"""Views of a scan for people: a plain-text description and a one-page figure."""
