"""Reporters: session summaries (JSON, Markdown) from records; Allure/HTML reporters plug in here."""
