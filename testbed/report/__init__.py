"""Tables, plots and the HTML report. Plots read tables, never runs."""
