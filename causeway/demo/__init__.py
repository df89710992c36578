"""`causeway demo`: the paper's pipeline end to end at tiny scale (`adaptation.py`)."""
