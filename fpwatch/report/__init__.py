"""Showing (DESIGN section 4): the documented JSON summaries (`summary`), the human tables (`tables`, `text`),
and the audit export (`export`)."""
