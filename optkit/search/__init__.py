"""optkit search: find the fastest variant within an accuracy budget (issue 26); see search/run.py."""
