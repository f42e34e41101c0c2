"""Floor 2: sweep results read from files: tables, analysis, plots, report. No torch, no Ray."""
