"""The in-job report: numbers (summary), the text card, summary.json and report.html."""
