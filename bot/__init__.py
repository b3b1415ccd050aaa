"""dangjian-bot: the chat assistant (core, adapters, reminders, checklists, CLI)."""
